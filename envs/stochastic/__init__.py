"""Tasks where the return is partly luck (DoC, Yang et al., ICLR 2023): a two-armed Bernoulli bandit and
the slippery 4x4 FrozenLake, with their offline datasets (:mod:`aligngym.envs.stochastic.data`)."""

from __future__ import annotations

from aligngym.envs.stochastic import bandit, frozen_lake

# Gymnasium id -> its time limit (the ``max_episode_steps`` it is registered with)
STOCHASTIC_EPISODE_STEPS: dict[str, int] = {
    bandit.ENV_ID: bandit.MAX_EPISODE_STEPS,
    frozen_lake.ENV_ID: frozen_lake.MAX_EPISODE_STEPS,
}
