"""TD3+BC: TD3 with a behaviour-cloning term, the minimalist offline RL baseline.

Fujimoto and Gu, "A Minimalist Approach to Offline Reinforcement Learning", NeurIPS 2021
(arXiv 2106.06860); official code ``sfujim/TD3_BC`` (``TD3_BC.py``, defaults from ``main.py``).
Built on tianshou's own :class:`~tianshou.algorithm.TD3BC` (its critic targets, twin critic updates,
delayed actor update ``-lambda Q1(s, pi(s)) + MSE(pi(s), a)`` with ``lambda = alpha / mean|Q1|`` and
its Polyak-averaged target networks), with the official settings as the Config's defaults: actor and
each critic 2 x 256 ReLU (PyTorch's default initialisation; the actor's output ``a_max tanh``),
``alpha = 2.5``, target policy smoothing with noise 0.2 clipped to 0.5 (times the action bound), the
actor and the targets updated every 2 steps, Adam 3e-4, batch 256, 1M steps, ``tau = 0.005``,
``gamma = 0.99``. States are normalised with the dataset's mean and standard deviation (+1e-3) by the
same :mod:`~aligngym.agents.normalization` as A2PR: the actor and both critics (and their target
copies) read normalised states, and the constants are part of the checkpoint.

Where tianshou's ``TD3BC`` differs from the official code, the official code is followed:

- The smoothed target action is clipped to the action bounds and its noise scaled by the bound
  (``clip(pi'(s') + clip(N(0, 0.2 a_max), +-0.5 a_max), +-a_max)``; tianshou neither clips the action
  nor scales the noise).
- The actor learns on every second update starting with the second (the official ``total_it``
  counts from 1; tianshou's counter from 0 would start with the first), and that counter is part of
  the checkpoint, so a resumed run keeps the rhythm.

Deviations from the official code:

- Each critic has its own Adam (tianshou's layout; ``train/lr_critic``, ``train/lr_critic2``) and the
  two regressions are separate backward passes; Adam is per-parameter and the critics share no
  parameters, so the updates are those of the official single optimiser over ``MSE1 + MSE2``.
  ``loss/critic`` logs that sum; ``loss/actor`` the actor's loss on the steps it learns.
- Data: every transition of the dataset trains and a timeout bootstraps (tianshou bootstraps
  wherever the transition is not terminal); D4RL's ``qlearning_dataset``, which the official code
  reads, drops each episode's timed-out last transition. The state statistics are those of all
  transitions. Batches come from tianshou's replay buffer (uniform with replacement, seeded by the
  run's seed).
- Adam runs as PyTorch's fused kernel (the same update rule, rounding aside; faster on a CPU), as
  in A2PR.
- Evaluation plays ``eval_episodes`` (10) episodes every ``eval_every`` (5000) steps through the
  runner (fixed seeds per evaluation, instead of one env seeded with ``seed + 100``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field, PositiveInt
from tianshou.algorithm import TD3BC
from tianshou.algorithm.algorithm_base import TrainingStats
from tianshou.algorithm.modelfree.ddpg import ContinuousDeterministicPolicy
from tianshou.algorithm.optim import TorchOptimizerFactory
from tianshou.data import Batch
from tianshou.utils.net.common import Net
from tianshou.utils.net.continuous import ContinuousActorDeterministic, ContinuousCritic

from aligngym.agents.normalization import Normalized, ObservationNormalizer
from aligngym.agents.offline import OfflineConfig, action_bound, observation_dim, offline_evaluate, offline_train
from aligngym.envs.data.dataset import OfflineDataset


class Config(OfflineConfig):
    steps: int = Field(1_000_000, ge=1)  # gradient steps (official max_timesteps)
    batch_size: int = Field(256, ge=1)  # transitions per step
    eval_every: int = Field(5_000, ge=1)  # the official code evaluates every 5000 steps ...
    eval_episodes: int = Field(10, ge=1)  # ... on 10 episodes
    discount: float = Field(0.99, gt=0, lt=1)  # gamma
    tau: float = Field(0.005, gt=0, le=1)  # Polyak rate of the target actor and critics
    policy_noise: float = Field(0.2, ge=0)  # std of the target actions' smoothing noise, times the action bound
    noise_clip: float = Field(0.5, ge=0)  # that noise is clipped to +- this times the action bound
    policy_freq: PositiveInt = 2  # the actor and the targets update every this many steps
    alpha: float = Field(2.5, gt=0)  # lambda = alpha / mean |Q1(s, pi(s))| scales the actor's Q term
    actor_lr: float = Field(3e-4, gt=0)  # Adam, actor
    critic_lr: float = Field(3e-4, gt=0)  # Adam, each critic
    actor_hidden: tuple[PositiveInt, ...] = Field((256, 256), min_length=1)  # actor MLP (ReLU, tanh output)
    critic_hidden: tuple[PositiveInt, ...] = Field((256, 256), min_length=1)  # each critic's MLP (ReLU)
    normalize_states: bool = True  # states -> (s - mean) / (std + eps) with the dataset's statistics
    normalize_eps: float = Field(1e-3, gt=0)  # eps added to the standard deviation

    def smoke(self) -> Config:
        small = super().smoke()
        return small.model_copy(update={"actor_hidden": (32, 32), "critic_hidden": (32, 32)})


@dataclass(kw_only=True)
class TD3BCTrainingStats(TrainingStats):
    loss_critic: float  # MSE of Q1 plus MSE of Q2
    loss_actor: float  # -lambda mean Q1(s, pi) + MSE(pi, a); NaN on steps without an actor update


class TD3PlusBC(TD3BC):
    """tianshou's TD3BC with the official target smoothing (clipped to the action bounds, noise scaled
    by them), the official actor rhythm kept in the checkpoint, and losses named as the runner logs them."""

    def __init__(self, *, config: Config, policy: ContinuousDeterministicPolicy, critic: torch.nn.Module,
                 critic2: torch.nn.Module, bound: float) -> None:
        # Adam's fused kernel: the same update, one pass over each parameter (faster on a CPU)
        adam = lambda lr: TorchOptimizerFactory(torch.optim.Adam, lr=lr, fused=True)  # noqa: E731
        super().__init__(policy=policy, policy_optim=adam(config.actor_lr), critic=critic,
                         critic_optim=adam(config.critic_lr), critic2=critic2,
                         critic2_optim=adam(config.critic_lr), tau=config.tau,
                         gamma=config.discount, policy_noise=config.policy_noise * bound,
                         update_actor_freq=config.policy_freq, noise_clip=config.noise_clip * bound,
                         alpha=config.alpha)
        self.actor_optim = self.policy_optim  # logged as train/lr_actor
        self.max_action = bound
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # the official total_it

    def _target_q_compute_action(self, obs_batch: Batch) -> Any:
        act_batch = self.policy(obs_batch, model=self.actor_old)
        noise = (torch.randn_like(act_batch.act) * self.policy_noise).clamp(-self.noise_clip, self.noise_clip)
        act_batch.act = (act_batch.act + noise).clamp(-self.max_action, self.max_action)
        return act_batch

    def _update_with_batch(self, batch: Any) -> TD3BCTrainingStats:
        self.updates += 1
        self._cnt = int(self.updates)  # tianshou's counter, checked before it counts this update
        learns = self._cnt % self.update_actor_freq == 0
        stats = super()._update_with_batch(batch)
        return TD3BCTrainingStats(loss_critic=stats.critic1_loss + stats.critic2_loss,
                                  loss_actor=stats.actor_loss if learns else float("nan"))


def build(config: Config, env: gym.Env, dataset: OfflineDataset | None, device: torch.device) -> TD3PlusBC:
    """TD3+BC for ``env``; the state statistics come from ``dataset`` (at evaluation, ``None``: from the
    checkpoint)."""
    bound = action_bound(config, env)
    obs_dim, act_dim = observation_dim(env), int(np.prod(env.action_space.shape))
    normalizer = ObservationNormalizer.fitted(None if dataset is None else dataset.arrays["observations"], obs_dim,
                                              config.normalize_eps, config.normalize_states)
    actor = ContinuousActorDeterministic(preprocess_net=Net(state_shape=obs_dim, hidden_sizes=config.actor_hidden),
                                         action_shape=act_dim, max_action=bound)
    critic = lambda: Normalized(ContinuousCritic(preprocess_net=Net(  # noqa: E731
        state_shape=obs_dim, action_shape=act_dim, hidden_sizes=config.critic_hidden, concat=True)), normalizer)
    # the actor's tanh already bounds its actions: no scaling, no clipping; no exploration offline
    policy = ContinuousDeterministicPolicy(actor=Normalized(actor, normalizer), action_space=env.action_space,
                                           action_scaling=False, action_bound_method=None)
    algorithm = TD3PlusBC(config=config, policy=policy, critic=critic(), critic2=critic(), bound=bound)
    return algorithm.to(device)


def train(config: Config, run: Any, state: dict[str, Any] | None) -> None:
    offline_train(sys.modules[__name__], config, run, state)


def evaluate(config: Config, state: dict[str, Any], episodes: int) -> dict[str, Any]:
    return offline_evaluate(sys.modules[__name__], config, state, episodes)
