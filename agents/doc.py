"""DoC: Dichotomy of Control, a future-conditioned policy whose latent holds what the agent controls
and not what luck decided.

Yang, Schuurmans, Abbeel and Nachum, "Dichotomy of Control: Separating What You Can Control from
What You Cannot", ICLR 2023 (arXiv 2210.13435); official code google-research ``dichotomy_of_control``
(TensorFlow: ``models/tabular_sdt.py`` run by ``scripts/run_tabular.py --algo_name=doc`` for the
Bernoulli bandit; ``models/stochastic_decision_transformer.py`` for FrozenLake).

Return-conditioned policies (the Decision Transformer, :mod:`aligngym.agents.baselines.dt`) condition
on returns that luck produced: on the bandit (``aligngym/BernoulliBandit-v0``, arms paying with
``[p, 1 - p]``, data drawn with ``[1 - p, p]``) the bad arm's lucky wins are as frequent as the good
arm's, and a policy asked for a return of 1 plays each arm half of the time (0.5 of the optimum 0.9
at p = 0.1). DoC conditions the policy on a latent ``z`` of the future instead, and constrains ``z``
to carry no information about the environment's randomness (here the reward, given the state and
the action): then ``z`` holds the choice, not the luck, and its value is one the policy can reach.

**The tabular form** (this module; the official ``tabular_sdt.py``), one gradient step on
``batch_size`` (64) transitions ``(s, a, r)`` (``r`` the return's class,
:mod:`aligngym.agents.tabular`), all tables ``truncated_normal(std 1)`` and trained by one Adam (lr
0.01) on the sum of the losses of 2, 3 and 4:

1. **Posterior** ``q(z | s, a, r)``: logits ``[S, A, R, Z]`` over a categorical ``z`` with
   ``Z = |A| num_rtg`` categories; ``z ~ q`` enters as a straight-through one-hot
   (``z = onehot + p - sg(p)``, ``p = softmax(logits)``).
2. **Policy** ``pi(a | s, z)``: logits ``[S, Z, A]``, cross-entropy on the dataset's action.
3. **Value** ``P(r | s, z)``: logits ``[S, Z, R]``, cross-entropy on the return's class, read from
   ``sg(z)``: a readout of what ``z`` predicts, which does not shape ``z``.
4. **Mutual information** ``I(r; z | s, a)``, estimated contrastively with an energy table ``f``
   ``[S, A, R, Z]`` and the dataset's marginal return histogram ``rho(r')`` as the negatives'
   distribution (:func:`contrastive_mi`):
   ``I^ = E[ f(s, a, r) . z - log sum_r' rho(r') exp(f(s, a, r') . z) ]`` (a lower bound on the
   MI, tight when ``rho(r) exp(f(s, a, r) . z)`` is proportional to ``P(r | s, a, z)``). A min-max
   with weight ``beta`` (``energy_weight``, 1): the energy table ascends ``I^`` (its loss
   ``-beta I^``) while the posterior descends it, through a gradient reversal on ``z``'s path into the
   energy term (:func:`reverse_gradient`).

**Inference**: ``z* = argmax_z P(r = num_rtg - 1 | s, z)`` (the latent whose value puts the most
mass on the best return), then ``a ~ softmax(pi(s, z*))``. There is no prior in the tabular form:
with one state every latent is a candidate. The runner logs ``loss/policy``, ``loss/value``,
``loss/energy`` (the energy table's ``-beta I^``) and ``train/mi_estimate`` (``I^``), and scores the
bandit exactly as ``eval/expected_return`` besides the sampled ``eval/return``.

Departures from the official code (a re-derivation of the tabular code in numpy, the project's
research notes on DoC: with the code's signs DoC is a coin flip between the arms, 0.50 at p = 0.1;
with both changes below 0.90 on 10 of 10 seeds, and 0.70 at p = 0.3; ``benchmarks/doc_bandit.py``
measures this module the same way):

- **The sign of the MI term for the posterior.** The official code minimises
  ``beta (-f . z + log sum rho exp(f . z))`` jointly over the energy table *and* the posterior, which
  makes ``z`` *more* predictive of the reward: it raises the MI the paper constrains to zero. Here the
  paper's constraint holds as a min-max: the energy table maximises the estimate (the same gradient as
  the official code's), the posterior minimises it (the opposite of the official code's gradient).
- **The value's gradient.** The official value loss back-propagates into ``z`` (into the posterior),
  so the value's cross-entropy on the reward pulls ``z`` towards encoding the reward as well. The
  paper's value is an estimate of the return of conditioning on ``z``; here it reads ``sg(z)``.
- **No prior.** The official tabular code has none either (its neural code has one, untrained when
  the energy weight is not zero); inference takes the argmax over every latent, as the official
  tabular code does.
- Batches come from tianshou's replay buffer (uniform with replacement, seeded by the run's seed);
  Adam runs as PyTorch's fused kernel (the same update rule, rounding aside); evaluation plays
  ``eval_episodes`` (1000) bandit pulls every ``eval_every`` (1000) steps through the runner's
  Collector, as the official 1000 episodes every 1000 steps.

What each change does, measured here (exact expected return at p = 0.1, seeds 0-2, 3000 steps; the
optimum 0.9): as built, 0.89-0.90; the official MI sign for the posterior, 0.29 (0.60, 0.13, 0.13:
a coin flip per seed); the MI term's sign flipped for both tables, 0.39; the value's gradient into
``z``, 0.87. On the one-state bandit the readout value alone already leaves ``z`` free of the reward
(only the policy shapes it, and the policy needs the arm, not the luck): with ``energy_weight: 0``
DoC also reaches 0.90 (10 of 10 seeds at p = 0.1; at p = 0.3 8 of 10 seeds reach 0.70). The MI term
does its work when something else pushes ``z`` towards the reward: with the official value gradient
into ``z``, ``energy_weight: 0`` falls to 0.63 (0.89, 0.10, 0.89) where the min-max keeps 0.87.

**The sequence form** (``form: sequence``; ``auto``, the default, picks it for any task whose episodes
last more than one step: the slippery FrozenLake, ``configs/doc/frozen_lake.yaml``; the official
``models/stochastic_decision_transformer.py``). Three GPT stacks of :mod:`aligngym.agents.sequence`
(:class:`~aligngym.agents.sequence.TrajectoryTransformer`: 3 layers, 1 head, width 128, inner 512, ReLU,
dropout 0.1, timestep embeddings, LayerNorm on the embeddings) over ``(r_{t-1}, s_t, a_t)`` tokens, and
MLP(256, 256) heads. One step draws ``batch_size`` (64) windows of ``context_len + future_len - 1`` (39)
steps from :meth:`~aligngym.envs.data.dataset.OfflineDataset.sample_segments`; each of the first
``context_len`` (20) steps ``t`` is a training example with its own latent:

1. **Posterior** ``q(z_t | s_t, a_t, r_t, s_{t+1}, ...)``: the future stack, attending anti-causally (a
   token sees itself and later tokens of the window), read at step ``t``'s first token, a linear head
   giving a diagonal Gaussian over ``z`` (``latent_size`` 32); ``z_t`` drawn by reparameterisation.
   ``latent_kind: categorical`` makes ``z`` a categorical over ``latent_size`` categories instead, entering
   as a straight-through one-hot as in the tabular form (:class:`LatentHead`): every prior draw is then a
   latent the posterior can give. (Why it is offered: on the lake at ``q = 0.6`` the Gaussian prior's draws
   lay about 6 posterior standard deviations from every posterior mean, where the value head
   extrapolates and best-of-100 picks its largest error: ``V(z*)`` 0.36 at the start against 0.04
   achieved. One seed, ``frozen_lake_cpu``: 0.05 Gaussian, 0.08 categorical, with ``V(z*)`` 0.12.)
2. **Policy** ``pi(a_t | past, s_t, z_t)``: the context stack's output at ``s_t``'s token and ``z_t``,
   cross-entropy on the dataset's action.
3. **Value** ``V(past, s_t, sg(z_t))``: squared error against the undiscounted return-to-go; a readout
   of ``z`` that does not shape it (its gradient reaches the context stack, not the posterior).
4. **Prior** ``p(z_t | past, s_t)``: the prior stack at ``s_t``'s token (the official second-to-last token
   when acting), trained by ``KL(sg(q) || p)`` (weight ``prior_weight``, 1).
5. **Posterior's KL** ``KL(q || sg(p))`` with weight ``posterior_kl_weight`` (0.1): the two halves of a
   VAE's prior term, each trained on its own side (as KL balancing): the prior learns to match the
   posterior at full weight; the posterior is pulled towards what the prior can reach only by a beta-VAE's
   beta < 1, because a latent that must encode the episode's choices (the behaviour is 40 % random)
   collapses under a full-weight KL and the policy then falls back to behaviour cloning.
6. **Mutual information** ``I((r_t, s_{t+1}); z_t | past, s_t, a_t)``, estimated by InfoNCE
   (:func:`info_nce`) at every real step of the batch: a critic ``g(sg(h_t), z_t) . e(r_t, s_{t+1})``
   (``h_t`` the context stack at ``a_t``'s token; 128-wide embeddings), each step's own outcome its
   positive and the batch's other steps' outcomes its negatives. The same min-max as the tabular form:
   the critic ascends the estimate (its loss ``-beta I^``), the posterior descends it through
   :func:`reverse_gradient` on ``z_t``.

The losses are summed and one AdamW steps every network: lr 1e-4 with a linear warm-up over 1000 steps
(``warmup_steps``), weight decay 1e-4, the gradient's global norm clipped at 0.25, 10,000 steps (the
official settings, this form's ``Config`` defaults). **Acting** (:class:`DoCSequencePolicy`): from the
episode so far (the last ``context_len`` steps, kept by the Collector in the policy's ``state``,
:class:`~aligngym.agents.sequence.SequencePolicy`), ``prior_samples`` (100) latents drawn from the
prior, the one of highest value kept, the policy's most likely action under it; a new draw at every
step (the official ``sample_per_step=True``). The runner logs ``loss/policy``, ``loss/value``,
``loss/prior``, ``loss/posterior_kl``, ``loss/energy`` and ``train/mi_estimate``.

Departures of the sequence form from the official code:

- **The prior is trained** (``KL(sg(q) || p)``); the official code stops its gradient inside the only
  loss that reads it, so it acts from an untrained prior network.
- **The MI term's sign and estimator.** The official energy is ``pos_embed_i . neg_embed_j`` over the
  first future state alone (no reward), minimised jointly by the energy network and the encoder (which
  raises the MI the paper constrains). Here: InfoNCE over ``(r_t, s_{t+1})`` at every step, maximised by
  the critic and minimised by the posterior (gradient reversal). The critic reads the context stack's
  features with their gradient stopped, so the contrastive term shapes only the critic and the posterior.
- **The value is a stop-gradient readout of z** (the official value loss trains the encoder too).
- **The posterior's KL** is ``0.1 KL(q || sg(p))`` where the official uses ``KL(q || sg(p))`` at weight
  1 against its untrained prior.
- **A latent per step.** The official code encodes one future window (the ``future_len`` steps after the
  context) into one ``z`` that conditions every step of the context. Here each context step ``t`` has
  its own ``z_t`` from the window's steps ``t`` onwards (at least ``future_len``, 20, up to 39 for the
  earliest step, fewer where the episode ends), which is what the policy at ``t`` is conditioned on when
  it acts: the future from the present. One anti-causal pass of the future stack gives all of them.
- **Tokens** ``(r_{t-1}, s_t, a_t)``: the official ``R`` slot holds the reward of the same step, ``r_t``,
  which the state token then sees before the action that earns it (a leak; on FrozenLake ``r_t = 1``
  means the goal is reached by this step's action). The reward before a window's first step is not in
  the segment and enters as 0 (on FrozenLake every reward before the last step is 0).
- **Discrete actions**: a cross-entropy over action logits and the most likely action when acting (the
  official regresses one-hot actions through ``tanh`` with a squared error); no ``tanh`` on the value
  (returns-to-go need no squashing). The Gaussians' log-variances are clamped to [-10, 5].
- The blocks are ``torch.nn.TransformerEncoderLayer`` (pre-LayerNorm, as GPT-2's) rather than HF's
  GPT-2; each stack has its own embeddings (the official shares them across the three stacks, so the
  encoder's reversed MI gradient would also reach the policy's inputs).
- Windows come from ``sample_segments`` (an episode drawn in proportion to its length, the window where
  it fits, right-padded), seeded from numpy's global stream; the learning-rate warm-up counts steps in a
  checkpointed counter, so a resumed run continues the schedule. Evaluation plays ``eval_episodes``
  (100, the official 10) episodes every 1000 steps through the runner's Collector.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from pydantic import Field, PositiveInt
from tianshou.algorithm.algorithm_base import OfflineAlgorithm, TrainingStats
from tianshou.algorithm.optim import TorchOptimizerFactory
from tianshou.data import ReplayBuffer

from aligngym.agents import sequence, tabular
from aligngym.agents.offline import offline_evaluate, offline_train
from aligngym.agents.sequence import (SequenceConfig, SequencePolicy, TrajectoryTransformer, action_cross_entropy,
                                      masked_mean, mlp, previous_rewards, sample_windows, warmed_up_step)
from aligngym.agents.tabular import TabularPolicy, transition_tables, truncated_normal
from aligngym.envs.data.dataset import OfflineDataset


# the sequence form's defaults (agents/sequence.py: for every key a file leaves out): the official neural
# settings of run_neural_dt.py (AdamW lr 1e-4 with a 1000-step warm-up, batch 64, 10k steps, latent 32);
# 100 evaluation episodes every 1000 steps where the official plays 10 (a success rate over 10 episodes
# moves in steps of 0.1)
SEQUENCE_DEFAULTS: dict[str, Any] = {"learning_rate": 1e-4, "latent_size": 32, "eval_episodes": 100}


class Config(SequenceConfig):
    sequence_defaults: ClassVar[dict[str, Any]] = SEQUENCE_DEFAULTS

    steps: int = Field(10_000, ge=1)  # optimiser steps (official run_tabular num_steps; the neural 10 x 1000)
    batch_size: int = Field(64, ge=1)  # transitions per step (tabular) or trajectory windows (sequence)
    eval_every: int = Field(1_000, ge=1)  # the official code evaluates every 1000 steps ...
    eval_episodes: int = Field(1_000, ge=1)  # ... on 1000 episodes (bandit pulls; sequence: 100)
    learning_rate: float = Field(0.01, gt=0)  # tabular: Adam over every table; sequence: AdamW's peak (1e-4)
    energy_weight: float = Field(1.0, ge=0)  # beta, the weight of the min-max MI term (0: no constraint)
    num_rtg: int = Field(2, ge=2)  # tabular: return classes R, a return is one of 0 .. num_rtg - 1 (the bandit's 0, 1)
    # tabular: Z, the latent's categories (None: |A| num_rtg, the official); sequence: the Gaussian z's size (32)
    latent_size: PositiveInt | None = None
    init_std: float = Field(1.0, gt=0)  # tabular: every table starts truncated-normal with this std (cut at 2 std)
    future_len: int = Field(20, ge=1)  # sequence: K, the future steps the encoder reads at least (official future_len)
    prior_samples: int = Field(100, ge=1)  # sequence: latents drawn from the prior when acting, the best by value kept
    prior_weight: float = Field(1.0, ge=0)  # sequence: weight of KL(sg(q) || p), the prior's loss
    posterior_kl_weight: float = Field(0.1, ge=0)  # sequence: weight of KL(q || sg(p)), the posterior's beta-VAE term
    energy_dim: int = Field(128, ge=1)  # sequence: width of the InfoNCE critic's two embeddings (official 128)
    # sequence: the latent's kind: a diagonal Gaussian of latent_size dimensions (the official), or a categorical
    # over latent_size categories entering as a straight-through one-hot (as the tabular form's)
    latent_kind: Literal["gaussian", "categorical"] = "gaussian"


# ---------------------------------------------------------------------- the pieces of the objective
class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return -grad


def reverse_gradient(x: torch.Tensor) -> torch.Tensor:
    """``x`` unchanged, its gradient negated: what is upstream of ``x`` (the posterior) climbs the loss
    that the parameters downstream (the energy table) descend."""
    return _ReverseGradient.apply(x)


def straight_through_sample(logits: torch.Tensor) -> torch.Tensor:
    """``[B, Z]`` one-hot draws from ``softmax(logits)`` whose gradient is the probabilities'
    (``onehot + p - sg(p)``, the official straight-through estimator)."""
    probs = logits.softmax(-1)
    onehot = F.one_hot(torch.multinomial(probs, 1).squeeze(1), logits.shape[-1]).to(probs.dtype)
    return onehot + probs - probs.detach()


def contrastive_mi(energy: torch.Tensor, z: torch.Tensor, returns: torch.Tensor,
                   log_marginal: torch.Tensor) -> torch.Tensor:
    """Per sample, ``f(r) . z - log sum_r' rho(r') exp(f(r') . z)``: the contrastive estimate of
    ``I(r; z)`` (its mean; a lower bound, tight when ``rho(r) exp(f(r) . z)`` is proportional to
    ``P(r | z)``). ``energy``: ``[B, R, Z]`` (each sample's ``f(s, a, .)``), ``z``: ``[B, Z]``,
    ``returns``: ``[B]`` classes, ``log_marginal``: ``[R]``, ``log rho``."""
    scores = torch.einsum("brz,bz->br", energy, z)
    positive = scores.gather(1, returns[:, None]).squeeze(1)
    return positive - torch.logsumexp(scores + log_marginal, dim=1)


# ---------------------------------------------------------------------- algorithm
@dataclass(kw_only=True)
class DoCTrainingStats(TrainingStats):
    loss_policy: float  # cross-entropy of the dataset's action under pi(. | s, z)
    loss_value: float  # cross-entropy of the return's class under P(. | s, sg(z))
    loss_energy: float  # the energy table's loss, -beta I^
    mi_estimate: float  # I^, the contrastive estimate of I(r; z | s, a) the posterior descends


class DoCPolicy(TabularPolicy):
    """``pi(a | s, z*)`` with ``z* = argmax_z P(r = best | s, z)``; holds the policy and value tables."""

    def __init__(self, action_space: gym.spaces.Discrete, observation_space: gym.Space, states: int,
                 latents: int, returns: int, std: float) -> None:
        super().__init__(action_space, observation_space)
        self.policy_logits = truncated_normal(states, latents, int(action_space.n), std=std)  # pi(a | s, z)
        self.value_logits = truncated_normal(states, latents, returns, std=std)  # P(r | s, z)

    def best_latent(self, states: torch.Tensor) -> torch.Tensor:
        """``[B]``: ``argmax_z P(r = num_rtg - 1 | s, z)`` in each state."""
        return self.value_logits[states].softmax(-1)[..., -1].argmax(-1)

    def action_probs(self, states: torch.Tensor) -> torch.Tensor:
        return self.policy_logits[states, self.best_latent(states)].softmax(-1)


class DoC(OfflineAlgorithm[DoCPolicy]):
    def __init__(self, config: Config, action_space: gym.spaces.Discrete, observation_space: gym.Space,
                 device: torch.device) -> None:
        states, actions, returns = int(observation_space.shape[0]), int(action_space.n), config.num_rtg
        latents = config.latent_size or actions * returns
        std = config.init_std
        super().__init__(policy=DoCPolicy(action_space, observation_space, states, latents, returns, std))
        self.config = config
        self.posterior_logits = truncated_normal(states, actions, returns, latents, std=std)  # q(z | s, a, r)
        self.energy = truncated_normal(states, actions, returns, latents, std=std)  # f(s, a, r) . z
        # log rho(r'): the dataset's marginal return histogram, the negatives' distribution (from the
        # data at training, from the checkpoint when a run is evaluated)
        self.register_buffer("log_marginal", torch.zeros(returns))
        # one Adam over every table, as the official code; its fused kernel (the same update, faster on a CPU)
        adam = TorchOptimizerFactory(torch.optim.Adam, lr=config.learning_rate, fused=True)
        self.tables_optim = self._create_optimizer(self, adam)
        self.data: dict[str, torch.Tensor] = {}
        self.to(device)

    def process_buffer(self, buffer: ReplayBuffer) -> ReplayBuffer:
        self.data = transition_tables(buffer, self.log_marginal.device)
        counts = torch.bincount(self.data["returns"], minlength=self.config.num_rtg).to(self.log_marginal)
        self.log_marginal.copy_((counts / counts.sum()).log())  # a class the data never hold: -inf, no negative
        return buffer

    def _preprocess_batch(self, batch: Any, buffer: ReplayBuffer, indices: Any) -> Any:
        batch.indices = indices
        return batch

    def _update_with_batch(self, batch: Any) -> DoCTrainingStats:
        idx = torch.as_tensor(batch.indices, device=self.log_marginal.device)
        return self.learn(self.data["states"][idx], self.data["actions"][idx], self.data["returns"][idx])

    def losses(self, states: torch.Tensor, actions: torch.Tensor,
               returns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(loss_policy, loss_value, loss_energy, mi_estimate)`` on a batch of index tensors, ``z``
        drawn once from the posterior (torch's generator); their sum is what one step descends."""
        z = straight_through_sample(self.posterior_logits[states, actions, returns])
        policy_logits = torch.einsum("bz,bza->ba", z, self.policy.policy_logits[states])
        loss_policy = F.cross_entropy(policy_logits, actions)
        # the value reads z without shaping it
        value_logits = torch.einsum("bz,bzr->br", z.detach(), self.policy.value_logits[states])
        loss_value = F.cross_entropy(value_logits, returns)
        # the energy table ascends the estimate; the reversed gradient makes the posterior descend it
        mi = contrastive_mi(self.energy[states, actions], reverse_gradient(z), returns, self.log_marginal).mean()
        return loss_policy, loss_value, -self.config.energy_weight * mi, mi

    def learn(self, states: torch.Tensor, actions: torch.Tensor, returns: torch.Tensor) -> DoCTrainingStats:
        loss_policy, loss_value, loss_energy, mi = self.losses(states, actions, returns)
        self.tables_optim.step(loss_policy + loss_value + loss_energy)
        return DoCTrainingStats(loss_policy=loss_policy.item(), loss_value=loss_value.item(),
                                loss_energy=loss_energy.item(), mi_estimate=mi.item())


# ---------------------------------------------------------------------- the sequence form
def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor, other_mean: torch.Tensor,
                other_logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mean, e^logvar) || N(other_mean, e^other_logvar))`` of diagonal Gaussians, summed over the
    last axis."""
    return 0.5 * (other_logvar - logvar + (logvar.exp() + (mean - other_mean) ** 2) / other_logvar.exp() - 1).sum(-1)


def info_nce(context: torch.Tensor, outcome: torch.Tensor) -> torch.Tensor:
    """The InfoNCE estimate of ``I(outcome; context)`` from ``N`` paired embeddings ``[N, E]``: the
    critic ``context_i . outcome_j``, row ``i``'s pair its positive and the other ``N - 1`` outcomes of
    the batch its negatives; ``mean_i [score_ii - log sum_j exp(score_ij)] + log N`` (a lower bound,
    at most ``log N``)."""
    scores = context @ outcome.T
    return (scores.diagonal() - torch.logsumexp(scores, dim=1)).mean() + math.log(len(scores))


LOGVAR_RANGE = (-10.0, 5.0)  # the Gaussians' log-variances are clamped here (a KL over a collapsed variance overflows)


class LatentHead(nn.Linear):
    """A distribution over the latent ``z`` read from a stack's hidden state: its parameters
    (:meth:`forward`, ``[..., width]`` -> ``[..., P]``), a draw with gradient (:meth:`sample`), the KL
    divergence between two of them (:meth:`kl`) and ``k`` draws without gradient (:meth:`draws`).

    ``gaussian``: a diagonal Gaussian of ``latent`` dimensions (parameters: mean and log-variance, the
    latter clamped to ``LOGVAR_RANGE``), drawn by reparameterisation. ``categorical``: ``latent``
    categories (parameters: logits), drawn as a straight-through one-hot (:func:`straight_through_sample`),
    so ``z`` is a one-hot of the same size and a prior draw is always a latent the posterior can give."""

    def __init__(self, width: int, latent: int, kind: str) -> None:
        super().__init__(width, 2 * latent if kind == "gaussian" else latent)  # (a linear layer: its weights' names)
        self.kind = kind

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        params = super().forward(hidden)
        if self.kind == "categorical":
            return params.log_softmax(-1)
        mean, logvar = params.chunk(2, dim=-1)
        return torch.cat([mean, logvar.clamp(*LOGVAR_RANGE)], dim=-1)

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        if self.kind == "categorical":
            return straight_through_sample(params.reshape(-1, params.shape[-1])).view_as(params)
        mean, logvar = params.chunk(2, dim=-1)
        return mean + torch.randn_like(mean) * (0.5 * logvar).exp()

    def kl(self, params: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """``KL(self || other)`` per row, summed over the latent."""
        if self.kind == "categorical":
            return (params.exp() * (params - other)).sum(-1)
        return gaussian_kl(*params.chunk(2, dim=-1), *other.chunk(2, dim=-1))

    @torch.no_grad()
    def draws(self, params: torch.Tensor, k: int) -> torch.Tensor:
        """``[N, k, latent]``: ``k`` draws of each row of ``[N, P]`` parameters."""
        if self.kind == "categorical":
            picks = torch.multinomial(params.exp(), k, replacement=True)
            return F.one_hot(picks, params.shape[-1]).to(params.dtype)
        mean, logvar = params.chunk(2, dim=-1)
        noise = torch.randn(mean.shape[0], k, mean.shape[1], device=mean.device)
        return mean[:, None] + noise * (0.5 * logvar[:, None]).exp()


@dataclass(kw_only=True)
class DoCSequenceStats(TrainingStats):
    loss_policy: float  # cross-entropy of the dataset's action under pi(. | past, s_t, z_t)
    loss_value: float  # squared error of V(past, s_t, sg(z_t)) against the return-to-go
    loss_prior: float  # KL(sg(q) || p): the prior's loss
    loss_posterior_kl: float  # KL(q || sg(p)): the posterior's (unweighted)
    loss_energy: float  # the critic's loss, -beta I^
    mi_estimate: float  # I^, the InfoNCE estimate over (r_t, s_{t+1}) the posterior descends


class DoCSequencePolicy(SequencePolicy):
    """Acts by the latent whose value is best among ``prior_samples`` draws of the prior ``p(z | past,
    s_t)``, drawn afresh at every step (the official ``sample_per_step=True``); holds the networks acting
    needs: the context and prior stacks, the prior's, policy's and value's heads."""

    def __init__(self, config: Config, action_space: gym.spaces.Discrete, observation_space: gym.Space,
                 max_timestep: int) -> None:
        super().__init__(action_space, observation_space, config.context_len)
        width, latent, actions = config.embed_dim, int(config.latent_size or 32), int(action_space.n)
        self.context = TrajectoryTransformer(self.obs_dim, actions, max_timestep, config)
        self.prior = TrajectoryTransformer(self.obs_dim, actions, max_timestep, config)
        self.prior_head = LatentHead(width, latent, config.latent_kind)
        self.policy_head = mlp(width + latent, config.head_hidden, actions)
        self.value_head = mlp(width + latent, config.head_hidden, 1)
        self.prior_samples = config.prior_samples

    def past(self, rewards_before: torch.Tensor, states: torch.Tensor, actions: torch.Tensor,
             timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(state_hidden, action_hidden, prior)`` at every step, ``[B, T, .]``: the context stack's
        outputs at the state and action tokens, the prior's parameters read at the state token (the
        official's second-to-last token when acting)."""
        hidden = self.context(rewards_before, states, actions, timesteps)
        prior = self.prior_head(self.prior(rewards_before, states, actions, timesteps)[:, :, 1])
        return hidden[:, :, 1], hidden[:, :, 2], prior

    def value(self, state_hidden: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.value_head(torch.cat([state_hidden, z], dim=-1)).squeeze(-1)

    def choose_latent(self, state_hidden: torch.Tensor, prior: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z*, V(z*))`` per row of ``[N, .]`` inputs: the best by value of ``prior_samples`` prior draws."""
        samples = self.prior_head.draws(prior, self.prior_samples)
        values = self.value(state_hidden[:, None].expand(-1, self.prior_samples, -1), samples)
        best = values.argmax(1)
        rows = torch.arange(len(best), device=best.device)
        return samples[rows, best], values[rows, best]

    def act(self, states: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, timesteps: torch.Tensor,
            lengths: torch.Tensor) -> torch.Tensor:
        state_hidden, _, prior = self.past(previous_rewards(rewards), states, actions, timesteps)
        state_hidden, prior = self.last_step(state_hidden, lengths), self.last_step(prior, lengths)
        z, _ = self.choose_latent(state_hidden, prior)
        return self.policy_head(torch.cat([state_hidden, z], dim=-1)).argmax(-1)

    @torch.no_grad()
    def first_step_value(self, observations: np.ndarray) -> np.ndarray:
        """``V(z*)`` of the latent chosen at an episode's first step from each of ``observations``: the
        return the policy commits to (DoC's consistency: the return it then achieves on average)."""
        device = next(self.parameters()).device
        states = torch.as_tensor(np.asarray(observations, np.float32), device=device)[:, None]
        zeros = torch.zeros(states.shape[:2], device=device)
        state_hidden, _, prior = self.past(zeros, states, zeros.long(), zeros.long())
        _, value = self.choose_latent(state_hidden[:, 0], prior[:, 0])
        return value.detach().cpu().numpy()


class SequenceDoC(OfflineAlgorithm[DoCSequencePolicy]):
    """DoC's sequence form (the module docstring): one AdamW over every network, the losses summed."""

    def __init__(self, config: Config, env: gym.Env, dataset: OfflineDataset | None, device: torch.device) -> None:
        max_timestep = config.timesteps_embedded(env)
        super().__init__(policy=DoCSequencePolicy(config, env.action_space, env.observation_space, max_timestep))
        obs_dim, width, latent = self.policy.obs_dim, config.embed_dim, int(config.latent_size or 32)
        self.config = config
        self.future = TrajectoryTransformer(obs_dim, int(env.action_space.n), max_timestep, config)
        self.posterior_head = LatentHead(width, latent, config.latent_kind)
        self.energy_context = mlp(width + latent, config.head_hidden, config.energy_dim)  # g(past, s_t, a_t, z_t)
        self.energy_outcome = mlp(obs_dim + 1, config.head_hidden, config.energy_dim)  # h(r_t, s_{t+1})
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # steps taken: the warm-up's clock
        adamw = TorchOptimizerFactory(torch.optim.AdamW, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.model_optim = self._create_optimizer(self, adamw, max_grad_norm=config.grad_clip)
        self.dataset = dataset
        self.to(device)

    def _update_with_batch(self, batch: Any) -> DoCSequenceStats:
        if self.dataset is None:
            raise RuntimeError("SequenceDoC was built without data (an evaluation): it cannot train")
        length = self.config.context_len + self.config.future_len - 1
        return self.learn(sample_windows(self.dataset, self.config.batch_size, length, self.updates.device))

    def losses(self, windows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each loss of one step on ``windows`` of ``context_len + future_len - 1`` steps (the first
        ``context_len`` are the context; each of them gets its own latent), ``z`` drawn once from the
        posterior (torch's generator)."""
        config, context = self.config, self.config.context_len
        past = {key: windows[key][:, :context] for key in ("observations", "actions", "timesteps", "mask")}
        valid = past["mask"].float()
        rewards_before = previous_rewards(windows["rewards"])[:, :context]
        state_hidden, action_hidden, prior = self.policy.past(
            rewards_before, past["observations"], past["actions"], past["timesteps"])
        # q(z_t | s_t, a_t, r_t, ...): the future stack's first token of each step, attending to later tokens only
        future = self.future(windows["rewards"], windows["observations"], windows["actions"], windows["timesteps"],
                             valid=windows["mask"], reverse=True)[:, :context, 0]
        posterior = self.posterior_head(future)
        z = self.posterior_head.sample(posterior)
        logits = self.policy.policy_head(torch.cat([state_hidden, z], dim=-1))
        loss_policy = action_cross_entropy(logits, past["actions"], valid)
        # the value reads z without shaping it
        value = self.policy.value(state_hidden, z.detach())
        loss_value = masked_mean((value - windows["returns_to_go"][:, :context]) ** 2, valid)
        heads = self.posterior_head
        loss_prior = masked_mean(heads.kl(posterior.detach(), prior), valid)
        loss_posterior_kl = masked_mean(heads.kl(posterior, prior.detach()), valid)
        # InfoNCE over (r_t, s_{t+1}) of every real step: the critic ascends it, the reversed gradient on z
        # makes the posterior descend it; the context's features enter as a fixed input of the critic
        real = past["mask"]
        critic = self.energy_context(torch.cat([action_hidden.detach(), reverse_gradient(z)], dim=-1))[real]
        outcome = torch.cat([windows["next_observations"][:, :context], windows["rewards"][:, :context, None]], -1)
        mi = info_nce(critic, self.energy_outcome(outcome)[real])
        return {"loss_policy": loss_policy, "loss_value": loss_value, "loss_prior": loss_prior,
                "loss_posterior_kl": loss_posterior_kl, "loss_energy": -config.energy_weight * mi, "mi_estimate": mi}

    def learn(self, windows: dict[str, torch.Tensor]) -> DoCSequenceStats:
        parts = self.losses(windows)
        config = self.config
        total = (parts["loss_policy"] + parts["loss_value"] + config.prior_weight * parts["loss_prior"]
                 + config.posterior_kl_weight * parts["loss_posterior_kl"] + parts["loss_energy"])
        warmed_up_step(self.model_optim, total, self.updates, config)
        return DoCSequenceStats(**{name: float(value.detach()) for name, value in parts.items()})


# ---------------------------------------------------------------------- runner hooks
def build(config: Config, env: gym.Env, dataset: OfflineDataset | None, device: torch.device) -> DoC | SequenceDoC:
    """DoC in the config's form: tabular (checked by :meth:`TabularConfig.check_env`; the return
    histogram comes from the data, :meth:`DoC.process_buffer`, or the checkpoint) or sequence (its
    windows from ``dataset``; None when a run is evaluated)."""
    if config.sequence:
        return SequenceDoC(config, env, dataset, device)
    return DoC(config, env.action_space, env.observation_space, device)


# the runner's hooks both forms' agents share: the data checked before a run starts (the tabular
# form's one-step episodes and return classes) and the bandit's exact expected return
select_data = sequence.select_data
exact_scores = tabular.exact_scores


def train(config: Config, run: Any, state: dict[str, Any] | None) -> None:
    offline_train(sys.modules[__name__], config, run, state)


def evaluate(config: Config, state: dict[str, Any], episodes: int) -> dict[str, Any]:
    return offline_evaluate(sys.modules[__name__], config, state, episodes)
