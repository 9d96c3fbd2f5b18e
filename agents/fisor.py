"""FISOR: feasibility-guided safe offline RL with a diffusion policy.

Zheng, Li, Yu, Yang, Li, Zhan and Liu, "Safe Offline Reinforcement Learning with Feasibility-Guided
Diffusion Model", ICLR 2024; official code ``ZhengYinan-AIR/FISOR`` (JAX, ``jaxrl5/agents/fisor``).
Three decoupled supervised stages, trained together:

1. **Feasibility** (Hamilton-Jacobi reachability). The cost becomes ``h = +cost_scale`` (25) on a
   violating step and ``-1`` otherwise. ``Q_h`` (2 nets) regresses on
   ``(1 - gamma) h + gamma max(h, V_h(s'))`` (``h`` at episode ends); ``V_h`` fits a *lower*
   expectile (weight 0.9 where ``Q_h - V_h < 0``, else 0.1) of the max over the 2 target ``Q_h``
   nets, which stands in for the minimum over the actions the data supports. ``V_h(s) <= 0``:
   ``s`` is feasible.
2. **Reward advantage** (IQL). ``V_r`` fits the 0.9 expectile of ``min(Q_r)`` (2 target nets),
   ``Q_r`` regresses on ``r + gamma V_r(s')``; rewards are scaled by ``T / (R_max - R_min)``. These
   updates are :mod:`aligngym.agents.iql_core`'s, the same code the IQL baseline learns with.
3. **Policy extraction** by weighted diffusion behaviour cloning: a 5-step DDPM (VP schedule)
   whose noise-prediction loss is weighted per sample by
   ``exp(3 A_r)`` clipped to 100 where ``V_h(s) <= 0`` and ``Q_h(s, a) <= 0`` (feasible: best
   reward among feasible actions), ``exp(5 (V_h - Q_h))`` clipped to 150 where ``V_h(s) > 0``
   (infeasible: the safest actions), and 0 otherwise.

Acting: 16 candidate actions per state from the EMA copy of the diffusion network (all
candidates of all states in one batched pass per denoising step), the one with the lowest
``Q_h`` is taken.

Each gradient step samples ``batch_size`` (2048) transitions; the actor makes ``actor_updates``
(2) updates on equal slices of them, with weights from the target Q nets and the current V nets;
then ``V_r``, ``Q_r``, ``V_h``, ``Q_h`` update in that order on the first ``critic_batch_size``
(256); then the Polyak averages. Defaults are the official code's (``configs/train_config.py``).

Deviations from the official code:

- PyTorch instead of JAX/flax; ensembles are stacked weight tensors instead of ``vmap``.
  Initialisation follows flax's: Xavier-uniform kernels (LeCun-normal inside the residual
  blocks), zero biases, LayerNorm epsilon 1e-6.
- The infeasible-region weights are clipped to [0, 150] as in the official code's later commits;
  its first commit (and the MetaDrive imitation branch) clipped to [1, 150]:
  ``cost_weight_min: 1`` gives that.
- The Polyak averages of both target Q ensembles come after all four critic updates (the
  official code averages Q_r's right after Q_r's update; nothing in between reads them).
- Observations and actions come from a tianshou ``ReplayBuffer``; the whole dataset is moved to
  the training device once and batches are gathered by index there (the sampling itself is
  tianshou's: uniform with replacement).
- The actor's cosine learning-rate decay runs over ``actor_decay_steps`` actor updates (the
  original: 3e6); the ``cpu`` configs, with far fewer steps, shorten it in proportion.
- Evaluation plays ``eval_episodes`` episodes at the end and every ``eval_every`` steps (the
  original also evaluates after its first update).
- 1,000,000 gradient steps (the official loop runs ``trange(max_steps)`` with
  ``max_steps = 1e6 + 1``: one more) and the config's seed (the official config sets 1 in the
  versions read; its ``-1`` draws one at random).
- Rewards are scaled with the task's ``R_max - R_min`` from ``envs/safety/specs.py``: the range of
  AlignGym's own full dataset where measured, else DSRL's (the official code reads DSRL's).
- ``selection: first_feasible`` (opt-in, not in the paper) takes the first candidate with
  ``Q_h <= 0`` instead of the lowest ``Q_h``; the default is the official ``minqc`` rule.
- ``cost_limit: 10`` in every config, the official default. The paper's BulletGym rows may have used
  5 (a replication in the official repository's issue #6 changed it to 5; the paper does not say);
  ``--set cost_limit=5`` runs that reading. It only sets the normalised cost's threshold: FISOR's
  training ignores it (hard constraint: ``h`` marks every costly step).
- ``critic_warmup`` (default 0, as in the paper) lets the first steps train only the critics. The
  critics never read the actor, so this changes no fixed point; it matters for short runs, whose
  actor would otherwise learn from weights of unconverged reachability values (see
  ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt, model_validator
from tianshou.algorithm.algorithm_base import OfflineAlgorithm, Policy, TrainingStats
from tianshou.algorithm.optim import TorchOptimizerFactory
from tianshou.data import Batch, ReplayBuffer
from torch import nn

from aligngym.agents.config import ConfigError, validate
# the reward critics are IQL's, learnt by the shared implementation (reward_target: importable from here as before)
from aligngym.agents.iql_core import (EnsembleMLP, advantage_weights, apply_cosine_decay, expectile_loss,  # noqa: F401
                                      pessimistic_q, polyak, reward_target, update_q, update_value)
from aligngym.agents.offline import OfflineConfig, action_bound, observation_dim, offline_evaluate, offline_train
from aligngym.envs.data.dataset import OfflineDataset


class Config(OfflineConfig):
    steps: int = Field(1_000_000, ge=1)  # gradient steps (the paper's 1M)
    batch_size: int = Field(2048, ge=2)  # sampled per step; the actor uses all of it
    actor_updates: int = Field(2, ge=1)  # actor updates per step, on equal slices of the batch (sizes
    # differ by one where batch_size is not a multiple of it)
    critic_batch_size: int = Field(256, ge=1)  # the critics use the first this many
    discount: float = Field(0.99, gt=0, lt=1)
    critic_tau: float = Field(0.005, gt=0, le=1)  # Polyak rate of the target Q nets
    actor_tau: float = Field(0.001, gt=0, le=1)  # EMA rate of the acting diffusion network
    reward_expectile: float = Field(0.9, gt=0, lt=1)  # IQL's tau for V_r (upper expectile)
    cost_expectile: float = Field(0.9, gt=0, lt=1)  # reversed expectile for V_h (lower)
    reward_temperature: float = Field(3.0, gt=0)  # alpha_r in exp(alpha_r A_r)
    cost_temperature: float = Field(5.0, gt=0)  # alpha_c in exp(alpha_c (V_h - Q_h))
    reward_weight_max: float = Field(100.0, gt=0)  # clip of the feasible-region weights
    cost_weight_max: float = Field(150.0, gt=0)  # upper clip of the infeasible-region weights
    cost_weight_min: float = Field(0.0, ge=0)  # lower clip (the official code's first commit used 1)
    cost_scale: float = Field(25.0, gt=0)  # h = +cost_scale on a violation, -1 otherwise
    diffusion_steps: int = Field(5, ge=1)  # T of the DDPM
    beta_min: float = Field(0.1, gt=0)  # VP schedule
    beta_max: float = Field(10.0, gt=0)
    candidates: int = Field(16, ge=1)  # actions sampled per state when acting
    selection: Literal["min_cost", "first_feasible"] = "min_cost"  # which candidate acts (see FISORPolicy)
    actor_hidden: int = Field(256, ge=1)  # width of the residual MLP
    actor_blocks: int = Field(3, ge=1)  # residual blocks
    actor_dropout: float = Field(0.1, ge=0, lt=1)
    time_features: int = Field(64, ge=2)  # Fourier features of the diffusion step
    time_hidden: int = Field(128, ge=1)  # MLP over them (the conditioning vector)
    critic_hidden: tuple[PositiveInt, ...] = Field((256, 256), min_length=1)
    actor_lr: float = Field(3e-4, gt=0)  # AdamW, cosine decay to 0 over actor_decay_steps
    actor_decay_steps: int = Field(3_000_000, ge=1)
    critic_lr: float = Field(3e-4, gt=0)
    value_lr: float = Field(3e-4, gt=0)
    scale_rewards: bool = True  # r * T / (R_max - R_min) with the task's constants
    critic_warmup: int = Field(0, ge=0)  # the first this many steps train only the critics (paper: 0)

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        problems = []
        if self.critic_warmup >= self.steps:
            problems.append(f"critic_warmup ({self.critic_warmup}) must be below steps ({self.steps}), "
                            f"or the actor never trains")
        if self.critic_batch_size > self.batch_size:
            problems.append(f"critic_batch_size ({self.critic_batch_size}) must be at most batch_size "
                            f"({self.batch_size}): the critics use the first critic_batch_size of each batch")
        if self.batch_size < self.actor_updates:
            problems.append(f"batch_size ({self.batch_size}) must be at least actor_updates ({self.actor_updates})")
        if self.time_features % 2:
            problems.append(f"time_features ({self.time_features}) must be even (half cosines, half sines)")
        if self.cost_weight_min > self.cost_weight_max:
            problems.append(f"cost_weight_min ({self.cost_weight_min}) must be at most cost_weight_max "
                            f"({self.cost_weight_max})")
        if self.beta_max <= self.beta_min:
            problems.append(f"beta_max ({self.beta_max}) must be above beta_min ({self.beta_min})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def smoke(self) -> Config:
        small = super().smoke()
        return small.model_copy(update={"batch_size": 32, "critic_batch_size": 16, "candidates": 4,
                                        "actor_hidden": 32, "time_hidden": 16, "critic_hidden": (32, 32),
                                        "critic_warmup": min(self.critic_warmup, small.steps // 2)})

    def check_env(self, env: gym.Env) -> None:
        reward_scale(self, env)


# ---------------------------------------------------------------------- networks
def _dense(fan_in: int, fan_out: int, init: str = "xavier") -> nn.Linear:
    """A linear layer initialised as flax's (jaxrl5's): Xavier-uniform or LeCun-normal kernel, zero bias."""
    layer = nn.Linear(fan_in, fan_out)
    if init == "xavier":
        nn.init.xavier_uniform_(layer.weight)
    else:  # flax's lecun_normal: truncated normal with variance 1 / fan_in
        nn.init.trunc_normal_(layer.weight, std=(1.0 / fan_in) ** 0.5 / 0.87962566103423978,
                              a=-2 * (1.0 / fan_in) ** 0.5 / 0.87962566103423978,
                              b=2 * (1.0 / fan_in) ** 0.5 / 0.87962566103423978)
    nn.init.zeros_(layer.bias)
    return layer


class ResidualBlock(nn.Module):
    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(width, eps=1e-6)  # flax's epsilon
        self.up = _dense(width, 4 * width, "lecun")
        self.down = _dense(4 * width, width, "lecun")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(F.mish(self.up(self.norm(self.dropout(x)))))


class NoisePredictor(nn.Module):
    """``eps(a_t, s, t)``: Fourier features of t -> MLP -> concat with (a_t, s) -> residual MLP."""

    def __init__(self, obs_dim: int, act_dim: int, config: Config) -> None:
        super().__init__()
        self.frequencies = nn.Parameter(0.2 * torch.randn(config.time_features // 2, 1))
        self.time_mlp = nn.Sequential(_dense(config.time_features, config.time_hidden), nn.Mish(),
                                      _dense(config.time_hidden, config.time_hidden))
        self.inp = _dense(act_dim + obs_dim + config.time_hidden, config.actor_hidden)
        self.blocks = nn.Sequential(*[ResidualBlock(config.actor_hidden, config.actor_dropout)
                                      for _ in range(config.actor_blocks)])
        self.out = _dense(config.actor_hidden, act_dim)

    def forward(self, noisy_action: torch.Tensor, obs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * t.float().unsqueeze(-1) @ self.frequencies.T
        cond = self.time_mlp(torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1))
        x = self.blocks(self.inp(torch.cat([noisy_action, obs, cond], dim=-1)))
        return self.out(F.mish(x))


def vp_beta_schedule(steps: int, beta_min: float = 0.1, beta_max: float = 10.0) -> torch.Tensor:
    """The discrete VP schedule of the official code: ``beta_t = 1 - exp(-b_min/T - (b_max - b_min)(2t - 1)/(2 T^2))``."""
    t = torch.arange(1, steps + 1, dtype=torch.float64)
    alpha = torch.exp(-beta_min / steps - 0.5 * (beta_max - beta_min) * (2 * t - 1) / steps**2)
    return (1 - alpha).float()


# ---------------------------------------------------------------------- policy (acting)
class FISORPolicy(Policy):
    """Samples ``candidates`` actions per state with the EMA diffusion network and takes the one
    with the lowest feasibility value ``max(Q_h)`` (``selection="min_cost"``, the official
    ``minqc``), or the first one whose value is feasible (``Q_h <= 0``), the lowest if none is
    (``"first_feasible"``, not in the paper: among feasible candidates it keeps the diffusion
    policy's own, reward-weighted choice instead of the most cautious one)."""

    def __init__(self, action_space: gym.spaces.Box, ema_actor: NoisePredictor, target_cost_q: EnsembleMLP,
                 betas: torch.Tensor, candidates: int, selection: str = "min_cost") -> None:
        super().__init__(action_space=action_space, action_scaling=False, action_bound_method="clip")
        self.ema_actor = ema_actor
        self.target_cost_q = target_cost_q
        self.register_buffer("betas", betas)
        self.register_buffer("alphas", 1 - betas)
        self.register_buffer("alpha_bars", torch.cumprod(1 - betas, dim=0))
        self.candidates = candidates
        self.selection = selection
        self.act_dim = int(np.prod(action_space.shape))
        self.ema_actor.eval()

    def train(self, mode: bool = True) -> FISORPolicy:
        """The EMA network is only ever sampled from (the official sampler passes ``training=False``):
        its dropout stays off whatever mode the policy is put in."""
        super().train(mode)
        self.ema_actor.eval()
        return self

    @torch.no_grad()
    def sample(self, obs: torch.Tensor) -> torch.Tensor:
        """DDPM reverse process for a batch of states, clipped to [-1, 1] after every step."""
        x = torch.randn(obs.shape[0], self.act_dim, device=obs.device)
        for t in reversed(range(len(self.betas))):
            steps = torch.full((obs.shape[0],), t, device=obs.device)
            eps = self.ema_actor(x, obs, steps)
            x = (x - (1 - self.alphas[t]) / torch.sqrt(1 - self.alpha_bars[t]) * eps) / torch.sqrt(self.alphas[t])
            if t > 0:
                x = x + torch.sqrt(self.betas[t]) * torch.randn_like(x)
            x = x.clamp(-1.0, 1.0)
        return x

    @torch.no_grad()
    def select(self, obs: torch.Tensor) -> torch.Tensor:
        n, k = obs.shape[0], self.candidates
        tiled = obs.repeat_interleave(k, dim=0)
        actions = self.sample(tiled)
        cost_value = self.target_cost_q(torch.cat([tiled, actions], dim=-1)).max(dim=0).values.view(n, k)
        best = cost_value.argmin(dim=1)
        if self.selection == "first_feasible":  # the first sample with Q_h <= 0; the safest if none is
            feasible = cost_value <= 0
            best = torch.where(feasible.any(dim=1), feasible.float().argmax(dim=1), best)
        return actions.view(n, k, -1)[torch.arange(n, device=obs.device), best]

    def forward(self, batch: Batch, state: Any = None, **kwargs: Any) -> Batch:
        obs = torch.as_tensor(np.asarray(batch.obs), dtype=torch.float32, device=self.betas.device)
        return Batch(act=self.select(obs), state=state)


# ---------------------------------------------------------------------- algorithm (learning)
@dataclass(kw_only=True)
class FISORTrainingStats(TrainingStats):
    """Losses (``loss/*``) and two diagnostics (``train/*``): ``mean_weight``, the mean actor weight,
    and ``feasible_share``, the share of the batch's states the critic deems feasible (``V_h <= 0``),
    which grows for many thousand steps while the reachability values converge."""

    loss_actor: float
    loss_reward_value: float
    loss_reward_q: float
    loss_cost_value: float
    loss_cost_q: float
    mean_weight: float
    feasible_share: float


class FISOR(OfflineAlgorithm[FISORPolicy]):
    def __init__(self, config: Config, obs_dim: int, action_space: gym.spaces.Box, reward_scale: float,
                 device: torch.device) -> None:
        act_dim = int(np.prod(action_space.shape))
        hidden = tuple(config.critic_hidden)
        actor = NoisePredictor(obs_dim, act_dim, config)
        ema_actor = NoisePredictor(obs_dim, act_dim, config)
        ema_actor.load_state_dict(actor.state_dict())
        cost_q = EnsembleMLP(2, obs_dim + act_dim, hidden)
        target_cost_q = EnsembleMLP(2, obs_dim + act_dim, hidden)
        target_cost_q.load_state_dict(cost_q.state_dict())
        betas = vp_beta_schedule(config.diffusion_steps, config.beta_min, config.beta_max)
        super().__init__(policy=FISORPolicy(action_space, ema_actor, target_cost_q, betas, config.candidates,
                                            config.selection))
        self.config = config
        self.reward_scale = reward_scale
        self.actor = actor
        self.reward_q = EnsembleMLP(2, obs_dim + act_dim, hidden)
        self.target_reward_q = EnsembleMLP(2, obs_dim + act_dim, hidden)
        self.target_reward_q.load_state_dict(self.reward_q.state_dict())
        self.reward_v = EnsembleMLP(1, obs_dim, hidden)
        self.cost_q = cost_q
        self.cost_v = EnsembleMLP(1, obs_dim, hidden)
        for frozen in (self.target_reward_q, target_cost_q, ema_actor):
            frozen.requires_grad_(False)
        adamw = TorchOptimizerFactory(torch.optim.AdamW, lr=config.actor_lr, weight_decay=0.0)
        self.actor_optim = self._create_optimizer(self.actor, adamw)
        self.reward_value_optim = self._create_optimizer(self.reward_v, TorchOptimizerFactory(torch.optim.Adam, lr=config.value_lr))
        self.reward_q_optim = self._create_optimizer(self.reward_q, TorchOptimizerFactory(torch.optim.Adam, lr=config.critic_lr))
        self.cost_value_optim = self._create_optimizer(self.cost_v, TorchOptimizerFactory(torch.optim.Adam, lr=config.value_lr))
        self.cost_q_optim = self._create_optimizer(self.cost_q, TorchOptimizerFactory(torch.optim.Adam, lr=config.critic_lr))
        self.register_buffer("actor_step", torch.zeros((), dtype=torch.long))
        self.register_buffer("critic_step", torch.zeros((), dtype=torch.long))
        self.data: dict[str, torch.Tensor] = {}
        self.to(device)

    # -- data: the whole buffer on the device once; batches gathered by index
    def process_buffer(self, buffer: ReplayBuffer) -> ReplayBuffer:
        device = self.policy.betas.device
        size = len(buffer)
        data = buffer[np.arange(size)]
        cost = np.asarray(data.info.cost, dtype=np.float32)
        done = np.logical_or(data.terminated, data.truncated)  # the original bootstraps through neither
        tensor = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)  # noqa: E731
        self.data = {
            "obs": tensor(data.obs), "obs_next": tensor(data.obs_next),
            "act": tensor(np.clip(data.act, -1 + 1e-5, 1 - 1e-5)),
            "rew": tensor(data.rew) * self.reward_scale,
            "h": tensor(np.where(cost > 0, self.config.cost_scale, -1.0)),
            "mask": tensor(1.0 - done),
        }
        return buffer

    def _preprocess_batch(self, batch: Any, buffer: ReplayBuffer, indices: np.ndarray) -> Any:
        batch.indices = indices
        return batch

    # -- the update
    def _update_with_batch(self, batch: Any) -> FISORTrainingStats:
        cfg = self.config
        idx = torch.as_tensor(batch.indices, device=self.policy.betas.device)
        b = {k: v[idx] for k, v in self.data.items()}
        obs_act = torch.cat([b["obs"], b["act"]], dim=-1)
        # no actor work during the critics' warm-up: NaN, which the runner leaves out of the logs
        actor_losses, mean_weight = [float("nan")], float("nan")
        if int(self.critic_step) >= cfg.critic_warmup:
            weights = self.actor_weights(b["obs"], obs_act)  # before this step's critic updates
            actor_losses = [self.update_actor(b["obs"][part], b["act"][part], weights[part])
                            for part in torch.arange(len(idx), device=idx.device).tensor_split(cfg.actor_updates)]
            mean_weight = float(weights.mean())
        c = {k: v[:cfg.critic_batch_size] for k, v in b.items()}
        c_obs_act = obs_act[:cfg.critic_batch_size]
        losses = self.update_critics(c, c_obs_act)
        self.critic_step += 1
        with torch.no_grad():
            feasible = (self.cost_v(b["obs"])[0] <= 0).float().mean()
        return FISORTrainingStats(loss_actor=float(np.mean(actor_losses)), **losses,
                                  mean_weight=mean_weight, feasible_share=float(feasible))

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        if "critic_step" not in state_dict and "actor_step" in state_dict:  # written before critic_warmup
            state_dict = {**state_dict, "critic_step": state_dict["actor_step"] // self.config.actor_updates}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @torch.no_grad()
    def actor_weights(self, obs: torch.Tensor, obs_act: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        reward_adv = pessimistic_q(self.target_reward_q, obs_act) - self.reward_v(obs)[0]
        cost_q = self.policy.target_cost_q(obs_act).max(dim=0).values
        cost_v = self.cost_v(obs)[0]
        return feasibility_weights(reward_adv, cost_q, cost_v, cfg)

    def update_actor(self, obs: torch.Tensor, act: torch.Tensor, weight: torch.Tensor) -> float:
        cfg, policy = self.config, self.policy
        t = torch.randint(0, len(policy.betas), (len(obs),), device=obs.device)
        noise = torch.randn_like(act)
        alpha_bar = policy.alpha_bars[t].unsqueeze(-1)
        noisy = torch.sqrt(alpha_bar) * act + torch.sqrt(1 - alpha_bar) * noise
        per_sample = ((self.actor(noisy, obs, t) - noise) ** 2).sum(dim=-1)
        loss = (weight * per_sample).mean()
        apply_cosine_decay(self.actor_optim, cfg.actor_lr, int(self.actor_step), cfg.actor_decay_steps)
        self.actor_optim.step(loss)
        self.actor_step += 1
        polyak(policy.ema_actor, self.actor, cfg.actor_tau)
        return loss.item()

    def update_critics(self, b: dict[str, torch.Tensor], obs_act: torch.Tensor) -> dict[str, float]:
        cfg = self.config
        reward_q_target = pessimistic_q(self.target_reward_q, obs_act)
        with torch.no_grad():
            cost_q_target = self.policy.target_cost_q(obs_act).max(dim=0).values
        # V_r: upper expectile of min Q_r; Q_r: r + gamma V_r(s') (IQL's, shared with agents/baselines/iql.py)
        loss_rv = update_value(self.reward_v, self.reward_value_optim, b["obs"], reward_q_target, cfg.reward_expectile)
        loss_rq = update_q(self.reward_q, self.reward_q_optim, obs_act, b["rew"], b["obs_next"], b["mask"],
                           self.reward_v, cfg.discount)
        # V_h: lower ("reversed") expectile of max Q_h
        loss_cv = expectile_loss(cost_q_target - self.cost_v(b["obs"])[0], 1 - cfg.cost_expectile)
        self.cost_value_optim.step(loss_cv)
        # Q_h: reachability backup
        with torch.no_grad():
            target = reachability_target(b["h"], self.cost_v(b["obs_next"])[0], b["mask"], cfg.discount)
        loss_cq = ((self.cost_q(obs_act) - target) ** 2).mean()
        self.cost_q_optim.step(loss_cq)
        polyak(self.target_reward_q, self.reward_q, cfg.critic_tau)
        polyak(self.policy.target_cost_q, self.cost_q, cfg.critic_tau)
        return {"loss_reward_value": loss_rv, "loss_reward_q": loss_rq,
                "loss_cost_value": loss_cv.item(), "loss_cost_q": loss_cq.item()}


def reachability_target(h: torch.Tensor, next_value: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """The discounted HJ reachability backup ``(1 - gamma) h + gamma max(h, V_h(s'))``, ``h`` at episode ends."""
    backup = (1 - gamma) * h + gamma * torch.maximum(h, next_value)
    return mask * backup + (1 - mask) * h


def feasibility_weights(reward_adv: torch.Tensor, cost_q: torch.Tensor, cost_v: torch.Tensor,
                        config: Config) -> torch.Tensor:
    """FISOR's per-sample weights: infeasible states (``V_h > 0``) ``clip(exp(alpha_c (V_h - Q_h)), 0, 150)``
    (bounds ``cost_weight_min``/``max``);
    feasible states with a feasible action (``Q_h <= 0``) ``clip(exp(alpha_r A_r), 0, 100)``; else 0."""
    unsafe = (cost_v > 0).float()
    safe = ((cost_v <= 0) & (cost_q <= 0)).float()
    w_unsafe = torch.exp((cost_v - cost_q) * config.cost_temperature).clamp(config.cost_weight_min,
                                                                              config.cost_weight_max)
    w_safe = advantage_weights(reward_adv, config.reward_temperature, config.reward_weight_max)
    return unsafe * w_unsafe + safe * w_safe


# ---------------------------------------------------------------------- runner hooks
def reward_scale(config: Config, env: gym.Env) -> float:
    """Checks that the task suits FISOR (actions in [-1, 1], which its sampler clips to) and returns
    the reward scale ``T / (R_max - R_min)`` (1 with ``scale_rewards: false``)."""
    bound = action_bound(config, env)
    if bound != 1.0:
        raise ConfigError(f"fisor samples actions in [-1, 1]; {config.task} has bounds [-{bound:g}, {bound:g}] "
                          f"(wrap the env in gymnasium's RescaleAction and register that)")
    if not config.scale_rewards:
        return 1.0
    task = getattr(env.unwrapped, "task", None)
    if task is None:
        raise ConfigError(f"{config.task} has no normalisation constants to scale rewards by; set scale_rewards: false")
    return task.max_episode_steps / (task.reward_max - task.reward_min)


def build(config: Config, env: gym.Env, dataset: OfflineDataset | None, device: torch.device) -> FISOR:
    return FISOR(config, observation_dim(env), env.action_space, reward_scale(config, env), device)


def train(config: Config, run: Any, state: dict[str, Any] | None) -> None:
    offline_train(sys.modules[__name__], config, run, state)


def evaluate(config: Config, state: dict[str, Any], episodes: int, selection: str | None = None) -> dict[str, Any]:
    """``selection`` (``aligngym eval --selection``) scores the run with another acting rule."""
    if selection is not None:
        config = validate({**config.model_dump(), "selection": selection}, "--selection")
    return offline_evaluate(sys.modules[__name__], config, state, episodes)
