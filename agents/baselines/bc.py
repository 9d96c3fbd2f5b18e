"""BC-All and BC-Safe: behaviour cloning, the simplest baselines of safe offline RL.

Liu et al., "Datasets and Benchmarks for Offline Safe Reinforcement Learning", DMLR 2024 (DSRL /
OSRL); code ``liuzuxin/OSRL``: ``osrl/algorithms/bc.py``, ``examples/train/train_bc.py``, defaults
from ``examples/configs/bc_configs.py`` (``BCTrainConfig``).

- **BC-All** (agent ``bc_all``) clones every transition of the dataset.
- **BC-Safe** (agent ``bc_safe``) clones only the episodes whose undiscounted episode cost is at most
  ``cost_limit`` (OSRL's ``process_bc_dataset(bc_mode="safe")`` with ``gamma = 1``; ``filter_limit``,
  when set, filters instead while ``cost_limit`` still scores the run: ``--smoke`` sets it so that
  the tiny generated data, none of whose episodes is within a real limit, keep them all). The runner
  calls :func:`select_data` before it builds the agent, so the replay buffer the algorithm trains on
  holds only those episodes. A filter that keeps nothing stops the run with a
  :class:`~aligngym.agents.config.ConfigError` (a ``ValueError``) naming the limit and the
  dataset's lowest episode cost.

The actor is OSRL's ``MLPActor``: ``obs -> Linear-ReLU (256) -> Linear-ReLU (256) -> Linear -> tanh``
scaled by the action bound, trained on the mean squared error to the dataset's action with Adam
(lr 1e-3), 512 transitions per step, 100k steps; it acts deterministically. It is built from
tianshou's pieces: a :class:`~tianshou.utils.net.continuous.ContinuousActorDeterministic` over a
:class:`~tianshou.utils.net.common.Net`, an
:class:`~tianshou.algorithm.imitation.imitation_base.ImitationPolicy` and
:class:`~tianshou.algorithm.imitation.imitation_base.OfflineImitationLearning` (its MSE update is
OSRL's loss), whose optimiser and loss are named after the actor they train (``train/lr_actor``,
``loss/actor``).

Deviations from OSRL:

- Batches come from tianshou's replay buffer (uniform with replacement, from the buffer's own
  generator seeded with the run's seed) instead of a PyTorch ``DataLoader`` over an
  ``IterableDataset`` with 8 workers; same distribution.
- Evaluation plays ``eval_episodes`` episodes at once (one env each, fixed seeds) and logs DSRL's
  normalised scores; only the last checkpoint is kept (OSRL also keeps the lowest-cost one).
- Only OSRL's ``all`` and ``safe`` modes; ``risky``, ``boundary``, ``frontier`` and ``multi-task``
  are not provided. OSRL's optional dataset filters (density, outliers, noise, inpainting) are
  not applied.
- OSRL's actor uses PyTorch's default initialisation, as here; tianshou's ``Net`` is the same
  Linear/ReLU stack, so the networks match layer for layer.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field, PositiveInt
from tianshou.algorithm.algorithm_base import TrainingStats
from tianshou.algorithm.imitation.imitation_base import ImitationPolicy, OfflineImitationLearning
from tianshou.algorithm.optim import AdamOptimizerFactory, OptimizerFactory
from tianshou.utils.net.common import Net
from tianshou.utils.net.continuous import ContinuousActorDeterministic

from aligngym.agents.config import ConfigError
from aligngym.agents.offline import (OfflineConfig, action_bound, observation_dim,
                                     offline_evaluate, offline_train)
from aligngym.envs.data.dataset import OfflineDataset


SMOKE_FILTER_LIMIT = 1e9  # BC-Safe's filter under --smoke on the tiny generated data: every episode


class Config(OfflineConfig):
    agent: Literal["bc_all", "bc_safe"]  # bc_all: every episode; bc_safe: episodes with cost <= cost_limit
    steps: int = Field(100_000, ge=1)  # gradient steps (OSRL update_steps)
    batch_size: int = Field(512, ge=1)  # transitions per step
    eval_every: int = Field(2_500, ge=1)  # OSRL evaluates every 2500 steps ...
    eval_episodes: int = Field(10, ge=1)  # ... on 10 episodes
    actor_hidden: tuple[PositiveInt, ...] = Field((256, 256), min_length=1)  # OSRL a_hidden_sizes (ReLU)
    actor_lr: float = Field(1e-3, gt=0)  # Adam
    filter_limit: float | None = Field(None, ge=0)  # bc_safe keeps episodes with cost <= this (null: cost_limit)

    def smoke(self) -> Config:
        small = super().smoke()
        # the tiny generated data come from a barely trained behaviour policy and none of its
        # episodes is within a real limit: BC-Safe's filter keeps them all (cost_limit, which also
        # scores the run, stays; so does a filter_limit of one's own, or a file of one's own)
        lift = self.agent == "bc_safe" and self.dataset.path is None and self.filter_limit is None
        return small.model_copy(update={"actor_hidden": (32, 32),
                                        "filter_limit": SMOKE_FILTER_LIMIT if lift else self.filter_limit})


def select_data(config: Config, dataset: OfflineDataset) -> OfflineDataset:
    """BC-All: the whole dataset. BC-Safe: the episodes whose cost is at most ``cost_limit``."""
    if config.agent == "bc_all":
        return dataset
    costs = dataset.episode_costs()
    name = "cost_limit" if config.filter_limit is None else "filter_limit"
    limit = getattr(config, name)
    keep = np.flatnonzero(costs <= limit)
    if len(keep) == 0:
        lowest = f"{costs.min():g}" if len(costs) else "n/a (no episodes)"
        raise ConfigError(f"bc_safe: no episode of the dataset has cost <= {name} {limit:g} "
                          f"(lowest episode cost: {lowest}); raise {name} or use more data")
    return dataset.select_episodes(keep)


@dataclass(kw_only=True)
class BCTrainingStats(TrainingStats):
    loss_actor: float  # mean squared error to the dataset's actions


class BehaviourCloning(OfflineImitationLearning):
    """tianshou's offline imitation learning with its optimiser and loss named after the actor they
    train (``actor_optim``, ``loss_actor``), as every offline agent names them."""

    def __init__(self, *, policy: ImitationPolicy, optim: OptimizerFactory) -> None:
        super().__init__(policy=policy, optim=optim)
        self.actor_optim = self.optim

    def _update_with_batch(self, batch: Any) -> BCTrainingStats:
        return BCTrainingStats(loss_actor=self._imitation_update(batch, self.policy, self.actor_optim).loss)


def build(config: Config, env: gym.Env, dataset: OfflineDataset, device: torch.device) -> BehaviourCloning:
    bound = action_bound(config, env)
    actor = ContinuousActorDeterministic(
        preprocess_net=Net(state_shape=observation_dim(env), hidden_sizes=config.actor_hidden),
        action_shape=env.action_space.shape, max_action=bound)
    # the actor's tanh already bounds its actions: no scaling, no clipping
    policy = ImitationPolicy(actor=actor, action_space=env.action_space, action_scaling=False,
                             action_bound_method=None)
    algorithm = BehaviourCloning(policy=policy, optim=AdamOptimizerFactory(lr=config.actor_lr))
    return algorithm.to(device)


def train(config: Config, run: Any, state: dict[str, Any] | None) -> None:
    offline_train(sys.modules[__name__], config, run, state)


def evaluate(config: Config, state: dict[str, Any], episodes: int) -> dict[str, Any]:
    return offline_evaluate(sys.modules[__name__], config, state, episodes)
