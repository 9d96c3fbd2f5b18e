"""Offline agents on D4RL-style locomotion data: ``dataset.kind`` picks the generated file, a real
D4RL file trains through ``dataset.path`` with the same config, and evaluation reports D4RL's
normalised score (``eval/normalized_return`` in [0, 1], ``eval/d4rl_score`` x 100) and no cost scores."""

from __future__ import annotations

import typing
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest

from aligngym.agents.config import ConfigError, validate
from aligngym.agents.evaluate import evaluate
from aligngym.agents.offline import LocomotionKind, OfflineConfig, evaluate_policy, load_data, make_env
from aligngym.agents.train import train
from aligngym.envs.data.dataset import LOCOMOTION_KINDS, DatasetError

# D4RL's reference returns (d4rl/infos.py REF_MIN_SCORE / REF_MAX_SCORE), written out by hand
HOPPER_RANDOM, HOPPER_EXPERT = -20.272305, 3234.3
REFERENCE = {"Hopper-v5": (HOPPER_RANDOM, HOPPER_EXPERT), "HalfCheetah-v5": (-280.178953, 12135.0),
             "Walker2d-v5": (1.629008, 4592.3)}


def _config(task: str = "Hopper-v5", run_root: Path | None = None, smoke: bool = True,
            **dataset: object) -> OfflineConfig:
    data: dict[str, object] = {"agent": "bc_all", "task": task, "device": "cpu", "show_progress": False,
                               "dataset": dataset}
    if run_root is not None:
        data["run_root"] = str(run_root)
    config = validate(data, "test")
    return config.smoke() if smoke else config


def test_the_config_offers_the_generators_kinds() -> None:
    assert typing.get_args(LocomotionKind) == LOCOMOTION_KINDS
    assert "mixed" in LOCOMOTION_KINDS


def test_a_kind_names_the_generated_file_and_must_fit_the_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIGNGYM_DATA", str(tmp_path / "data"))
    env = make_env(_config())
    try:
        with pytest.raises(DatasetError, match=r"Hopper-v5-medium-replay-tiny-s0\.hdf5 is missing; generate it with: "
                                               r"aligngym data generate Hopper-v5 --size tiny --seed 0"):
            load_data(_config(kind="medium-replay"), env)
        with pytest.raises(DatasetError, match=r"Hopper-v5-mixed-full-s2\.hdf5 is missing"):
            load_data(_config(smoke=False, kind="mixed", seed=2), env)
    finally:
        env.close()
    runs = tmp_path / "runs"
    # no kind on a locomotion task, a kind on a safe task: refused before a run folder exists
    with pytest.raises(ConfigError, match=r"dataset\.kind: Hopper-v5's generated data come in kinds; name one "
                                          r"of random, medium, expert, medium-replay, medium-expert, mixed"):
        train(_config(run_root=runs))
    with pytest.raises(ConfigError, match=r"dataset\.kind: aligngym/BallCircle-v0's datasets have no kinds.*remove "
                                          r"dataset\.kind"):
        train(_config("aligngym/BallCircle-v0", run_root=runs, kind="medium"))
    assert not runs.exists()
    with pytest.raises(ConfigError, match=r"dataset\.kind.*'medium-expert' or 'mixed'.*got 'meduim'"):
        _config(kind="meduim")


# ---------------------------------------------------------------------- D4RL scores
def test_evaluation_scores_each_episode_on_d4rls_scale(tmp_path: Path, linear_policy) -> None:
    config = _config(kind="medium")
    result = evaluate_policy(config, linear_policy(11, 3), episodes=3, seed=0)
    returns = np.array(result["episode_returns"])
    by_hand = np.mean(100 * (returns - HOPPER_RANDOM) / (HOPPER_EXPERT - HOPPER_RANDOM))
    assert result["eval/d4rl_score"] == pytest.approx(by_hand, rel=1e-12)
    assert result["eval/normalized_return"] == pytest.approx(by_hand / 100, rel=1e-12)
    assert "eval/normalized_cost" not in result and "safe" not in result  # Hopper has no costs
    # a task with neither kind of score gets none
    plain = validate({"agent": "bc_all", "task": "Pendulum-v1", "device": "cpu"}, "test")
    assert not {k for k in evaluate_policy(plain, linear_policy(3, 1), 1, 0) if "normalized" in k or "d4rl" in k}


@pytest.mark.parametrize(("task", "kind"), [("Hopper-v5", "medium"), ("HalfCheetah-v5", "mixed"),
                                            ("Walker2d-v5", "medium-replay")])
def test_bc_all_trains_on_tiny_locomotion_data_and_logs_d4rl_scores(tiny_locomotion_data, tmp_path, scalars,
                                                                    task, kind):
    run_dir = train(_config(task, run_root=tmp_path, kind=kind))
    assert "kind: " + kind in (run_dir / "config.yaml").read_text()
    logged = scalars(run_dir)
    assert [step for step, _ in logged["eval/d4rl_score"]] == [2, 4]
    assert "eval/normalized_cost" not in logged
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    assert "eval/reward_cost" not in events.Tags()["images"]  # no cost plane without costs
    ref_min, ref_max = REFERENCE[task]
    for (_, ret), (_, norm), (_, score) in zip(logged["eval/return"], logged["eval/normalized_return"],
                                               logged["eval/d4rl_score"]):
        assert score == pytest.approx(100 * (ret - ref_min) / (ref_max - ref_min), rel=1e-5)
        assert norm == pytest.approx(score / 100, rel=1e-6)
    result = evaluate(run_dir, episodes=1)  # from the run folder alone
    assert result["eval/d4rl_score"] == pytest.approx(
        100 * (result["eval/return"] - ref_min) / (ref_max - ref_min), rel=1e-9)
    assert "eval/normalized_cost" not in result


def _d4rl_file(path: Path, transitions: int = 600) -> Path:
    """A small file in D4RL's own layout (hopper-medium-v2.hdf5's keys): Hopper played with uniform random
    actions; no ``costs``, no attributes, ``infos/*`` per transition and ``metadata/*`` besides."""
    env = gym.make("Hopper-v5")
    rng = np.random.default_rng(0)
    rows: dict[str, list] = {k: [] for k in ("observations", "actions", "rewards", "next_observations",
                                              "terminals", "timeouts", "infos/qpos")}
    obs, _ = env.reset(seed=0)
    while len(rows["rewards"]) < transitions:
        action = rng.uniform(-1, 1, 3).astype(np.float32)
        qpos = env.unwrapped.data.qpos.copy()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for key, value in (("observations", obs), ("actions", action), ("rewards", reward),
                           ("next_observations", next_obs), ("terminals", terminated),
                           ("timeouts", truncated), ("infos/qpos", qpos)):
            rows[key].append(value)
        obs = env.reset()[0] if terminated or truncated else next_obs
    env.close()
    with h5py.File(path, "w") as file:
        for key, values in rows.items():
            dtype = bool if key in ("terminals", "timeouts") else np.float32
            file.create_dataset(key, data=np.array(values, dtype=dtype))
        file["infos/action_log_probs"] = np.zeros(transitions, np.float32)
        file["metadata/algorithm"] = "SAC"
        file["metadata/policy/fc0/weight"] = np.zeros((256, 11), np.float32)
    return path


def test_a_d4rl_file_trains_through_dataset_path_with_the_same_config(tmp_path: Path, scalars) -> None:
    d4rl = _d4rl_file(tmp_path / "hopper-medium-v2.hdf5")
    run_dir = train(_config(run_root=tmp_path / "runs", kind="medium", path=str(d4rl)))  # kind: only a label now
    env = make_env(_config(kind="medium"))
    try:
        data = load_data(_config(path=str(d4rl)), env)  # with a path, no kind is needed
    finally:
        env.close()
    assert len(data) == 600 and "costs" not in data.arrays and data.attrs["metadata/algorithm"] == "SAC"
    logged = scalars(run_dir)
    (_, ret), (_, score) = logged["eval/return"][-1], logged["eval/d4rl_score"][-1]
    assert score == pytest.approx(100 * (ret - HOPPER_RANDOM) / (HOPPER_EXPERT - HOPPER_RANDOM), rel=1e-5)
    assert np.isfinite(evaluate(run_dir, episodes=1)["eval/normalized_return"])
