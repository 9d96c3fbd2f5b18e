"""``aligngym/ShapingMountainCar-v0``: BARFI's own mountain car with a sparse reward (``barfi-mc``'s
``MCSenseSparseBangAux`` / ``MountainCarSparseVelAux`` / ``MountainCarSparseNoAux``).

The classic underpowered car in a valley; the only primary reward is reaching the right hilltop.
The good heuristic is the bang-bang controller (push the way the car already moves), which
solves the task; the bad one pays for speed, which a car can earn by swinging without ever
leaving the valley.

=================  ============================================================================
Observation        ``Box([-1.2, -0.07], [0.5, 0.07], (2,), float32)``: ``(x, v)``; starts at
                   ``x ~ U(-0.6, -0.4)``, ``v = 0``
Action             ``Discrete(3)``: 0 push left, 1 no push, 2 push right
Dynamics           ``v <- clip(v + 0.001 (a - 1) - 0.0025 cos(3 x), -0.07, 0.07)``, then
                   ``x <- x + v``; at ``x < -1.2`` the car stops (``x = -1.2``, ``v = 0``)
Reward (primary)   1 on the step that reaches ``x >= 0.5``, else 0
Termination        on reaching ``x >= 0.5`` (the observed ``x`` is then 0.5); truncation after
                   2000 steps by Gymnasium's ``TimeLimit`` (``max_episode_steps=2000``); a step
                   after the goal stays there with reward 0 and aux 0
Aux (info)         ``info["aux_reward"]``, from the velocity *after* the step's update, 0 on the
                   step that reaches the goal:
                   ``"none"``: 0;
                   ``"good"`` (bang-bang, :func:`bang_bang_aux`): +1 when the action pushes the
                   way the car moves (``v < 0`` and push left, or ``v > 0`` and push right),
                   else -1 (so the no-push action, and any action at ``v = 0``, get -1);
                   ``"bad"`` (:func:`speed_aux`): ``10 |v|``
info               ``aux_reward`` (float, 0.0 in ``reset``'s info)
feature_bounds     ``([-1.2, -0.07], [0.5, 0.07])``, the observation bounds, given to the official
                   tile coder as its input ranges (which its PyFixedReps 1.0.0 leaves unused:
                   ``agents/barfi.py``); :data:`FEATURE_BOUNDS`
=================  ============================================================================

The bang-bang scale is 1, the ``env_param`` of the paper's ``MCSenseSparseBangAux`` runs (the
class's default without it is 5); the speed scale is ``MountainCarSparseVelAux``'s 10.

Departures from the official code:

- The official env counts the step before checking the horizon, so its 2000th step is a no-op
  (no move, reward 0, ``done``). Here all 2000 steps move, and the 2000th is a truncation
  (``TimeLimit``) rather than a termination.
- The official clips a velocity ``>= 0.07`` to ``0.069999999``; here to ``0.07`` (the observation
  bound).
- The official leaves ``x`` past 0.5 on the goal step (e.g. 0.52); here it is clipped to 0.5 so
  the observation stays in its ``Box``. Only the terminal observation differs.
- The start is drawn from the env's seeded ``np_random`` (the official uses the global
  ``np.random``).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from aligngym.envs.shaping import SHAPING_EPISODE_STEPS, check_aux

ENV_ID = "aligngym/ShapingMountainCar-v0"
MAX_EPISODE_STEPS = SHAPING_EPISODE_STEPS[ENV_ID]
MIN_POSITION, MAX_POSITION = -1.2, 0.5
MAX_SPEED = 0.07
GOAL_POSITION = 0.5
FORCE, GRAVITY = 0.001, 0.0025
START_LOW, START_HIGH = -0.6, -0.4
PUSH_LEFT, NO_PUSH, PUSH_RIGHT = 0, 1, 2
BANG_BANG_SCALE = 1.0
SPEED_SCALE = 10.0
FEATURE_BOUNDS: tuple[np.ndarray, np.ndarray] = (np.array([MIN_POSITION, -MAX_SPEED]),
                                                 np.array([MAX_POSITION, MAX_SPEED]))


def bang_bang_aux(velocity: float, action: int) -> float:
    """+1 when ``action`` pushes in the direction of ``velocity``, else -1 (no push and ``v = 0``
    included, as the official)."""
    agrees = (velocity < 0 and action == PUSH_LEFT) or (velocity > 0 and action == PUSH_RIGHT)
    return BANG_BANG_SCALE if agrees else -BANG_BANG_SCALE


def speed_aux(velocity: float, action: int) -> float:
    """``10 |v|``: pays for speed, whichever way."""
    return SPEED_SCALE * abs(velocity)


def _no_aux(velocity: float, action: int) -> float:
    return 0.0


_AUX = {"none": _no_aux, "good": bang_bang_aux, "bad": speed_aux}


class ShapingMountainCarEnv(gym.Env[np.ndarray, np.int64]):
    metadata = {"render_modes": []}
    feature_bounds: tuple[np.ndarray, np.ndarray] = FEATURE_BOUNDS

    def __init__(self, aux: str = "none") -> None:
        self.aux = check_aux(ENV_ID, aux)
        self._aux = _AUX[self.aux]
        low, high = (bound.astype(np.float32) for bound in FEATURE_BOUNDS)
        self.observation_space = spaces.Box(low, high, (2,), np.float32)
        self.action_space = spaces.Discrete(3)
        self.position, self.velocity = START_LOW, 0.0

    def _observation(self) -> np.ndarray:
        return np.array([self.position, self.velocity], dtype=np.float32)

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.position = START_LOW + float(self.np_random.random()) * (START_HIGH - START_LOW)
        self.velocity = 0.0
        return self._observation(), {"aux_reward": 0.0}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"{ENV_ID}: action must be an int 0..2 (0 push left, 1 no push, 2 push right), "
                             f"got {action!r}")
        if self.position >= GOAL_POSITION:  # absorbing, as the official
            return self._observation(), 0.0, True, False, {"aux_reward": 0.0}
        action = int(action)
        velocity = self.velocity + FORCE * (action - 1) - GRAVITY * math.cos(3.0 * self.position)
        self.velocity = min(max(velocity, -MAX_SPEED), MAX_SPEED)
        self.position += self.velocity
        if self.position < MIN_POSITION:  # the left wall stops the car
            self.position, self.velocity = MIN_POSITION, 0.0
        if self.position >= GOAL_POSITION:
            self.position = MAX_POSITION
            return self._observation(), 1.0, True, False, {"aux_reward": 0.0}
        return self._observation(), 0.0, False, False, {"aux_reward": float(self._aux(self.velocity, action))}
