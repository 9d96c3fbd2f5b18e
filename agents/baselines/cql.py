"""CQL: conservative Q-learning, on tianshou's CQL.

Kumar, Zhou, Tucker and Levine, "Conservative Q-Learning for Offline Reinforcement Learning",
NeurIPS 2020; official code ``aviralkumar2907/CQL`` (``d4rl/rlkit/torch/sac/cql.py``, launcher
``d4rl/examples/cql_mujoco_new.py``). Defaults are that code's D4RL MuJoCo (locomotion) settings, as
its README runs them (``--policy_lr=1e-4 --lagrange_thresh=-1.0 --min_q_weight=5.0
--min_q_version=3``) with the launcher's other values:

- **Networks.** A tanh-squashed Gaussian actor (state-dependent log-std clipped to [-20, 2]) and
  twin Q critics, each a 3 x 256 ReLU MLP (``layer_size=256``, ``hidden_sizes=[M, M, M]``);
  target critics by Polyak averaging (``soft_target_tau`` 0.005); discount 0.99.
- **Actor** (SAC). ``L = mean(alpha log pi(a~|s) - min(Q1, Q2)(s, a~))``, ``a~ ~ pi(s)``; the
  entropy weight ``alpha`` is tuned to the target entropy ``-|A|`` (Adam on ``log alpha`` at the
  actor's rate, updated first). For the first ``bc_steps`` (40,000: ``policy_eval_start``) updates
  the actor clones the data instead: ``L = mean(alpha log pi(a~|s) - log pi(a|s))``.
- **Critics.** Each ``Q_k`` regresses on ``r + gamma (1 - terminal) min(Q1', Q2')(s', a')``,
  ``a' ~ pi(s')``, without the entropy term (``deterministic_backup=True``), plus CQL(H) with
  importance sampling (``min_q_version=3``), weight ``cql_weight`` (5.0, ``min_q_weight``):
  ``cql_weight (T logsumexp_j(Q_k(s, a_j) / T) - Q_k(s, a))`` over ``3 cql_samples`` actions per
  state: 10 uniform in [-1, 1] (minus their log-density ``|A| log 0.5``), 10 from ``pi(.|s)`` and 10
  from ``pi(.|s')``, all valued at ``s`` (minus their log-probabilities); ``T = 1``. No Lagrange
  multiplier (``lagrange_thresh=-1``).
- **Order per step** (the official one): alpha; the actor's and critics' losses from the same
  policy; the actor's step, then each critic's; then the targets.
- Batch 256, Adam, actor 1e-4, critics 3e-4; 1M gradient steps (the paper's D4RL runs).

Built on tianshou's :class:`~tianshou.algorithm.imitation.cql.CQL`: its constructor (the
:class:`~tianshou.algorithm.modelfree.sac.SACPolicy` over a
:class:`~tianshou.utils.net.continuous.ContinuousActorProbabilistic`, the twin critics
(:class:`~tianshou.utils.net.continuous.ContinuousCritic`) with their optimisers and lagged target
copies, :class:`~tianshou.algorithm.modelfree.sac.AutoAlpha`, the CQL weight, temperature and sample
count), its action sampling (``_policy_pred``) and its Polyak update. Its ``_update_with_batch`` is
replaced because, in tianshou 2.0.1, it departs from CQL in ways no argument changes:

- its uniform actions are drawn from ``U(-min_action, max_action)``, which is ``U(1, 1)`` (every
  action 1) at the documented bounds ``min_action=-1``;
- its ``reshape`` calls discard their results, so the logsumexp runs over the 3 kinds of action of
  one sample instead of over all ``3 x cql_samples`` actions of a state;
- its critics always back up the entropy term, and it has no behaviour-cloning warm-up;
- it updates the actor before computing the critics' targets, and its stats are not named as the
  runner logs them.

Optimisers and losses are named after what they train (``loss/actor``, ``loss/critic``,
``loss/critic2``, ``loss/alpha``; ``train/lr_actor``, ... ): the alpha optimiser, which tianshou keeps
inside ``AutoAlpha``, is registered with the algorithm so that checkpoints hold its state.

Deviations from the official code:

- Networks keep PyTorch's default initialisation (tianshou's layers); rlkit draws hidden kernels
  with its ``fanin_init``, biases 0.1 and the last layers from ``U(-3e-3, 3e-3)`` (critics) and
  ``U(-1e-3, 1e-3)`` (actor).
- The warm-up clones for exactly ``bc_steps`` updates (the official ``_current_epoch <
  policy_eval_start`` test, counted from 1, gives 39,999); dataset actions are clipped to
  ``+-(1 - 1e-6)`` there so that their log-probability under the tanh Gaussian is finite, and the
  tanh correction ``log(1 - a^2 + eps)`` takes tianshou's ``eps`` (float32's, 1.2e-7; rlkit 1e-6).
- Actions are divided by the task's action bound before the networks see them and the policy's
  actions scaled back by tianshou (the official code assumes actions in [-1, 1]; identical there).
- tianshou's critic gradient-norm clipping (its default 1.0) is off: the official code does not clip.
- 1M steps (the official launcher runs 3,000 epochs of 1,000 steps; its README reports 500k);
  evaluation every ``eval_every`` (5,000) steps on ``eval_episodes`` (10) episodes, CORL's protocol
  (``tinkoff-ai/CORL``, ``eval_freq``, ``n_episodes``), instead of one rollout per 1,000-step epoch.
- CQL(rho), the max-Q backup and the Lagrangian variant (the official AntMaze setting) are not offered.
- Batches come from tianshou's replay buffer (uniform with replacement, the buffer's generator seeded
  with the run's seed); only the last checkpoint is kept; the seed is the config's (the official
  launcher's default is 10).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from tianshou.algorithm.algorithm_base import TrainingStats
from tianshou.algorithm.imitation.cql import CQL
from tianshou.algorithm.modelfree.sac import AutoAlpha, SACPolicy, correct_log_prob_gaussian_tanh
from tianshou.algorithm.optim import AdamOptimizerFactory
from tianshou.utils.net.common import Net
from tianshou.utils.net.continuous import ContinuousActorProbabilistic, ContinuousCritic
from torch.distributions import Independent, Normal

from aligngym.agents.offline import OfflineConfig, action_bound, observation_dim, offline_evaluate, offline_train
from aligngym.envs.data.dataset import OfflineDataset

BC_ACTION_CLIP = 1 - 1e-6  # dataset actions in the warm-up's log-probability (atanh of +-1 is infinite)


class Config(OfflineConfig):
    steps: int = Field(1_000_000, ge=1)  # gradient steps (the paper's D4RL runs)
    batch_size: int = Field(256, ge=1)  # transitions per step
    eval_every: int = Field(5_000, ge=1)  # CORL evaluates every 5000 steps ...
    eval_episodes: int = Field(10, ge=1)  # ... on 10 episodes
    hidden: tuple[PositiveInt, ...] = Field((256, 256, 256), min_length=1)  # actor and each critic (ReLU)
    actor_lr: float = Field(1e-4, gt=0)  # Adam (the official policy_lr for MuJoCo)
    critic_lr: float = Field(3e-4, gt=0)  # Adam, each critic (qf_lr)
    alpha_lr: float = Field(1e-4, gt=0)  # Adam on log alpha (the official code uses policy_lr)
    discount: float = Field(0.99, gt=0, lt=1)  # gamma
    tau: float = Field(0.005, gt=0, le=1)  # Polyak rate of the target critics
    target_entropy: float | None = None  # alpha's entropy target (None: -|A|)
    cql_weight: float = Field(5.0, ge=0)  # min_q_weight: scale of the conservative term (README: 5 or 10)
    cql_samples: PositiveInt = 10  # num_random: actions per state of each kind (uniform, pi(s), pi(s'))
    cql_temperature: float = Field(1.0, gt=0)  # T of the logsumexp
    backup_entropy: bool = False  # subtract alpha log pi(a'|s') in the target (official: no, deterministic_backup)
    bc_steps: int = Field(40_000, ge=0)  # the actor clones the data for this many first updates (policy_eval_start)

    def smoke(self) -> Config:
        small = super().smoke()
        # the warm-up's and the conservative actor's updates both run in a smoke's 4 steps
        return small.model_copy(update={"hidden": (32, 32), "cql_samples": 3,
                                        "bc_steps": min(self.bc_steps, small.steps // 2)})


@dataclass(kw_only=True)
class CQLStats(TrainingStats):
    loss_actor: float
    loss_critic: float  # Q1's TD error plus its conservative term
    loss_critic2: float
    loss_alpha: float
    alpha: float  # the entropy weight
    conservative_gap: float  # T logsumexp Q - Q(s, a), mean over both critics (before cql_weight)
    q_data: float  # mean min(Q1, Q2) on the dataset's actions


class ConservativeQLearning(CQL):
    """tianshou's CQL with the official update (see the module docstring)."""

    def __init__(self, config: Config, obs_dim: int, action_space: gym.spaces.Box, bound: float,
                 device: torch.device) -> None:
        act_dim = int(np.prod(action_space.shape))
        hidden = tuple(config.hidden)
        actor = ContinuousActorProbabilistic(preprocess_net=Net(state_shape=obs_dim, hidden_sizes=hidden),
                                             action_shape=act_dim, unbounded=True, conditioned_sigma=True)
        critic = lambda: ContinuousCritic(  # noqa: E731
            preprocess_net=Net(state_shape=obs_dim, action_shape=act_dim, hidden_sizes=hidden, concat=True))
        target_entropy = -float(act_dim) if config.target_entropy is None else config.target_entropy
        alpha = AutoAlpha(target_entropy=target_entropy, log_alpha=0.0, optim=AdamOptimizerFactory(lr=config.alpha_lr))
        # the tanh-squashed actions lie in [-1, 1]; tianshou scales them to the task's bounds
        policy = SACPolicy(actor=actor, action_space=action_space, action_scaling=True, deterministic_eval=True)
        critic_optim = AdamOptimizerFactory(lr=config.critic_lr)
        super().__init__(policy=policy, policy_optim=AdamOptimizerFactory(lr=config.actor_lr), critic=critic(),
                         critic_optim=critic_optim, critic2=critic(), critic2_optim=critic_optim,
                         cql_weight=config.cql_weight, tau=config.tau, gamma=config.discount, alpha=alpha,
                         temperature=config.cql_temperature, with_lagrange=False,
                         num_repeat_actions=config.cql_samples, max_grad_norm=None,  # type: ignore[arg-type]
                         calibrated=False)
        self.config = config
        self.bound = bound
        self.actor_optim = self.policy_optim  # the runner names each optimiser after what it trains
        self.alpha_optim = self.Optimizer(alpha._optim, alpha)  # saved with the others (tianshou does not)
        self._optimizers.append(self.alpha_optim)
        self.register_buffer("update_step", torch.zeros((), dtype=torch.long))  # for the warm-up
        self.to(device)

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """``log pi(a|s)`` of actions in [-1, 1] under the tanh-squashed Gaussian, ``(B, 1)``."""
        (loc, scale), _ = self.policy.actor(obs)
        act = act.clamp(-BC_ACTION_CLIP, BC_ACTION_CLIP)
        log_prob = Independent(Normal(loc, scale), 1).log_prob(torch.atanh(act)).unsqueeze(-1)
        return correct_log_prob_gaussian_tanh(log_prob, act)

    def conservative_term(self, critic: torch.nn.Module, obs: torch.Tensor, samples: dict[str, torch.Tensor],
                          q_data: torch.Tensor) -> torch.Tensor:
        """CQL(H) with importance sampling: ``T logsumexp_j(Q(s, a_j) / T) - Q(s, a)`` per state, mean
        over the batch (before ``cql_weight``). ``samples`` holds ``cql_samples`` actions per state of
        each kind (``uniform``, ``current``, ``next``), rows grouped by state, and the log-densities
        they are importance-weighted by (``*_log_prob``)."""
        n, batch_size = self.num_repeat_actions, len(obs)
        tiled = obs.repeat_interleave(n, dim=0)
        values = [critic(tiled, samples[kind]).view(batch_size, n) - samples[f"{kind}_log_prob"].view(batch_size, n)
                  for kind in ("uniform", "next", "current")]
        stacked = torch.cat(values, dim=1)  # (batch, 3 n): every sampled action of a state
        return (torch.logsumexp(stacked / self.temperature, dim=1) * self.temperature - q_data).mean()

    def _update_with_batch(self, batch: Any) -> CQLStats:
        cfg = self.config
        device = self.update_step.device
        tensor = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)  # noqa: E731
        obs, obs_next, reward = tensor(batch.obs), tensor(batch.obs_next), tensor(batch.rew)
        act = tensor(batch.act) / self.bound
        mask = 1.0 - tensor(batch.terminated)  # timeouts bootstrap (D4RL's terminals)

        # entropy weight first, then the actor's loss with the new weight
        new_act, log_pi = self._policy_pred(obs)
        loss_alpha = self.alpha.update(-log_pi.detach())
        alpha = self.alpha.value
        if int(self.update_step) < cfg.bc_steps:
            loss_actor = (alpha * log_pi - self.log_prob(obs, act)).mean()
        else:
            loss_actor = (alpha * log_pi - torch.min(self.critic(obs, new_act), self.critic2(obs, new_act))).mean()

        # the critics' targets and the conservative term's actions, from the same (not yet updated) policy
        n, act_dim = self.num_repeat_actions, act.shape[-1]
        with torch.no_grad():
            next_act, next_log_pi = self._policy_pred(obs_next)
            next_value = torch.min(self.critic_old(obs_next, next_act), self.critic2_old(obs_next, next_act))
            if cfg.backup_entropy:
                next_value = next_value - alpha * next_log_pi
            target = reward + self.gamma * mask * next_value.flatten()
            uniform = torch.empty(len(obs) * n, act_dim, device=device).uniform_(-1.0, 1.0)
            current, current_log_prob = self._policy_pred(obs.repeat_interleave(n, dim=0))
            following, following_log_prob = self._policy_pred(obs_next.repeat_interleave(n, dim=0))
            uniform_log_prob = torch.full((len(uniform), 1), act_dim * math.log(0.5), device=device)
            samples = {"uniform": uniform, "uniform_log_prob": uniform_log_prob,
                       "current": current, "current_log_prob": current_log_prob,
                       "next": following, "next_log_prob": following_log_prob}
        losses, gaps, q_values = [], [], []
        for critic in (self.critic, self.critic2):
            q_data = critic(obs, act).flatten()
            gap = self.conservative_term(critic, obs, samples, q_data)
            losses.append(F.mse_loss(q_data, target) + self.cql_weight * gap)
            gaps.append(gap.item())
            q_values.append(q_data.detach())

        self.actor_optim.step(loss_actor)
        self.critic_optim.step(losses[0])
        self.critic2_optim.step(losses[1])
        self._update_lagged_network_weights()
        self.update_step += 1
        return CQLStats(loss_actor=loss_actor.item(), loss_critic=losses[0].item(), loss_critic2=losses[1].item(),
                        loss_alpha=float(loss_alpha), alpha=alpha, conservative_gap=float(np.mean(gaps)),
                        q_data=float(torch.min(*q_values).mean()))


# ---------------------------------------------------------------------- runner hooks
def build(config: Config, env: gym.Env, dataset: OfflineDataset | None, device: torch.device) -> ConservativeQLearning:
    return ConservativeQLearning(config, observation_dim(env), env.action_space, action_bound(config, env), device)


def train(config: Config, run: Any, state: dict[str, Any] | None) -> None:
    offline_train(sys.modules[__name__], config, run, state)


def evaluate(config: Config, state: dict[str, Any], episodes: int) -> dict[str, Any]:
    return offline_evaluate(sys.modules[__name__], config, state, episodes)
