"""The numpy Ball/Car/Drone x Run/Circle tasks: API contract, the reference's task logic and
dynamics figures, batching, DSRL API."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import aligngym.envs  # noqa: F401  (registers the ids)
from aligngym.envs.data.dataset import DatasetError
from aligngym.envs.safety.bullet import CAR_WHEELBASE, BulletCore
from aligngym.envs.safety.specs import SAFE_TASKS

IDS = [f"aligngym/{a}{t}-v0" for a in ("Ball", "Car", "Drone") for t in ("Run", "Circle")]
OBS_DIMS = {"BallRun": 7, "BallCircle": 8, "CarRun": 7, "CarCircle": 8, "DroneRun": 17, "DroneCircle": 18}
EPISODE_STEPS = {"BallRun": 100, "BallCircle": 200, "CarRun": 200, "CarCircle": 300, "DroneRun": 200,
                 "DroneCircle": 300}


def rollout(env: gym.Env, seed: int, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    observations, rewards, costs = [obs], [], []
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        observations.append(obs)
        rewards.append(reward)
        costs.append(info["cost"])
        if terminated or truncated:
            obs, _ = env.reset()
    return np.array(observations), np.array(rewards), np.array(costs)


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_checker_spaces_and_time_limit(env_id: str) -> None:
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    name = env_id.split("/")[1][:-3]
    assert env.observation_space.shape == (OBS_DIMS[name],)
    assert env.spec.max_episode_steps == EPISODE_STEPS[name]
    obs, _ = env.reset(seed=0)
    for step in range(1, EPISODE_STEPS[name] + 1):
        obs, reward, terminated, truncated, info = env.step(np.zeros(env.action_space.shape, np.float32))
        assert info["cost"] in (0.0, 1.0) and isinstance(info["cost"], float)
        assert info["cost"] == float(info["cost_outside_bounds"] or info["cost_velocity_violation"])
        assert obs.dtype == np.float64 and obs.shape == env.observation_space.shape
        if terminated or truncated:
            break
    assert truncated and step == EPISODE_STEPS[name], "standing still must last the whole episode"


@pytest.mark.parametrize("env_id", IDS)
def test_same_seed_same_trajectory(env_id: str) -> None:
    a = rollout(gym.make(env_id), seed=3, steps=400)
    b = rollout(gym.make(env_id), seed=3, steps=400)
    c = rollout(gym.make(env_id), seed=4, steps=400)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("agent,task", [(a, t) for a in ("Ball", "Car", "Drone") for t in ("Run", "Circle")])
def test_batched_core_rows_equal_single_envs(agent: str, task: str) -> None:
    batch = BulletCore(agent, task, num_envs=4, seed=0)
    batch.reset()
    singles = [BulletCore(agent, task, num_envs=1) for _ in range(4)]
    for i, single in enumerate(singles):
        single.reset()
        for name in ("pos", "vel", "yaw", "speed", "steer", "quat", "omega", "rotor"):
            getattr(single, name)[0] = getattr(batch, name)[i]
    rng = np.random.default_rng(0)
    for _ in range(50):
        actions = rng.uniform(-1.5, 1.5, size=(4, batch.act_dim))
        out = batch.step(actions)
        for i, single in enumerate(singles):
            one = single.step(actions[i:i + 1])
            for x, y in zip(out, one):
                np.testing.assert_array_equal(x[i], y[0])


def test_ball_matches_the_reference_response() -> None:
    """Reference (PyBullet): |v| 2.61 after 10 steps, 4.97 after 20, 9.6 after 50, 11.8 after 100
    at full force; 2.45 after 20 and 7.5 after 100 at half force; cost from step 10; return 1614."""
    core = BulletCore("Ball", "Run", seed=0)
    core.reset()
    speeds, total_reward, costs = [], 0.0, []
    for _ in range(100):
        _, reward, cost, *_ = core.step(np.array([[1.0, 0.0]]))
        speeds.append(np.hypot(*core.vel[0, :2]))
        total_reward += reward[0]
        costs.append(cost[0])
    for step, expected in [(10, 2.61), (20, 4.97), (50, 9.6), (100, 11.8)]:
        assert speeds[step - 1] == pytest.approx(expected, rel=0.05)
    assert np.argmax(costs) + 1 == 10 and sum(costs) == 91
    assert total_reward == pytest.approx(1614, rel=0.05)
    core.reset()
    for _ in range(100):
        core.step(np.array([[0.5, 0.0]]))
    assert np.hypot(*core.vel[0, :2]) == pytest.approx(7.5, rel=0.1)


def car_drive(task: str, action: tuple[float, float], steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The v1 car's speed (m/s) and turn rate (rad/s) after each of ``steps`` steps of ``action`` from rest."""
    core = BulletCore("Car", task, seed=0, version=1)
    core.reset()
    speeds, turns, heading = [], [], core.yaw[0]
    for _ in range(steps):
        core.step(np.array([action]))
        speeds.append(np.hypot(*core.vel[0, :2]))
        turns.append(((core.yaw[0] - heading + np.pi) % (2 * np.pi) - np.pi) / core.dt)
        heading = core.yaw[0]
    return np.array(speeds), np.array(turns)


# the reference's racecar (Bullet-Safety-Gym 1.4.0), measured by benchmarks/bullet_fidelity.py's protocols
# as displacement per step: speeds after 10, 20 and 100 steps of CarRun at full throttle forward and in
# reverse, the radius of its full-lock circle at full throttle (forward, reverse) after 100 steps, and in
# CarCircle (coarser physics, a slower car) the speed after 30 steps and the full-lock turn rate after 60
CAR_RUN_SPEEDS = {1.0: (1.02, 1.76, 3.65), -1.0: (0.87, 1.62, 3.47)}
CAR_RUN_RADIUS = {1.0: 2.22, -1.0: 2.34}


def test_the_v1_car_drives_turns_and_reverses_as_the_reference() -> None:
    for throttle, expected in CAR_RUN_SPEEDS.items():
        speeds, _ = car_drive("Run", (throttle, 0.0), 100)
        np.testing.assert_allclose(speeds[[19, 99]], expected[1:], rtol=0.1)
        assert speeds[9] == pytest.approx(expected[0], rel=0.15)  # (the reference's reverse starts slower still)
        speeds, turns = car_drive("Run", (throttle, 1.0), 100)
        assert speeds[99] / abs(turns[99]) == pytest.approx(CAR_RUN_RADIUS[throttle], rel=0.15)
        assert speeds[99] < 0.9 * CAR_RUN_SPEEDS[throttle][2]  # a turning car is slower (tyre scrub)
    assert car_drive("Circle", (1.0, 0.0), 30)[0][-1] == pytest.approx(2.63, rel=0.1)
    speeds, turns = car_drive("Circle", (1.0, 1.0), 60)
    assert (speeds[-1], turns[-1]) == pytest.approx((2.32, 1.18), rel=0.1)
    with pytest.raises(ValueError, match="versions"):
        BulletCore("Ball", "Run", version=1)


# where the car is after 20 steps at full throttle and lock and 20 random ones (seeded), per version and task:
# v0's are the values of the code its datasets were made with (a change to them makes those datasets stale)
CAR_TRACES = {(0, "Run"): ((-1.601748021, -0.5164527561), -2.7515251733, 1.2711571094),
              (0, "Circle"): ((-2.6888498666, 2.4281520397), 2.8120052468, 1.038862884),
              (1, "Run"): ((-1.498398494, -0.405959307), -2.8118829395, 1.2262944675),
              (1, "Circle"): ((1.8346485431, 2.5221561319), 1.6378846206, 0.9308954919)}


@pytest.mark.parametrize("version, task", list(CAR_TRACES))
def test_each_cars_trajectory_is_the_stored_one(version: int, task: str) -> None:
    core = BulletCore("Car", task, seed=0, version=version)
    core.reset()
    rng = np.random.default_rng(0)
    for t in range(40):
        core.step(np.array([[1.0, 1.0]]) if t < 20 else rng.uniform(-1, 1, (1, 2)))
    xy, yaw, speed = CAR_TRACES[version, task]
    np.testing.assert_allclose(core.pos[0, :2], xy, rtol=0, atol=1e-9)
    assert (core.yaw[0], core.speed[0]) == pytest.approx((yaw, speed), abs=1e-9)


def test_car_speeds_and_direction_match_the_reference() -> None:
    """The v0 car (a bicycle without slip), as its datasets were made."""
    core = BulletCore("Car", "Run", seed=0)
    core.reset()
    speeds = []
    for _ in range(200):
        core.step(np.array([[-1.0, 0.0]]))  # a0 < 0 drives the way Run rewards (+x)
        speeds.append(np.hypot(*core.vel[0, :2]))
    assert speeds[9] == pytest.approx(1.07, rel=0.1) and speeds[19] == pytest.approx(1.9, rel=0.1)
    assert 3.4 <= speeds[-1] <= 3.8
    assert core.pos[0, 0] > 10.0 and core.vel[0, 0] > 0
    core.reset()
    for _ in range(200):
        core.step(np.array([[-0.3, 0.0]]))
    assert np.hypot(*core.vel[0, :2]) == pytest.approx(1.06, rel=0.05)  # under the 1.5 limit
    core.reset()
    for _ in range(100):
        before = core.yaw[0]
        core.step(np.array([[1.0, 1.0]]))
    assert np.hypot(*core.vel[0, :2]) / abs((core.yaw[0] - before) / core.dt) == pytest.approx(
        CAR_WHEELBASE / np.tan(0.5), rel=0.02)  # the bicycle's radius at full lock, no slip


def test_drone_hovers_at_zero_and_climbs_at_full_thrust() -> None:
    core = BulletCore("Drone", "Run", seed=0)
    core.reset()
    for _ in range(60):
        _, reward, *_ = core.step(np.zeros((1, 4)))
    assert core.pos[0, 2] == pytest.approx(0.17, abs=1e-3)
    assert reward[0] == pytest.approx(0.0, abs=1e-6)  # alive +1, one ground contact -1
    for _ in range(60):
        core.step(np.ones((1, 4)))
    assert 0.6 <= core.pos[0, 2] - 0.17 <= 0.9  # reference: 0.71 m in 1 s


def test_drone_terminates_when_it_flips() -> None:
    env = gym.make("aligngym/DroneRun-v0")
    env.reset(seed=0)
    core = env.unwrapped.core
    core.pos[0, 2] = 3.0
    core.quat[0] = [np.sin(1.0), 0.0, 0.0, np.cos(1.0)]  # roll 2 rad
    _, reward, terminated, _, _ = env.step(np.zeros(4, np.float32))
    assert terminated and reward < -9


def test_run_costs_and_reward() -> None:
    env = gym.make("aligngym/BallRun-v0")
    env.reset(seed=0)
    core = env.unwrapped.core
    core.pos[0, 1] = 2.5
    _, _, _, _, info = env.step(np.zeros(2, np.float32))
    assert info["cost"] == 1.0 and info["cost_outside_bounds"] == 1.0 and info["cost_velocity_violation"] == 0.0
    core.pos[0, :2] = 0.0
    core.vel[0, :2] = [3.0, 0.0]
    _, reward, _, _, info = env.step(np.zeros(2, np.float32))
    assert info["cost_velocity_violation"] == 1.0 and info["cost_outside_bounds"] == 0.0
    dx = core.pos[0, 0]
    assert reward == pytest.approx(60 * dx, rel=1e-3)  # progress towards (1000, 0), no action penalty


def test_circle_cost_reward_direction_and_walls() -> None:
    env = gym.make("aligngym/BallCircle-v0")
    env.reset(seed=0)
    core = env.unwrapped.core
    core.pos[0, :2] = [0.0, 7.0]
    core.vel[0, :2] = [2.0, 0.0]  # at the top of the circle, moving +x is clockwise
    _, clockwise, _, _, info = env.step(np.zeros(2, np.float32))
    assert clockwise > 0 and info["cost"] == 0.0
    core.pos[0, :2] = [0.0, 7.0]
    core.vel[0, :2] = [-2.0, 0.0]
    _, counter, _, _, _ = env.step(np.zeros(2, np.float32))
    assert counter < 0
    core.pos[0, :2] = [6.5, 0.0]
    core.vel[0, :2] = 0.0
    _, _, _, _, info = env.step(np.zeros(2, np.float32))
    assert info["cost"] == 1.0 and info["cost_outside_bounds"] == 1.0
    for _ in range(100):  # full force towards a wall
        env.step(np.array([1.0, 0.0], np.float32))
    assert core.pos[0, 0] <= 11.9 - 0.5 + 1e-9 and core.vel[0, 0] <= 1e-9


@pytest.mark.parametrize("agent", ["Ball", "Car", "Drone"])
def test_circle_spawn_on_the_annulus_facing_clockwise(agent: str) -> None:
    core = BulletCore(agent, "Circle", num_envs=500, seed=1)
    obs = core.reset()
    radius = np.hypot(core.pos[:, 0], core.pos[:, 1])
    assert radius.min() >= 2.0 and radius.max() <= 4.0
    np.testing.assert_allclose(obs[:, -1], (radius - 7) / 10)
    tangent = np.arctan2(-core.pos[:, 0], core.pos[:, 1])  # clockwise tangent direction (y, -x)
    expected = tangent + (np.pi if agent == "Car" else 0.0)
    if agent != "Ball":
        np.testing.assert_allclose(np.cos(core.heading() - expected), 1.0, atol=1e-9)


def test_actions_are_clipped_and_bad_actions_rejected() -> None:
    env = gym.make("aligngym/BallRun-v0")
    a = rollout_with(env, np.array([5.0, -7.0], np.float32))
    b = rollout_with(env, np.array([1.0, -1.0], np.float32))
    np.testing.assert_array_equal(a, b)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"BallRun-v0.*shape \(2,\)"):
        env.unwrapped.step(np.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        env.unwrapped.step(np.array([np.nan, 0.0]))


@pytest.mark.parametrize("env_id", SAFE_TASKS)
def test_every_safe_task_refuses_a_bad_action_by_name(env_id: str) -> None:
    """A batch-shaped, short, NaN or infinite action is a ValueError naming the task (MuJoCo alone
    would take NaN, warn, reset its state and return a NaN reward)."""
    env = gym.make(env_id)
    env.reset(seed=0)
    good = env.action_space.sample()
    name = env_id.split("/")[1]
    for bad, says in ((good[None], "have shape"), (good[:-1], "have shape"), (np.full_like(good, np.nan), "be finite"),
                      (np.where(np.arange(good.size) == 0, np.inf, good), "be finite")):
        with pytest.raises(ValueError, match=f"{name}: action must {says}"):
            env.step(bad)
    env.step(good)  # the env is still usable
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_unknown_render_mode_is_refused_by_name(env_id: str) -> None:
    with pytest.warns(UserWarning, match="render_mode"):  # gym.make's own warning comes first
        with pytest.raises(ValueError, match=rf"{env_id}: render_mode must be one of \['rgb_array'\] or None"):
            gym.make(env_id, render_mode="bogus")


def test_huge_actions_step_as_the_clipped_action_on_every_body() -> None:
    for env_id in IDS:
        huge, clipped = gym.make(env_id), gym.make(env_id)
        huge.reset(seed=1)
        clipped.reset(seed=1)
        rng = np.random.default_rng(0)
        for _ in range(5):
            action = rng.uniform(-1e9, 1e9, huge.action_space.shape)
            a, b = huge.step(action), clipped.step(np.clip(action, -1, 1))
            np.testing.assert_array_equal(a[0], b[0])
            assert a[1:] == b[1:]


def rollout_with(env: gym.Env, action: np.ndarray) -> np.ndarray:
    env.reset(seed=0)
    return np.array([env.step(action)[0] for _ in range(20)])


@pytest.mark.parametrize("env_id", ["aligngym/CarRun-v0", "aligngym/DroneCircle-v0"])
def test_rgb_array_render_shows_the_agent(env_id: str) -> None:
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.shape == (256, 256, 3)
    assert (frame == (40, 70, 200)).all(axis=-1).sum() > 50  # the agent's disc
    assert (frame == (210, 40, 40)).all(axis=-1).any()  # the cost boundary
    plain = gym.make(env_id)
    plain.reset(seed=0)
    assert plain.render() is None


def test_dsrl_scores_and_target_cost() -> None:
    env = gym.make("aligngym/BallCircle-v0").unwrapped
    spec = env.task
    assert env.target_cost == 10.0
    r, c = env.get_normalized_score(spec.reward_max, 10.0)
    assert r == pytest.approx(1.0) and c == pytest.approx(1.0)
    r, c = env.get_normalized_score(spec.reward_min, 5.0)
    assert r == pytest.approx(0.0) and c == pytest.approx(0.5)
    env.set_target_cost(0)
    assert env.get_normalized_score(0.0, 0.0)[1] == pytest.approx(1.0)  # (0 + 1) / (0 + 1)
    assert env.get_normalized_score(0.0, 3.0)[1] == pytest.approx(4.0)
    returns, costs = env.get_normalized_score(np.array([spec.reward_min, spec.reward_max]), np.array([0.0, 1.0]))
    np.testing.assert_allclose(returns, [0.0, 1.0])
    np.testing.assert_allclose(costs, [1.0, 2.0])  # target 0: (c + 1) / (0 + 1)
    with pytest.raises(ValueError, match="target"):
        env.set_target_cost(-1)


def test_missing_dataset_names_the_command(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("ALIGNGYM_DATA", str(tmp_path))
    env = gym.make("aligngym/CarCircle-v0").unwrapped
    with pytest.raises(DatasetError, match=r"aligngym data generate aligngym/CarCircle-v0 --size full --seed 0"):
        env.get_dataset()
    with pytest.raises(DatasetError, match="is missing$"):  # the user's own path: no command makes it
        env.get_dataset(tmp_path / "mine.hdf5")


def test_module_prefix_make_works_in_a_fresh_interpreter() -> None:
    import subprocess
    import sys

    code = ("import gymnasium as gym; env = gym.make('aligngym.envs:aligngym/DroneCircle-v0'); "
            "obs, _ = env.reset(seed=0); print(obs.shape, env.step(env.action_space.sample())[4]['cost'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("(18,)")


@pytest.mark.parametrize("agent", ["Ball", "Car", "Drone"])
def test_observation_entries_have_the_references_scalings(agent: str) -> None:
    """Each observation entry against the body's state, with the reference's scalings (layout in the
    module docstring; shared/reference/bullet-safety-gym.md)."""
    core = BulletCore(agent, "Circle", num_envs=4, seed=0)
    core.reset()
    rng = np.random.default_rng(1)
    for _ in range(15):
        obs = core.step(rng.uniform(-0.3, 0.3, (4, core.act_dim)))[0]
    pos, vel = core.pos, core.vel
    r = np.hypot(pos[:, 0], pos[:, 1])
    np.testing.assert_allclose(obs[:, 0:2], 0.1 * pos[:, :2])
    np.testing.assert_allclose(obs[:, -1], (r - 7) / 10)  # Circle's extra entry
    if agent == "Ball":
        np.testing.assert_allclose(obs[:, 2:4], 0.2 * vel[:, :2])
        np.testing.assert_allclose(obs[:, 4:6], 0.1 * np.stack([-vel[:, 1], vel[:, 0]], 1) / 0.5)  # rolling
    elif agent == "Car":
        np.testing.assert_allclose(obs[:, 2:4], vel[:, :2])  # not scaled
        np.testing.assert_allclose(obs[:, 4:6], np.stack([np.sin(core.yaw), np.cos(core.yaw)], 1))
    else:
        np.testing.assert_allclose(obs[:, 2], 0.1 * pos[:, 2])
        np.testing.assert_allclose(obs[:, 3:6], 0.2 * vel)
        quat = obs[:, 6:10]
        np.testing.assert_allclose(np.linalg.norm(quat, axis=1), 1.0, rtol=1e-9)
        np.testing.assert_allclose(np.abs(np.sum(quat * core.quat, axis=1)), 1.0, rtol=1e-9)  # same rotation
        hover = np.array([1, -1, 1, -1]) * 461.5228
        np.testing.assert_allclose(obs[:, 13:17], 2.5e-3 * (core.rotor - hover))
        assert np.abs(obs[:, 13:17]).max() > 0  # the rotors were driven away from hover
