"""The offline agents' evaluation (tianshou's Collector over a vector env) and what a run logs of it:
per-episode records equal to a plain loop's, the default schedule, progress bars, TensorBoard tags."""

from __future__ import annotations

import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tianshou.data import Batch
from tqdm import tqdm

from aligngym.agents import offline
from aligngym.agents.config import ConfigError, validate
from aligngym.agents.evaluate import evaluate
from aligngym.agents.offline import OfflineConfig, evaluate_policy, make_env, play_episodes
from aligngym.agents.train import train

BALL_CIRCLE = "aligngym/BallCircle-v0"


def _config(agent: str, task: str = BALL_CIRCLE, run_root: Path | None = None, smoke: bool = False,
            **fields: object) -> OfflineConfig:
    data = {"agent": agent, "task": task, "device": "cpu", "show_progress": False}
    if run_root is not None:
        data["run_root"] = str(run_root)
    config = validate(data, "test")
    if smoke:
        config = config.smoke()
    return config.model_copy(update=fields)


def _manual(config: OfflineConfig, policy: torch.nn.Module, episodes: int, seed: int) -> dict[str, np.ndarray]:
    """One env, one episode after the other, every step's reward and info summed by hand."""
    env = make_env(config)
    out: dict[str, list[float]] = {"return": [], "length": [], "cost": [], "cost_outside_bounds": []}
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        sums = dict.fromkeys(out, 0.0)
        done = False
        while not done:
            act = policy.map_action(policy(Batch(obs=obs[None])).act.numpy())[0]
            obs, reward, terminated, truncated, info = env.step(act)
            sums["return"] += float(reward)
            sums["length"] += 1
            sums["cost"] += float(info["cost"])
            sums["cost_outside_bounds"] += float(info["cost_outside_bounds"])
            done = terminated or truncated
        for key, value in sums.items():
            out[key].append(value)
    env.close()
    return {key: np.array(values) for key, values in out.items()}


@pytest.mark.parametrize("task", [BALL_CIRCLE, "aligngym/CarRun-v0"])
def test_collector_evaluation_equals_a_plain_loop(monkeypatch, linear_policy, task):
    """Five episodes in chunks of two, through tianshou's Collector: each episode's return, cost (every
    step's info["cost"], the last one's included), other cost parts and length are those of a plain
    loop over one env with the same reset seeds."""
    collects = []
    real = offline.Collector.collect
    monkeypatch.setattr(offline.Collector, "collect", lambda self, **kw: collects.append(kw) or real(self, **kw))
    monkeypatch.setattr(offline, "EVAL_CHUNK", 2)
    config = _config("bc_all", task, cost_limit=100.0)
    env = make_env(config)
    policy = linear_policy(env.observation_space.shape[0], env.action_space.shape[0])
    expected = _manual(config, policy, 5, seed=7)
    assert expected["cost"].sum() > 0, "the check needs episodes with costs"
    played = play_episodes(config, policy, 5, seed=7)
    assert [c["n_episode"] for c in collects] == [2, 2, 1]
    np.testing.assert_array_equal(played.returns, expected["return"])
    np.testing.assert_array_equal(played.costs, expected["cost"])
    np.testing.assert_array_equal(played.info["cost_outside_bounds"], expected["cost_outside_bounds"])
    np.testing.assert_array_equal(played.lengths, expected["length"])
    result = evaluate_policy(config, policy, 5, seed=7)
    assert result["episode_returns"] == expected["return"].tolist()
    assert result["episode_costs"] == expected["cost"].tolist()
    assert result["eval/cost"] == pytest.approx(expected["cost"].mean())
    assert result["eval/length"] == expected["length"].mean()
    assert result["eval/unsafe_episodes"] == np.mean(expected["cost"] > 100.0)


class _CostlyReset(gym.Env):
    """Episodes of ``2 + seed % 3`` steps, each step costing 1; the reset's info carries a cost of
    100 that no episode may count. No time limit."""

    observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.left = 2 + (seed or 0) % 3
        return np.zeros(1, np.float32), {"cost": 100.0}

    def step(self, action):
        self.left -= 1
        return np.zeros(1, np.float32), 0.5, self.left == 0, False, {"cost": 1.0}


@pytest.fixture
def costly_reset():
    gym.register("aligngym_test/CostlyReset-v0", entry_point=_CostlyReset)
    yield "aligngym_test/CostlyReset-v0"
    gym.registry.pop("aligngym_test/CostlyReset-v0")


def test_no_reset_is_counted_and_an_episode_past_the_recorded_steps_is_an_error(costly_reset, monkeypatch):
    class Still(torch.nn.Module):
        def forward(self, batch, state=None):
            return Batch(act=np.zeros((len(batch.obs), 1), np.float32))

        def map_action(self, act):
            return act

    config = _config("bc_all", costly_reset)
    played = play_episodes(config, Still(), 4, seed=0)
    assert played.costs.tolist() == played.lengths.tolist() == [2.0, 3.0, 4.0, 2.0]
    assert played.returns.tolist() == [1.0, 1.5, 2.0, 1.0]
    monkeypatch.setattr(offline, "EVAL_ROOM", 3)  # a task without a time limit: 3 steps recorded per episode
    with pytest.raises(RuntimeError, match="ran past 3 steps"):
        play_episodes(config, Still(), 3, seed=0)


def test_evaluation_progress_is_reported_as_episodes_finish(costly_reset):
    class Still(torch.nn.Module):
        def forward(self, batch, state=None):
            return Batch(act=np.zeros((len(batch.obs), 1), np.float32))

        def map_action(self, act):
            return act

    seen: list[tuple[int, int]] = []
    play_episodes(_config("bc_all", costly_reset), Still(), 3, seed=0, progress=lambda *p: seen.append(p))
    assert seen[-1] == (3, 4)  # three episodes done after the longest one's four steps
    assert [p for p in seen if p[0] > 0][0] == (0 + 1, 2)  # the first ends at its second step
    assert [p[0] for p in seen] == sorted(p[0] for p in seen)


# ---------------------------------------------------------------------- the evaluation schedule
def test_the_default_evaluation_schedule_is_a_tenth_of_the_run(tiny_data, tmp_path, scalars):
    assert OfflineConfig.model_fields["eval_every"].default is None
    fisor = _config("fisor")
    assert fisor.eval_every is None and fisor.eval_interval == fisor.steps // 10 == 100_000
    assert _config("fisor", steps=7).eval_interval == 1 and _config("fisor", eval_every=3).eval_interval == 3
    config = _config("fisor", run_root=tmp_path, smoke=True, steps=20, eval_every=None, checkpoint_every=20,
                     log_every=20)
    logged = scalars(train(config))
    assert [step for step, _ in logged["eval/return"]] == list(range(2, 21, 2))  # ten points


# ---------------------------------------------------------------------- progress bars
def test_the_training_bar_says_when_it_evaluates(tiny_data, tmp_path, capsys):
    train(_config("bc_all", run_root=tmp_path, smoke=True, show_progress=True, steps=2, eval_every=2))
    err = capsys.readouterr().err
    assert "evaluating 1 episode: 1 done, step 200" in err


def test_aligngym_eval_shows_a_bar_over_the_episodes(tiny_data, tmp_path, capsys, monkeypatch):
    run_dir = train(_config("bc_all", run_root=tmp_path, smoke=True))
    capsys.readouterr()
    # tqdm draws on stderr while it is a terminal; pytest's capture is not one
    monkeypatch.setattr(offline, "tqdm", lambda *args, **kwargs: tqdm(*args, **{**kwargs, "disable": False}))
    evaluate(run_dir, episodes=3)
    err = capsys.readouterr().err
    assert f"evaluating bc_all on {BALL_CIRCLE}" in err
    assert re.search(r"3/3 \[.*step 200", err), err


def test_scores_over_dsrls_range_go_to_their_own_file(tiny_data, tmp_path):
    """``aligngym eval --score-range dsrl``: the same episodes normalised with DSRL's published range,
    into eval_score_range-dsrl.json (not logged); the run's own range stays in eval.json."""
    from aligngym.envs.safety.specs import task_spec

    run_dir = train(_config("bc_all", run_root=tmp_path, smoke=True))
    own = evaluate(run_dir, episodes=2)
    dsrl = evaluate(run_dir, episodes=2, score_range="dsrl")
    assert Path(dsrl["written_to"]).name == "eval_score_range-dsrl.json" and (run_dir / "eval.json").is_file()
    assert dsrl["episode_returns"] == own["episode_returns"]
    spec = task_spec(BALL_CIRCLE)
    lo, hi = spec.dsrl_range
    assert dsrl["eval/normalized_return"] == pytest.approx((np.mean(own["episode_returns"]) - lo) / (hi - lo))
    lo, hi = spec.reward_min, spec.reward_max
    assert own["eval/normalized_return"] == pytest.approx((np.mean(own["episode_returns"]) - lo) / (hi - lo))
    assert dsrl["eval/normalized_cost"] == own["eval/normalized_cost"]
    with pytest.raises(ConfigError, match="own or dsrl"):
        evaluate(run_dir, episodes=1, score_range="theirs")
    from aligngym.envs.stochastic.data import generate_stochastic, stochastic_dataset_path

    bandit = "aligngym/BernoulliBandit-v0"
    if not stochastic_dataset_path(bandit, "tiny", 0).exists():
        generate_stochastic(bandit, "tiny", 0)
    config = _config("dt", task=bandit, run_root=tmp_path / "bandit", smoke=True)
    with pytest.raises(ConfigError, match="applies to the safe tasks, not aligngym/BernoulliBandit-v0"):
        evaluate(train(config.model_copy(update={"dataset": config.dataset.model_copy(update={"size": "tiny"})})),
                 episodes=1, score_range="dsrl")
    env = gym.make(BALL_CIRCLE)
    assert env.unwrapped.get_normalized_score(hi, 0.0, "dsrl")[0] == pytest.approx(
        (hi - spec.dsrl_range[0]) / (spec.dsrl_range[1] - spec.dsrl_range[0]))
    with pytest.raises(ValueError, match="score_range"):
        env.unwrapped.get_normalized_score(0.0, 0.0, "theirs")
    env.close()


# ---------------------------------------------------------------------- TensorBoard
@pytest.mark.parametrize(("agent", "trained"), [
    ("bc_all", {"actor"}), ("bcq_lag", {"vae", "critic", "cost_critic", "actor"}),
    ("fisor", {"actor", "reward_value", "reward_q", "cost_value", "cost_q"})])
def test_a_smoke_runs_tensorboard_names(tiny_data, tmp_path, agent, trained):
    """Losses as loss/<what>, each learning rate as train/lr_<what> (the same names), no
    <group>/step scalars, and the reward-cost image at each evaluation."""
    run_dir = train(_config(agent, run_root=tmp_path, smoke=True))
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    scalar_tags = set(tags["scalars"])
    losses = {t.removeprefix("loss/") for t in scalar_tags if t.startswith("loss/")}
    rates = {t.removeprefix("train/lr_") for t in scalar_tags if t.startswith("train/lr_")}
    assert losses == rates == trained, scalar_tags
    assert not [t for t in scalar_tags if t.startswith("loss/loss") or re.fullmatch(r"train/lr_\d+", t)
                or t.endswith("/step")], scalar_tags
    assert "eval/reward_cost" in tags["images"]
    evaluated = [e.step for e in events.Scalars("eval/return")]
    images = events.Images("eval/reward_cost")
    assert [image.step for image in images] == evaluated == [2, 4]
    assert all(image.encoded_image_string.startswith(b"\x89PNG") and image.width > 100 for image in images)
