"""``aligngym data generate / info / plot``: the pipeline's pieces, tiny end-to-end runs,
determinism, resuming, and the command line."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import aligngym.envs  # noqa: F401
from aligngym.agents.cli import main
from aligngym.envs.data import generate as gen
from aligngym.envs.data.dataset import DatasetError, dataset_path, load_dataset
from aligngym.envs.safety.specs import SAFE_TASKS


@pytest.fixture()
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ALIGNGYM_DATA", str(tmp_path))
    return tmp_path


def test_pid_lagrangian_follows_fsrl_rule() -> None:
    pid = gen.PIDLagrangian((0.05, 0.005, 0.1))
    # cost 30 against limit 10: error 20, integral 0.1, derivative 30
    assert pid.update(30.0, 10.0) == pytest.approx(0.05 * 20 + 0.1 + 0.1 * 30)
    # cost 5 against 10: error -5, integral 0.075, derivative max(0, 5 - 30) = 0 -> max(0, -0.25 + 0.075)
    assert pid.update(5.0, 10.0) == 0.0
    assert pid.integral == pytest.approx(0.075)


def test_cost_limit_schedule_sweeps_both_ways() -> None:
    up, down = gen._schedule(0, 80.0), gen._schedule(1, 80.0)
    assert up(0.0) == 0.0 and up(0.5) == pytest.approx(40.0) and up(1.0) == 80.0
    assert down(0.05) == 80.0 and down(0.95) == 0.0
    late = gen._schedule(0, 80.0, begin=0.5)  # a task whose penalty starts half-way sweeps from there
    assert late(0.5) == 0.0 and late(0.7) == pytest.approx(40.0) and late(0.9) == 80.0


def test_recorder_splits_episodes_and_keeps_terminal_observations() -> None:
    rec = gen.EpisodeRecorder(2)
    rec.last_obs = np.array([[0.0], [10.0]])
    rec.record(np.array([[1.0], [2.0]]), np.array([[1.0], [11.0]]), np.array([1.0, 2.0]),
               np.array([False, True]),
               [{"cost": 0.0}, {"cost": 1.0, "terminal_observation": np.array([99.0]), "TimeLimit.truncated": True}])
    rec.record(np.array([[3.0], [4.0]]), np.array([[2.0], [0.0]]), np.array([3.0, 4.0]),
               np.array([True, False]), [{"cost": 1.0, "terminal_observation": np.array([7.0])}, {"cost": 0.0}])
    second, first = rec.take()  # in the order they finished: env 1, then env 0
    assert second["next_observations"][0, 0] == 99.0 and second["timeouts"][-1] and not second["terminals"][-1]
    np.testing.assert_array_equal(first["observations"][:, 0], [0.0, 1.0])
    np.testing.assert_array_equal(first["next_observations"][:, 0], [1.0, 7.0])
    np.testing.assert_array_equal(first["costs"], [0.0, 1.0])
    assert first["terminals"][-1] and not first["timeouts"][-1]
    assert rec.take() == []


def test_ppo_trains_on_the_penalised_reward_with_the_alive_bonus_but_the_data_keep_the_envs() -> None:
    spec = gen.SAFE_TASKS["aligngym/BallRun-v0"]
    recorder, penalty = gen.EpisodeRecorder(64), gen.PIDLagrangian()
    penalty.value = 2.0
    venv = gen._wrap_recording(gen.make_vec_env(spec.env_id, 64, seed=0), recorder, penalty, cost_unit=3.0,
                               alive_bonus=0.5)
    venv.reset()
    for _ in range(spec.max_episode_steps):  # full force along +x: costly (too fast) after a few steps
        _, trained, dones, infos = venv.step(np.tile([1.0, 0.0], (64, 1)))
    episodes = recorder.take()
    assert dones.all() and len(episodes) == 64
    last = np.array([e["rewards"][-1] for e in episodes])  # the env's own rewards, as the data keep them
    costs = np.array([e["costs"][-1] for e in episodes])
    assert costs.max() == 1.0
    np.testing.assert_allclose(trained, last + 0.5 * 3.0 - 2.0 * 3.0 * costs, rtol=1e-5)  # env order


def test_a_tasks_initial_log_std_reaches_ppo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:

    from aligngym.envs.safety.specs import BehaviourTuning

    spec = replace(gen.SAFE_TASKS["aligngym/BallRun-v0"], behaviour=BehaviourTuning(initial_log_std=-1.0))
    made = []
    real = gen._ppo
    monkeypatch.setattr(gen, "_ppo", lambda *a: made.append(real(*a)) or made[-1])
    gen._train_run(spec.env_id, spec, replace(gen.PLANS["tiny"], steps_per_run=512), 0, 0, tmp_path / "p.zip")
    (model,) = made
    assert model.policy.log_std.detach().numpy() == pytest.approx([-1.0, -1.0], abs=0.05)  # 2 small updates


def test_which_tasks_generate_through_the_batched_core() -> None:
    """Ball and Drone tasks batch; Car tasks do not (their recorded datasets were made so: switching
    would change what a seed generates)."""
    for spec in SAFE_TASKS.values():
        if spec.name.startswith(("Ball", "Car", "Drone")):
            venv = gen.make_vec_env(spec.env_id, 1, seed=0)
            assert isinstance(venv, gen.CoreVecEnv) == (not spec.name.startswith("Car")), spec.name
            venv.close()


def test_core_vec_env_times_out_at_the_task_length() -> None:
    venv = gen.make_vec_env("aligngym/BallRun-v0", 3, seed=0)
    assert isinstance(venv, gen.CoreVecEnv)
    venv.reset()
    for step in range(1, 101):
        venv.step_async(np.zeros((3, 2)))
        _, _, dones, infos = venv.step_wait()
        assert all("cost" in info for info in infos)
    assert dones.all() and step == 100 and all(info["TimeLimit.truncated"] for info in infos)


def test_tiny_safe_dataset_is_complete_deterministic_and_resumable(data_home: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.perf_counter()
    (path,) = gen.generate("aligngym/BallCircle-v0", "tiny", seed=0)
    elapsed = time.perf_counter() - started
    assert path == dataset_path("aligngym/BallCircle-v0", "tiny", 0)
    stages = len(list(gen.work_folder("aligngym/BallCircle-v0", "tiny", 0).glob("*.hdf5")))
    # fresh stages are counted once (each stage's time and the total are rounded to 0.1 s)
    assert 0 < load_dataset(path).attrs["seconds"] <= elapsed + 0.05 * (stages + 1)
    env = gym.make("aligngym/BallCircle-v0")
    data = env.unwrapped.get_dataset(size="tiny")  # through the DSRL API, shapes checked
    ds = load_dataset(path)
    assert set(data) >= {"observations", "next_observations", "actions", "rewards", "costs", "terminals", "timeouts"}
    assert data["observations"].shape[1] == 8 and data["actions"].shape[1] == 2
    assert ds.attrs["env_id"] == "aligngym/BallCircle-v0" and ds.attrs["seed"] == 0
    assert ds.episode_costs().max() <= 80 and len(ds.episode_bounds()[0]) == ds.attrs["episodes"]
    assert ds.episode_returns().min() >= ds.attrs["random_return"]  # DSRL's reward window
    assert ds.attrs["max_episode_reward"] == pytest.approx(ds.episode_returns().max(), rel=1e-5)
    assert (data["timeouts"].sum() + data["terminals"].sum()) == ds.attrs["episodes"]
    assert np.abs(data["actions"]).max() <= 1.0
    assert not list((data_home / ".work").glob("*/*.partial"))  # finished runs leave no saves behind
    assert not list((data_home / ".work").glob("*/.lock"))  # nor their lock

    with pytest.raises(DatasetError, match="--force"):
        gen.generate("aligngym/BallCircle-v0", "tiny", seed=0)

    # same seed, fresh work folder -> the same data
    shutil.rmtree(data_home / ".work" / path.stem)
    (again,) = gen.generate("aligngym/BallCircle-v0", "tiny", seed=0, out=data_home / "again.hdf5")
    for key, value in load_dataset(again).arrays.items():
        np.testing.assert_array_equal(value, ds.arrays[key], err_msg=key)

    # resuming: with the stages on disk nothing is trained again and the result is the same
    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished stage was trained again")

    monkeypatch.setattr(gen, "_train_run", no_training)
    monkeypatch.setattr(gen, "_rollouts", no_training)
    (resumed,) = gen.generate("aligngym/BallCircle-v0", "tiny", seed=0, force=True)
    np.testing.assert_array_equal(load_dataset(resumed).arrays["rewards"], ds.arrays["rewards"])
    # the resumed file still reports what its stages cost to make
    assert load_dataset(resumed).attrs["seconds"] >= 0.9 * load_dataset(again).attrs["seconds"] - 0.1


def test_mujoco_safe_task_runs_long_enough_for_whole_episodes(data_home: Path) -> None:
    (path,) = gen.generate("aligngym/SwimmerVelocity-v1", "tiny", seed=1)
    ds = load_dataset(path, env=gym.make("aligngym/SwimmerVelocity-v1").unwrapped)
    assert (ds.episode_lengths() == 1000).all() and len(ds.episode_lengths()) >= 1


def test_tiny_locomotion_kinds(data_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.perf_counter()
    paths = gen.generate("Hopper-v5", "tiny", seed=0)
    elapsed = time.perf_counter() - started
    kinds = {load_dataset(p).attrs["kind"]: load_dataset(p) for p in paths}
    assert set(kinds) == set(gen.LOCOMOTION_KINDS) == {"random", "medium", "expert", "medium-replay",
                                                         "medium-expert", "mixed"}
    assert paths == [dataset_path("Hopper-v5", "tiny", 0, kind) for kind in gen.LOCOMOTION_KINDS]
    assert paths[-1].name == "Hopper-v5-mixed-tiny-s0.hdf5"
    work = data_home / ".work" / "Hopper-v5-tiny-s0"
    recipe = json.loads((work / "recipe.json").read_text())
    assert recipe["learner"] == "SAC" and recipe["plan"] == json.loads(json.dumps(asdict(gen.LOCOMOTION_PLANS["tiny"])))
    replay = load_dataset(work / "run0.hdf5")  # the SAC run: every step it played, in order
    assert replay.attrs["seconds"] <= elapsed and len(replay) <= gen.LOCOMOTION_PLANS["tiny"].steps
    medium, expert, both = kinds["medium"], kinds["expert"], kinds["medium-expert"]
    assert len(both) == len(medium) + len(expert)
    assert len(kinds["random"]) >= 2_000 and "costs" in kinds["random"].arrays
    assert expert.attrs["ref_min_score"] == pytest.approx(-20.272305)
    assert expert.attrs["ref_max_score"] == pytest.approx(3234.3)
    assert expert.attrs["behaviour_expert_return"] >= expert.attrs["behaviour_medium_return"]
    for who in ("expert", "medium"):  # the behaviour policies' D4RL scores, recorded in every file
        assert kinds["mixed"].attrs[f"behaviour_{who}_score"] == pytest.approx(
            gen.d4rl_normalized_score("Hopper-v5", expert.attrs[f"behaviour_{who}_return"]))
    assert expert.attrs["behaviour_steps"] == gen.LOCOMOTION_PLANS["tiny"].steps
    assert gen.d4rl_normalized_score("Hopper-v5", 3234.3) == pytest.approx(100.0)
    assert gen.d4rl_normalized_score("Hopper-v5", -20.272305) == pytest.approx(0.0)
    buffer = kinds["medium-replay"].to_replay_buffer()
    assert len(buffer) == len(kinds["medium-replay"])
    # expert: of the 5 snapshots with the best training returns, the best on 16 fresh episodes
    checkpoints_file = data_home / ".work" / "Hopper-v5-tiny-s0" / "checkpoints.json"
    returns = [ret for _, ret in json.loads(checkpoints_file.read_text())]
    top = sorted(range(len(returns)), key=lambda k: -returns[k])[:5]
    scores = {k: load_dataset(work / f"score{k}.hdf5").episode_returns() for k in top}
    assert {len(v) for v in scores.values()} == {16} and len(list(work.glob("score*.hdf5"))) == 5
    best = max(top, key=lambda k: scores[k].mean())
    assert expert.attrs["behaviour_expert_return"] == pytest.approx(scores[best].mean())
    # medium: the checkpoint nearest a third of the way from random to the expert's fresh score
    random_return = expert.attrs["behaviour_random_return"]
    assert random_return == pytest.approx(np.mean(kinds["random"].episode_returns()))
    target = random_return + (scores[best].mean() - random_return) / 3
    assert expert.attrs["behaviour_medium_return"] == min(returns[:best + 1], key=lambda r: abs(r - target))
    # medium-replay: every training episode up to the medium checkpoint, and no later one
    medium_at = min(range(best + 1), key=lambda i: abs(returns[i] - target))
    episodes_then = json.loads(checkpoints_file.read_text())[medium_at][0]
    assert len(kinds["medium-replay"].episode_returns()) == episodes_then
    np.testing.assert_array_equal(kinds["medium-replay"].arrays["observations"],
                                  replay.arrays["observations"][:len(kinds["medium-replay"])])
    # the snapshots are plain weights (read without pickles); medium and expert are played by them
    snapshots = sorted(work.glob("run0_*.pt"))
    assert len(snapshots) == len(returns) >= 3
    assert set(torch.load(snapshots[0], weights_only=True)) == {"net", "actor"}
    assert (work / f"medium{medium_at}.hdf5").is_file() and (work / f"expert{best}.hdf5").is_file()
    # mixed: the first 90 % of the plan's transitions from the random set, then the first 10 % from the
    # expert set; the episodes cut where a share ends become timeouts
    mixed, random, n = kinds["mixed"], kinds["random"], gen.LOCOMOTION_PLANS["tiny"].transitions
    assert gen.MIXED_EXPERT_SHARE == 0.1 and len(mixed) == n == 2_000
    assert (mixed.attrs["mixed_random_transitions"], mixed.attrs["mixed_expert_transitions"]) == (1_800, 200)
    for key in ("observations", "actions", "rewards", "next_observations", "terminals"):
        np.testing.assert_array_equal(mixed.arrays[key][:1_800], random.arrays[key][:1_800], err_msg=key)
        np.testing.assert_array_equal(mixed.arrays[key][1_800:], expert.arrays[key][:200], err_msg=key)
    ends = mixed.arrays["terminals"] | mixed.arrays["timeouts"]
    assert ends[1_799] and ends[1_999]  # no episode spans the two sources
    for rows, source in ((slice(0, 1_800), random), (slice(1_800, 2_000), expert)):
        inside = slice(rows.start, rows.stop - 1)  # within a share, the episode ends are the source's
        np.testing.assert_array_equal(ends[inside], (source.arrays["terminals"] | source.arrays["timeouts"])[
            :rows.stop - rows.start - 1])
    assert not random.arrays["timeouts"].any()  # random Hopper episodes all fall, long before the time limit
    assert mixed.arrays["timeouts"][1_799] == (not random.arrays["terminals"][1_799])  # a cut one is truncated
    starts, _ = mixed.episode_bounds()
    from_expert = starts >= 1_800
    assert from_expert.sum() >= 1 and (~from_expert).sum() > from_expert.sum()  # mostly random episodes
    expert_returns = mixed.episode_returns()[from_expert]
    assert expert_returns.mean() > mixed.episode_returns()[~from_expert].mean()
    assert mixed.attrs["ref_min_score"] == pytest.approx(-20.272305)
    # aligngym data info shows every kind with its episodes' D4RL scores
    assert main(["data", "info", str(paths[-1])]) == 0
    out = capsys.readouterr().out
    assert "kind: mixed" in out and "mixed_expert_share: 0.1" in out
    scores = gen.d4rl_normalized_score("Hopper-v5", mixed.episode_returns())
    assert (f"D4RL score of the episodes (x100, Hopper-v5's reference returns; v5 robots, compare with D4RL's "
            f"figures loosely): min {scores.min():.1f}  mean {scores.mean():.1f}  max {scores.max():.1f}") in out
    assert main(["data", "plot", str(paths[-1]), "--out", str(data_home / "mixed.png")]) == 0  # a return histogram
    assert (data_home / "mixed.png").stat().st_size > 1000
    # a run that learned nothing makes no medium or expert data: its snapshots score as random actions do
    checkpoints_file.write_text(json.dumps([[n, -1e6] for n, _ in json.loads(checkpoints_file.read_text())]))
    for k in range(5):  # the candidates now: the first five snapshots
        shutil.copy(work / "random.hdf5", work / f"score{k}.hdf5")
    with pytest.raises(DatasetError, match="does not beat uniform random actions"):
        gen.generate("Hopper-v5", "tiny", seed=0, force=True)


def test_tiny_halfcheetah_learns_past_random(data_home: Path) -> None:
    """HalfCheetah never terminates: its episodes last 1000 steps, three in the tiny SAC run."""
    paths = gen.generate("HalfCheetah-v5", "tiny", seed=0)
    kinds = {load_dataset(p).attrs["kind"]: load_dataset(p) for p in paths}
    assert set(kinds) == set(gen.LOCOMOTION_KINDS)
    replay = load_dataset(data_home / ".work" / "HalfCheetah-v5-tiny-s0" / "run0.hdf5")
    assert len(replay) == gen.LOCOMOTION_PLANS["tiny"].steps == 3_000 and (replay.episode_lengths() == 1_000).all()
    for kind in ("random", "medium", "expert"):
        assert (kinds[kind].episode_lengths() == 1_000).all(), kind
    expert = kinds["expert"]
    assert expert.attrs["behaviour_expert_return"] > expert.attrs["behaviour_random_return"]
    mixed = kinds["mixed"]
    assert len(mixed) == 2_000 and mixed.arrays["timeouts"][1_799] and mixed.arrays["timeouts"][-1]
    np.testing.assert_array_equal(mixed.episode_lengths(), [1_000, 800, 200])  # cut to the shares


def test_d4rls_reference_returns_are_defined_once() -> None:
    from aligngym.envs.data import dataset

    assert gen.LOCOMOTION is dataset.D4RL_REFERENCE_RETURNS and gen.LOCOMOTION_KINDS is dataset.LOCOMOTION_KINDS
    assert gen.d4rl_normalized_score is dataset.d4rl_normalized_score
    assert gen.d4rl_normalized_score("Walker2d-v5", 4592.3) == pytest.approx(100.0)


def test_the_first_transitions_end_in_a_timeout_where_they_cut_an_episode() -> None:
    from aligngym.envs.data.dataset import OfflineDataset

    terminals = np.array([0, 0, 1, 0, 0, 0], bool)
    arrays = {"observations": np.arange(6, dtype=np.float32)[:, None], "rewards": np.ones(6, np.float32),
              "terminals": terminals, "timeouts": np.zeros(6, bool)}
    ds = OfflineDataset(arrays)
    head = gen.first_transitions(ds, 5)
    assert head.arrays["timeouts"].tolist() == [False, False, False, False, True]
    np.testing.assert_array_equal(head.episode_lengths(), [3, 2])
    assert gen.first_transitions(ds, 3).arrays["timeouts"].tolist() == [False] * 3  # a whole episode stays terminal
    assert not ds.arrays["timeouts"].any()  # the source is untouched


def test_one_dataset_is_made_by_one_process_at_a_time(data_home: Path) -> None:
    import os
    import socket

    from aligngym.envs.data.dataset import _boot_id

    root = gen.work_folder("aligngym/BallCircle-v0", "tiny", 0)
    assert root == data_home / ".work" / "BallCircle-v0-tiny-s0"
    root.mkdir(parents=True)
    (root / "run0.hdf5").write_text("a stage being written")
    (root / ".lock").write_text(f"{os.getpid()} {socket.gethostname()} {_boot_id()}")  # a live maker
    with pytest.raises(DatasetError, match="being generated by process"):
        gen.generate("BallCircle", "tiny", seed=0)
    assert (root / "run0.hdf5").read_text() == "a stage being written"  # nothing touched


def test_unknown_task_and_size_are_refused(data_home: Path) -> None:
    with pytest.raises(DatasetError, match="known tasks"):
        gen.generate("aligngym/Nope-v0", "tiny")
    with pytest.raises(DatasetError, match="size"):
        gen.generate("aligngym/BallRun-v0", "huge")


def test_cli_data_commands(data_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "generate", "BallRun-v0", "--size", "tiny", "--seed", "2"]) == 0  # a short name works
    path = dataset_path("aligngym/BallRun-v0", "tiny", 2)
    assert f"wrote {path}" in capsys.readouterr().out
    assert main(["data", "info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "episodes:" in out and "episode cost" in out and "aligngym/BallRun-v0" in out
    assert main(["data", "plot", str(path), "--out", str(data_home / "scatter.png")]) == 0
    assert (data_home / "scatter.png").stat().st_size > 1000
    capsys.readouterr()
    assert main(["data", "plot", str(path), "--out", str(data_home)]) == 2  # a folder
    assert "it is a folder (--out names the picture's file" in capsys.readouterr().err
    assert main(["data", "plot", str(path), "--out", str(data_home / "scatter.png" / "x.png")]) == 2
    assert "scatter.png is a file, not a folder" in capsys.readouterr().err
    assert main(["data", "plot", str(path), "--out", str(data_home / "scatter.jpg")]) == 2
    assert "name a .png file" in capsys.readouterr().err and not (data_home / "scatter.jpg").exists()
    assert main(["data", "info", str(data_home / "missing.hdf5")]) == 2
    assert "missing" in capsys.readouterr().err
    (data_home / "junk.hdf5").write_bytes(b"not a dataset")
    assert main(["data", "info", str(data_home / "junk.hdf5")]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err


def test_tuned_behaviour_runs_normalise_and_a_new_recipe_redoes_the_stages(data_home: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:

    from aligngym.envs.safety.specs import BehaviourTuning

    spec = gen.SAFE_TASKS["aligngym/DroneCircle-v0"]
    assert spec.behaviour.normalize and spec.behaviour.penalty_start > 0
    (path,) = gen.generate(spec.env_id, "tiny", seed=0)
    work = data_home / ".work" / path.stem
    with np.load(work / "run0_obs.npz") as stats:
        mean, var, eps = stats["mean"], stats["var"], stats["epsilon"]
    assert not np.allclose(var, 1.0)  # statistics were gathered
    obs = np.ones((2, mean.size), np.float32)
    np.testing.assert_allclose(gen._normalizer(work / "run0.zip")(obs),
                               np.clip((obs - mean) / np.sqrt(var + eps), -10, 10), rtol=1e-5)
    assert gen._normalizer(None)(obs) is obs  # uniform actions: nothing to normalise

    trained = []
    real = gen._train_run
    # each behaviour run starts while the folder is still claimed (a new recipe clears the rest of it)
    monkeypatch.setattr(gen, "_train_run", lambda *a, **k: trained.append((work / ".lock").is_file()) or real(*a, **k))
    gen.generate(spec.env_id, "tiny", seed=0, force=True)
    assert not trained  # same recipe: every stage reused
    monkeypatch.setitem(gen.SAFE_TASKS, spec.env_id, replace(spec, behaviour=BehaviourTuning()))
    (work / "run7.partial").mkdir()  # an unfinished run's saves are stale too
    gen.generate(spec.env_id, "tiny", seed=0, force=True)
    assert trained and all(trained) and not (work / "run0_obs.npz").exists()  # stale stages were not reused
    assert not (work / "run7.partial").exists()
    # alive_bonus and initial_log_std came later: a recipe without them is recorded as before, so
    # older stages stay valid
    assert json.loads((work / "recipe.json").read_text())["behaviour"] == {
        "penalty_start": 0.0, "normalize": False, "steps_scale": 1.0}


def test_an_interrupted_behaviour_run_goes_on_from_its_last_save(data_home: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # BallCircle (whose episodes cost) with DroneCircle's tuning uses every part of a save:
    # normalised inputs and rewards, and a penalty from 40 % of the run (tiny: 8 rollouts of 512
    # steps, a save at the start of rollouts 2..8)

    spec = replace(gen.SAFE_TASKS["aligngym/BallCircle-v0"], behaviour=gen.SAFE_TASKS["aligngym/DroneCircle-v0"].behaviour)
    monkeypatch.setitem(gen.SAFE_TASKS, spec.env_id, spec)
    rollout = gen.PLANS["tiny"].n_steps * gen.PLANS["tiny"].n_envs
    steps = int(gen.PLANS["tiny"].steps_per_run * spec.behaviour.steps_scale)
    assert steps == 8 * rollout and steps >= 2 * gen.PLANS["tiny"].n_envs * spec.max_episode_steps
    updates, penalties, saves = [], [], []
    real_train, real_save, real_learn = gen.PPO.train, gen.PartialRun.save, gen.PPO.learn
    monkeypatch.setattr(gen.PPO, "train", lambda model: updates.append(model.num_timesteps) or real_train(model))

    class Recorded(gen.PIDLagrangian):
        def __init__(self) -> None:
            super().__init__()
            penalties.append(self)

    monkeypatch.setattr(gen, "PIDLagrangian", Recorded)

    def save_then_stop(self: gen.PartialRun, state: dict, new: list) -> int:
        saves.append(len(new))
        parts = real_save(self, state, new)
        if len(saves) == 5:
            raise KeyboardInterrupt  # as a user's Ctrl-C, after the fifth save
        return parts

    monkeypatch.setattr(gen.PartialRun, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        gen.generate(spec.env_id, "tiny", seed=0)
    work = data_home / ".work" / "BallCircle-v0-tiny-s0"
    assert not (work / "run0.hdf5").exists()
    assert updates == [k * rollout for k in range(1, 6)]  # the save at rollout 6's start holds 5 updates
    state = gen.PartialRun(work / "run0.partial").load()
    assert state["saves"] == 5 and state["timesteps"] == 5 * rollout and state["seconds"] > 0
    assert len(state["episodes"]) == sum(saves) > 0
    assert state["penalty"] == (penalties[0].integral, penalties[0].previous_cost, penalties[0].value)
    assert penalties[0].integral > 0  # the penalty acted (from rollout 4 on) before the save
    assert state["obs_rms"]["count"] > 5 * rollout  # the statistics gathered, not fresh ones

    monkeypatch.setattr(gen.PartialRun, "save", real_save)
    resumed = []

    def learn(model: gen.PPO, total_timesteps: int, **kwargs: object) -> gen.PPO:
        weights, adam = model.policy.state_dict(), model.policy.optimizer.state_dict()["state"]
        env = model.get_env()
        resumed.append(dict(
            at=(model.num_timesteps, total_timesteps),
            weights=all(torch.equal(weights[k], v) for k, v in state["policy"].items()),
            adam=all(torch.equal(adam[i]["exp_avg"], v["exp_avg"]) for i, v in state["optimizer"]["state"].items()),
            stats=all(np.array_equal(getattr(env, name).var, state[name]["var"].numpy()) for name in ("obs_rms", "ret_rms")),
            penalty=(penalties[-1].integral, penalties[-1].value) == (state["penalty"][0], state["penalty"][2])))
        return real_learn(model, total_timesteps, **kwargs)

    monkeypatch.setattr(gen.PPO, "learn", learn)
    (path,) = gen.generate(spec.env_id, "tiny", seed=0)
    assert resumed == [dict(at=(5 * rollout, 3 * rollout), weights=True, adam=True, stats=True, penalty=True)]
    assert updates[5:] == [k * rollout for k in range(6, 9)]  # every update made once: 8 as uninterrupted
    run0 = load_dataset(work / "run0.hdf5")
    episodes = run0.trajectories()
    for old, new in zip(state["episodes"], episodes):  # the saved episodes come first, once
        np.testing.assert_array_equal(old["observations"], new["observations"])
    later = np.concatenate([e["observations"] for e in episodes[len(state["episodes"]):]])
    assert len(later) > 0 and not np.isin(later[:, 0], np.concatenate(
        [e["observations"][:, 0] for e in state["episodes"]])).all()
    assert run0.attrs["seconds"] >= state["seconds"]  # the interrupted call's work is counted
    assert not (work / "run0.partial").exists() and load_dataset(path).attrs["episodes"] > 0


def test_saving_progress_does_not_change_an_uninterrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = gen.SAFE_TASKS["aligngym/BallCircle-v0"]
    with_saves = gen._train_run(spec.env_id, spec, gen.PLANS["tiny"], 0, 0, tmp_path / "a" / "run0.zip")
    assert (tmp_path / "a" / "run0.partial" / "state.pt").is_file()
    monkeypatch.setattr(gen.PartialRun, "save", lambda self, state, new: state["parts"])
    (tmp_path / "b").mkdir()
    without = gen._train_run(spec.env_id, spec, gen.PLANS["tiny"], 0, 0, tmp_path / "b" / "run0.zip")
    assert len(with_saves) == len(without) > 0
    for a, b in zip(with_saves, without):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_a_damaged_save_is_set_aside_and_the_run_starts_again(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    partial = gen.PartialRun(tmp_path / "run0.partial")
    partial.root.mkdir()
    (partial.root / "state.pt").write_bytes(b"not a save")
    assert partial.seconds() == 0.0 and partial.load() is None
    assert "cannot resume" in capsys.readouterr().out and not partial.root.exists()
    assert (tmp_path / "run0.partial.unreadable" / "state.pt").read_bytes() == b"not a save"  # nothing is lost
    partial.discard()
    assert not list(tmp_path.iterdir())
    assert gen.PartialRun(tmp_path / "nothing").load() is None


def test_a_save_that_does_not_fit_the_run_is_set_aside(data_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = gen.SAFE_TASKS["aligngym/DroneCircle-v0"]
    policy = data_home / "run0.zip"
    gen.PartialRun(policy.with_suffix(".partial")).save(
        {"saves": 1, "parts": 0, "seconds": 1.0, "timesteps": 512, "policy": {"bogus": torch.zeros(1)}}, [])
    episodes = gen._train_run(spec.env_id, spec, gen.PLANS["tiny"], 0, 0, policy)
    assert episodes and "cannot resume" in capsys.readouterr().out
    assert (data_home / "run0.partial.unreadable" / "state.pt").is_file()


def test_out_paths_with_the_same_name_do_not_share_stages_across_tasks(data_home: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # the work folder is named after the task, size and seed, not --out's stem: BallRun's stages must
    # not become CarRun's data (both have 7-d observations and 2-d actions) nor be deleted by it
    trained = []
    real = gen._train_run
    monkeypatch.setattr(gen, "_train_run", lambda env_id, *a, **k: trained.append(env_id) or real(env_id, *a, **k))
    (ball,) = gen.generate("aligngym/BallRun-v0", "tiny", seed=0, out=data_home / "a" / "ds.hdf5")
    runs = len(trained)
    (car,) = gen.generate("aligngym/CarRun-v0", "tiny", seed=0, out=data_home / "b" / "ds.hdf5")
    assert trained[runs:] and set(trained[runs:]) == {"aligngym/CarRun-v0"}
    assert load_dataset(car).attrs["env_id"] == "aligngym/CarRun-v0"
    assert not np.array_equal(load_dataset(ball).arrays["observations"], load_dataset(car).arrays["observations"])
    runs = len(trained)  # BallRun's stages are still there for another file of it
    (other,) = gen.generate("aligngym/BallRun-v0", "tiny", seed=0, out=data_home / "c" / "ds.hdf5")
    assert len(trained) == runs
    np.testing.assert_array_equal(load_dataset(other).arrays["observations"], load_dataset(ball).arrays["observations"])


def test_filter_drops_costly_and_poor_episodes_and_says_when_none_is_left() -> None:
    spec = gen.SAFE_TASKS["aligngym/DroneCircle-v0"]  # max_cost 100
    returns = np.array([50.0, 300.0, 5.0, 200.0, 250.0])
    costs = np.array([0.0, 150.0, 0.0, 40.0, 100.0])
    assert sorted(gen._filter(spec, returns, costs, 10.0, 100, 0)) == [0, 3, 4]
    with pytest.raises(DatasetError, match="none of the 5 collected DroneCircle episodes"):
        gen._filter(spec, returns, costs, 400.0, 100, 0)


@pytest.mark.parametrize("env_id", ["aligngym/BallCircle-v0", "Hopper-v5"])
def test_an_output_that_cannot_be_written_is_refused_before_any_training(env_id, tmp_path, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking --out")

    monkeypatch.setattr(gen, "_train_run", no_training)
    monkeypatch.setattr(gen, "_train_sac", no_training)
    monkeypatch.setenv("ALIGNGYM_DATA", str(tmp_path / "data"))
    (tmp_path / "a_file").write_text("x")
    bad = [(tmp_path / "a_file" / "x.hdf5", "a_file is a file, not a folder"),
           (tmp_path / "a_file" / "deeper" / "x.hdf5", "a_file is a file, not a folder")]
    if env_id in SAFE_TASKS:  # --out names a file; a locomotion task's --out is a folder
        bad.append((tmp_path, "it is a folder \\(a safe task's --out names the dataset file"))
    for out, says in bad:
        with pytest.raises(DatasetError, match=says):
            gen.generate(env_id, "tiny", seed=0, out=out, force=True)
    with pytest.raises(DatasetError, match="seed must be an integer >= 0, got -1"):
        gen.generate(env_id, "tiny", seed=-1, out=tmp_path / "x.hdf5")


# ---------------------------------------------------------------------- locomotion: the SAC behaviour run
def test_the_locomotion_behaviour_learner_has_d4rls_sac_settings() -> None:
    venv = gen.make_vec_env("Hopper-v5", 1, 0)
    plan = gen.LOCOMOTION_PLANS["full"]
    assert (plan.steps, plan.transitions, plan.batch, plan.net) == (1_000_000, 1_000_000, 256, (256, 256))
    model = gen._sac(venv, plan, 0)
    assert model.learning_rate == 3e-4 and model.batch_size == 256 and model.tau == 0.005 and model.gamma == 0.99
    assert model.train_freq.frequency == 1 and model.gradient_steps == 1 and model.learning_starts == plan.warmup
    assert model.replay_buffer.buffer_size == plan.steps and model.target_entropy == -3.0  # -|A|, Hopper's 3 joints
    layers = [m.out_features for m in model.actor.latent_pi if isinstance(m, torch.nn.Linear)]
    assert layers == [256, 256] and len(model.critic.q_networks) == 2


def test_an_interrupted_sac_run_goes_on_from_its_last_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = replace(gen.LOCOMOTION_PLANS["tiny"], steps=1_000, warmup=200, checkpoint_every=100)
    policy = tmp_path / "run0.pt"
    saves, real_save = [], gen.PartialRun.save

    def save_then_stop(self: gen.PartialRun, state: dict, new: list) -> int:
        saves.append(state["timesteps"])
        parts = real_save(self, state, new)
        if len(saves) == 4:
            raise KeyboardInterrupt  # as a user's Ctrl-C, after the fourth save
        return parts

    monkeypatch.setattr(gen.PartialRun, "save", save_then_stop)
    checkpoints: list[tuple[int, float]] = []
    with pytest.raises(KeyboardInterrupt):
        gen._train_sac("Hopper-v5", plan, 0, policy, checkpoints)
    assert saves == [100, 200, 300, 400]  # SAVES_PER_RUN = 10 saves over 1000 steps
    state = gen.PartialRun(policy.with_suffix(".partial")).load()
    assert state["timesteps"] == 400 and [tuple(c) for c in state["checkpoints"]] == checkpoints != []
    assert sum(len(e["rewards"]) for e in state["episodes"]) <= 400
    monkeypatch.setattr(gen.PartialRun, "save", real_save)

    resumed = []
    real_learn = gen.SAC.learn

    def learn(model: gen.SAC, total_timesteps: int, **kwargs: object) -> gen.SAC:
        weights = model.policy.state_dict()
        buffer, n = model.replay_buffer, sum(len(e["rewards"]) for e in state["episodes"])
        resumed.append(dict(
            at=(model.num_timesteps, total_timesteps),
            weights=all(torch.equal(weights[k], v) for k, v in state["policy"].items()),
            adam=all(torch.equal(model.critic.optimizer.state_dict()["state"][i]["exp_avg"], v["exp_avg"])
                     for i, v in state["critic_optimizer"]["state"].items()),
            alpha=torch.equal(model.log_ent_coef, state["log_ent_coef"]),
            buffer=(buffer.pos == n and np.array_equal(buffer.observations[:n, 0], np.concatenate(
                [e["observations"] for e in state["episodes"]])) and not buffer.observations[n:].any())))
        return real_learn(model, total_timesteps, **kwargs)

    monkeypatch.setattr(gen.SAC, "learn", learn)
    episodes = gen._train_sac("Hopper-v5", plan, 0, policy, checkpoints)
    assert resumed == [dict(at=(400, 600), weights=True, adam=True, alpha=True, buffer=True)]
    assert checkpoints[:len(state["checkpoints"])] == [tuple(c) for c in state["checkpoints"]]
    assert len(checkpoints) > len(state["checkpoints"])  # snapshots go on after the resume
    assert len(list(tmp_path.glob("run0_*.pt"))) == len(checkpoints) and policy.is_file()
    for old, new in zip(state["episodes"], episodes):  # the saved episodes come first, once
        np.testing.assert_array_equal(old["observations"], new["observations"])
    assert len(episodes) > len(state["episodes"])


def test_saving_progress_does_not_change_an_uninterrupted_sac_run(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    plan = replace(gen.LOCOMOTION_PLANS["tiny"], steps=600, warmup=200, checkpoint_every=100)
    runs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        checkpoints: list[tuple[int, float]] = []
        runs.append((gen._train_sac("Hopper-v5", plan, 3, tmp_path / name / "run0.pt", checkpoints), checkpoints))
        monkeypatch.setattr(gen.PartialRun, "save", lambda self, state, new: state["parts"])  # b: no saves
    (with_saves, marks_a), (without, marks_b) = runs
    assert marks_a == marks_b and len(with_saves) == len(without) > 0
    for a, b in zip(with_saves, without):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    snapshot = torch.load(tmp_path / "a" / "run0.pt", weights_only=True)
    assert all(torch.equal(v, torch.load(tmp_path / "b" / "run0.pt", weights_only=True)["actor"][k])
               for k, v in snapshot["actor"].items())
