"""The MuJoCo safe tasks: AntRun/AntCircle (Bullet-Safety-Gym's tasks on Gymnasium's Ant) and the
five Safety-Gymnasium velocity tasks."""

from __future__ import annotations

import math
import pickle
import warnings

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import aligngym.envs  # noqa: F401
from aligngym.envs.safety.ant import ALIVE_Z, JOINT_ORDER, AntCircleEnv, AntRunEnv
from aligngym.envs.safety.specs import SAFE_TASKS

OBS_DIM = {
    "aligngym/AntRun-v0": 33,
    "aligngym/AntCircle-v0": 34,
    "aligngym/AntVelocity-v1": 27,
    "aligngym/HalfCheetahVelocity-v1": 17,
    "aligngym/HopperVelocity-v1": 11,
    "aligngym/Walker2dVelocity-v1": 17,
    "aligngym/SwimmerVelocity-v1": 8,
}
IDS = list(OBS_DIM)
VELOCITY_IDS = [i for i in IDS if "Velocity" in i]
THRESHOLDS = {"aligngym/AntVelocity-v1": 2.6222, "aligngym/HalfCheetahVelocity-v1": 3.2096,
              "aligngym/HopperVelocity-v1": 0.7402, "aligngym/Walker2dVelocity-v1": 2.3415,
              "aligngym/SwimmerVelocity-v1": 0.2282}


def _make(env_id: str, **kwargs):
    env = gym.make(env_id, **kwargs)
    return env, env.unwrapped


def _step_from(u, qpos, qvel, action=None):
    """Put the raw env in (qpos, qvel), then take one step."""
    u.set_state(qpos, qvel)
    return u.step(np.zeros(u.action_space.shape) if action is None else action)


def _rollout(env_id: str, seed: int, actions: np.ndarray):
    env, _ = _make(env_id)
    obs, _ = env.reset(seed=seed)
    trace = [obs]
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        trace.append(np.concatenate([obs, [reward, info["cost"], terminated]]))
        if terminated:
            break
    return trace


@pytest.mark.parametrize("env_id", IDS)
def test_check_env(env_id):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Box observation space m.*infinity")
        check_env(gym.make(env_id).unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", IDS)
def test_spaces_and_cost_values(env_id):
    env, u = _make(env_id)
    assert env.observation_space.shape == (OBS_DIM[env_id],)
    assert env.observation_space.dtype == np.float64
    assert env.action_space.dtype == np.float32
    assert env.spec.max_episode_steps == SAFE_TASKS[env_id].max_episode_steps
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (OBS_DIM[env_id],) and obs.dtype == np.float64
    for _ in range(60):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert obs.shape == (OBS_DIM[env_id],) and env.observation_space.contains(obs)
        assert type(info["cost"]) is float and info["cost"] in (0.0, 1.0)
        assert isinstance(reward, float)
        if env_id in THRESHOLDS:  # the cost is the thresholded speed the v5 env reports
            speed = (math.hypot(info["x_velocity"], info["y_velocity"]) if "Ant" in env_id
                     else info["x_velocity"])
            assert info["cost"] == float(speed > THRESHOLDS[env_id])
        if terminated or truncated:
            obs, _ = env.reset()


@pytest.mark.parametrize("env_id", IDS)
def test_same_seed_same_trajectory(env_id):
    actions = np.random.default_rng(1).uniform(-1, 1, (40, *gym.make(env_id).action_space.shape))
    actions = actions.astype(np.float32)
    first, second = _rollout(env_id, 3, actions), _rollout(env_id, 3, actions)
    assert len(first) == len(second) > 1
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(_rollout(env_id, 4, actions[:1])[0], first[0])  # the seed is used


@pytest.mark.parametrize("env_id", IDS)
def test_rgb_array_render(env_id):
    env, _ = _make(env_id, render_mode="rgb_array", width=64, height=48)
    env.reset(seed=0)
    frame = env.render()
    env.close()
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
    assert frame.std() > 0  # not a blank frame


@pytest.mark.parametrize("env_id", IDS)
def test_offline_api(env_id):
    _, u = _make(env_id)
    spec = SAFE_TASKS[env_id]
    assert u.target_cost == spec.default_cost_limit
    u.set_target_cost(20)
    assert u.get_normalized_score(spec.reward_max, 20) == pytest.approx((1.0, 1.0))
    assert u.get_normalized_score(spec.reward_min, 10)[0] == pytest.approx(0.0)
    u.set_target_cost(0)
    assert u.get_normalized_score(spec.reward_max, 1)[1] == pytest.approx(2.0)  # (1 + 1) / (0 + 1)
    with pytest.raises(ValueError):
        u.set_target_cost(-1)
    for bad in (None, "10", True):
        with pytest.raises(TypeError, match="target cost must be a number"):
            u.set_target_cost(bad)
    assert u.target_cost == 0


# ---- velocity tasks ------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", VELOCITY_IDS)
def test_velocity_is_one_step_finite_difference(env_id):
    env, u = _make(env_id)
    env.reset(seed=0)
    body = 1 if "Ant" in env_id else None
    before = u.data.body(body).xpos[:2].copy() if body else u.data.qpos[:2].copy()
    _, _, _, _, info = env.step(env.action_space.sample())
    after = u.data.body(body).xpos[:2] if body else u.data.qpos[:2]
    assert info["x_velocity"] == pytest.approx((after[0] - before[0]) / u.dt)
    if "Ant" in env_id:
        assert info["y_velocity"] == pytest.approx((after[1] - before[1]) / u.dt)


@pytest.mark.parametrize("env_id", VELOCITY_IDS)
def test_velocity_cost_threshold(env_id):
    env, u = _make(env_id)
    env.reset(seed=0)
    threshold = THRESHOLDS[env_id]
    qpos, zero = u.data.qpos.copy(), np.zeros(u.model.nv)

    def cost_at(vx: float, vy: float = 0.0) -> float:
        qvel = zero.copy()
        qvel[0] = vx
        if "Ant" in env_id:
            qvel[1] = vy
        return _step_from(u, qpos, qvel)[4]["cost"]

    assert cost_at(0.0) == 0.0
    assert cost_at(0.5 * threshold) == 0.0
    assert cost_at(3.0 * threshold) == 1.0
    if "Ant" in env_id:  # the xy speed counts: each component is below the threshold
        assert cost_at(0.8 * threshold, 0.8 * threshold) == 1.0
        assert cost_at(0.0, -3.0 * threshold) == 1.0
    else:  # only forward speed counts
        assert cost_at(-3.0 * threshold) == 0.0


@pytest.mark.parametrize("env_id", VELOCITY_IDS)
def test_velocity_task_is_the_v5_env(env_id, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # mujoco 4 logs half_cheetah.xml's deprecated settotalmass here
    name = env_id.split("/")[1].replace("Velocity-v1", "-v5")
    kwargs = {"include_cfrc_ext_in_observation": False} if name == "Ant-v5" else {}
    ours, theirs = gym.make(env_id), gym.make(name, **kwargs)
    np.testing.assert_array_equal(ours.reset(seed=2)[0], theirs.reset(seed=2)[0])
    actions = np.random.default_rng(0).uniform(-1, 1, (50, *ours.action_space.shape))
    for k, action in enumerate(actions):
        action = action.astype(np.float32) if k % 2 else action  # policies act in float32
        obs, reward, terminated, *_ = ours.step(action)
        their_obs, their_reward, their_terminated, *_ = theirs.step(action)
        np.testing.assert_array_equal(obs, their_obs)
        assert reward == their_reward and terminated == their_terminated
        if terminated:
            break


def test_half_cheetah_loads_without_mujoco_log(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = gym.make("aligngym/HalfCheetahVelocity-v1")
    assert env.unwrapped.model.body_mass.sum() == pytest.approx(14.0)  # settotalmass="14" applied
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()


def test_ant_velocity_has_no_contact_forces_in_obs():
    _, u = _make("aligngym/AntVelocity-v1")
    obs, _ = u.reset(seed=0)
    np.testing.assert_array_equal(obs, np.concatenate([u.data.qpos[2:], u.data.qvel]))


# ---- AntRun / AntCircle ----------------------------------------------------------------------


def _standing(env_id: str, seed: int = 0, settle_steps: int = 20):
    env, u = _make(env_id)
    env.reset(seed=seed)
    for _ in range(settle_steps):
        env.step(np.zeros(8, dtype=np.float32))
    return env, u


def _at(u, xy, velocity_xy=(0.0, 0.0)):
    qpos, qvel = u.data.qpos.copy(), np.zeros(u.model.nv)
    qpos[0:2] = xy
    qvel[0:2] = velocity_xy
    return qpos, qvel


def test_ant_physics_steps():
    assert AntRunEnv().dt == pytest.approx(1 / 30)
    assert AntCircleEnv().dt == pytest.approx(0.1)


def test_run_cost():
    _, u = _standing("aligngym/AntRun-v0")
    info = _step_from(u, *_at(u, (0.0, 0.0)))[4]
    assert info["cost"] == 0.0
    for y in (2.5, -2.5):
        info = _step_from(u, *_at(u, (5.0, y)))[4]
        assert info["cost"] == info["cost_outside_bounds"] == 1.0
        assert info["cost_velocity_violation"] == 0.0
    info = _step_from(u, *_at(u, (5.0, 1.5)))[4]
    assert info["cost"] == 0.0
    info = _step_from(u, *_at(u, (0.0, 0.0), (0.0, 4.0)))[4]
    assert info["cost"] == info["cost_velocity_violation"] == 1.0
    info = _step_from(u, *_at(u, (0.0, 3.0), (0.0, 4.0)))[4]
    assert info["cost"] == 1.0  # both at once still costs 1


def test_run_reward_is_potential_progress_plus_agent_term():
    _, u = _standing("aligngym/AntRun-v0")
    u._old_potential = u._potential()
    qpos, qvel = _at(u, u.data.qpos[:2], (4.0, 0.0))
    x_before = qpos[0]
    _, reward, _, _, info = _step_from(u, qpos, qvel)
    assert info["x_position"] > x_before
    assert reward == pytest.approx(60 * (info["x_position"] - x_before) + info["reward_agent"], abs=1e-3)
    assert reward > 5
    u._old_potential = u._potential()
    _, reward, _, _, _ = _step_from(u, *_at(u, u.data.qpos[:2], (-4.0, 0.0)))
    assert reward < -5


def test_circle_cost_is_on_x_only():
    _, u = _standing("aligngym/AntCircle-v0")
    for xy, cost in [((6.5, 0.0), 1.0), ((-6.5, 1.0), 1.0), ((0.0, 6.5), 0.0), ((0.0, -8.0), 0.0),
                     ((5.5, 0.0), 0.0)]:
        info = _step_from(u, *_at(u, xy))[4]
        assert info["cost"] == info["cost_outside_bounds"] == cost, xy
        assert info["cost_velocity_violation"] == 0.0  # both parts always reported, as on Bullet's Circle tasks


def test_circle_reward_favours_clockwise_on_the_circle():
    _, u = _standing("aligngym/AntCircle-v0")
    for theta in np.linspace(0, 2 * np.pi, 4, endpoint=False) + 0.3:
        position = 7.0 * np.array([np.cos(theta), np.sin(theta)])
        clockwise = 3.0 * np.array([np.sin(theta), -np.cos(theta)])
        obs, reward_cw, *_ = _step_from(u, *_at(u, position, clockwise))
        assert reward_cw > 0.1
        assert obs[-1] == pytest.approx((np.linalg.norm(u.data.qpos[:2]) - 7.0) / 10.0)
        _, reward_ccw, *_ = _step_from(u, *_at(u, position, -clockwise))
        assert reward_ccw < -0.1
    # off the circle the same speed pays less
    _, reward_far, *_ = _step_from(u, *_at(u, (3.0, 0.0), (0.0, -3.0)))
    _, reward_on, *_ = _step_from(u, *_at(u, (7.0, 0.0), (0.0, -3.0)))
    assert 0 < reward_far < reward_on


def test_circle_octagon_walls_stop_the_ant():
    _, u = _standing("aligngym/AntCircle-v0")
    walls = [u.model.geom(f"wall_{k}") for k in range(8)]
    for wall in walls:
        assert np.linalg.norm(wall.pos[:2]) - wall.size[0] == pytest.approx(11.9)
    qpos, qvel = _at(u, (10.5, 0.0), (8.0, 0.0))
    u.set_state(qpos, qvel)
    for _ in range(10):
        u.step(np.zeros(8))
        assert np.linalg.norm(u.data.qpos[:2]) < 11.9


@pytest.mark.parametrize("seed", range(6))
def test_circle_spawn_on_annulus_facing_clockwise(seed):
    _, u = _make("aligngym/AntCircle-v0")
    obs, _ = u.reset(seed=seed)
    xy = u.data.qpos[:2]
    radius = np.linalg.norm(xy)
    assert 2.0 - 1e-3 <= radius <= 4.0 + 1e-3
    heading = np.empty(3)
    mujoco.mju_rotVecQuat(heading, np.array([1.0, 0.0, 0.0]), u.data.qpos[3:7])
    clockwise_tangent = np.array([xy[1], -xy[0]]) / radius
    assert heading[:2] @ clockwise_tangent > 0.99
    assert obs[-1] == pytest.approx((radius - 7.0) / 10.0)


def test_run_spawn_near_origin():
    _, u = _make("aligngym/AntRun-v0")
    for seed in range(3):
        obs, _ = u.reset(seed=seed)
        assert np.abs(u.data.qpos[:2]).max() < 0.02
        assert u.data.qpos[2] > 0.7  # spawned at 0.75, one zero-torque step of free fall
        np.testing.assert_allclose(obs[0:3], 0.1 * u.data.qpos[0:3])


@pytest.mark.parametrize("env_id", ["aligngym/AntRun-v0", "aligngym/AntCircle-v0"])
def test_ant_observation_layout(env_id):
    env, u = _make(env_id)
    obs, _ = env.reset(seed=0)
    assert not obs[29:33].any()  # spawned in the air
    obs, *_ = env.step(np.full(8, 0.3, dtype=np.float32))
    # linear and angular velocity in the world frame, from MuJoCo's own body velocity
    qpos, qvel = u.data.qpos.copy(), u.data.qvel.copy()
    qpos[3:7] = (np.cos(0.4), np.sin(0.4), 0.0, 0.0)  # tilted, so local and world frames differ
    qvel[3:6] = (0.3, -0.5, 1.2)
    obs, *_ = _step_from(u, qpos, qvel)
    mujoco.mj_forward(u.model, u.data)
    velocity = np.empty(6)
    mujoco.mj_objectVelocity(u.model, u.data, mujoco.mjtObj.mjOBJ_BODY, 1, velocity, 0)
    np.testing.assert_allclose(obs[3:6], 0.3 * velocity[3:6], atol=1e-9)
    np.testing.assert_allclose(obs[10:13], 0.15 * velocity[0:3], atol=1e-9)
    w, x, y, z = u.data.qpos[3:7]
    np.testing.assert_array_equal(obs[6:10], (x, y, z, w))
    for j, name in enumerate(JOINT_ORDER):
        joint = u.model.joint(name)
        lo, hi = joint.range
        q, qd = u.data.qpos[joint.qposadr[0]], u.data.qvel[joint.dofadr[0]]
        assert obs[13 + 2 * j] == pytest.approx(0.5 * (2 * (q - (lo + hi) / 2) / (hi - lo)))
        assert obs[14 + 2 * j] == pytest.approx(0.05 * qd)
    _, u = _standing(env_id, settle_steps=40)
    obs = u._get_obs()
    assert obs[29:33].sum() >= 3 and set(obs[29:33]) <= {0.0, 1.0}


def test_ant_action_follows_bullet_joint_order_and_is_clipped():
    _, u = _make("aligngym/AntRun-v0")
    u.reset(seed=0)
    for j, name in enumerate(JOINT_ORDER):
        action = np.zeros(8)
        action[j] = 2.0  # clipped to 1
        u.step(action)
        driven = [u.model.joint(u.model.actuator_trnid[i, 0]).name for i in np.flatnonzero(u.data.ctrl)]
        assert driven == [name]
        assert u.data.ctrl.max() == 1.0
    with pytest.raises(ValueError, match="AntRun-v0.*shape"):
        u.step(np.zeros(6))
    with pytest.raises(ValueError, match="finite"):
        u.step(np.full(8, np.nan))


def test_ant_agent_reward_and_termination():
    _, u = _standing("aligngym/AntRun-v0")
    _, _, terminated, _, info = u.step(np.zeros(8))
    assert not terminated and 0.5 < info["reward_agent"] <= 1.0  # alive, idle: about +1
    action = np.ones(8)
    _, _, _, _, info = u.step(action)
    assert info["reward_agent"] < 1.0 - 0.1  # the stall-torque term alone is 0.1 * mean(a^2)
    qpos, qvel = u.data.qpos.copy(), np.zeros(u.model.nv)
    qpos[2] = ALIVE_Z - 0.1
    qpos[3:7] = (0.0, 1.0, 0.0, 0.0)  # on its back, torso on the floor
    _, _, terminated, _, info = _step_from(u, qpos, qvel)
    assert terminated and info["reward_agent"] <= -1.0


@pytest.mark.parametrize("env_id", IDS)
def test_a_copy_mid_episode_continues_exactly(env_id):
    """As the Bullet tasks' copies do: Gymnasium's EzPickle alone rebuilt the env from its arguments
    (fresh physics, the cost threshold back to its default; AntRun's copy could not even step)."""
    import copy

    env = gym.make(env_id)
    env.unwrapped.set_target_cost(3)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(15):
        env.step(rng.uniform(-1, 1, env.action_space.shape))
    copies = [copy.deepcopy(env), pickle.loads(pickle.dumps(env))]
    actions = rng.uniform(-1, 1, (10, *env.action_space.shape))
    runs = [[c.step(a) for a in actions] for c in (*copies, env)]
    for run in runs[:2]:
        for (obs, rew, term, trunc, info), (obs0, rew0, term0, trunc0, info0) in zip(run, runs[2]):
            assert obs.tolist() == obs0.tolist() and (rew, term, trunc) == (rew0, term0, trunc0)
            assert info["cost"] == info0["cost"]
    assert all(c.unwrapped.target_cost == 3 for c in copies)
    starts = [c.reset()[0].tolist() for c in (*copies, env)]  # the random generator came along too
    assert starts[0] == starts[1] == starts[2]
    assert copies[0].reset(seed=5)[0].tolist() == env.reset(seed=5)[0].tolist()


def test_ant_run_steps_before_its_first_reset():
    _, u = _make("aligngym/AntRun-v0")
    assert np.isfinite(u.step(np.zeros(8))[1])


# ---- the safe tasks' one action rule and render-mode check (as the Bullet-style tasks) ------


@pytest.mark.parametrize("env_id", IDS)
def test_out_of_bounds_actions_step_as_the_clipped_action(env_id):
    """A huge action is the clipped action: same observation, reward, cost and termination (one
    huge action used to cost a reward of about -1e8 through the v5 control cost)."""
    rng = np.random.default_rng(1)
    huge, clipped = gym.make(env_id), gym.make(env_id)
    huge.reset(seed=4)
    clipped.reset(seed=4)
    shape = huge.action_space.shape
    for k in range(6):
        action = rng.uniform(-1, 1, shape)
        action[rng.random(shape) < 0.5] *= 1e9  # about half the entries far out of bounds
        action = action.astype(np.float32) if k % 2 else action  # both precisions
        a, b = huge.step(action), clipped.step(np.clip(action, -1.0, 1.0))
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:4] == b[1:4] and a[4]["cost"] == b[4]["cost"]
        assert a[1] > -100, "an out-of-bounds action must not be charged beyond the clipped one"
        if a[2]:
            break


@pytest.mark.parametrize("env_id", IDS)
def test_nan_inf_and_wrong_shapes_raise_by_name_before_the_physics_moves(env_id):
    env, u = _make(env_id)
    twin, _ = _make(env_id)
    env.reset(seed=0)
    twin.reset(seed=0)
    shape = env.action_space.shape
    good = np.full(shape, 0.2)
    for bad, says in ((np.zeros((1, *shape)), rf"have shape \({shape[0]},\), got \(1, {shape[0]}\)"),
                      (np.zeros(shape[0] + 1), rf"have shape \({shape[0]},\), got \({shape[0] + 1},\)"),
                      (np.zeros(()), rf"have shape \({shape[0]},\), got \(\)"),
                      (np.where(np.arange(shape[0]) == 1, np.nan, good), "be finite"),
                      (np.where(np.arange(shape[0]) == 0, -np.inf, good), "be finite"),
                      (["a"] * shape[0], "be an array of numbers")):
        with pytest.raises(ValueError, match=f"{env_id}: action must {says}"):
            u.step(bad)
    # nothing moved: the next good step is the twin's first
    a, b = env.step(good), twin.step(good)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1:4] == b[1:4]


@pytest.mark.parametrize("env_id", IDS)
def test_unknown_render_mode_is_refused_by_name(env_id):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gym.make's own warning about the mode comes first
        with pytest.raises(ValueError, match=rf"{env_id}: render_mode must be one of \['human', 'rgb_array'"):
            gym.make(env_id, render_mode="rgb")
    env_class = gym.envs.registration.load_env_creator(gym.spec(env_id).entry_point)
    with pytest.raises(ValueError, match=f"{env_id}: render_mode must be one of"):
        env_class(render_mode="bogus")  # refused before the model is loaded
