"""A2PR: adaptive advantage-guided policy regularisation for offline RL.

Liu, Li, Lan, Gao, Pan and Xu, "Adaptive Advantage-guided Policy Regularization for Offline
Reinforcement Learning", ICML 2024 (arXiv 2405.19909); official code ``ltlhuuu/A2PR`` (``A2PR.py``,
defaults from ``utils/config.py``, per-dataset settings from its README). TD3+BC with three additions,
all in one gradient step on ``batch_size`` (256) transitions ``(s, a, r, s', not_done)``:

1. **Critics** (TD3): twin ``Q1, Q2`` regress on ``y = r + gamma nd min(Q1', Q2')(s', a~')`` with the
   target actor's smoothed action ``a~' = clip(pi'(s') + clip(N(0, 0.2 a_max), +-0.5 a_max), +-a_max)``.
2. **State value** ``V(s)``: plain MSE to ``min(r + gamma nd min(Q1, Q2)(s', a~'), y)``, the first term
   read from the critics just updated (the same ``a~'``).
3. **Advantage-filtered VAE** (the augmented behaviour policy): reconstruction weighted by
   ``w = vae_weight 1[Q1(s, a) > V(s)]`` (dataset actions with positive advantage only) plus
   ``0.5 KL``; encoder and decoder 2 x 750, latent ``2 |A|``, ``log sigma`` clamped to [-4, 15].
4. **Actor**, every ``policy_freq`` (2) steps: ``-lambda mean Q1(s, pi(s))`` with
   ``lambda = alpha / mean|Q1(s, pi(s))|`` plus ``mean(m (pi(s) - a^)^2)``. The target ``a^`` is chosen
   per sample: ``a^_pi = VAE(s, pi(s))`` (the policy's action encoded and decoded, a sample of the
   posterior) if ``A(a^_pi) >= A(a)`` else the dataset action ``a`` (``A(x) = Q1(s, x) - V(s)``); the
   weight ``m = mask 1[A(a^_pi) >= 0 or A(a) > 0]`` drops the constraint where neither candidate
   has a positive advantage. Then Polyak averaging (tau 0.005) of the target actor and critics.

``V(s)`` in steps 3 and 4 is the value *before* its update in step 2, ``Q1(s, a)`` the critic's after
step 1 (as in the official code). Networks (ReLU, PyTorch's default initialisation, as the official
code): actor 3 x 256 with ``a_max tanh``, each critic and ``V`` 4 x 256. Adam: actor, critics and value
3e-4, VAE 1e-3 (Adam's default: the official code passes no rate). States are normalised with the
dataset's mean and standard deviation (+1e-3, :mod:`aligngym.agents.normalization`); the constants are
part of the checkpoint and the policy normalises what it observes when it acts.

**The behaviour-cloning weight, as the code computes it.** The code writes
``mask * (adv_pi + adv_action)`` with two boolean tensors; PyTorch adds booleans as a logical *or*, so
the weight is ``mask`` or 0, never ``2 mask``: equivalently one indicator on the advantage of the
chosen target (``max(A(a^_pi), A(a)) >= 0``, up to the tie ``A(a) = 0``). That is the default,
``bc_indicators: either``. ``bc_indicators: sum`` counts the two indicators as numbers (0, ``mask`` or
``2 mask``), the reading of the code as arithmetic (not checked against the paper's text, which may
write a single indicator: that is the default's form).

Deviations from the official code, and options beside it:

- **The behaviour-cloning target's gradient.** As in the official code (the default) the target is
  not detached: where ``a^_pi`` is chosen, the term's gradient also flows through the VAE (encoder and
  decoder) back into ``pi(s)``, weakening the direct pull where the VAE's output follows ``pi(s)``
  (only the actor is stepped).
  ``detach_bc_target: true`` treats the target as a constant (and skips that backward pass).
- **Work the official code does and discards is skipped** (same values up to floating-point
  summation order): ``V(s')`` (computed, never used); the second ``Q1(s, a)`` of the actor step (the
  critic has not changed since the first); the gradient graph of ``Q1(s, a^_pi)`` (only compared);
  the critic's and the VAE's weight gradients in the actor's backward pass (only the actor is
  stepped: ``backward(inputs=actor parameters)``); in the VAE step the decoder runs only on the
  positive-advantage rows (every other row has reconstruction weight 0; its KL term counts as before).
- **Data.** D4RL's ``qlearning_dataset`` (which the official code reads) drops each episode's last,
  timed-out transition; here every transition of the dataset trains and a timeout bootstraps (like
  every non-terminal step: ``not_done = 1 - terminal``, as the official code). The state statistics are
  those of all transitions. Batches come from tianshou's replay buffer (uniform with replacement,
  seeded by the run's seed) instead of ``np.random.randint``; the data move to the device once,
  normalised once (the official code also normalises its buffer once).
- The update counter, the normalisation constants and the optimiser states are part of the
  checkpoint, so a resumed run continues exactly (the official code saves weights and optimisers).
- Evaluation plays ``eval_episodes`` (10) episodes every ``eval_every`` (5000) steps through the
  runner (fixed seeds per evaluation; the official code reseeds one env with ``seed + 100``); the
  official reward ``scale``/``shift`` options (identity by default) are not offered; the seed is the
  config's (official default 1024).
- Adam runs as PyTorch's fused kernel (the same update rule, rounding aside; several times faster on
  a CPU than the per-tensor loop the official code gets by default).
- Built from tianshou's pieces: :class:`~tianshou.utils.net.common.Net` / ``MLP`` (the same
  Linear/ReLU stacks), its :class:`~tianshou.utils.net.continuous.VAE` (the official VAE, BCQ's),
  its lagged networks with Polyak updates and :class:`ContinuousDeterministicPolicy` for acting.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from tianshou.algorithm.algorithm_base import LaggedNetworkPolyakUpdateAlgorithmMixin, OfflineAlgorithm, TrainingStats
from tianshou.algorithm.modelfree.ddpg import ContinuousDeterministicPolicy
from tianshou.algorithm.optim import TorchOptimizerFactory
from tianshou.data import ReplayBuffer
from tianshou.utils.net.common import MLP, Net
from tianshou.utils.net.continuous import VAE, ContinuousActorDeterministic, ContinuousCritic

from aligngym.agents.normalization import Normalized, ObservationNormalizer
from aligngym.agents.offline import OfflineConfig, action_bound, observation_dim, offline_evaluate, offline_train
from aligngym.envs.data.dataset import OfflineDataset


class Config(OfflineConfig):
    steps: int = Field(1_000_000, ge=1)  # gradient steps (official max_timesteps)
    batch_size: int = Field(256, ge=1)  # transitions per step
    eval_every: int = Field(5_000, ge=1)  # the official code evaluates every 5000 steps ...
    eval_episodes: int = Field(10, ge=1)  # ... on 10 episodes
    discount: float = Field(0.99, gt=0, lt=1)  # gamma (0.995 on some datasets)
    tau: float = Field(0.005, gt=0, le=1)  # Polyak rate of the target actor and critics
    policy_noise: float = Field(0.2, ge=0)  # std of the target actions' smoothing noise, times the action bound
    noise_clip: float = Field(0.5, ge=0)  # that noise is clipped to +- this times the action bound
    policy_freq: PositiveInt = 2  # the actor and the targets update every this many steps
    alpha: float = Field(2.5, gt=0)  # lambda = alpha / mean |Q1(s, pi(s))| scales the actor's Q term
    mask: float = Field(0.5, ge=0)  # weight of the behaviour-cloning term where an advantage is positive
    vae_weight: float = Field(1.0, ge=0)  # weight of the VAE's reconstruction of positive-advantage actions
    bc_indicators: Literal["either", "sum"] = "either"  # BC weight: mask if either advantage is positive, or x count
    detach_bc_target: bool = False  # true: no gradient through the VAE-augmented target (official: false)
    actor_lr: float = Field(3e-4, gt=0)  # Adam, actor
    critic_lr: float = Field(3e-4, gt=0)  # Adam, twin critics
    value_lr: float = Field(3e-4, gt=0)  # Adam, state value
    vae_lr: float = Field(1e-3, gt=0)  # Adam, VAE (Adam's default rate, as in the official code)
    actor_hidden: tuple[PositiveInt, ...] = Field((256, 256, 256), min_length=1)  # actor MLP (ReLU, tanh output)
    critic_hidden: tuple[PositiveInt, ...] = Field((256, 256, 256, 256), min_length=1)  # each critic's MLP
    value_hidden: tuple[PositiveInt, ...] = Field((256, 256, 256, 256), min_length=1)  # V's MLP
    vae_hidden: PositiveInt = 750  # width of the VAE's two encoder and two decoder layers
    normalize_states: bool = True  # states -> (s - mean) / (std + eps) with the dataset's statistics
    normalize_eps: float = Field(1e-3, gt=0)  # eps added to the standard deviation

    def smoke(self) -> Config:
        small = super().smoke()
        return small.model_copy(update={"actor_hidden": (32, 32, 32), "critic_hidden": (32,) * 4,
                                        "value_hidden": (32,) * 4, "vae_hidden": 32})


# ---------------------------------------------------------------------- the two A2PR-specific rules
def vae_loss(recon_positive: torch.Tensor, act: torch.Tensor, positive: torch.Tensor, mean: torch.Tensor,
             std: torch.Tensor, vae_weight: float) -> torch.Tensor:
    """``mean(vae_weight 1[A(s, a) > 0] (a_rec - a)^2) + 0.5 KL`` over the whole batch (the mean counts
    every element), with the reconstructions ``recon_positive`` given for the ``positive`` rows only:
    the other rows' terms are zero. The KL term is the official one, averaged over rows and latent
    dimensions."""
    squared = (recon_positive - act[positive]) ** 2
    recon = vae_weight * squared.sum() / act.numel()
    kl = -0.5 * (1 + torch.log(std.pow(2)) - mean.pow(2) - std.pow(2)).mean()
    return recon + 0.5 * kl


def bc_target_and_weight(recon_pi: torch.Tensor, act: torch.Tensor, q_recon_pi: torch.Tensor,
                         q_data: torch.Tensor, value: torch.Tensor, mask: float,
                         indicators: str = "either") -> tuple[torch.Tensor, torch.Tensor]:
    """The behaviour-cloning target and weight of each sample (all values ``(B, 1)`` but the actions).

    Target: the VAE-augmented policy action ``recon_pi`` where its advantage ``Q1(s, a^_pi) - V(s)`` is at
    least the dataset action's ``Q1(s, a) - V(s)``, else the dataset action ``act`` (gradients pass to
    ``recon_pi`` where it is chosen). Weight: ``mask`` where ``Q1(s, a^_pi) >= V(s)`` or ``Q1(s, a) > V(s)``,
    else 0 (``indicators="either"``, the official code's boolean sum); ``"sum"`` adds the two
    indicators as numbers (0, ``mask`` or ``2 mask``)."""
    choose_pi = (q_recon_pi - value) >= (q_data - value)
    target = torch.where(choose_pi, recon_pi, act)
    pi_ahead, data_ahead = q_recon_pi >= value, q_data > value
    if indicators == "either":
        weight = mask * (pi_ahead | data_ahead).float()
    elif indicators == "sum":
        weight = mask * (pi_ahead.float() + data_ahead.float())
    else:
        raise ValueError(f"indicators must be 'either' or 'sum', got {indicators!r}")
    return target, weight


# ---------------------------------------------------------------------- algorithm
@dataclass(kw_only=True)
class A2PRTrainingStats(TrainingStats):
    """Losses (``loss/*``; the actor's NaN on steps without an actor update, which the runner leaves
    out) and diagnostics (``train/*``)."""

    loss_critic: float  # MSE of Q1 plus MSE of Q2
    loss_value: float
    loss_vae: float
    loss_actor: float  # -lambda mean Q1(s, pi) + the behaviour-cloning term
    loss_bc: float  # the behaviour-cloning term alone
    positive_share: float  # share of the batch's dataset actions with Q1(s, a) > V(s): the VAE's targets
    policy_target_share: float  # share of BC targets that are the VAE-augmented policy action
    bc_weight: float  # mean behaviour-cloning weight m


class A2PR(OfflineAlgorithm[ContinuousDeterministicPolicy], LaggedNetworkPolyakUpdateAlgorithmMixin):
    def __init__(self, config: Config, obs_dim: int, action_space: gym.spaces.Box, bound: float,
                 normalizer: ObservationNormalizer, device: torch.device) -> None:
        act_dim = int(np.prod(action_space.shape))
        actor = ContinuousActorDeterministic(preprocess_net=Net(state_shape=obs_dim, hidden_sizes=config.actor_hidden),
                                             action_shape=act_dim, max_action=bound)
        # acting: the policy normalises what it observes; training feeds normalised states to `actor`
        policy = ContinuousDeterministicPolicy(actor=Normalized(actor, normalizer), action_space=action_space,
                                               action_scaling=False, action_bound_method=None)
        super().__init__(policy=policy)
        LaggedNetworkPolyakUpdateAlgorithmMixin.__init__(self, tau=config.tau)
        self.config = config
        self.bound = bound
        critic = lambda: ContinuousCritic(preprocess_net=Net(  # noqa: E731
            state_shape=obs_dim, action_shape=act_dim, hidden_sizes=config.critic_hidden, concat=True))
        self.critic1, self.critic2 = critic(), critic()
        self.value = MLP(input_dim=obs_dim, output_dim=1, hidden_sizes=config.value_hidden)
        width, latent = config.vae_hidden, 2 * act_dim
        self.vae = VAE(encoder=MLP(input_dim=obs_dim + act_dim, hidden_sizes=(width, width)),
                       decoder=MLP(input_dim=obs_dim + latent, hidden_sizes=(width, width), output_dim=act_dim),
                       hidden_dim=width, latent_dim=latent, max_action=bound)
        self.actor_target = self._add_lagged_network(actor)
        self.critic1_target = self._add_lagged_network(self.critic1)
        self.critic2_target = self._add_lagged_network(self.critic2)
        # Adam's fused kernel: the same update, one pass over each parameter (several times faster on a CPU)
        adam = lambda lr: TorchOptimizerFactory(torch.optim.Adam, lr=lr, fused=True)  # noqa: E731
        self.actor_optim = self._create_optimizer(actor, adam(config.actor_lr))
        self.critic_optim = self._create_optimizer(torch.nn.ModuleList([self.critic1, self.critic2]),
                                                   adam(config.critic_lr))
        self.value_optim = self._create_optimizer(self.value, adam(config.value_lr))
        self.vae_optim = self._create_optimizer(self.vae, adam(config.vae_lr))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # the official total_it
        self.data: dict[str, torch.Tensor] = {}
        self.to(device)

    @property
    def actor(self) -> ContinuousActorDeterministic:
        """The actor network (reading normalised states)."""
        return self.policy.actor.module

    @property
    def normalizer(self) -> ObservationNormalizer:
        return self.policy.actor.normalizer

    def act(self, obs: torch.Tensor) -> torch.Tensor:
        """``pi(s)`` for normalised states."""
        return self.actor(obs)[0]

    # -- data: the whole buffer on the device once, states normalised; batches gathered by index
    def process_buffer(self, buffer: ReplayBuffer) -> ReplayBuffer:
        data = buffer[np.arange(len(buffer))]
        device = self.normalizer.mean.device
        tensor = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)  # noqa: E731
        with torch.no_grad():
            self.data = {"obs": self.normalizer(data.obs), "act": tensor(data.act).flatten(1),
                         "rew": tensor(data.rew).view(-1, 1), "obs_next": self.normalizer(data.obs_next),
                         "not_done": 1.0 - tensor(data.terminated).view(-1, 1)}  # timeouts bootstrap
        return buffer

    def _preprocess_batch(self, batch: Any, buffer: ReplayBuffer, indices: np.ndarray) -> Any:
        batch.indices = indices
        return batch

    def _update_with_batch(self, batch: Any) -> A2PRTrainingStats:
        idx = torch.as_tensor(batch.indices, device=self.normalizer.mean.device)
        b = {key: value[idx] for key, value in self.data.items()}
        return self.learn(b["obs"], b["act"], b["rew"], b["obs_next"], b["not_done"])

    # -- one gradient step on a batch of normalised states
    def learn(self, obs: torch.Tensor, act: torch.Tensor, rew: torch.Tensor, obs_next: torch.Tensor,
              not_done: torch.Tensor) -> A2PRTrainingStats:
        cfg = self.config
        self.updates += 1
        # 1. critics
        with torch.no_grad():
            noise = (torch.randn_like(act) * cfg.policy_noise * self.bound).clamp(
                -cfg.noise_clip * self.bound, cfg.noise_clip * self.bound)
            act_next = (self.actor_target(obs_next)[0] + noise).clamp(-self.bound, self.bound)
            target_q = rew + not_done * cfg.discount * torch.min(self.critic1_target(obs_next, act_next),
                                                                 self.critic2_target(obs_next, act_next))
        loss_critic = (F.mse_loss(self.critic1(obs, act), target_q)
                       + F.mse_loss(self.critic2(obs, act), target_q))
        self.critic_optim.step(loss_critic)
        # 2. state value: min of the updated critics' backup and the target backup
        with torch.no_grad():
            online_q = rew + not_done * cfg.discount * torch.min(self.critic1(obs_next, act_next),
                                                                 self.critic2(obs_next, act_next))
            value_target = torch.min(online_q, target_q)
        value = self.value(obs)
        loss_value = F.mse_loss(value, value_target)
        self.value_optim.step(loss_value)
        value = value.detach()  # V(s) before its update, as the official code reads it below
        # 3. the VAE on the dataset actions with positive advantage
        with torch.no_grad():
            q_data = self.critic1(obs, act)
        positive = (q_data > value).squeeze(-1)
        loss_vae = self.vae_step(obs, act, positive)
        stats = {"loss_actor": float("nan"), "loss_bc": float("nan"), "policy_target_share": float("nan"),
                 "bc_weight": float("nan")}
        # 4. the actor and the targets, every policy_freq steps
        if int(self.updates) % cfg.policy_freq == 0:
            stats = self.actor_step(obs, act, q_data, value)
            self._update_lagged_network_weights()
        return A2PRTrainingStats(loss_critic=loss_critic.item(), loss_value=loss_value.item(), loss_vae=loss_vae,
                                 positive_share=positive.float().mean().item(), **stats)

    def vae_step(self, obs: torch.Tensor, act: torch.Tensor, positive: torch.Tensor) -> float:
        """One VAE update (:func:`vae_loss`); the decoder only reconstructs the ``positive`` rows (the
        reparameterisation noise is still drawn for every row, as the official forward pass does)."""
        vae = self.vae
        hidden = vae.encoder(torch.cat([obs, act], -1))
        mean, std = vae.mean(hidden), vae.log_std(hidden).clamp(-4, 15).exp()
        z = mean + std * torch.randn_like(std)
        recon_positive = vae.decode(obs[positive], z[positive])
        loss = vae_loss(recon_positive, act, positive, mean, std, self.config.vae_weight)
        self.vae_optim.step(loss)
        return loss.item()

    def actor_step(self, obs: torch.Tensor, act: torch.Tensor, q_data: torch.Tensor,
                   value: torch.Tensor) -> dict[str, float]:
        """The actor's update: ``-lambda Q1(s, pi)`` plus the advantage-guided behaviour cloning."""
        cfg = self.config
        pi = self.act(obs)
        q_pi = self.critic1(obs, pi)
        lmbda = cfg.alpha / q_pi.abs().mean().detach()
        with torch.set_grad_enabled(not cfg.detach_bc_target):
            recon_pi = self.vae(obs, pi)[0]  # the policy's action through the advantage-filtered VAE
        with torch.no_grad():
            q_recon_pi = self.critic1(obs, recon_pi)
        target, weight = bc_target_and_weight(recon_pi, act, q_recon_pi, q_data, value, cfg.mask,
                                              cfg.bc_indicators)
        loss_bc = ((pi - target) ** 2 * weight).mean()
        loss = -lmbda * q_pi.mean() + loss_bc
        # only the actor is stepped: no weight gradients for the critic and the VAE the loss reads
        optim = self.actor_optim
        optim._optim.zero_grad()
        loss.backward(inputs=list(self.actor.parameters()))
        optim._optim.step()
        chose_pi = ((q_recon_pi - value) >= (q_data - value)).float().mean()
        return {"loss_actor": loss.item(), "loss_bc": loss_bc.item(), "policy_target_share": chose_pi.item(),
                "bc_weight": weight.mean().item()}


# ---------------------------------------------------------------------- runner hooks
def build(config: Config, env: gym.Env, dataset: OfflineDataset | None, device: torch.device) -> A2PR:
    """A2PR for ``env``; the state statistics come from ``dataset`` (at evaluation, ``None``: from the
    checkpoint)."""
    bound = action_bound(config, env)
    obs_dim = observation_dim(env)
    normalizer = ObservationNormalizer.fitted(None if dataset is None else dataset.arrays["observations"], obs_dim,
                                              config.normalize_eps, config.normalize_states)
    return A2PR(config, obs_dim, env.action_space, bound, normalizer, device)


def train(config: Config, run: Any, state: dict[str, Any] | None) -> None:
    offline_train(sys.modules[__name__], config, run, state)


def evaluate(config: Config, state: dict[str, Any], episodes: int) -> dict[str, Any]:
    return offline_evaluate(sys.modules[__name__], config, state, episodes)
