"""``aligngym/ShapingHalfCheetah-v0``: Gymnasium's ``HalfCheetah-v5`` with its run reward as the primary
reward and its control cost as the heuristic (``barfi-mujoco``'s ``HalfCheetahV4``).

The heuristic "use little torque" is helpful at the usual weight and harmful at four times it: an
over-penalised control cost makes standing still look better than running.

=================  ============================================================================
Observation        ``HalfCheetah-v5``'s ``Box(-inf, inf, (17,), float64)``
Action             ``HalfCheetah-v5``'s ``Box(-1, 1, (6,), float32)``: a ``ValueError`` naming
                   the env and the expected shape unless the action has shape ``(6,)`` and
                   holds finite numbers (the safe tasks' :func:`~aligngym.envs.safety.offline.checked_action`);
                   entries outside ``[-1, 1]`` are clipped before anything uses the action
Dynamics           ``HalfCheetah-v5``'s (``forward_reward_weight=1``, ``ctrl_cost_weight=1``)
Reward (primary)   the run reward, v5's ``info["reward_forward"]``: the forward velocity
                   ``dx / dt`` of the torso (``info["x_velocity"]``)
Termination        never; truncation after 1000 steps by Gymnasium's ``TimeLimit``
                   (``max_episode_steps=1000``)
Aux (info)         ``info["aux_reward"] = aux_weight * (-sum(a^2))`` with ``a`` the (clipped)
                   action, i.e. ``aux_weight * info["reward_ctrl"]``: ``"none"`` weight 0,
                   ``"good"`` weight 1, ``"bad"`` weight 4 (:data:`AUX_WEIGHTS`)
info               v5's (``x_position``, ``x_velocity``, ``reward_forward``, ``reward_ctrl``)
                   plus ``aux_reward`` (float, 0.0 in ``reset``'s info)
feature_bounds     None: the official agent feeds raw observations to a fixed random ReLU layer
                   (its basis skips normalising when the bounds are infinite)
Options            every other keyword argument goes to ``HalfCheetah-v5`` (``render_mode``,
                   ``reset_noise_scale``, ...), except ``forward_reward_weight`` and
                   ``ctrl_cost_weight``, which are fixed at 1 (``ValueError``); an unknown
                   ``render_mode`` is a ``ValueError`` naming the env
=================  ============================================================================

Departures from the official code:

- ``HalfCheetah-v5`` on mujoco 4 replaces gym's ``HalfCheetah-v4`` on mujoco 2 (same model and
  reward; v5 calls the run reward ``reward_forward`` where v4 said ``reward_run``).
- The aux weight is applied here (``info["aux_reward"]`` is already weighted); the official env
  returns ``reward_ctrl`` and its agent multiplies by ``aux_weight``.
- Out-of-bounds actions are clipped before the physics and the control cost (the official
  Gaussian policy's samples can leave ``[-1, 1]``; gym charges their unclipped cost while MuJoCo
  clamps the torque).
- The official wrapper resets with the same seed every episode, so every episode starts from the
  same state; here the seed is given once, as Gymnasium intends.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported: headless rgb_array rendering

from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from gymnasium import utils  # noqa: E402
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv  # noqa: E402

from aligngym.envs.safety.offline import TotalMassMixin, check_render_mode, checked_action  # noqa: E402
from aligngym.envs.shaping import SHAPING_EPISODE_STEPS, check_aux  # noqa: E402

ENV_ID = "aligngym/ShapingHalfCheetah-v0"
MAX_EPISODE_STEPS = SHAPING_EPISODE_STEPS[ENV_ID]
AUX_WEIGHTS: dict[str, float] = {"none": 0.0, "good": 1.0, "bad": 4.0}
FEATURE_BOUNDS: tuple[np.ndarray, np.ndarray] | None = None
_FIXED_WEIGHTS = ("forward_reward_weight", "ctrl_cost_weight")


class ShapingHalfCheetahEnv(TotalMassMixin, HalfCheetahEnv):
    feature_bounds: tuple[np.ndarray, np.ndarray] | None = FEATURE_BOUNDS

    def __init__(self, aux: str = "none", **kwargs: Any) -> None:
        self.aux = check_aux(ENV_ID, aux)
        self.aux_weight = AUX_WEIGHTS[self.aux]
        fixed = sorted(set(kwargs) & set(_FIXED_WEIGHTS))
        if fixed:
            raise ValueError(f"{ENV_ID}: {', '.join(fixed)} cannot be set: both weights are fixed at 1 "
                             "(the aux option weights the control cost)")
        check_render_mode(ENV_ID, kwargs.get("render_mode"), self.metadata["render_modes"])
        super().__init__(forward_reward_weight=1.0, ctrl_cost_weight=1.0, **kwargs)
        # v5 records its own positional arguments for copies; re-record ours so they rebuild this class
        utils.EzPickle.__init__(self, aux=aux, **kwargs)

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        observation, info = super().reset(seed=seed, options=options)
        return observation, {**info, "aux_reward": 0.0}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        checked = checked_action(action, tuple(self.action_space.shape), ENV_ID)
        checked = np.clip(checked, self.action_space.low, self.action_space.high)
        observation, _, terminated, truncated, info = super().step(checked)
        info["aux_reward"] = self.aux_weight * float(info["reward_ctrl"]) if self.aux_weight else 0.0
        return observation, float(info["reward_forward"]), terminated, truncated, info
