"""The stochastic tasks of DoC (Bernoulli bandit, slippery FrozenLake) and their datasets."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import aligngym.envs  # noqa: F401
from aligngym.envs.data.dataset import DatasetError, load_dataset
from aligngym.envs.stochastic import bandit, frozen_lake
from aligngym.envs.stochastic.bandit import BernoulliBanditEnv
from aligngym.envs.stochastic.data import (EPISODES, STOCHASTIC_TASKS, generate_stochastic, load_stochastic,
                                           options_kind, stochastic_dataset_path, stochastic_task)
from aligngym.envs.stochastic.frozen_lake import (DOWN, LEFT, RIGHT, UP, SlipperyFrozenLakeEnv, best_success_rate,
                                                  success_rate, transition_matrix, value_iteration)

BANDIT, LAKE = "aligngym/BernoulliBandit-v0", "aligngym/SlipperyFrozenLake-v0"


@pytest.fixture(autouse=True)
def data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNGYM_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


# ---------------------------------------------------------------- the envs
@pytest.mark.parametrize("env_id, options", [(BANDIT, {}), (BANDIT, {"p": 0.3}), (LAKE, {}),
                                             (LAKE, {"success_prob": 1.0, "render_mode": "ansi"})])
def test_check_env(env_id, options):
    check_env(gym.make(env_id, **options).unwrapped)


def test_spaces_and_registration():
    assert set(STOCHASTIC_TASKS) == {BANDIT, LAKE}
    env = gym.make(BANDIT, p=0.3)
    assert env.unwrapped.p == 0.3 and env.spec.max_episode_steps == 1
    assert env.observation_space == gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    assert env.action_space == gym.spaces.Discrete(2)
    obs, _ = env.reset(seed=0)
    assert obs.tolist() == [0.0] and obs.dtype == np.float32
    lake = gym.make(LAKE, success_prob=0.5)
    assert lake.unwrapped.success_prob == 0.5 and lake.spec.max_episode_steps == 100
    assert lake.observation_space == gym.spaces.Box(0.0, 1.0, (16,), np.float32)
    assert lake.action_space == gym.spaces.Discrete(4)
    obs, info = lake.reset(seed=0)
    assert info["state"] == 0 and obs.tolist() == np.eye(16)[0].tolist()
    assert gym.make(LAKE).unwrapped.success_prob == pytest.approx(1 / 3)


def test_gym_make_in_a_fresh_interpreter():
    code = ("import gymnasium as gym\n"
            f"b = gym.make('aligngym.envs:{BANDIT}', p=0.3)\n"
            f"l = gym.make('aligngym.envs:{LAKE}', success_prob=1.0)\n"
            "print(b.reset(seed=0)[0].shape, l.reset(seed=0)[0].shape)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["(1,)", "(16,)"]


@pytest.mark.parametrize("make", [lambda v: BernoulliBanditEnv(p=v), lambda v: SlipperyFrozenLakeEnv(success_prob=v)])
@pytest.mark.parametrize("value", [-0.1, 1.5, "0.3", True, float("nan")])
def test_options_must_be_probabilities(make, value):
    with pytest.raises(ValueError, match=r"must be a probability, a number in \[0, 1\]"):
        make(value)


def test_bad_actions_are_named():
    env = BernoulliBanditEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="BernoulliBandit-v0: action must be an arm"):
        env.step(2)
    lake = SlipperyFrozenLakeEnv()
    lake.reset(seed=0)
    with pytest.raises(ValueError, match="SlipperyFrozenLake-v0: action must be a direction"):
        lake.step(4)


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_bandit_pays_each_arm_with_its_probability(p):
    env = BernoulliBanditEnv(p=p)
    env.reset(seed=1)
    pulls = 20_000
    for arm, expected in enumerate([p, 1 - p]):
        rewards = []
        for _ in range(pulls):
            _, reward, terminated, truncated, info = env.step(arm)
            assert terminated and not truncated and info["expected_reward"] == pytest.approx(expected)
            rewards.append(reward)
        # 0.01 is over 4 standard deviations (0.0032 at most): a swapped or constant arm fails
        assert np.mean(rewards) == pytest.approx(expected, abs=0.01)
    assert bandit.optimal_return(p) == pytest.approx(1 - p)
    assert bandit.behaviour_probs(p).tolist() == pytest.approx([1 - p, p])


def _step_from(env: SlipperyFrozenLakeEnv, state: int, action: int):
    env.state = state
    return env.step(action)


def test_lake_moves_as_intended_without_slip():
    env = SlipperyFrozenLakeEnv(success_prob=1.0)
    env.reset(seed=0)
    # the border keeps the agent in place; otherwise one cell in the action's direction
    expected = {(0, LEFT): 0, (0, UP): 0, (0, RIGHT): 1, (0, DOWN): 4, (6, LEFT): 5, (6, UP): 2,
                (6, RIGHT): 7, (6, DOWN): 10, (14, RIGHT): 15, (3, RIGHT): 3}
    for (state, action), reached in expected.items():
        for _ in range(5):
            _, _, _, _, info = _step_from(env, state, action)
            assert info["state"] == reached, (state, action)
    env.reset(seed=0)
    path = [DOWN, DOWN, RIGHT, DOWN, RIGHT, RIGHT]  # S -> 4 -> 8 -> 9 -> 13 -> 14 -> G
    for i, action in enumerate(path):
        obs, reward, terminated, truncated, info = env.step(action)
        assert (reward, terminated, truncated) == ((1.0, True, False) if i == len(path) - 1 else (0.0, False, False))
    assert info["state"] == 15 and obs.argmax() == 15


@pytest.mark.parametrize("q", [1 / 3, 0.7])
def test_lake_slips_to_each_perpendicular_cell_with_half_the_rest(q):
    env = SlipperyFrozenLakeEnv(success_prob=q)
    env.reset(seed=2)
    # from cell 10 (row 2, col 2) DOWN: intended 14; slips to LEFT (9) or RIGHT (11, a hole)
    reached = np.array([_step_from(env, 10, DOWN)[4]["state"] for _ in range(6000)])
    frequencies = [np.mean(reached == s) for s in (9, 14, 11)]
    assert set(np.unique(reached)) <= {9, 11, 14}  # never the opposite direction (6)
    assert frequencies == pytest.approx([(1 - q) / 2, q, (1 - q) / 2], abs=0.03)  # 0.03: over 4.6 sd
    # the transition table the value iteration uses says the same
    assert transition_matrix(q)[10, DOWN, [9, 14, 11]] == pytest.approx([(1 - q) / 2, q, (1 - q) / 2])
    assert transition_matrix(q).sum(axis=2) == pytest.approx(np.ones((16, 4)))


def test_holes_and_goal_end_the_episode():
    env = SlipperyFrozenLakeEnv(success_prob=1.0)
    env.reset(seed=0)
    assert _step_from(env, 4, RIGHT)[1:4] == (0.0, True, False)  # into the hole at 5
    assert _step_from(env, 5, DOWN)[1:4] == (0.0, True, False)  # a step after the end stays there
    assert env.state == 5
    assert _step_from(env, 14, RIGHT)[1:4] == (1.0, True, False)  # into the goal
    assert _step_from(env, 7, DOWN)[1:4] == (0.0, True, False)  # into the hole at 11, above the goal


def test_lake_is_truncated_after_100_steps():
    env = gym.make(LAKE, success_prob=1.0)
    env.reset(seed=0)
    for step in range(1, 101):
        _, reward, terminated, truncated, info = env.step(LEFT)  # pressing against the wall at S
        assert info["state"] == 0 and reward == 0.0 and not terminated
        assert truncated == (step == 100)


def test_value_iteration_reaches_the_known_optimum():
    policy, q_values = value_iteration(1 / 3)
    assert policy.shape == (16,) and q_values.shape == (16, 4)
    # the optimal slippery 4x4 policy arrives within 100 steps with probability about 0.74
    assert success_rate(policy, 1 / 3) == pytest.approx(0.7402, abs=1e-4)
    assert success_rate(policy, 1 / 3, horizon=10_000) == pytest.approx(14 / 17)  # eventually: 0.8235
    assert best_success_rate(1 / 3) == pytest.approx(0.7442, abs=1e-4)
    assert success_rate(np.zeros(16, dtype=int), 1 / 3) < 0.1  # always LEFT is no solution
    deterministic, _ = value_iteration(1.0)
    assert success_rate(deterministic, 1.0) == 1.0
    assert success_rate(deterministic, 1.0, horizon=5) == 0.0 and success_rate(deterministic, 1.0, horizon=6) == 1.0
    with pytest.raises(ValueError, match="gamma"):
        value_iteration(1 / 3, gamma=1.0)


def test_value_iteration_policy_succeeds_as_computed_in_the_env():
    """The exact success rate is that of the env itself (its dynamics match the table)."""
    policy, _ = value_iteration(1 / 3)
    env = gym.make(LAKE)
    env.reset(seed=3)
    successes = []
    for _ in range(1000):
        _, info = env.reset()
        while True:
            _, reward, terminated, truncated, info = env.step(int(policy[info["state"]]))
            if terminated or truncated:
                successes.append(reward)
                break
    assert np.mean(successes) == pytest.approx(success_rate(policy, 1 / 3), abs=0.05)  # sd 0.014


# ---------------------------------------------------------------- the datasets
@pytest.mark.parametrize("p", [0.1, 0.3])
def test_bandit_data_follow_the_behaviour_policy(p):
    (path,) = generate_stochastic(BANDIT, "full", 0, None, False, p=p)
    ds = load_dataset(path, env=gym.make(BANDIT, p=p).unwrapped)
    actions, rewards = ds.arrays["actions"], ds.arrays["rewards"]
    assert len(ds) == EPISODES[BANDIT]["full"] == 1000
    assert actions.dtype == np.int64 and actions.shape == (1000,)
    assert ds.arrays["terminals"].all() and not ds.arrays["timeouts"].any()
    assert not ds.arrays["costs"].any()
    # arm 1 (the good one when p < 0.5) played with probability p: sd 0.015 at most
    assert np.mean(actions == 1) == pytest.approx(p, abs=0.05)
    assert np.mean(rewards[actions == 0]) == pytest.approx(p, abs=0.06)
    assert ds.attrs["p"] == p and ds.attrs["options"] == {"p": p} and ds.attrs["env_id"] == BANDIT
    assert ds.attrs["behaviour_probs"] == pytest.approx([1 - p, p])
    assert ds.attrs["optimal_return"] == pytest.approx(1 - p)
    assert ds.attrs["behaviour_return"] == pytest.approx(2 * p * (1 - p))


def test_lake_data_are_epsilon_greedy_over_the_optimal_policy():
    (path,) = generate_stochastic(LAKE, "full", 0, None, False)
    ds = load_dataset(path, env=gym.make(LAKE).unwrapped)
    states = ds.arrays["observations"].argmax(axis=1)
    reached = ds.arrays["next_observations"].argmax(axis=1)
    assert np.all(ds.arrays["observations"].sum(axis=1) == 1)
    greedy = np.asarray(ds.attrs["behaviour_policy"])
    assert greedy.tolist() == value_iteration(1 / 3)[0].tolist()
    # greedy with 1 - 0.4, plus the random draws that hit it: 0.6 + 0.4 / 4 = 0.7 (sd about 0.011)
    assert np.mean(ds.arrays["actions"] == greedy[states]) == pytest.approx(0.7, abs=0.05)
    assert len(ds.episode_lengths()) == EPISODES[LAKE]["full"] == 100
    assert ds.episode_lengths().max() <= 100
    # episodes end in a hole or the goal (terminal), or by the time limit
    cells = frozen_lake.CELLS
    assert np.all(np.isin(cells[reached[ds.arrays["terminals"]]], ("H", "G")))
    assert not np.isin(cells[reached[~ds.arrays["terminals"]]], ("H", "G")).any()
    assert np.all(ds.arrays["rewards"] == (cells[reached] == "G"))
    assert np.all(ds.episode_lengths()[ds.episode_terminated() == 0] == 100)
    assert ds.attrs["optimal_return"] == pytest.approx(0.7402, abs=1e-4)
    assert ds.attrs["behaviour_epsilon"] == 0.4 and 0.05 < ds.attrs["behaviour_return"] < 0.15


@pytest.mark.parametrize("task", [BANDIT, LAKE])
def test_data_load_as_segments_and_replay_buffers(task):
    (path,) = generate_stochastic(task, "tiny", 0, None, False)
    ds = load_dataset(path, env=gym.make(task).unwrapped)
    batch = ds.sample_segments(8, 20, np.random.default_rng(0))
    obs_dim = gym.make(task).observation_space.shape[0]
    assert batch["observations"].shape == (8, 20, obs_dim) and batch["observations"].dtype == np.float32
    assert batch["actions"].shape == (8, 20) and batch["actions"].dtype == np.int64
    assert batch["mask"].shape == (8, 20) and batch["mask"][:, 0].all()
    if task == BANDIT:  # one-step episodes: only the first step of a window is real
        assert not batch["mask"][:, 1:].any()
        assert np.array_equal(batch["returns_to_go"][:, 0], batch["rewards"][:, 0])
    buffer = ds.to_replay_buffer()
    assert len(buffer) == len(ds)
    assert np.array_equal(buffer[np.arange(len(ds))].act, ds.arrays["actions"])


@pytest.mark.parametrize("task", [BANDIT, LAKE])
def test_data_are_deterministic_for_a_seed(task, tmp_path):
    first = load_dataset(generate_stochastic(task, "tiny", 7, tmp_path / "a.hdf5", False)[0])
    again = load_dataset(generate_stochastic(task, "tiny", 7, tmp_path / "b.hdf5", False)[0])
    other = load_dataset(generate_stochastic(task, "tiny", 8, tmp_path / "c.hdf5", False)[0])
    for key, value in first.arrays.items():
        assert np.array_equal(value, again.arrays[key]), key
    assert first.attrs == again.attrs
    assert not all(np.array_equal(value, other.arrays[key]) for key, value in first.arrays.items()
                   if key != "costs")


def test_file_names_keep_options_apart(data_folder):
    assert stochastic_dataset_path(BANDIT, "small", 0) == data_folder / "BernoulliBandit-v0-small-s0.hdf5"
    assert stochastic_dataset_path(BANDIT, "small", 0, p=0.1) == data_folder / "BernoulliBandit-v0-small-s0.hdf5"
    assert stochastic_dataset_path(BANDIT, "full", 2, p=0.3) == data_folder / "BernoulliBandit-v0-p0.3-full-s2.hdf5"
    assert (stochastic_dataset_path(f"aligngym.envs:{LAKE}", "tiny", 1, success_prob=0.5)
            == data_folder / "SlipperyFrozenLake-v0-q0.5-tiny-s1.hdf5")
    assert options_kind(LAKE, success_prob=1 / 3) is None and options_kind(LAKE, success_prob=1.0) == "q1"
    assert stochastic_task("BernoulliBandit") == stochastic_task("BernoulliBandit-v0") == BANDIT
    default, = generate_stochastic(BANDIT, "tiny", 0, None, False)
    other, = generate_stochastic(BANDIT, "tiny", 0, None, False, p=0.3)
    assert default != other and default.exists() and other.exists()
    assert load_stochastic(BANDIT, "tiny", 0, p=0.3).attrs["p"] == 0.3
    assert load_stochastic(BANDIT, "tiny", 0).attrs["p"] == 0.1


def test_bad_requests_are_refused(data_folder):
    with pytest.raises(DatasetError, match="no stochastic task"):
        generate_stochastic("aligngym/BallCircle-v0", "tiny", 0, None, False)
    with pytest.raises(DatasetError, match="has no option q; its options: p"):
        generate_stochastic(BANDIT, "tiny", 0, None, False, q=0.5)
    with pytest.raises(DatasetError, match="must be a probability"):
        generate_stochastic(LAKE, "tiny", 0, None, False, success_prob=2)
    with pytest.raises(DatasetError, match="size must be one of"):
        generate_stochastic(BANDIT, "huge", 0, None, False)
    with pytest.raises(DatasetError, match="seed must be an integer"):
        generate_stochastic(BANDIT, "tiny", -1, None, False)
    with pytest.raises(DatasetError, match="is missing; generate it with: aligngym data generate "
                                           "aligngym/BernoulliBandit-v0 --size tiny --seed 0 --option p=0.3"):
        load_stochastic(BANDIT, "tiny", 0, p=0.3)
    path, = generate_stochastic(BANDIT, "tiny", 0, None, False)
    with pytest.raises(DatasetError, match="exists; pass --force"):
        generate_stochastic(BANDIT, "tiny", 0, None, False)
    # a file of other options under the default name is caught by its attributes
    generate_stochastic(BANDIT, "tiny", 0, path, True, p=0.3)
    with pytest.raises(DatasetError, match="made with p=0.3, not p=0.1"):
        load_stochastic(BANDIT, "tiny", 0)


def test_the_command_line_makes_the_data_with_options(data_folder, capsys):
    from aligngym.agents.cli import main

    assert main(["data", "generate", "BernoulliBandit", "--size", "tiny", "--option", "p=0.3"]) == 0
    assert f"wrote {data_folder / 'BernoulliBandit-v0-p0.3-tiny-s0.hdf5'}" in capsys.readouterr().out
    assert load_stochastic(BANDIT, "tiny", 0, p=0.3).attrs["behaviour_probs"] == pytest.approx([0.7, 0.3])
    for argv, says in ((["BernoulliBandit", "--option", "p=high"], "--option takes NAME=NUMBER"),
                       (["BernoulliBandit", "--option", "q=0.3"], "has no option q"),
                       (["Hopper-v5", "--option", "p=0.3"], "Hopper-v5 takes no --option")):
        assert main(["data", "generate", *argv, "--size", "tiny"]) == 2
        assert says in capsys.readouterr().err
