"""IQL: offline RL with implicit Q-learning (expectile value regression and advantage-weighted regression).

Kostrikov, Nair and Levine, "Offline Reinforcement Learning with Implicit Q-Learning", ICLR 2022;
official code ``ikostrikov/implicit_q_learning`` (JAX): ``learner.py``, ``critic.py``, ``actor.py``,
``policy.py``, ``train_offline.py``, defaults from ``configs/mujoco_config.py`` (D4RL locomotion).
Each gradient step, on one batch of ``batch_size`` (256) transitions, in the official order:

1. **Value.** ``V(s)`` regresses on the ``expectile`` (0.7) of ``min(Q1', Q2')(s, a)`` over the
   target critics: ``L = |tau - 1(u < 0)| u^2`` with ``u = min Q' - V``, which approaches the best
   value the data's own actions reach, without querying any other action.
2. **Actor** (advantage-weighted regression). With the updated ``V``,
   ``w = min(exp(beta (min Q'(s, a) - V(s))), 100)`` (``temperature`` beta 3.0) and
   ``L = -mean(w log pi(a | s))`` over the dataset's actions. The policy is a Gaussian with a
   tanh-squashed mean and a state-independent log-std clipped to [-5, 2] (the official
   ``NormalTanhPolicy(state_dependent_std=False, tanh_squash_distribution=False, log_std_min=-5)``);
   its learning rate follows a cosine decay to 0 over the run (``optax.cosine_decay_schedule``).
   It acts with its mean.
3. **Critics.** ``Q1, Q2`` regress on ``r + gamma (1 - terminal) V(s')`` with the summed loss
   ``(Q1 - y)^2 + (Q2 - y)^2`` (``discount`` 0.99; timeouts bootstrap, as D4RL's ``terminals``).
4. **Targets.** Polyak averaging of the target critics (``tau`` 0.005).

Every network is a 2 x 256 ReLU MLP with orthogonal kernels (gain ``sqrt(2)``) and zero biases; Adam
at 3e-4 for all three; 1M steps. Rewards are multiplied by ``1000 / (R_max - R_min)``, the spread of
the dataset's episode returns, and dataset actions are clipped to ``+-(1 - 1e-5)``, as the official
``train_offline.py`` (``normalize``) and ``dataset_utils.py`` (``D4RLDataset``) do for locomotion.

Steps 1 and 3 and the target update are :mod:`aligngym.agents.iql_core`, the same code FISOR's
reward critics learn with; the twin critics and the value net are its :class:`EnsembleMLP`. The
actor is tianshou's :class:`~tianshou.utils.net.continuous.ContinuousActorProbabilistic` over a
:class:`~tianshou.utils.net.common.Net`; the algorithm subclasses tianshou's ``OfflineAlgorithm``
(tianshou has no IQL). Optimisers and losses are named after what they train: ``actor``, ``critic``
(the twin Q nets), ``value`` (``loss/actor``, ``train/lr_critic``, ...).

Deviations from the official code:

- PyTorch instead of JAX/flax: the twin critics are one batched ensemble, the initial weights come
  from PyTorch's generator (same distributions as flax's orthogonal init), Adam is PyTorch's (same
  defaults as optax's).
- The log-std is clipped by clamping ``exp(log_std)`` to ``[e^-5, e^2]``: the same standard deviation,
  the same (zero) gradient outside the range.
- The cosine decay runs over ``actor_decay_steps`` actor updates, by default the run's ``steps``
  (the official code decays over its ``max_steps``, 1M); a resumed run whose ``steps`` was raised
  continues on the longer schedule from where it stopped.
- Actions are divided by the task's action bound before the networks see them and the policy's
  actions multiplied by it (the official code assumes actions in [-1, 1]; identical there).
- Rewards are scaled on every task (``scale_rewards: false`` turns it off); the official code scales
  only Hopper, HalfCheetah and Walker2d (AntMaze: ``r - 1``; others unchanged). Episodes are cut at
  terminals and timeouts (the official code also where an observation does not continue the
  previous transition's next observation, which on D4RL files is the same cut).
- Batches come from tianshou's replay buffer (uniform with replacement, from the buffer's generator
  seeded with the run's seed); evaluation plays ``eval_episodes`` episodes at once with fixed seeds,
  every ``eval_every`` steps and at the end; only the last checkpoint is kept.
- Dropout (the official kitchen/AntMaze option) is not offered; the seed is the config's (the
  official default is 42).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field, PositiveInt, model_validator
from tianshou.algorithm.algorithm_base import OfflineAlgorithm, Policy, TrainingStats
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.data import Batch
from tianshou.utils.net.common import Net
from tianshou.utils.net.continuous import ContinuousActorProbabilistic
from torch import nn
from torch.distributions import Independent, Normal

from aligngym.agents.config import ConfigError
from aligngym.agents.iql_core import (EnsembleMLP, advantage_weights, apply_cosine_decay, pessimistic_q, polyak,
                                      update_q, update_value)
from aligngym.agents.offline import OfflineConfig, action_bound, observation_dim, offline_evaluate, offline_train
from aligngym.envs.data.dataset import OfflineDataset

ACTION_CLIP = 1 - 1e-5  # dataset actions (divided by the bound) are clipped to +-this, as the official D4RLDataset


class Config(OfflineConfig):
    steps: int = Field(1_000_000, ge=1)  # gradient steps (the official max_steps)
    batch_size: int = Field(256, ge=1)  # transitions per step
    eval_every: int = Field(5_000, ge=1)  # the official code evaluates every 5000 steps ...
    eval_episodes: int = Field(10, ge=1)  # ... on 10 episodes
    discount: float = Field(0.99, gt=0, lt=1)  # gamma of the critics' backup
    tau: float = Field(0.005, gt=0, le=1)  # Polyak rate of the target critics
    expectile: float = Field(0.7, gt=0, lt=1)  # V fits this expectile of min(Q1', Q2') (D4RL locomotion)
    temperature: float = Field(3.0, gt=0)  # beta in the actor's weights exp(beta A)
    weight_max: float = Field(100.0, gt=0)  # the actor's weights are clipped at this
    hidden: tuple[PositiveInt, ...] = Field((256, 256), min_length=1)  # every MLP: actor, twin critics, value
    actor_lr: float = Field(3e-4, gt=0)  # Adam, cosine-decayed to 0 over actor_decay_steps
    critic_lr: float = Field(3e-4, gt=0)  # Adam, twin critics
    value_lr: float = Field(3e-4, gt=0)  # Adam, value net
    actor_decay_steps: int | None = Field(None, ge=1)  # length of the actor's cosine decay (None: steps)
    log_std_min: float = -5.0  # the policy's log-std is clipped to [log_std_min, log_std_max] ...
    log_std_max: float = 2.0  # ... (the official log_std_min and LOG_STD_MAX)
    scale_rewards: bool = True  # r * reward_range / (max - min episode return of the dataset)
    reward_range: float = Field(1000.0, gt=0)  # what the spread of episode returns is scaled to

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.log_std_min >= self.log_std_max:
            raise ValueError(f"log_std_min ({self.log_std_min}) must be below log_std_max ({self.log_std_max})")
        return self

    @property
    def decay_steps(self) -> int:
        """Actor updates over which the learning rate decays: ``actor_decay_steps``, else the run's ``steps``."""
        return self.actor_decay_steps if self.actor_decay_steps is not None else self.steps

    def preflight(self) -> None:
        super().preflight()  # the dataset, read and checked
        reward_scale(self, self._checked_data)  # a dataset whose rewards cannot be scaled stops the run here

    def smoke(self) -> Config:
        return super().smoke().model_copy(update={"hidden": (32, 32)})


def reward_scale(config: Config, dataset: OfflineDataset | None) -> float:
    """``reward_range / (R_max - R_min)`` over the dataset's episode returns (1 with ``scale_rewards:
    false``, or without a dataset: a run scored from its checkpoint, which holds the scale)."""
    if not config.scale_rewards or dataset is None:
        return 1.0
    returns = dataset.episode_returns()
    spread = float(returns.max() - returns.min()) if len(returns) else 0.0
    if not spread > 0:
        raise ConfigError(f"iql scales rewards by the spread of the dataset's episode returns, and its "
                          f"{len(returns)} episode(s) all return {returns.max() if len(returns) else 0:g}; "
                          f"set scale_rewards: false")
    return config.reward_range / spread


# ---------------------------------------------------------------------- policy (acting)
class IQLPolicy(Policy):
    """A Gaussian over actions in [-1, 1] (tianshou scales them to the task's bounds): mean
    ``tanh(f(s))``, standard deviation ``exp(log_std)`` from a state-independent parameter clipped
    to ``[log_std_min, log_std_max]``. It acts with the mean."""

    def __init__(self, actor: ContinuousActorProbabilistic, action_space: gym.spaces.Box, log_std_min: float,
                 log_std_max: float) -> None:
        super().__init__(action_space=action_space, action_scaling=True, action_bound_method=None)
        self.actor = actor
        self.std_min, self.std_max = math.exp(log_std_min), math.exp(log_std_max)

    def distribution(self, obs: torch.Tensor) -> Independent:
        (mean, std), _ = self.actor(obs)
        return Independent(Normal(mean, std.clamp(self.std_min, self.std_max)), 1)

    def forward(self, batch: Batch, state: Any = None, **kwargs: Any) -> Batch:
        obs = torch.as_tensor(np.asarray(batch.obs), dtype=torch.float32, device=self.actor.sigma_param.device)
        (mean, _), _ = self.actor(obs)
        return Batch(act=mean, state=state)


def orthogonal_init(module: nn.Module) -> nn.Module:
    """flax's ``default_init`` of the official code on every linear layer: orthogonal kernels with
    gain ``sqrt(2)``, zero biases."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.orthogonal_(layer.weight, gain=math.sqrt(2))
            nn.init.zeros_(layer.bias)
    return module


# ---------------------------------------------------------------------- algorithm (learning)
@dataclass(kw_only=True)
class IQLTrainingStats(TrainingStats):
    loss_actor: float
    loss_critic: float
    loss_value: float
    mean_weight: float  # mean of the actor's advantage weights
    advantage: float  # mean of min(Q1', Q2')(s, a) - V(s) over the batch


class IQL(OfflineAlgorithm[IQLPolicy]):
    def __init__(self, config: Config, obs_dim: int, action_space: gym.spaces.Box, bound: float,
                 reward_scale: float, device: torch.device) -> None:
        act_dim = int(np.prod(action_space.shape))
        hidden = tuple(config.hidden)
        actor = orthogonal_init(ContinuousActorProbabilistic(
            preprocess_net=Net(state_shape=obs_dim, hidden_sizes=hidden), action_shape=act_dim,
            max_action=1.0, unbounded=False, conditioned_sigma=False))
        super().__init__(policy=IQLPolicy(actor, action_space, config.log_std_min, config.log_std_max))
        self.config = config
        self.bound = bound
        self.critic = EnsembleMLP(2, obs_dim + act_dim, hidden, init="orthogonal")
        self.critic_target = EnsembleMLP(2, obs_dim + act_dim, hidden, init="orthogonal")
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.value = EnsembleMLP(1, obs_dim, hidden, init="orthogonal")
        self.actor_optim = self._create_optimizer(actor, AdamOptimizerFactory(lr=config.actor_lr))
        self.critic_optim = self._create_optimizer(self.critic, AdamOptimizerFactory(lr=config.critic_lr))
        self.value_optim = self._create_optimizer(self.value, AdamOptimizerFactory(lr=config.value_lr))
        self.register_buffer("actor_step", torch.zeros((), dtype=torch.long))  # the cosine decay's position
        self.register_buffer("reward_scale", torch.tensor(reward_scale, dtype=torch.float32))
        self.to(device)

    def _update_with_batch(self, batch: Any) -> IQLTrainingStats:
        cfg = self.config
        device = self.reward_scale.device
        tensor = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)  # noqa: E731
        obs, obs_next = tensor(batch.obs), tensor(batch.obs_next)
        act = (tensor(batch.act) / self.bound).clamp(-ACTION_CLIP, ACTION_CLIP)
        reward = tensor(batch.rew) * self.reward_scale
        mask = 1.0 - tensor(batch.terminated)  # timeouts bootstrap (D4RL's terminals)
        obs_act = torch.cat([obs, act], dim=-1)

        q = pessimistic_q(self.critic_target, obs_act)
        loss_value = update_value(self.value, self.value_optim, obs, q, cfg.expectile)
        loss_actor, weight, advantage = self.update_actor(obs, act, q)
        loss_critic = update_q(self.critic, self.critic_optim, obs_act, reward, obs_next, mask, self.value,
                               cfg.discount, members="sum")
        polyak(self.critic_target, self.critic, cfg.tau)
        return IQLTrainingStats(loss_actor=loss_actor, loss_critic=loss_critic, loss_value=loss_value,
                                mean_weight=float(weight.mean()), advantage=float(advantage.mean()))

    def update_actor(self, obs: torch.Tensor, act: torch.Tensor,
                     q: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        """One step of advantage-weighted regression on the dataset's actions ``act`` (in [-1, 1]);
        ``q`` is ``min(Q1', Q2')(s, a)``. Returns the loss, the weights and the advantages."""
        cfg = self.config
        with torch.no_grad():
            advantage = q - self.value(obs)[0]
            weight = advantage_weights(advantage, cfg.temperature, cfg.weight_max)
        loss = -(weight * self.policy.distribution(obs).log_prob(act)).mean()
        apply_cosine_decay(self.actor_optim, cfg.actor_lr, int(self.actor_step), cfg.decay_steps)
        self.actor_optim.step(loss)
        self.actor_step += 1
        return loss.item(), weight, advantage


# ---------------------------------------------------------------------- runner hooks
def build(config: Config, env: gym.Env, dataset: OfflineDataset | None, device: torch.device) -> IQL:
    return IQL(config, observation_dim(env), env.action_space, action_bound(config, env),
               reward_scale(config, dataset), device)


def train(config: Config, run: Any, state: dict[str, Any] | None) -> None:
    offline_train(sys.modules[__name__], config, run, state)


def evaluate(config: Config, state: dict[str, Any], episodes: int) -> dict[str, Any]:
    return offline_evaluate(sys.modules[__name__], config, state, episodes)
