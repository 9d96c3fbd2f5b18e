"""``aligngym/BernoulliBandit-v0``: two arms whose rewards are coin flips (DoC's bandit, dice_rl's
``BernoulliBandit``).

The task on which return-conditioned policies fail: the behaviour policy plays the bad arm with
probability ``1 - p``, so the data holds as many lucky wins of the bad arm (``(1 - p) p``) as wins
of the good one (``p (1 - p)``); conditioning on a return of 1 then picks each arm half of the time.

=================  ============================================================================
Observation        ``Box(0, 1, (1,), float32)``: always ``[0.0]``, the bandit's single state (a
                   float vector so that it fits the float32 ``observations`` of the HDF5 layout
                   and any MLP or sequence model without a special case; the bound 1 only spares
                   Gymnasium's checker a degenerate box)
Action             ``Discrete(2)``: the arm
Reward             1 with probability ``ARM_PROBS(p)[arm] = [p, 1 - p][arm]``, else 0
Termination        after every step (episodes of length 1; registered with
                   ``max_episode_steps=1``, so ``gym.make``'s ``TimeLimit`` also reports
                   truncation on that step, as Gymnasium does whenever both coincide)
info               ``expected_reward``: the chosen arm's reward probability (an evaluation may
                   average it for a noise-free score)
Options            ``p`` (default 0.1): arm 0 pays with probability ``p``, arm 1 with ``1 - p``;
                   a number in [0, 1], else ``ValueError``
Optimum            ``max(p, 1 - p)`` per episode (:func:`optimal_return`)
Behaviour (data)   arms drawn with probabilities ``[1 - p, p]`` (:func:`behaviour_probs`), as in
                   dice_rl and the paper; its expected return is ``2 p (1 - p)``
=================  ============================================================================

Departure from the official code: dice_rl's dataset path builds the bandit without
``bernoulli_prob`` (random arm probabilities) while its evaluation uses ``bernoulli_prob=alpha``;
here data and evaluation share the one option ``p``.
"""

from __future__ import annotations

import numbers
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

ENV_ID = "aligngym/BernoulliBandit-v0"
MAX_EPISODE_STEPS = 1
DEFAULT_P = 0.1


def check_probability(name: str, value: Any, env_id: str) -> float:
    """``value`` as a float when it is a probability (a real number in [0, 1]), else a ``ValueError``
    naming the env and the option: options arrive from YAML and the command line as anything."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{env_id}: option {name} must be a probability, a number in [0, 1], got {value!r}")
    return float(value)


def arm_probs(p: float) -> np.ndarray:
    """Each arm's probability of paying 1: ``[p, 1 - p]``."""
    return np.array([p, 1.0 - p])


def behaviour_probs(p: float) -> np.ndarray:
    """The data's behaviour policy: arm 0 with ``1 - p``, arm 1 with ``p`` (the paper's / dice_rl's)."""
    return np.array([1.0 - p, p])


def optimal_return(p: float) -> float:
    """The best expected return of an episode: the better arm's probability."""
    return float(max(p, 1.0 - p))


class BernoulliBanditEnv(gym.Env[np.ndarray, np.int64]):
    metadata = {"render_modes": []}

    def __init__(self, p: float = DEFAULT_P) -> None:
        self.p = check_probability("p", p, ENV_ID)
        self.arm_probs = arm_probs(self.p)
        self.observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self.action_space = spaces.Discrete(2)
        self._observation = np.zeros(1, dtype=np.float32)

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        return self._observation.copy(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"{ENV_ID}: action must be an arm, 0 or 1, got {action!r}")
        chance = float(self.arm_probs[int(action)])
        reward = float(self.np_random.random() < chance)
        return self._observation.copy(), reward, True, False, {"expected_reward": chance}
