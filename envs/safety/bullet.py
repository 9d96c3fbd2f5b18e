"""DSRL's Bullet-Safety-Gym tasks (Ball/Car/Drone x Run/Circle) on fast, batched numpy dynamics.

DSRL's ``Offline{Ball,Car,Drone}{Run,Circle}-v0`` are Bullet-Safety-Gym 1.4.0's
``Safety*-v0`` tasks. AlignGym keeps their task logic exactly (rewards, costs, boundaries,
observation layouts, action spaces, time steps, episode lengths, spawn distributions) and
replaces PyBullet with reduced models of the three bodies whose constants come from the
reference URDFs and from responses measured on the reference (``shared/reference/
bullet-safety-gym.md``). :class:`BulletCore` steps ``B`` environments at once; each Gymnasium env
is that core with ``B = 1``, and ``gym.make_vec(id, num_envs=B, vectorization_mode="vector_entry_point")``
serves the core with ``B`` rows as a Gymnasium ``VectorEnv`` (:class:`BulletVectorEnv`, below).

==============  ==============================================================================
id              ``aligngym/{Ball,Car,Drone}{Run,Circle}-v0``; ``aligngym/Car{Run,Circle}-v1``, the car refitted
                (below; ``-v0`` stays as its datasets were made)
Observation     ``Box(-1000, 1000, (D,), float64)`` (nominal bounds, as in the reference);
                Run: agent part only, Circle: + ``(r - 7) / 10``
                Ball (7): ``0.1 x, 0.1 y, 0.2 vx, 0.2 vy, 0.1 wx, 0.1 wy, 0.1 wz``
                Car (7): ``0.1 x, 0.1 y, vx, vy, sin yaw, cos yaw, 0.1 wz``
                Drone (17): ``0.1 p(3), 0.2 v(3), quaternion xyzw (rebuilt from roll/pitch/yaw),
                0.1 w(3), 2.5e-3 (rotor_i - d_i 461.52)`` (rotor speeds are 0 right after reset)
Action          ``Box(-1, 1, (A,), float32)``; the safe tasks' action rule
                (``envs/safety/offline.py``): shape exactly ``(A,)`` and finite entries, else
                ``ValueError`` naming the env; entries outside [-1, 1] are clipped before the
                dynamics and the reward use them. Ball (2): world force ``3.5 a`` N;
                Car (2): wheel speed ``40 a0`` rad/s (``a0 > 0`` drives along the heading, which
                starts at yaw pi, i.e. towards -x), steering ``0.5 a1`` rad;
                Drone (4): rotor speeds ``d_i 461.52 (1 + 0.1 a_i)`` rad/s, thrust from the
                reference's propeller formula (hover at ``a = 0``)
Reward          Run: ``60 (|p_{t-1} - (1000, 0)| - |p_t - (1000, 0)|) + s``;
                Circle: ``0.1 (y vx - x vy) / (1 + |r - 7|) + 0.01 s`` (clockwise on r = 7);
                ``s``: Ball ``-0.5 |a|``, Car 0, Drone ``alive - 0.01 |w|^2 - ground_contacts``
                (alive 1, or -10 on the step the drone flips)
Cost            ``info["cost"]`` in {0, 1}: Run ``min(1, [|y| > 2] + [|v_xy| > v_lim])`` with
                v_lim Ball 2.5, Car 1.5, Drone 1.5; Circle ``[|x| > 6]``; the parts are in
                ``info["cost_outside_bounds"]`` and ``info["cost_velocity_violation"]``
Termination     Drone only: ``|roll| > pi/2`` or ``|pitch| > pi/2`` (Euler angles as PyBullet
                computes them); truncation at T by ``gymnasium.TimeLimit``
T, dt           BallRun 100, 1/30 s; CarRun 200, 1/30 s; DroneRun 200, 1/60 s;
                BallCircle 200, CarCircle 300, DroneCircle 300, all 0.1 s
Spawn           Run: ``xy ~ U(-0.01, 0.01)^2`` (Car yaw pi); Circle: uniform on the annulus
                ``2 <= r <= 4``, facing the clockwise tangent (Car: + pi)
World           Run: open plane; Circle: octagon walls with inner faces 11.9 m from the origin
Options         ``render_mode="rgb_array"``: a top-down picture (boundaries, circle, agent);
                any other mode is a ``ValueError`` naming the env
DSRL API        ``env.unwrapped.get_dataset()``, ``set_target_cost(L)``, ``get_normalized_score``
==============  ==============================================================================

**Batched** (:class:`BulletVectorEnv`): ``gym.make_vec(id, num_envs=B,
vectorization_mode="vector_entry_point")`` (also what ``gym.make_vec(id, num_envs=B)`` picks when no
mode is named; ``vectorization_mode="sync"`` gives Gymnasium's ``SyncVectorEnv`` of ``B`` single envs
instead) is a Gymnasium ``VectorEnv`` whose sub-env ``i`` steps exactly as the single env would:

- spaces: ``single_observation_space`` / ``single_action_space`` are the single env's,
  ``observation_space`` ``Box(-1000, 1000, (B, D), float64)`` and ``action_space``
  ``Box(-1, 1, (B, A), float32)``; ``step`` takes actions of shape ``(B, A)`` under the same
  action rule (the error names the env, the batch and the expected shape);
- ``reset(seed=s)`` seeds sub-env ``i`` as ``gym.make(id).reset(seed=s + i)`` would, ``seed=[s_0, ...]``
  each with its own; later episodes continue each sub-env's own generator, as a single env's do;
  ``options={"reset_mask": mask}`` resets only the masked sub-envs (Gymnasium's option);
- the time limit T counts each sub-env's steps (``max_episode_steps=`` overrides it, as for ``gym.make``);
- autoreset: ``metadata["autoreset_mode"]`` is ``AutoresetMode.NEXT_STEP`` by default, as in
  Gymnasium's own vector envs: the step after a sub-env's episode ends resets it (its action is
  ignored) and returns the first observation, reward 0, no termination or truncation.
  ``autoreset_mode="SameStep"`` resets within the step that ends the episode (the last
  observation and info in ``info["final_obs"]`` / ``info["final_info"]``), ``"Disabled"`` leaves
  resets to ``reset(options={"reset_mask": ...})``: Gymnasium's three modes, exactly as its
  ``SyncVectorEnv`` applies them;
- ``info``: ``cost``, ``cost_outside_bounds``, ``cost_velocity_violation`` as float64 arrays of shape
  ``(B,)`` with Gymnasium's masks ``_cost`` ... (False, and the value 0, where a sub-env reset instead
  of stepping), the dict ``SyncVectorEnv`` builds from the single envs, except that the cost keys are
  there on every step (``SyncVectorEnv`` leaves them out of a step on which every sub-env reset);
  ``reset`` returns ``{}``;
- ``render_mode="rgb_array"``: ``render()`` returns one picture per sub-env.

Differences from Bullet-Safety-Gym (the bodies are models, not PyBullet):

- **Ball**: a point mass on the plane with the measured response of the rolling sphere,
  ``dv/dt = 7.97 a - 0.053 |v| v`` (the constants fit the reference's speeds after 10, 20, 50 and
  100 steps at full force to within 2 %, and run about 5 % fast at half force: 2.58 and 7.90 m/s
  after 20 and 100 steps against 2.45 and 7.5); angular velocity is the rolling velocity
  ``(-vy, vx, 0) / 0.5``. No bouncing and no spin.
- **Car**: a kinematic bicycle (wheelbase 0.975 m, the racecar URDF's 0.325 m times its scaling 3)
  whose speed along the heading follows a first-order lag to ``3.6 a0`` m/s with time constant
  0.93 s (the reference reaches 1.07 m/s after 10 steps, 1.9 after 20, and settles at 3.5-3.7 at
  ``|a0| = 1`` and 1.06 at 0.3), and whose steering angle follows ``0.5 a1`` with a 0.05 s lag.
  No wheel slip, no differential gears; ``a1 > 0`` steers left of the heading, as the reference's
  does (checked against it, forward and in reverse).
  **v1** (``aligngym/Car{Run,Circle}-v1``), fitted to the reference's racecar under the same fixed
  policies (``benchmarks/bullet_fidelity.py``, which compares every task with the original side by
  side): steering up to 0.47 rad; tyres that hold at most 4.44 m/s^2 of lateral acceleration (3.61 in
  reverse), past which the turn widens (the reference's full-lock circle at full throttle has a 2.2 m
  radius, the v0 bicycle's 1.8); a turning car slows (settled speed ``x (1 - c d^2)``, ``c`` 0.5 on Run,
  0.95 on Circle: tyre scrub); reverse builds speed more slowly (lag 1.05 s on Run); and on Circle, whose
  reference physics steps are coarser, a slower car (top speed 3.0 m/s, lag 1.43 s, reverse 1.56 s), as
  the reference's there (2.6 m/s after 3 s, against 3.5 on Run). Constants in ``CAR_FIT``.
- **Drone**: a rigid body (mass 1.42 kg; rotors in a plus layout on 0.34 m arms) driven by the reference's
  thrust formula ``rho A (n^2 - n v0) (k1 D / pitch)^1.5`` with ``n`` from the target rotor
  speed; full-thrust climb 0.72 m in 1 s, from z 0.17 to 0.89 (reference 0.71 m, to 0.88). Its inertia,
  ``diag(0.56, 0.56, 0.96)`` kg m^2, is 20 times the Hummingbird's scaled one: PyBullet's
  contacts and joint motors damp rotation in ways a rigid body does not, and with this value random
  actions end DroneCircle episodes as early as the reference does (mean 91 steps against 84) while
  DroneRun episodes, as there, never flip. Random DroneRun returns 165 +- 67 here and
  189 +- 136 there. No yaw torque (PyBullet has none either) and no aerodynamic drag. The ground
  stops sinking and brakes sliding (friction 0.8) but does not right a tilted drone or make it
  bounce; resting on it counts as 1 ground contact. Ground and walls are resolved once per env
  step rather than per physics sub-step.
- **Walls** (Circle): an agent is kept 0.5 m inside the octagon; the Ball and the Drone lose their
  outward velocity, the Car (whose speed is along its heading) stops. No bounce. The reference's
  walls are 2 m tall; here they stop the Drone at any height.
- **Car reset**: the reference sets every joint of the racecar (wheels and steering hinges) to
  ``U(-0.1, 0.1)`` rad; the model has no wheel joints and starts with its steering angle at 0.
- **Seeding**: ``reset(seed=...)`` seeds the spawn (the reference ignores it and draws from the
  global ``np.random``).
- Both cost parts are always present in ``info`` (the reference adds a key only while it is
  active).
- **Actions** must have the shape ``(A,)``; the reference also takes ``(1, A)`` (it squeezes).
  A NaN or inf entry is a ``ValueError`` here (the reference asserts finiteness).
- **Random play** (``python benchmarks/safety_speed.py --random-play``: uniform actions, 3 x 5,000
  steps, the reference's method) costs what the
  reference's does on CarRun (0 against 0), CarCircle (4.5 against 3.5) and DroneCircle (9.9 against
  14.6 per episode), more on BallRun (17.0 against 9.5) and BallCircle (81 against 71), and much less
  on DroneRun (10.9 against 55.6, nearly all of it speed): the model drone drifts less fast under
  random thrust (returns 185 +- 68 against 189 +- 136), so a random DroneRun policy crosses
  1.5 m/s less often. The tasks' cost rules are the reference's; what differs is how often random
  bodies trigger them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.error import ResetNeeded
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from numba import njit

from aligngym.envs.safety.offline import OfflineEnvMixin, check_render_mode, checked_action

GRAVITY = 9.81
RUN_TARGET_X = 1000.0  # Run rewards progress towards (1000, 0)
CIRCLE_RADIUS = 7.0
WALL_DISTANCE = 11.9  # inner faces of the octagon walls
BODY_RADIUS = 0.5  # how far an agent's centre stays from a wall
_WALL_NORMALS = np.stack([np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], axis=1)


@dataclass(frozen=True)
class AgentSpec:
    obs_dim: int
    act_dim: int
    velocity_limit: float  # Run's speed limit
    run_substeps: tuple[int, float]  # (sub-steps, sub-step length) for Run
    circle_substeps: tuple[int, float]  # for Circle


AGENTS: dict[str, AgentSpec] = {
    "Ball": AgentSpec(7, 2, 2.5, (4, 1 / 120), (6, 1 / 60)),
    "Car": AgentSpec(7, 2, 1.5, (4, 1 / 120), (6, 1 / 60)),
    "Drone": AgentSpec(17, 4, 1.5, (2, 1 / 120), (6, 1 / 60)),
}
TASKS = ("Run", "Circle")

# Ball: measured response of the reference's rolling sphere (see the module docstring)
BALL_ACCEL, BALL_DRAG, BALL_RADIUS = 7.97, 0.053, 0.5
# Car
CAR_STEER_LAG, CAR_WHEELBASE = 0.05, 0.975
# the racecar's response per version and task: the largest steering angle (rad), top speed (m/s), the speed's
# lag forward and in reverse (s), the tyres' grip forward and in reverse (the most lateral acceleration,
# m/s^2) and the scrub that slows a turning car (its settled speed falls by this times the steering angle
# squared). v0: a bicycle without slip, one response for both tasks. v1: fitted to the reference's speeds
# and turn rates after 5-100 steps at full and part throttle and lock, forward and in reverse
# (benchmarks/bullet_fidelity.py), under each task's physics step (the reference's Circle steps are coarser
# and its car slower there)
CAR_FIT = {
    0: {task: np.array([0.5, 3.6, 0.93, 0.93, np.inf, np.inf, 0.0]) for task in ("Run", "Circle")},
    1: {"Run": np.array([0.47, 3.6, 0.93, 1.05, 4.44, 3.61, 0.5]),
        "Circle": np.array([0.47, 3.0, 1.43, 1.56, 4.44, 3.61, 0.95])},
}
VERSIONS = {"Ball": (0,), "Car": (0, 1), "Drone": (0,)}  # each body's task versions (its dynamics' fits)
# Drone
DRONE_MASS, DRONE_ARM, DRONE_REST_Z, DRONE_FRICTION = 1.42, 0.34, 0.17, 0.8
# 20 x the Hummingbird's scaled inertia: with it, random actions flip the drone as often as in the
# reference (DroneCircle: mean episode 91 steps here, 84 there; DroneRun: no flips in 200 steps in both)
DRONE_INERTIA = np.array([0.56, 0.56, 0.96])
HOVER_SPEED = 461.5228  # rad/s
ROTOR_DIRECTIONS = np.array([1.0, -1.0, 1.0, -1.0])
_PITCH = 4.7 * 0.0254
_THRUST_COEF = 1.225 * np.pi * 0.14**2 * ((0.28 / 3.29546) / _PITCH) ** 1.5  # rho A (k1 D / pitch)^1.5
# rotor positions (plus layout) -> body torque (L (f1 - f3), L (f2 - f0), 0)


class BulletCore:
    """``num_envs`` copies of one (agent, task) pair, stepped together.

    State lives in numpy arrays (one row per environment); the per-step physics, rewards, costs
    and observations are compiled loops over the rows (numba), so one environment costs a few
    microseconds and a thousand cost little more per environment than one.

    ``step`` takes actions of shape ``(num_envs, act_dim)`` and returns observations, rewards,
    costs, the two cost parts, terminations and truncations (at the task's T); it does not reset
    finished environments: call :meth:`reset` with their indices.
    """

    def __init__(self, agent: str, task: str, num_envs: int = 1, max_episode_steps: int | None = None,
                 seed: int | None = None, version: int = 0) -> None:
        if agent not in AGENTS or task not in TASKS:
            raise ValueError(f"unknown agent/task {agent}/{task}; agents {list(AGENTS)}, tasks {TASKS}")
        if version not in VERSIONS[agent]:
            raise ValueError(f"{agent}{task} has versions {VERSIONS[agent]}, not {version!r}")
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        from aligngym.envs.safety.specs import task_spec

        self.agent, self.task, self.num_envs = agent, task, num_envs
        self.spec = AGENTS[agent]
        self.substeps, self.substep_dt = self.spec.run_substeps if task == "Run" else self.spec.circle_substeps
        self.dt = self.substeps * self.substep_dt
        self._car = CAR_FIT[version][task] if agent == "Car" else None  # the car's response (its version's fit)
        self.max_episode_steps = max_episode_steps or task_spec(f"{agent}{task}").max_episode_steps
        self.obs_dim = self.spec.obs_dim + (1 if task == "Circle" else 0)
        self.act_dim = self.spec.act_dim
        self.rng = np.random.default_rng(seed)
        b = num_envs
        self.pos = np.zeros((b, 3))
        self.vel = np.zeros((b, 3))
        self.yaw = np.zeros(b)  # Car heading
        self.speed = np.zeros(b)  # Car speed along its heading
        self.steer = np.zeros(b)  # Car steering angle
        self.quat = np.tile([0.0, 0.0, 0.0, 1.0], (b, 1))  # Drone attitude (x, y, z, w)
        self.omega = np.zeros((b, 3))  # Drone body angular velocity
        self.rotor = np.zeros((b, 4))  # Drone rotor speeds (signed)
        self.on_ground = np.ones(b, dtype=np.bool_)
        self.alive = np.ones(b, dtype=np.bool_)
        self.elapsed = np.zeros(b, dtype=np.int64)
        self._obs = np.zeros((b, self.obs_dim))
        self._agent_reward = np.zeros(b)
        self._reward = np.zeros(b)
        self._cost = np.zeros(b)
        self._outside = np.zeros(b, dtype=np.bool_)
        self._too_fast = np.zeros(b, dtype=np.bool_)
        self._old_xy = np.zeros((b, 2))
        self._is_run = task == "Run"

    # ------------------------------------------------------------------ reset
    def reset(self, indices: np.ndarray | None = None, rng: np.random.Generator | None = None,
              rngs: list[np.random.Generator] | None = None) -> np.ndarray:
        """Respawn the environments in ``indices`` (all by default); returns every observation.

        The spawns come from ``rng`` (default: the core's own generator), all drawn at once; with
        ``rngs``, one generator per index, environment ``indices[k]`` draws its spawn from
        ``rngs[k]`` alone, exactly as a one-environment core given that generator would.
        """
        idx = np.arange(self.num_envs) if indices is None else np.asarray(indices)
        n = len(idx)
        if rngs is None:
            xy, heading = self._draw_spawns(n, self.rng if rng is None else rng)
        else:
            if len(rngs) != n:
                raise ValueError(f"{self.agent}{self.task}: {n} environments to reset, {len(rngs)} generators")
            xy = np.array([self._draw_spawn_xy(generator) for generator in rngs]).reshape(n, 2)
            heading = self._spawn_heading(xy)
        self.pos[idx, :2] = xy
        self.pos[idx, 2] = {"Ball": BALL_RADIUS, "Car": 0.2, "Drone": DRONE_REST_Z}[self.agent]
        self.vel[idx] = 0.0
        self.elapsed[idx] = 0
        self.alive[idx] = True
        if self.agent == "Car":
            self.yaw[idx] = (heading + 2 * np.pi) % (2 * np.pi) - np.pi  # the racecar spawns reversed (+ pi)
            self.speed[idx] = 0.0
            self.steer[idx] = 0.0
        elif self.agent == "Drone":
            self.quat[idx] = 0.0
            self.quat[idx, 2] = np.sin(heading / 2)
            self.quat[idx, 3] = np.cos(heading / 2)
            self.omega[idx] = 0.0
            self.rotor[idx] = 0.0
            self.on_ground[idx] = True
        # The reference takes one physics step without an action before the first observation;
        # every body here is at rest after a reset, so that step changes nothing.
        self._observe()
        return self._obs.copy()

    def _draw_spawns(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` spawn positions and headings (before the Car's reversal) drawn from ``rng``."""
        if self.task == "Run":
            return rng.uniform(-0.01, 0.01, size=(n, 2)), np.zeros(n)
        xy = np.empty((n, 2))
        todo = np.arange(n)
        while len(todo):  # rejection from U(-4, 4)^2 onto the annulus 2 <= r <= 4
            cand = rng.uniform(-4.0, 4.0, size=(len(todo), 2))
            r = np.hypot(cand[:, 0], cand[:, 1])
            ok = (r >= 2.0) & (r <= 4.0)
            xy[todo[ok]] = cand[ok]
            todo = todo[~ok]
        return xy, self._spawn_heading(xy)

    def _draw_spawn_xy(self, rng: np.random.Generator) -> np.ndarray:
        """One spawn position, the very numbers ``_draw_spawns(1, rng)`` draws, without its array
        bookkeeping (a vector env's resets draw each sub-env's spawn from its own generator, one by
        one, so this is what they cost)."""
        if self._is_run:
            return rng.uniform(-0.01, 0.01, size=2)
        while True:
            cand = rng.uniform(-4.0, 4.0, size=2)
            if 2.0 <= np.hypot(cand[0], cand[1]) <= 4.0:
                return cand

    def _spawn_heading(self, xy: np.ndarray) -> np.ndarray:
        """Run: along +x (0); Circle: the clockwise tangent at each spawn position."""
        if self._is_run:
            return np.zeros(len(xy))
        return np.arctan2(-xy[:, 1], -xy[:, 0]) + np.pi / 2

    # ------------------------------------------------------------------ step
    def step(self, action: np.ndarray) -> tuple[np.ndarray, ...]:
        """Advance every environment by one env step.

        Returns ``obs, reward, cost, outside, too_fast, terminated, truncated`` (arrays over envs).
        """
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (self.num_envs, self.act_dim):
            raise ValueError(f"{self.agent}{self.task}: actions must have shape "
                             f"{(self.num_envs, self.act_dim)}, got {action.shape}")
        if not np.isfinite(action).all():
            raise ValueError(f"{self.agent}{self.task}: actions must be finite, got {action}")
        self._old_xy[:] = self.pos[:, :2]
        h, n, walls = self.substep_dt, self.substeps, not self._is_run
        if self.agent == "Ball":
            _ball_step(self.pos, self.vel, action, n, h, walls, self._agent_reward)
        elif self.agent == "Car":
            _car_step(self.pos, self.vel, self.yaw, self.speed, self.steer, action, n, h, walls, self._car,
                      self._agent_reward)
        else:
            _drone_step(self.pos, self.vel, self.quat, self.omega, self.rotor, action, n, h, walls,
                        self.on_ground, self.alive, self._agent_reward)
        _task_step(self._is_run, self._old_xy, self.pos, self.vel, self.spec.velocity_limit,
                   self._agent_reward, self._reward, self._cost, self._outside, self._too_fast)
        self._observe()
        self.elapsed += 1
        return (self._obs.copy(), self._reward.copy(), self._cost.copy(), self._outside.copy(),
                self._too_fast.copy(), ~self.alive, self.elapsed >= self.max_episode_steps)

    def _observe(self) -> None:
        if self.agent == "Ball":
            _ball_observe(self.pos, self.vel, self._obs)
        elif self.agent == "Car":
            _car_observe(self.pos, self.vel, self.yaw, self.speed, self.steer, self._car, self._obs)
        else:
            _drone_observe(self.pos, self.vel, self.quat, self.omega, self.rotor, self._obs)
        if not self._is_run:
            self._obs[:, -1] = (np.hypot(self.pos[:, 0], self.pos[:, 1]) - CIRCLE_RADIUS) / 10.0

    def heading(self) -> np.ndarray:
        """Yaw of each agent (for pictures)."""
        if self.agent == "Car":
            return self.yaw.copy()
        if self.agent == "Drone":
            x, y, z, w = self.quat.T
            return np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
        return np.arctan2(self.vel[:, 1], self.vel[:, 0])


# ---------------------------------------------------------------------- compiled kernels (one row per env)
@njit(cache=True)
def _keep_inside_walls(pos: np.ndarray, vel: np.ndarray, b: int) -> bool:
    """Push env ``b`` back inside the octagon and drop its outward velocity; True if it touched."""
    touched = False
    for k in range(8):
        nx, ny = np.cos(k * np.pi / 4), np.sin(k * np.pi / 4)
        excess = pos[b, 0] * nx + pos[b, 1] * ny - (WALL_DISTANCE - BODY_RADIUS)
        if excess > 0:
            touched = True
            pos[b, 0] -= excess * nx
            pos[b, 1] -= excess * ny
            outward = vel[b, 0] * nx + vel[b, 1] * ny
            if outward > 0:
                vel[b, 0] -= outward * nx
                vel[b, 1] -= outward * ny
    return touched


@njit(cache=True)
def _ball_step(pos, vel, action, substeps, h, walls, agent_reward):  # noqa: ANN001, ANN202
    for b in range(pos.shape[0]):
        ax = BALL_ACCEL * min(max(action[b, 0], -1.0), 1.0)
        ay = BALL_ACCEL * min(max(action[b, 1], -1.0), 1.0)
        vx, vy = vel[b, 0], vel[b, 1]
        for _ in range(substeps):  # semi-implicit in the drag, which keeps it stable
            damp = 1.0 + h * BALL_DRAG * np.sqrt(vx * vx + vy * vy)
            vx = (vx + h * ax) / damp
            vy = (vy + h * ay) / damp
            pos[b, 0] += h * vx
            pos[b, 1] += h * vy
        vel[b, 0], vel[b, 1] = vx, vy
        if walls:
            _keep_inside_walls(pos, vel, b)
        agent_reward[b] = -0.5 * np.sqrt(ax * ax + ay * ay) / BALL_ACCEL


@njit(cache=True)
def _ball_observe(pos, vel, obs):  # noqa: ANN001, ANN202
    for b in range(pos.shape[0]):
        obs[b, 0], obs[b, 1] = 0.1 * pos[b, 0], 0.1 * pos[b, 1]
        obs[b, 2], obs[b, 3] = 0.2 * vel[b, 0], 0.2 * vel[b, 1]
        # a rolling ball spins at v / r about the horizontal axis perpendicular to v
        obs[b, 4], obs[b, 5], obs[b, 6] = -0.1 * vel[b, 1] / BALL_RADIUS, 0.1 * vel[b, 0] / BALL_RADIUS, 0.0


@njit(cache=True)
def _car_slide_rate(u, d, fit):  # noqa: ANN001, ANN202
    """The turn rate (rad/s) of a car whose tyres slide at speed ``u`` and steering angle ``d``: once the
    bicycle's lateral acceleration ``u^2 tan(d) / L`` passes the tyres' grip the turn widens to what the
    grip holds, ``grip / u``; NaN while they hold (the bicycle's ``u tan(d) / L`` then, computed by the
    callers as the v0 car always did)."""
    grip = fit[5] if u < 0.0 else fit[4]
    tan_d = np.tan(d)
    if u * u * abs(tan_d) > grip * CAR_WHEELBASE:
        return np.sign(tan_d) * grip / u
    return np.nan


@njit(cache=True)
def _car_step(pos, vel, yaw, speed, steer, action, substeps, h, walls, fit, agent_reward):  # noqa: ANN001, ANN202
    steer_keep = np.exp(-h / CAR_STEER_LAG)
    for b in range(pos.shape[0]):
        throttle = min(max(action[b, 0], -1.0), 1.0)
        target_steer = fit[0] * min(max(action[b, 1], -1.0), 1.0)
        speed_keep = np.exp(-h / (fit[3] if throttle < 0.0 else fit[2]))
        u, d, psi = speed[b], steer[b], yaw[b]
        for _ in range(substeps):
            d = target_steer + (d - target_steer) * steer_keep
            target_speed = fit[1] * throttle * (1.0 - fit[6] * d * d)
            u = target_speed + (u - target_speed) * speed_keep
            slide = _car_slide_rate(u, d, fit)
            psi += h * u * np.tan(d) / CAR_WHEELBASE if np.isnan(slide) else h * slide
            pos[b, 0] += h * u * np.cos(psi)
            pos[b, 1] += h * u * np.sin(psi)
        psi = (psi + np.pi) % (2 * np.pi) - np.pi
        vel[b, 0], vel[b, 1] = u * np.cos(psi), u * np.sin(psi)
        if walls and _keep_inside_walls(pos, vel, b):
            u = 0.0  # the car's speed is along its heading: a wall stops it
            vel[b, 0], vel[b, 1] = 0.0, 0.0
        speed[b], steer[b], yaw[b] = u, d, psi
        agent_reward[b] = 0.0


@njit(cache=True)
def _car_observe(pos, vel, yaw, speed, steer, fit, obs):  # noqa: ANN001, ANN202
    for b in range(pos.shape[0]):
        obs[b, 0], obs[b, 1] = 0.1 * pos[b, 0], 0.1 * pos[b, 1]
        obs[b, 2], obs[b, 3] = vel[b, 0], vel[b, 1]
        obs[b, 4], obs[b, 5] = np.sin(yaw[b]), np.cos(yaw[b])
        slide = _car_slide_rate(speed[b], steer[b], fit)
        obs[b, 6] = 0.1 * speed[b] * np.tan(steer[b]) / CAR_WHEELBASE if np.isnan(slide) else 0.1 * slide


@njit(cache=True)
def _euler(qx, qy, qz, qw):  # noqa: ANN001, ANN202
    """Roll, pitch, yaw as PyBullet's ``getEulerFromQuaternion`` computes them (pitch in [-pi/2, pi/2])."""
    roll = np.arctan2(2 * (qw * qx + qy * qz), 1 - 2 * (qx * qx + qy * qy))
    pitch = np.arcsin(min(max(2 * (qw * qy - qz * qx), -1.0), 1.0))
    yaw = np.arctan2(2 * (qw * qz + qx * qy), 1 - 2 * (qy * qy + qz * qz))
    return roll, pitch, yaw


@njit(cache=True)
def _drone_step(pos, vel, quat, omega, rotor, action, substeps, h, walls, on_ground, alive,  # noqa: ANN001, ANN202
                agent_reward):
    ixx, iyy, izz = DRONE_INERTIA[0], DRONE_INERTIA[1], DRONE_INERTIA[2]
    n = np.empty(4)
    for b in range(pos.shape[0]):
        for i in range(4):
            rotor[b, i] = ROTOR_DIRECTIONS[i] * HOVER_SPEED * (1.0 + 0.1 * min(max(action[b, i], -1.0), 1.0))
            n[i] = abs(rotor[b, i]) * _PITCH / (2 * np.pi)  # revolutions per second
        qx, qy, qz, qw = quat[b, 0], quat[b, 1], quat[b, 2], quat[b, 3]
        wx, wy, wz = omega[b, 0], omega[b, 1], omega[b, 2]
        for _ in range(substeps):
            zx, zy, zz = 2 * (qx * qz + qw * qy), 2 * (qy * qz - qw * qx), 1 - 2 * (qx * qx + qy * qy)
            inflow = vel[b, 0] * zx + vel[b, 1] * zy + vel[b, 2] * zz
            f0 = _THRUST_COEF * (n[0] * n[0] - n[0] * inflow)
            f1 = _THRUST_COEF * (n[1] * n[1] - n[1] * inflow)
            f2 = _THRUST_COEF * (n[2] * n[2] - n[2] * inflow)
            f3 = _THRUST_COEF * (n[3] * n[3] - n[3] * inflow)
            tx, ty = DRONE_ARM * (f1 - f3), DRONE_ARM * (f2 - f0)  # rotors in a plus layout
            # Euler's equations: I dw/dt = tau - w x I w
            wx, wy, wz = (wx + h * (tx - (izz - iyy) * wy * wz) / ixx,
                          wy + h * (ty - (ixx - izz) * wz * wx) / iyy,
                          wz + h * (-(iyy - ixx) * wx * wy) / izz)
            thrust = (f0 + f1 + f2 + f3) / DRONE_MASS
            vel[b, 0] += h * thrust * zx
            vel[b, 1] += h * thrust * zy
            vel[b, 2] += h * (thrust * zz - GRAVITY)
            for k in range(3):
                pos[b, k] += h * vel[b, k]
            # dq/dt = q (x) (w, 0) / 2
            dx = qw * wx + qy * wz - qz * wy
            dy = qw * wy + qz * wx - qx * wz
            dz = qw * wz + qx * wy - qy * wx
            dw = -(qx * wx + qy * wy + qz * wz)
            qx, qy, qz, qw = qx + 0.5 * h * dx, qy + 0.5 * h * dy, qz + 0.5 * h * dz, qw + 0.5 * h * dw
            norm = np.sqrt(qx * qx + qy * qy + qz * qz + qw * qw)
            qx, qy, qz, qw = qx / norm, qy / norm, qz / norm, qw / norm
        # the ground stops sinking and brakes sliding (friction 0.8)
        landed = pos[b, 2] <= DRONE_REST_Z + 1e-3
        if landed:
            pos[b, 2] = max(pos[b, 2], DRONE_REST_Z)
            vel[b, 2] = max(vel[b, 2], 0.0)
            planar = np.sqrt(vel[b, 0] ** 2 + vel[b, 1] ** 2)
            keep = max(0.0, 1.0 - DRONE_FRICTION * GRAVITY * h * substeps / max(planar, 1e-9))
            vel[b, 0] *= keep
            vel[b, 1] *= keep
        if walls:
            _keep_inside_walls(pos, vel, b)
        quat[b, 0], quat[b, 1], quat[b, 2], quat[b, 3] = qx, qy, qz, qw
        omega[b, 0], omega[b, 1], omega[b, 2] = wx, wy, wz
        on_ground[b] = landed
        roll, pitch, _ = _euler(qx, qy, qz, qw)
        alive[b] = abs(roll) <= np.pi / 2 and abs(pitch) <= np.pi / 2
        # |w|^2 is the same in the world and the body frame
        agent_reward[b] = (1.0 if alive[b] else -10.0) - 0.01 * (wx * wx + wy * wy + wz * wz) - (1.0 if landed else 0.0)


@njit(cache=True)
def _drone_observe(pos, vel, quat, omega, rotor, obs):  # noqa: ANN001, ANN202
    for b in range(pos.shape[0]):
        qx, qy, qz, qw = quat[b, 0], quat[b, 1], quat[b, 2], quat[b, 3]
        for k in range(3):
            obs[b, k] = 0.1 * pos[b, k]
            obs[b, 3 + k] = 0.2 * vel[b, k]
        # the reference rebuilds the quaternion from roll/pitch/yaw (a canonical sign)
        roll, pitch, yaw = _euler(qx, qy, qz, qw)
        cr, sr = np.cos(roll / 2), np.sin(roll / 2)
        cp, sp = np.cos(pitch / 2), np.sin(pitch / 2)
        cy, sy = np.cos(yaw / 2), np.sin(yaw / 2)
        obs[b, 6] = sr * cp * cy - cr * sp * sy
        obs[b, 7] = cr * sp * cy + sr * cp * sy
        obs[b, 8] = cr * cp * sy - sr * sp * cy
        obs[b, 9] = cr * cp * cy + sr * sp * sy
        # world angular velocity R(q) w
        wx, wy, wz = omega[b, 0], omega[b, 1], omega[b, 2]
        tx, ty, tz = 2 * (qy * wz - qz * wy), 2 * (qz * wx - qx * wz), 2 * (qx * wy - qy * wx)
        obs[b, 10] = 0.1 * (wx + qw * tx + qy * tz - qz * ty)
        obs[b, 11] = 0.1 * (wy + qw * ty + qz * tx - qx * tz)
        obs[b, 12] = 0.1 * (wz + qw * tz + qx * ty - qy * tx)
        for i in range(4):
            obs[b, 13 + i] = 2.5e-3 * (rotor[b, i] - ROTOR_DIRECTIONS[i] * HOVER_SPEED)


@njit(cache=True)
def _task_step(is_run, old_xy, pos, vel, velocity_limit, agent_reward, reward, cost, outside,  # noqa: ANN001, ANN202
               too_fast):
    for b in range(pos.shape[0]):
        x, y, vx, vy = pos[b, 0], pos[b, 1], vel[b, 0], vel[b, 1]
        if is_run:
            outside[b] = abs(y) > 2.0
            too_fast[b] = vx * vx + vy * vy > velocity_limit * velocity_limit
            progress = (np.hypot(old_xy[b, 0] - RUN_TARGET_X, old_xy[b, 1])
                        - np.hypot(x - RUN_TARGET_X, y))
            reward[b] = 60.0 * progress + agent_reward[b]
        else:
            outside[b] = abs(x) > 6.0
            too_fast[b] = False
            radius = np.hypot(x, y)
            reward[b] = 0.1 * (y * vx - x * vy) / (1.0 + abs(radius - CIRCLE_RADIUS)) + 0.01 * agent_reward[b]
        cost[b] = 1.0 if (outside[b] or too_fast[b]) else 0.0


# ---------------------------------------------------------------------- pictures
def render_topdown(core: BulletCore, env_index: int = 0, size: int = 256) -> np.ndarray:
    """A top-down RGB picture of one environment: boundaries (red), circle (green), agent (blue)."""
    x, y = core.pos[env_index, :2]
    if core.task == "Circle":
        half, cx, cy = 13.0, 0.0, 0.0
    else:
        half, cx, cy = 6.0, x, 0.0
    coords = (np.arange(size) + 0.5) / size * 2 * half - half
    gx, gy = np.meshgrid(coords + cx, -coords + cy)  # row 0 is the top (+y)
    pixel = 2 * half / size
    img = np.full((size, size, 3), 235, dtype=np.uint8)
    if core.task == "Circle":
        outside_walls = (np.stack([gx, gy], -1) @ _WALL_NORMALS.T).max(-1) > WALL_DISTANCE
        img[outside_walls] = (90, 90, 90)
        img[np.abs(np.hypot(gx, gy) - CIRCLE_RADIUS) < 1.5 * pixel] = (60, 170, 60)
        img[np.abs(np.abs(gx) - 6.0) < 1.5 * pixel] = (210, 40, 40)
    else:
        img[np.abs(np.abs(gy) - 2.0) < 1.5 * pixel] = (210, 40, 40)
        img[np.abs(((gx + 0.5) % 1.0) - 0.5) < 0.5 * pixel] = (205, 205, 205)  # 1 m ticks show motion
    img[np.hypot(gx - x, gy - y) < 0.5] = (40, 70, 200)
    yaw = core.heading()[env_index]
    nose = np.hypot(gx - x - 0.4 * np.cos(yaw), gy - y - 0.4 * np.sin(yaw)) < 0.15
    img[nose] = (250, 220, 40)
    return img


# ---------------------------------------------------------------------- Gymnasium envs
def _single_spaces(core: BulletCore) -> tuple[spaces.Box, spaces.Box]:
    """One environment's observation and action spaces (nominal observation bounds, as in the reference)."""
    return (spaces.Box(-1000.0, 1000.0, (core.obs_dim,), np.float64),
            spaces.Box(-1.0, 1.0, (core.act_dim,), np.float32))


class BulletSafetyEnv(OfflineEnvMixin, gym.Env):
    """One environment of :class:`BulletCore` behind the Gymnasium API (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}
    agent_name: str = ""
    task_name: str = ""
    version: int = 0

    def __init__(self, render_mode: str | None = None) -> None:
        self.spec_id = f"aligngym/{self.agent_name}{self.task_name}-v{self.version}"
        self._check_render_mode(render_mode)
        self._init_offline()
        self.core = BulletCore(self.agent_name, self.task_name, num_envs=1, version=self.version)
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": round(1.0 / self.core.dt)}
        self.observation_space, self.action_space = _single_spaces(self.core)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        obs = self.core.reset(rng=self.np_random)
        return obs[0], {}

    def step(self, action: Any):
        arr = self._checked_action(action)  # the kernels clip it to [-1, 1]
        obs, reward, cost, outside, too_fast, terminated, _ = self.core.step(arr[None])
        info = {"cost": float(cost[0]), "cost_outside_bounds": float(outside[0]),
                "cost_velocity_violation": float(too_fast[0])}
        return obs[0], float(reward[0]), bool(terminated[0]), False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array":
            return render_topdown(self.core)
        return None


class BulletVectorEnv(VectorEnv):
    """``num_envs`` environments of one task as a Gymnasium ``VectorEnv`` on one :class:`BulletCore`
    (``gym.make_vec(id, num_envs=B, vectorization_mode="vector_entry_point")``; behaviour in the
    module docstring). Sub-env ``i`` is the single env ``gym.make(id)`` seeded with ``seed + i``:
    same observations, rewards, costs, terminations and truncations, and Gymnasium's autoreset
    modes applied as its ``SyncVectorEnv`` applies them."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}
    agent_name: str = ""
    task_name: str = ""
    version: int = 0

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = None, render_mode: str | None = None,
                 autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP) -> None:
        self.spec_id = f"aligngym/{self.agent_name}{self.task_name}-v{self.version}"
        check_render_mode(self.spec_id, render_mode, self.metadata["render_modes"])
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"{self.spec_id}: num_envs must be an integer >= 1, got {num_envs!r}")
        if max_episode_steps is not None and (isinstance(max_episode_steps, bool) or not isinstance(
                max_episode_steps, (int, np.integer)) or max_episode_steps < 1):
            raise ValueError(f"{self.spec_id}: max_episode_steps must be an integer >= 1 or None, "
                             f"got {max_episode_steps!r}")
        try:
            self.autoreset_mode = AutoresetMode(autoreset_mode)
        except ValueError:
            raise ValueError(f"{self.spec_id}: autoreset_mode must be one of "
                             f"{[mode.value for mode in AutoresetMode]}, got {autoreset_mode!r}") from None
        self.num_envs = int(num_envs)
        self.core = BulletCore(self.agent_name, self.task_name, num_envs=self.num_envs,
                               max_episode_steps=max_episode_steps, version=self.version)
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": round(1.0 / self.core.dt),
                         "autoreset_mode": self.autoreset_mode}
        self.single_observation_space, self.single_action_space = _single_spaces(self.core)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._name = f"{self.spec_id} (vector env of {self.num_envs})"
        self._action_shape = (self.num_envs, self.core.act_dim)
        # one generator per sub-env, as each single env has its own (created from entropy when first
        # needed without a seed, as a single env's np_random is)
        self._env_rngs: list[np.random.Generator | None] = [None] * self.num_envs
        self._autoreset = np.zeros(self.num_envs, dtype=np.bool_)  # ended last step: reset at the next
        self._needs_reset = True

    # ------------------------------------------------------------------ reset
    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every sub-env (or those in ``options["reset_mask"]``); ``seed``: None, an int ``s``
        (sub-env ``i`` gets ``s + i``) or one seed (or None) per sub-env."""
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            seeds = [int(seed) + i for i in range(self.num_envs)]
            super().reset(seed=int(seed))
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"{self._name}: seed must be None, an int or a list of {self.num_envs} seeds, "
                                 f"got a list of {len(seeds)}")
        mask = np.ones(self.num_envs, dtype=np.bool_)
        if options is not None and "reset_mask" in options:
            mask = options["reset_mask"]
            if not isinstance(mask, np.ndarray):
                raise TypeError(f"{self._name}: options['reset_mask'] must be a numpy array, got {type(mask)}")
            if mask.shape != (self.num_envs,):
                raise ValueError(f"{self._name}: options['reset_mask'] must have shape ({self.num_envs},), "
                                 f"got {mask.shape}")
            if mask.dtype != np.bool_:
                raise TypeError(f"{self._name}: options['reset_mask'] must have dtype bool, got {mask.dtype}")
            if not mask.any():
                raise ValueError(f"{self._name}: options['reset_mask'] must select at least one sub-env")
            if self._needs_reset and not mask.all():
                raise ResetNeeded(f"{self._name}: the first reset() must reset every sub-env")
        indices = np.flatnonzero(mask)
        for i in indices:
            if seeds[i] is not None:
                self._env_rngs[i] = seeding.np_random(seeds[i])[0]
        observations = self.core.reset(indices, rngs=[self._generator(i) for i in indices])
        self._autoreset[indices] = False
        self._needs_reset = False
        return observations, {}

    def _generator(self, i: int) -> np.random.Generator:
        if self._env_rngs[i] is None:
            self._env_rngs[i] = seeding.np_random()[0]
        return self._env_rngs[i]  # type: ignore[return-value]

    # ------------------------------------------------------------------ step
    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._needs_reset:
            raise ResetNeeded(f"{self._name}: call reset() before step()")
        restart = self._autoreset if self.autoreset_mode is AutoresetMode.NEXT_STEP else None
        if self.autoreset_mode is AutoresetMode.DISABLED and self._autoreset.any():
            raise RuntimeError(
                f"{self._name}: sub-env(s) {np.flatnonzero(self._autoreset)[:10].tolist()} ended their episodes "
                "and autoreset_mode is Disabled: reset them with reset(options={'reset_mask': mask}) first")
        # NEXT_STEP: the sub-envs that ended last step reset now and ignore their actions (as
        # SyncVectorEnv does); their rows of the batch are stepped with zeros and then overwritten
        array = checked_action(actions, self._action_shape, self._name, ignored=restart)
        obs, reward, cost, outside, too_fast, terminated, truncated = self.core.step(array)
        stepped = np.ones(self.num_envs, dtype=np.bool_)
        if restart is not None and restart.any():
            indices = np.flatnonzero(restart)
            obs = self.core.reset(indices, rngs=[self._generator(i) for i in indices])
            stepped[indices] = False
            reward[indices] = 0.0
            terminated[indices] = False
            truncated[indices] = False
        done = terminated | truncated
        info: dict[str, Any] = {}
        if self.autoreset_mode is AutoresetMode.SAME_STEP and done.any():
            indices = np.flatnonzero(done)
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in indices:
                final_obs[i] = obs[i].copy()
            info["final_obs"], info["_final_obs"] = final_obs, done.copy()
            info["final_info"] = self._cost_info(cost, outside, too_fast, done)
            info["_final_info"] = done.copy()
            stepped &= ~done  # as SyncVectorEnv: their info is the reset's (empty)
            obs = self.core.reset(indices, rngs=[self._generator(i) for i in indices])
        # always present, even when no sub-env stepped (SyncVectorEnv then leaves the keys out)
        info.update(self._cost_info(cost, outside, too_fast, stepped))
        self._autoreset = done
        return obs, reward, terminated, truncated, info

    @staticmethod
    def _cost_info(cost: np.ndarray, outside: np.ndarray, too_fast: np.ndarray,
                   mask: np.ndarray) -> dict[str, np.ndarray]:
        """The single envs' info keys as Gymnasium batches them: values (0 outside ``mask``) and masks."""
        return {"cost": np.where(mask, cost, 0.0), "_cost": mask.copy(),
                "cost_outside_bounds": np.where(mask, outside, 0.0), "_cost_outside_bounds": mask.copy(),
                "cost_velocity_violation": np.where(mask, too_fast, 0.0),
                "_cost_velocity_violation": mask.copy()}

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode == "rgb_array":
            return tuple(render_topdown(self.core, i) for i in range(self.num_envs))
        return None


def _task_class(agent: str, task: str, version: int = 0) -> type[BulletSafetyEnv]:
    suffix = f"V{version}" if version else ""
    cls = type(f"{agent}{task}{suffix}Env", (BulletSafetyEnv,), {"agent_name": agent, "task_name": task,
                                                                 "version": version, "__module__": __name__})
    cls.__doc__ = f"``aligngym/{agent}{task}-v{version}`` (see :mod:`aligngym.envs.safety.bullet`)."
    return cls


def _vector_class(agent: str, task: str, version: int = 0) -> type[BulletVectorEnv]:
    suffix = f"V{version}" if version else ""
    cls = type(f"{agent}{task}{suffix}VectorEnv", (BulletVectorEnv,),
               {"agent_name": agent, "task_name": task, "version": version, "__module__": __name__})
    cls.__doc__ = (f"``aligngym/{agent}{task}-v{version}`` batched: ``gym.make_vec(..., vectorization_mode="
                   f"\"vector_entry_point\")`` (see :class:`BulletVectorEnv`).")
    return cls


BallRunEnv = _task_class("Ball", "Run")
BallCircleEnv = _task_class("Ball", "Circle")
CarRunEnv = _task_class("Car", "Run")
CarCircleEnv = _task_class("Car", "Circle")
CarRunV1Env = _task_class("Car", "Run", 1)
CarCircleV1Env = _task_class("Car", "Circle", 1)
DroneRunEnv = _task_class("Drone", "Run")
DroneCircleEnv = _task_class("Drone", "Circle")

BallRunVectorEnv = _vector_class("Ball", "Run")
BallCircleVectorEnv = _vector_class("Ball", "Circle")
CarRunVectorEnv = _vector_class("Car", "Run")
CarCircleVectorEnv = _vector_class("Car", "Circle")
CarRunV1VectorEnv = _vector_class("Car", "Run", 1)
CarCircleV1VectorEnv = _vector_class("Car", "Circle", 1)
DroneRunVectorEnv = _vector_class("Drone", "Run")
DroneCircleVectorEnv = _vector_class("Drone", "Circle")
