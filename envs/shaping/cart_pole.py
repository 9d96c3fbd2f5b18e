"""``aligngym/ShapingCartPole-v0``: Gymnasium's ``CartPole-v1`` with BARFI's PD-controller heuristic
(``barfi-cp``'s ``CartPoleGoodAux`` / ``CartPoleBadAuxDebug`` / ``CartPoleNoAux``).

The heuristic rewards agreeing with a PD controller on the pole angle. With ``D = 0.1`` that
controller balances for about 303 steps (a helpful but imperfect teacher); with ``D = 0.5`` it
balances for the full 500, and the bad heuristic *penalises* agreeing with it and pays for
disagreeing: a naive blend of it with the primary reward pays for dropping the pole.

=================  ============================================================================
Observation        ``CartPole-v1``'s ``Box(4,)`` float32: cart position, cart velocity, pole
                   angle, pole angular velocity; starts ``U(-0.05, 0.05)^4``
Action             ``Discrete(2)``: 0 push left, 1 push right
Dynamics           ``CartPole-v1``'s (the class subclasses Gymnasium's ``CartPoleEnv``)
Reward (primary)   +1 every step, the terminating one included (``CartPole-v1``'s)
Termination        ``CartPole-v1``'s: ``|x| > 2.4`` or ``|angle| > 12 deg``; truncation after 500
                   steps by Gymnasium's ``TimeLimit`` (``max_episode_steps=500``)
Aux (info)         ``info["aux_reward"]``, 0 on the terminating step. The controller sees the
                   observation the action was chosen on: with ``angle`` its pole angle and
                   ``prev`` the angle of the observation before (0 on the episode's first step),
                   ``u = P angle + D (angle - prev)`` and it pushes right when
                   ``round(sigmoid(u)) = 1`` (:func:`pd_action`; the "derivative" is the angle's
                   change between observations, not the angular velocity).
                   ``"none"``: 0;
                   ``"good"``: ``P = 0.1, D = 0.1``; +1 when the action equals the controller's,
                   else 0;
                   ``"bad"``: ``P = 0.1, D = 0.5``; -5 when the action equals the controller's,
                   else +1 (the paper's bad CartPole heuristic, ``PaperPlots/bad``)
info               ``aux_reward`` (float, 0.0 in ``reset``'s info)
feature_bounds     ``([-2.4, -3.5, -0.2095, -3.5], [2.4, 3.5, 0.2095, 3.5])``: what the official
                   Fourier basis normalises by (its env's ``observation_space``; observations
                   can leave these bounds, e.g. a fast cart or pole, and the official does not clip);
                   :data:`FEATURE_BOUNDS`. The ``observation_space`` stays ``CartPole-v1``'s.
Options            ``render_mode``: ``CartPole-v1``'s (``"human"``, ``"rgb_array"``; both need
                   pygame, ``gymnasium[classic-control]``, which aligngym does not install)
=================  ============================================================================

Notes on the official code: its classes are copies of the MountainCar env, and their docstrings
still say so ("Dense reward implementation of MC", "Give high velocity positive reward"); the
heuristic is the PD controller above. Its class names do not match the sweep folders either:
``experiments/PaperPlots/later/good`` runs ``CartPoleBadAux`` (-1 for agreeing with the ``D = 0.5``
controller, else 0: not offered here; it leaves surviving worth 0 or 1 a step, so even the naive
blend learns to balance), and ``PaperPlots/bad`` runs ``CartPoleBadAuxDebug`` (-5 for agreeing, +1
otherwise), the "bad" here. "good" here is ``CartPoleGoodAux`` (``D = 0.1``, +1 for agreeing).

Departures from the official code:

- It wraps gym's ``CartPole-v1`` through the old 4-tuple ``step``, whose ``done`` includes the
  time limit, so its 500th step pays aux 0. Here the env does not see the time limit and pays the
  aux on the 500th step as on any other.
- Gymnasium 1.x's ``CartPoleEnv`` replaces gym's; the physics and the start distribution are
  the same.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

from aligngym.envs.safety.offline import check_render_mode
from aligngym.envs.shaping import SHAPING_EPISODE_STEPS, check_aux

ENV_ID = "aligngym/ShapingCartPole-v0"
MAX_EPISODE_STEPS = SHAPING_EPISODE_STEPS[ENV_ID]
FEATURE_BOUNDS: tuple[np.ndarray, np.ndarray] = (np.array([-2.4, -3.5, -0.2095, -3.5]),
                                                 np.array([2.4, 3.5, 0.2095, 3.5]))
ANGLE = 2  # index of the pole angle in the observation
# aux -> (P, D, reward for agreeing with the controller, reward otherwise)
PD_AUX: dict[str, tuple[float, float, float, float]] = {
    "good": (0.1, 0.1, 1.0, 0.0),
    "bad": (0.1, 0.5, -5.0, 1.0),
}


def pd_action(angle: float, previous_angle: float, p: float, d: float) -> int:
    """The official PD controller's action: ``round(sigmoid(P angle + D (angle - previous)))``;
    1 (push right) for a positive control, 0 otherwise (``round(0.5) = 0``)."""
    control = p * angle + d * (angle - previous_angle)
    return int(round(1.0 / (1.0 + math.exp(-control))))


class ShapingCartPoleEnv(CartPoleEnv):
    feature_bounds: tuple[np.ndarray, np.ndarray] = FEATURE_BOUNDS

    def __init__(self, aux: str = "none", render_mode: str | None = None) -> None:
        self.aux = check_aux(ENV_ID, aux)
        check_render_mode(ENV_ID, render_mode, self.metadata["render_modes"])
        super().__init__(render_mode=render_mode)
        self._angle = 0.0  # pole angle of the last observation returned
        self._previous_angle = 0.0  # the controller's memory (its prev_error)

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        observation, info = super().reset(seed=seed, options=options)
        self._angle, self._previous_angle = float(observation[ANGLE]), 0.0
        return observation, {**info, "aux_reward": 0.0}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"{ENV_ID}: action must be an int 0 or 1 (0 push left, 1 push right), got {action!r}")
        observation, reward, terminated, truncated, info = super().step(action)
        aux_reward = 0.0
        # the official skips the controller on the terminating step, memory included
        if self.aux in PD_AUX and not terminated:
            p, d, agree, disagree = PD_AUX[self.aux]
            agrees = int(action) == pd_action(self._angle, self._previous_angle, p, d)
            aux_reward = agree if agrees else disagree
            self._previous_angle = self._angle
        self._angle = float(observation[ANGLE])
        return observation, float(reward), terminated, truncated, {**info, "aux_reward": aux_reward}
