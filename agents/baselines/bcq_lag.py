"""BCQ-Lag: batch-constrained Q-learning with a cost critic and a PID Lagrangian multiplier.

BCQ: Fujimoto, Meger and Precup, "Off-Policy Deep Reinforcement Learning without Exploration",
ICML 2019. Its safe variant as OSRL defines it (Liu et al., "Datasets and Benchmarks for Offline Safe
Reinforcement Learning", DMLR 2024; code ``liuzuxin/OSRL``: ``osrl/algorithms/bcql.py``,
``osrl/common/net.py``, ``examples/train/train_bcql.py``, defaults from
``examples/configs/bcql_configs.py``, ``BCQLTrainConfig``):

- **Generative model.** A conditional VAE ``(s, a) -> z -> a`` (encoder and decoder 2 x 400 ReLU,
  latent ``2 |A|``, ``log std`` clamped to [-4, 15], decoder output ``tanh`` x bound); sampling
  draws ``z ~ N(0, 1)`` clipped to [-0.5, 0.5]. Loss ``MSE(recon, a) + 0.5 KL``.
- **Perturbation actor.** ``xi(s, a) = clip(a + phi * bound * tanh(f(s, a)), -bound, bound)`` with
  ``f`` a 2 x 256 tanh MLP and ``phi = 0.05``. The policy acts with one VAE sample per state,
  perturbed (OSRL's ``act``); ``act_samples > 1`` takes the best of that many by reward Q instead
  (the original BCQ).
- **Critics.** Reward and cost critics are OSRL's ``EnsembleDoubleQCritic``: two groups
  ``Q1, Q2`` of ``num_q`` (2) MLPs (2 x 256 ReLU); a group's value is the minimum over its members;
  every member regresses on the same target (the loss is the sum of their MSEs). The target samples
  ``sample_action_num`` (10) actions per next state from the VAE, perturbs them with the *target*
  actor and takes the max over the samples of the clipped double-Q mix
  ``0.75 min(Q1', Q2') + 0.25 max(Q1', Q2')`` of the target critic:
  ``y_r = 0.1 r + gamma (1 - done) V_r'`` and ``y_c = c + gamma V_c'``. As in OSRL the cost backup
  bootstraps through every transition (no ``done`` mask) and ``done`` is ``terminal | timeout``.
- **Lagrangian.** The actor minimises ``-min(Q1, Q2)(s, xi(s, G(s))) + lambda (min(Qc1, Qc2) - qc_thres)``
  (batch means; the same action feeds both critics; the cost critic is read optimistically, with
  its min, as in OSRL). ``qc_thres = L (1 - gamma^T) / (1 - gamma) / T`` is the discounted cost of
  an episode that spends the limit ``L`` evenly over its ``T`` steps (``L / T`` per step).
  ``lambda`` comes from OSRL's PID controller, fed each step with ``e = mean(Qc_pi) - qc_thres``
  over the batch: ``I <- max(0, I + e)``, ``D = max(0, e - e_prev)``,
  ``lambda = max(0, KP max(0, e) + KI I + KD D)`` with (KP, KI, KD) = (0.1, 0.003, 0.001); it rises
  while the cost critic exceeds the threshold and decays to 0 once the integral has drained.
- **Order per step:** VAE, reward critic, cost critic, actor (the critics see this step's VAE), then
  Polyak averaging (tau 0.005) of the target actor and both target critics.

Built on tianshou: its :class:`~tianshou.utils.net.continuous.VAE` (same loss as its BCQ: its
``KL/2`` is OSRL's ``beta KL`` at ``beta = 0.5``), :class:`~tianshou.utils.net.continuous.Perturbation`,
:class:`~tianshou.utils.net.common.MLP`/``Net``, its lagged (target) networks with Polyak updates, and a
subclass of :class:`~tianshou.algorithm.imitation.bcq.BCQPolicy` whose acting is batched. The
algorithm itself subclasses ``OfflineAlgorithm`` rather than tianshou's ``BCQ``, whose update cannot be
extended to OSRL's: it has one critic pair instead of ensembles, builds its critic targets from
unperturbed VAE samples, trains the actor on the first critic only, and has no place for a cost
critic or a multiplier; everything in its ``_update_with_batch`` would have to be replaced.

Deviations from OSRL:

- The cost threshold is multiplied by ``cost_scale`` so that it stays on the cost critic's scale
  (OSRL does not; identical at its default ``cost_scale = 1``).
- The PID controller's state (previous error and integral) is part of the checkpoint, so a resumed
  run continues exactly (OSRL saves only the networks).
- ``T`` is the task's episode length unless ``episode_len`` is set (OSRL's ``train_bcql.py`` takes
  it from the task's config class, ``BCQL<Task>Config.episode_len``; the values agree on all eight
  Run/Circle tasks: BallRun 100, BallCircle 200, CarRun 200, CarCircle 300, DroneRun 200,
  DroneCircle 300, AntRun 200, AntCircle 500 steps).
- Batches come from tianshou's replay buffer (uniform with replacement) instead of a PyTorch
  ``DataLoader`` with 8 workers; evaluation plays ``eval_episodes`` episodes at once with fixed seeds
  and only the last checkpoint is kept (OSRL also keeps its lowest-cost one).
- The VAE's encoder and decoder are tianshou's ``MLP`` (the same Linear/ReLU layers as OSRL's) and
  every network uses PyTorch's default initialisation, as OSRL.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from tianshou.algorithm.algorithm_base import (LaggedNetworkPolyakUpdateAlgorithmMixin, OfflineAlgorithm,
                                               TrainingStats)
from tianshou.algorithm.imitation.bcq import BCQPolicy
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.data import Batch
from tianshou.utils.net.common import MLP, Net
from tianshou.utils.net.continuous import VAE, Perturbation
from torch import nn

from aligngym.agents.config import ConfigError
from aligngym.agents.offline import OfflineConfig, action_bound, observation_dim, offline_evaluate, offline_train
from aligngym.envs.data.dataset import OfflineDataset


class Config(OfflineConfig):
    steps: int = Field(100_000, ge=1)  # gradient steps (OSRL update_steps)
    batch_size: int = Field(512, ge=1)  # transitions per step
    eval_every: int = Field(2_500, ge=1)  # OSRL evaluates every 2500 steps ...
    eval_episodes: int = Field(10, ge=1)  # ... on 10 episodes
    actor_lr: float = Field(1e-3, gt=0)  # Adam, perturbation actor
    critic_lr: float = Field(1e-3, gt=0)  # Adam, reward and cost critics
    vae_lr: float = Field(1e-3, gt=0)  # Adam, VAE
    actor_hidden: tuple[PositiveInt, ...] = Field((256, 256), min_length=1)  # perturbation MLP (tanh)
    critic_hidden: tuple[PositiveInt, ...] = Field((256, 256), min_length=1)  # each Q MLP (ReLU)
    vae_hidden: PositiveInt = 400  # width of the VAE's two encoder and two decoder layers
    phi: float = Field(0.05, ge=0)  # largest perturbation, as a fraction of the action bound
    lambda_mix: float = Field(0.75, ge=0, le=1)  # clipped double Q: lambda min + (1 - lambda) max (OSRL lmbda)
    kl_weight: float = Field(0.5, ge=0)  # weight of the VAE's KL term (OSRL beta)
    sample_action_num: PositiveInt = 10  # VAE samples per next state in the critic targets
    gamma: float = Field(0.99, gt=0, lt=1)  # discount of rewards and costs
    tau: float = Field(0.005, gt=0, le=1)  # Polyak rate of the target actor and critics
    num_q: PositiveInt = 2  # reward critic: members per group (two groups, Q1 and Q2)
    num_qc: PositiveInt = 2  # cost critic: members per group
    pid: tuple[float, float, float] = (0.1, 0.003, 0.001)  # KP, KI, KD of the Lagrangian multiplier
    reward_scale: float = Field(0.1, gt=0)  # rewards are multiplied by this for the critic
    cost_scale: float = Field(1.0, gt=0)  # costs (and the threshold) are multiplied by this
    episode_len: PositiveInt | None = None  # T in qc_thres; None = the task's episode length
    act_samples: PositiveInt = 1  # actions tried per state when acting (OSRL 1; >1: best by reward Q)

    def check_env(self, env: gym.Env) -> None:
        super().check_env(env)
        episode_length(self, env)  # qc_thres needs T

    def smoke(self) -> Config:
        small = super().smoke()
        return small.model_copy(update={"actor_hidden": (32, 32), "critic_hidden": (32, 32), "vae_hidden": 32,
                                        "sample_action_num": 3})


def cost_threshold(cost_limit: float, gamma: float, episode_len: int) -> float:
    """OSRL's target for the cost critic, ``L (1 - gamma^T) / (1 - gamma) / T``: the discounted sum of
    ``L / T`` per step over ``T`` steps."""
    return cost_limit * (1 - gamma**episode_len) / (1 - gamma) / episode_len


# ---------------------------------------------------------------------- networks
class DoubleQEnsemble(nn.Module):
    """OSRL's ``EnsembleDoubleQCritic``: groups ``Q1`` and ``Q2`` of ``n`` MLPs over ``(s, a)`` each."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], n: int) -> None:
        super().__init__()
        make = lambda: MLP(input_dim=obs_dim + act_dim, output_dim=1, hidden_sizes=hidden)  # noqa: E731
        self.q1 = nn.ModuleList([make() for _ in range(n)])
        self.q2 = nn.ModuleList([make() for _ in range(n)])

    def members(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Every member's value, ``(2 n, B)``: the ``Q1`` group first."""
        x = torch.cat([obs, act], dim=-1)
        return torch.stack([q(x).squeeze(-1) for q in [*self.q1, *self.q2]])

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(min over Q1, min over Q2)``, each ``(B,)``."""
        q1, q2 = self.members(obs, act).chunk(2)
        return q1.min(dim=0).values, q2.min(dim=0).values


class PIDLagrangian(nn.Module):
    """OSRL's ``LagrangianPIDController``; its state lives in buffers so checkpoints carry it."""

    def __init__(self, kp: float, ki: float, kd: float, threshold: float) -> None:
        super().__init__()
        self.kp, self.ki, self.kd, self.threshold = kp, ki, kd, threshold
        self.register_buffer("error_old", torch.zeros(()))
        self.register_buffer("error_integral", torch.zeros(()))

    @torch.no_grad()
    def control(self, cost_value: torch.Tensor) -> torch.Tensor:
        """The multiplier for a batch of cost-critic values (a scalar tensor >= 0)."""
        error = torch.mean(cost_value - self.threshold)
        error_diff = F.relu(error - self.error_old)
        self.error_integral.copy_(F.relu(self.error_integral + error))
        self.error_old.copy_(error)
        return F.relu(self.kp * F.relu(error) + self.ki * self.error_integral + self.kd * error_diff)


# ---------------------------------------------------------------------- policy (acting)
class BCQLagPolicy(BCQPolicy):
    """tianshou's BCQ policy, batched over states: ``forward_sampled_times`` (``act_samples``) VAE
    samples per state, perturbed; with one sample that action (OSRL), else the one with the highest
    ``min(Q1, Q2)``."""

    def forward(self, batch: Batch, state: Any = None, **kwargs: Any) -> Batch:
        device = next(self.parameters()).device
        obs = torch.as_tensor(np.asarray(batch.obs), dtype=torch.float32, device=device)
        k = self.forward_sampled_times
        tiled = obs.repeat_interleave(k, dim=0)
        act = self.actor_perturbation(tiled, self.vae.decode(tiled))
        if k > 1:
            q1, q2 = self.critic(tiled, act)
            best = torch.min(q1, q2).view(-1, k).argmax(dim=1)
            act = act.view(len(obs), k, -1)[torch.arange(len(obs), device=device), best]
        return Batch(act=act, state=state)


# ---------------------------------------------------------------------- algorithm (learning)
@dataclass(kw_only=True)
class BCQLagTrainingStats(TrainingStats):
    loss_vae: float
    loss_critic: float
    loss_cost_critic: float
    loss_actor: float
    qc_penalty: float  # mean of lambda (Qc - qc_thres), the Lagrangian part of the actor loss
    lagrangian: float  # the multiplier lambda
    cost_value: float  # mean min(Qc1, Qc2) at the actor's actions


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """No gradients into ``modules`` (the actor's loss reads the critics and the VAE)."""
    params = [p for m in modules for p in m.parameters()]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class BCQLag(OfflineAlgorithm[BCQLagPolicy], LaggedNetworkPolyakUpdateAlgorithmMixin):
    def __init__(self, config: Config, obs_dim: int, action_space: gym.spaces.Box, bound: float,
                 episode_len: int, device: torch.device) -> None:
        act_dim = int(np.prod(action_space.shape))
        latent = 2 * act_dim
        perturbation = Perturbation(
            preprocess_net=Net(state_shape=obs_dim + act_dim, action_shape=act_dim,
                               hidden_sizes=config.actor_hidden, activation=nn.Tanh),
            max_action=bound, phi=config.phi)
        width = config.vae_hidden
        vae = VAE(encoder=MLP(input_dim=obs_dim + act_dim, hidden_sizes=(width, width)),
                  decoder=MLP(input_dim=obs_dim + latent, hidden_sizes=(width, width), output_dim=act_dim),
                  hidden_dim=width, latent_dim=latent, max_action=bound)
        critic = DoubleQEnsemble(obs_dim, act_dim, config.critic_hidden, config.num_q)
        policy = BCQLagPolicy(actor_perturbation=perturbation, action_space=action_space, critic=critic, vae=vae,
                              forward_sampled_times=config.act_samples, action_scaling=False,
                              action_bound_method=None)
        super().__init__(policy=policy)
        LaggedNetworkPolyakUpdateAlgorithmMixin.__init__(self, tau=config.tau)
        self.config = config
        self.cost_critic = DoubleQEnsemble(obs_dim, act_dim, config.critic_hidden, config.num_qc)
        self.actor_target = self._add_lagged_network(policy.actor_perturbation)
        self.critic_target = self._add_lagged_network(policy.critic)
        self.cost_critic_target = self._add_lagged_network(self.cost_critic)
        self.vae_optim = self._create_optimizer(policy.vae, AdamOptimizerFactory(lr=config.vae_lr))
        self.critic_optim = self._create_optimizer(policy.critic, AdamOptimizerFactory(lr=config.critic_lr))
        self.cost_critic_optim = self._create_optimizer(self.cost_critic, AdamOptimizerFactory(lr=config.critic_lr))
        self.actor_optim = self._create_optimizer(policy.actor_perturbation, AdamOptimizerFactory(lr=config.actor_lr))
        self.qc_thres = cost_threshold(config.cost_limit, config.gamma, episode_len) * config.cost_scale
        self.controller = PIDLagrangian(*config.pid, threshold=self.qc_thres)
        self.to(device)

    def _update_with_batch(self, batch: Any) -> BCQLagTrainingStats:
        cfg, policy = self.config, self.policy
        device = next(self.parameters()).device
        tensor = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)  # noqa: E731
        obs, act, obs_next = tensor(batch.obs), tensor(batch.act), tensor(batch.obs_next)
        reward = tensor(batch.rew) * cfg.reward_scale
        cost = tensor(batch.info.cost) * cfg.cost_scale
        not_done = 1.0 - tensor(np.logical_or(batch.terminated, batch.truncated))

        recon, mean, std = policy.vae(obs, act)
        kl = (-torch.log(std) + (std.pow(2) + mean.pow(2) - 1) / 2).mean()
        loss_vae = F.mse_loss(recon, act) + cfg.kl_weight * kl
        self.vae_optim.step(loss_vae)

        loss_critic = self.critic_step(policy.critic, self.critic_target, self.critic_optim,
                                       obs, act, obs_next, reward, not_done)
        loss_cost_critic = self.critic_step(self.cost_critic, self.cost_critic_target, self.cost_critic_optim,
                                            obs, act, obs_next, cost, torch.ones_like(not_done))

        with frozen(policy.critic, self.cost_critic, policy.vae):
            actions = policy.actor_perturbation(obs, policy.vae.decode(obs))
            reward_value = torch.min(*policy.critic(obs, actions))
            cost_value = torch.min(*self.cost_critic(obs, actions))
            multiplier = self.controller.control(cost_value.detach())
            qc_penalty = ((cost_value - self.qc_thres) * multiplier).mean()
            loss_actor = -reward_value.mean() + qc_penalty
            self.actor_optim.step(loss_actor)

        self._update_lagged_network_weights()
        return BCQLagTrainingStats(loss_vae=loss_vae.item(), loss_critic=loss_critic, loss_cost_critic=loss_cost_critic,
                                   loss_actor=loss_actor.item(), qc_penalty=qc_penalty.item(),
                                   lagrangian=multiplier.item(), cost_value=cost_value.mean().item())

    @torch.no_grad()
    def backup(self, target: nn.Module, obs_next: torch.Tensor, signal: torch.Tensor,
               mask: torch.Tensor) -> torch.Tensor:
        """``signal + gamma mask max_k mix(Q1', Q2')(s', a'_k)``: ``a'_k`` are ``sample_action_num`` VAE
        samples per next state perturbed by the target actor, ``mix`` the clipped double-Q blend."""
        cfg = self.config
        tiled = obs_next.repeat_interleave(cfg.sample_action_num, dim=0)
        act_next = self.actor_target(tiled, self.policy.vae.decode(tiled))
        q1, q2 = target(tiled, act_next)
        mixed = cfg.lambda_mix * torch.min(q1, q2) + (1 - cfg.lambda_mix) * torch.max(q1, q2)
        next_value = mixed.view(len(obs_next), cfg.sample_action_num).max(dim=1).values
        return signal + cfg.gamma * mask * next_value

    def critic_step(self, critic: DoubleQEnsemble, target: nn.Module, optim: Any, obs: torch.Tensor,
                    act: torch.Tensor, obs_next: torch.Tensor, signal: torch.Tensor, mask: torch.Tensor) -> float:
        """One regression of every member of ``critic`` on :meth:`backup`."""
        backup = self.backup(target, obs_next, signal, mask)
        loss = ((critic.members(obs, act) - backup) ** 2).mean(dim=1).sum()
        optim.step(loss)
        return loss.item()


# ---------------------------------------------------------------------- runner hooks
def episode_length(config: Config, env: gym.Env) -> int:
    """``T`` of ``qc_thres``: ``episode_len``, else the task's episode length."""
    if config.episode_len is not None:
        return config.episode_len
    task = getattr(env.unwrapped, "task", None)
    steps = getattr(task, "max_episode_steps", None) or getattr(env.spec, "max_episode_steps", None)
    if not steps:
        raise ConfigError(f"{config.task} has no episode length to compute qc_thres from; set episode_len")
    return int(steps)


def build(config: Config, env: gym.Env, dataset: OfflineDataset, device: torch.device) -> BCQLag:
    bound = action_bound(config, env)
    return BCQLag(config, observation_dim(env), env.action_space, bound, episode_length(config, env), device)


def train(config: Config, run: Any, state: dict[str, Any] | None) -> None:
    offline_train(sys.modules[__name__], config, run, state)


def evaluate(config: Config, state: dict[str, Any], episodes: int) -> dict[str, Any]:
    return offline_evaluate(sys.modules[__name__], config, state, episodes)
