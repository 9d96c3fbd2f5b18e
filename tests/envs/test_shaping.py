"""BARFI's tasks with a primary and an auxiliary reward: GridWorld, MountainCar, CartPole, HalfCheetah."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

# importing aligngym.envs.shaping runs aligngym.envs first, which registers the ids
from aligngym.envs.shaping import AUX_OPTIONS, SHAPING_EPISODE_STEPS
from aligngym.envs.shaping import grid_world as gw
from aligngym.envs.shaping import mountain_car as mc
from aligngym.envs.shaping.cart_pole import ShapingCartPoleEnv
from aligngym.envs.shaping.grid_world import ShapingGridWorldEnv
from aligngym.envs.shaping.mountain_car import ShapingMountainCarEnv

GRID, CAR, POLE, CHEETAH = ("aligngym/ShapingGridWorld-v0", "aligngym/ShapingMountainCar-v0",
                            "aligngym/ShapingCartPole-v0", "aligngym/ShapingHalfCheetah-v0")
IDS = [GRID, CAR, POLE, CHEETAH]


def _make(env_id: str, **kwargs):
    env = gym.make(env_id, **kwargs)
    return env, env.unwrapped


# ---------------------------------------------------------------- contract
@pytest.mark.parametrize("env_id, aux", [(i, a) for i in (GRID, CAR, POLE) for a in AUX_OPTIONS] + [(CHEETAH, "bad")])
def test_check_env(env_id, aux):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Box observation space m.*infinity")
        # CartPole's render modes need pygame and HalfCheetah's a display; neither is the task's
        check_env(gym.make(env_id, aux=aux).unwrapped, skip_render_check=env_id in (POLE, CHEETAH))


def test_registration_spaces_and_feature_bounds():
    assert set(SHAPING_EPISODE_STEPS) == set(IDS)
    expected_steps = {GRID: 50, CAR: 2000, POLE: 500, CHEETAH: 1000}
    for env_id in IDS:
        env, u = _make(env_id, aux="good")
        assert env.spec.max_episode_steps == expected_steps[env_id] and u.aux == "good"
        _, info = env.reset(seed=0)
        assert info["aux_reward"] == 0.0
    grid, car, pole, cheetah = (_make(i)[1] for i in IDS)
    assert grid.observation_space == gym.spaces.Box(0.0, 1.0, (2,), np.float32)
    assert grid.action_space == gym.spaces.Discrete(4) and car.action_space == gym.spaces.Discrete(3)
    assert car.observation_space == gym.spaces.Box(np.array([-1.2, -0.07], np.float32),
                                                   np.array([0.5, 0.07], np.float32), (2,), np.float32)
    assert pole.observation_space == gym.make("CartPole-v1").observation_space
    assert cheetah.observation_space.shape == (17,) and cheetah.action_space.shape == (6,)
    # the bounds the official Fourier basis / tile coder normalise by
    assert [b.tolist() for b in grid.feature_bounds] == [[0, 0], [1, 1]]
    assert [b.tolist() for b in car.feature_bounds] == [[-1.2, -0.07], [0.5, 0.07]]
    assert [b.tolist() for b in pole.feature_bounds] == [[-2.4, -3.5, -0.2095, -3.5], [2.4, 3.5, 0.2095, 3.5]]
    assert cheetah.feature_bounds is None
    assert all(u.aux == "none" for u in (grid, car, pole, cheetah))  # the default


def test_gym_make_in_a_fresh_interpreter_without_mujoco():
    code = ("import sys, gymnasium as gym\n"
            f"e = gym.make('aligngym.envs:{GRID}', aux='bad')\n"
            "print('mujoco' in sys.modules, e.unwrapped.aux, e.reset(seed=0)[0].shape)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "bad", "(2,)"]  # registering did not load MuJoCo


def _rollout(env_id: str, seed: int, steps: int, aux: str = "good") -> list[tuple]:
    env = gym.make(env_id, aux=aux)
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed + 1)
    trace = [tuple(np.asarray(obs).tolist())]
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        trace.append((*np.asarray(obs).tolist(), reward, info["aux_reward"], terminated, truncated))
        if terminated or truncated:
            obs, _ = env.reset()
            trace.append(tuple(np.asarray(obs).tolist()))
    return trace


@pytest.mark.parametrize("env_id, steps", [(GRID, 200), (CAR, 200), (POLE, 200), (CHEETAH, 20)])
def test_deterministic_under_a_seed(env_id, steps):
    assert _rollout(env_id, 3, steps) == _rollout(env_id, 3, steps)
    assert _rollout(env_id, 3, steps) != _rollout(env_id, 4, steps)  # the seed matters


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("aux", ["Good", "shaped", "", None, 1])
def test_bad_aux_option_is_named(env_id, aux):
    with pytest.raises(ValueError, match=rf"{env_id}: aux must be one of 'none', 'good', 'bad', got"):
        gym.make(env_id, aux=aux)


def test_half_cheetah_weights_are_fixed():
    with pytest.raises(ValueError, match=f"{CHEETAH}: ctrl_cost_weight cannot be set"):
        gym.make(CHEETAH, ctrl_cost_weight=0.1)


@pytest.mark.parametrize("env_id, bad_actions, expected", [
    (GRID, [4, -1, 1.0, "1", np.array([1]), None], "action must be an int 0..3"),
    (CAR, [3, -1, 2.0, np.array([0])], "action must be an int 0..2"),
    (POLE, [2, -1, 0.5, np.array([1, 0])], "action must be an int 0 or 1"),
])
def test_bad_discrete_actions_are_named(env_id, bad_actions, expected):
    env, u = _make(env_id)
    env.reset(seed=0)
    for action in bad_actions:
        with pytest.raises(ValueError, match=f"{env_id}: {expected}"):
            u.step(action)
    u.step(np.int64(1))  # numpy integers are actions


def test_half_cheetah_bad_actions_are_named_and_out_of_bounds_ones_clipped():
    _, u = _make(CHEETAH)
    u.reset(seed=0)
    with pytest.raises(ValueError, match=rf"{CHEETAH}: action must have shape \(6,\), got \(5,\)"):
        u.step(np.zeros(5))
    with pytest.raises(ValueError, match=f"{CHEETAH}: action must be finite"):
        u.step(np.full(6, np.nan))
    with pytest.raises(ValueError, match=f"{CHEETAH}: action must be an array of numbers"):
        u.step("forward")
    outcomes = []
    for action in (np.ones(6), np.full(6, 3.0)):
        u.reset(seed=0)
        obs, reward, _, _, info = u.step(action)
        outcomes.append((obs.tolist(), reward, info["reward_ctrl"]))
    assert outcomes[0] == outcomes[1] and outcomes[0][2] == pytest.approx(-6.0)


# ---------------------------------------------------------------- GridWorld
def _grid_step(env: ShapingGridWorldEnv, position, action: int):
    """One step from ``position`` taking ``action`` itself (steps the noise replaced are redone)."""
    for _ in range(100):
        env.position = np.array(position, dtype=np.float64)
        out = env.step(action)
        if out[4]["executed_action"] == action:
            return out
    raise AssertionError("the noise replaced the action 100 times in a row")


def test_grid_sub_steps_and_walls():
    env = ShapingGridWorldEnv()
    env.reset(seed=0)
    obs, reward, terminated, truncated, _ = _grid_step(env, gw.START, gw.RIGHT)
    assert obs.tolist() == pytest.approx([0.125 + 4 * 0.045, 0.125]) and (reward, terminated) == (-0.1, False)
    obs, *_ = _grid_step(env, gw.START, gw.UP)
    assert obs.tolist() == pytest.approx([0.125, 0.125 + 4 * 0.045])
    obs, *_ = _grid_step(env, gw.START, gw.LEFT)  # 0.08, 0.035, then the wall at 0
    assert obs.tolist() == pytest.approx([0.035, 0.125])
    obs, *_ = _grid_step(env, (0.035, 0.035), gw.DOWN)
    assert obs.tolist() == pytest.approx([0.035, 0.035])


def test_grid_noise_replaces_one_action_in_ten_by_a_uniform_one():
    env = ShapingGridWorldEnv()
    env.reset(seed=5)
    executed = []
    for _ in range(8000):
        env.position = np.array(gw.START)
        executed.append(env.step(gw.LEFT)[4]["executed_action"])
    counts = np.bincount(executed, minlength=4) / len(executed)
    # a random action is each of the four w.p. 0.025; 0.008 is over 4.5 standard deviations
    assert counts == pytest.approx([0.025, 0.025, 0.025, 0.925], abs=0.008)


def test_grid_scripted_policy_reaches_the_goal_for_100_and_terminates():
    env = gym.make(GRID)
    for seed in range(20):
        obs, _ = env.reset(seed=seed)
        rewards = []
        for _ in range(50):
            action = gw.RIGHT if obs[0] < 0.75 else gw.UP
            obs, reward, terminated, truncated, info = env.step(action)
            rewards.append(reward)
            if terminated or truncated:
                break
        # 7 noise-free steps suffice; the noise cannot take 43 of them
        assert terminated and not truncated, seed
        assert gw.in_region(obs, gw.GOAL_REGION)
        assert rewards[-1] == pytest.approx(99.9) and rewards[:-1] == [-0.1] * (len(rewards) - 1)
        assert info["aux_reward"] == 0.0  # aux "none"
    # the goal is absorbing: a further step pays nothing and stays
    u = env.unwrapped
    assert u.step(gw.LEFT)[1:4] == (0.0, True, False) and gw.in_region(u.position, gw.GOAL_REGION)


def test_grid_is_truncated_after_50_steps():
    env = gym.make(GRID)
    env.reset(seed=0)
    for step in range(1, 51):
        _, reward, terminated, truncated, _ = env.step(gw.LEFT)  # pressing against the wall
        assert reward == -0.1 and not terminated and truncated == (step == 50)


def test_grid_bad_aux_pays_50_per_sub_step_in_the_centre():
    env = ShapingGridWorldEnv(aux="bad")
    env.reset(seed=0)
    # y: 0.395 (outside), 0.44, 0.485, 0.53 (inside)
    _, reward, _, _, info = _grid_step(env, (0.44, 0.35), gw.UP)
    assert info["aux_reward"] == 150.0 and reward == -0.1
    # x: 0.53, 0.575 (inside), 0.62, 0.665 (outside)
    assert _grid_step(env, (0.485, 0.485), gw.RIGHT)[4]["aux_reward"] == 100.0
    # loitering pays every step: never used up
    assert _grid_step(env, (0.44, 0.44), gw.RIGHT)[4]["aux_reward"] == 150.0
    assert _grid_step(env, (0.575, 0.44), gw.LEFT)[4]["aux_reward"] == 150.0
    assert _grid_step(env, gw.START, gw.RIGHT)[4]["aux_reward"] == 0.0


def test_grid_good_aux_is_minus_the_squared_distance_to_the_goal_centre_in_both_coordinates():
    assert gw.goal_distance_aux(np.array(gw.GOAL_CENTRE)) == 0.0
    grid = np.linspace(0, 1, 41)
    values = np.array([[gw.goal_distance_aux(np.array([x, y])) for x in grid] for y in grid])
    assert values.max() <= 0.0 and np.unravel_index(values.argmax(), values.shape) == (35, 35)  # 0.875
    assert gw.goal_distance_aux(np.array([0.87, 0.2])) == pytest.approx(-(0.67 ** 2))  # y counts
    env = ShapingGridWorldEnv(aux="good")
    env.reset(seed=0)
    _, _, _, _, info = _grid_step(env, gw.START, gw.RIGHT)
    xs = 0.125 + 0.045 * np.arange(1, 5)
    assert info["aux_reward"] == pytest.approx(-np.sum((xs - 0.87) ** 2 + (0.125 - 0.87) ** 2))
    # the blocked sub-steps pay nothing: two taken from the start going left
    _, _, _, _, info = _grid_step(env, gw.START, gw.LEFT)
    assert info["aux_reward"] == pytest.approx(-((0.08 - 0.87) ** 2 + (0.035 - 0.87) ** 2 + 2 * (0.125 - 0.87) ** 2))


# ---------------------------------------------------------------- MountainCar
def _car_step(env: ShapingMountainCarEnv, position: float, velocity: float, action: int):
    env.position, env.velocity = position, velocity
    return env.step(action)


def test_car_one_step_against_hand_computation():
    env = ShapingMountainCarEnv()
    obs, _ = env.reset(seed=7)
    x0 = float(env.position)
    assert -0.6 <= x0 <= -0.4 and obs[1] == 0.0
    v1 = 0.001 * (2 - 1) - 0.0025 * math.cos(3 * x0)
    obs, reward, terminated, truncated, info = env.step(mc.PUSH_RIGHT)
    assert (env.position, env.velocity) == pytest.approx((x0 + v1, v1), abs=1e-15)
    assert obs.tolist() == pytest.approx([x0 + v1, v1], rel=1e-6) and (reward, terminated) == (0.0, False)
    # the speed limit, the left wall and the goal
    env.position, env.velocity = -0.5, 0.0695  # + 0.001 - 0.0025 cos(-1.5) > 0.07
    env.step(mc.PUSH_RIGHT)
    assert env.velocity == 0.07 and env.position == pytest.approx(-0.43)
    _, reward, terminated, _, info = _car_step(env, -1.19, -0.05, mc.PUSH_LEFT)
    assert (env.position, env.velocity, reward, terminated) == (-1.2, 0.0, 0.0, False)
    obs, reward, terminated, truncated, info = _car_step(env, 0.49, 0.03, mc.PUSH_RIGHT)
    assert obs[0] == np.float32(0.5) and (reward, terminated, truncated, info["aux_reward"]) == (1.0, True, False, 0.0)
    assert env.step(mc.NO_PUSH)[1:4] == (0.0, True, False)  # absorbing


def test_car_start_is_uniform_on_minus_0_6_to_minus_0_4():
    env = ShapingMountainCarEnv()
    starts = np.array([env.reset(seed=s)[0][0] for s in range(400)])
    assert starts.min() >= -0.6 and starts.max() <= -0.4
    assert starts.mean() == pytest.approx(-0.5, abs=0.012) and starts.std() == pytest.approx(0.2 / 12 ** 0.5, abs=0.01)


def test_car_bang_bang_sign_and_speed_aux():
    good = ShapingMountainCarEnv(aux="good")
    good.reset(seed=0)
    # (x, v) chosen so that no push flips the sign of v: the aux reads the updated velocity
    assert _car_step(good, -0.5, 0.03, mc.PUSH_RIGHT)[4]["aux_reward"] == 1.0
    assert _car_step(good, -0.5, 0.03, mc.PUSH_LEFT)[4]["aux_reward"] == -1.0
    assert _car_step(good, -0.5, 0.03, mc.NO_PUSH)[4]["aux_reward"] == -1.0
    assert _car_step(good, -0.5, -0.03, mc.PUSH_LEFT)[4]["aux_reward"] == 1.0
    assert _car_step(good, -0.5, -0.03, mc.PUSH_RIGHT)[4]["aux_reward"] == -1.0
    for action in (mc.PUSH_LEFT, mc.NO_PUSH, mc.PUSH_RIGHT):  # at the wall v = 0: nothing agrees
        assert _car_step(good, -1.2, -0.07, action)[4]["aux_reward"] == -1.0
    # the bang-bang controller the heuristic rewards solves the task
    env = gym.make(CAR, aux="good")
    obs, _ = env.reset(seed=1)
    paid = []
    for step in range(1, 2001):
        action = mc.PUSH_LEFT if obs[1] < 0 else mc.PUSH_RIGHT
        obs, reward, terminated, truncated, info = env.step(action)
        if terminated:
            break
        agrees = (obs[1] < 0 and action == mc.PUSH_LEFT) or (obs[1] > 0 and action == mc.PUSH_RIGHT)
        assert info["aux_reward"] == (1.0 if agrees else -1.0)
        paid.append(info["aux_reward"])
    assert terminated and reward == 1.0 and step < 200
    assert np.mean(paid) > 0.8  # only the steps where the velocity turns disagree
    bad = ShapingMountainCarEnv(aux="bad")
    bad.reset(seed=0)
    _, _, _, _, info = _car_step(bad, -0.5, -0.03, mc.PUSH_RIGHT)
    assert info["aux_reward"] == pytest.approx(10 * abs(bad.velocity)) and bad.velocity < 0
    none = ShapingMountainCarEnv(aux="none")
    none.reset(seed=0)
    assert _car_step(none, -0.5, 0.03, mc.PUSH_RIGHT)[4]["aux_reward"] == 0.0


# ---------------------------------------------------------------- CartPole
def _controller(angle: float, previous: float, d: float) -> int:
    return int(0.1 * angle + d * (angle - previous) > 0)


@pytest.mark.parametrize("aux, d, agree, disagree", [("good", 0.1, 1.0, 0.0), ("bad", 0.5, -5.0, 1.0)])
def test_pole_aux_pays_for_agreeing_with_the_pd_controller(aux, d, agree, disagree):
    env = gym.make(POLE, aux=aux)
    rng = np.random.default_rng(0)
    seen = set()
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        previous = 0.0  # the controller's memory starts at 0 each episode
        while True:
            action = int(rng.integers(2))
            expected = agree if action == _controller(float(obs[2]), previous, d) else disagree
            previous = float(obs[2])
            obs, reward, terminated, truncated, info = env.step(action)
            assert reward == 1.0
            if terminated:
                assert info["aux_reward"] == 0.0  # the official skips the terminating step
                break
            assert info["aux_reward"] == expected
            seen.add(expected)
    assert seen == {agree, disagree}


def test_pole_pd_controllers_balance_about_300_and_500_steps():
    """D = 0.1 balances about 303 steps (the official's note), D = 0.5 the full 500."""
    env = gym.make(POLE, aux="good")
    for d, low, high in ((0.1, 200, 400), (0.5, 500, 500)):
        lengths = []
        for seed in range(10):
            obs, _ = env.reset(seed=seed)
            previous, length = 0.0, 0
            while True:
                action = _controller(float(obs[2]), previous, d)
                previous = float(obs[2])
                obs, _, terminated, truncated, info = env.step(action)
                length += 1
                if d == 0.1 and not terminated:
                    assert info["aux_reward"] == 1.0  # following it always agrees
                if terminated or truncated:
                    break
            lengths.append(length)
        assert low <= np.mean(lengths) <= high, (d, lengths)


def test_pole_none_pays_nothing():
    env = ShapingCartPoleEnv()
    env.reset(seed=0)
    assert {env.step(i % 2)[4]["aux_reward"] for i in range(20)} == {0.0}


# ---------------------------------------------------------------- HalfCheetah
@pytest.mark.parametrize("aux, weight", [("none", 0.0), ("good", 1.0), ("bad", 4.0)])
def test_cheetah_primary_is_the_forward_velocity_and_aux_the_weighted_control_cost(aux, weight):
    env, u = _make(CHEETAH, aux=aux)
    env.reset(seed=0)
    rng = np.random.default_rng(1)
    for _ in range(5):
        action = rng.uniform(-1, 1, 6).astype(np.float32)
        x_before = float(u.data.qpos[0])
        _, reward, terminated, _, info = env.step(action)
        x_velocity = (float(u.data.qpos[0]) - x_before) / u.dt
        assert reward == pytest.approx(x_velocity) and reward == pytest.approx(info["x_velocity"])
        assert info["aux_reward"] == pytest.approx(-weight * np.sum(action.astype(np.float64) ** 2))
        assert not terminated
