"""Helpers the baseline agents share."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from aligngym.agents.config import ConfigError
from aligngym.agents.offline import OfflineConfig


def action_bound(config: OfflineConfig, env: gym.Env) -> float:
    """``a`` of a Box action space ``[-a, a]^n`` (OSRL scales its tanh outputs by ``high[0]``)."""
    space = env.action_space
    if not isinstance(space, gym.spaces.Box):
        raise ConfigError(f"{config.agent} needs a continuous (Box) action space; {config.task} has {space}")
    high, low = np.asarray(space.high, dtype=np.float64), np.asarray(space.low, dtype=np.float64)
    if not (np.all(np.isfinite(high)) and np.allclose(high, high.flat[0]) and np.allclose(low, -high)):
        raise ConfigError(f"{config.agent} needs actions bounded in [-a, a] with one a for every dimension; "
                          f"{config.task} has low={low.tolist()}, high={high.tolist()}")
    return float(high.flat[0])


def observation_dim(env: gym.Env) -> int:
    return int(np.prod(env.observation_space.shape))
