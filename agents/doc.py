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

**The sequence form (not built yet).** For FrozenLake the paper uses three GPT-2 stacks (3 layers,
1 head, width 128, context and future length 20, latent 32): a future encoder ``q(z | tau_{t:t+K})``,
a prior ``p(z | tau_{<=t})`` (trained with ``KL(sg(q) || p)``, which the official code never trains),
the policy and value heads on the past and ``z`` (the value on ``sg(z)``), and an InfoNCE energy over
``(r_t, s_{t+1})`` with in-batch negatives and the same gradient reversal into ``q``; inference picks
the best of K = 100 prior samples by value. It belongs in this module beside the tabular form, its
batches from :meth:`~aligngym.envs.data.dataset.OfflineDataset.sample_segments`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from tianshou.algorithm.algorithm_base import OfflineAlgorithm, TrainingStats
from tianshou.algorithm.optim import TorchOptimizerFactory
from tianshou.data import ReplayBuffer

from aligngym.agents import tabular
from aligngym.agents.offline import offline_evaluate, offline_train
from aligngym.agents.tabular import TabularConfig, TabularPolicy, transition_tables, truncated_normal
from aligngym.envs.data.dataset import OfflineDataset


class Config(TabularConfig):
    steps: int = Field(10_000, ge=1)  # Adam steps (official run_tabular num_steps)
    batch_size: int = Field(64, ge=1)  # transitions per step
    eval_every: int = Field(1_000, ge=1)  # the official code evaluates every 1000 steps ...
    eval_episodes: int = Field(1_000, ge=1)  # ... on 1000 episodes (bandit pulls)
    learning_rate: float = Field(0.01, gt=0)  # Adam, one optimiser over every table
    energy_weight: float = Field(1.0, ge=0)  # beta, the weight of the min-max MI term (0: no constraint)
    num_rtg: int = Field(2, ge=2)  # return classes R: a return is one of 0 .. num_rtg - 1 (the bandit's 0, 1)
    latent_size: PositiveInt | None = None  # Z, the latent's categories (None: |A| num_rtg, the official)
    init_std: float = Field(1.0, gt=0)  # every table starts truncated-normal with this std (cut at 2 std)


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


# ---------------------------------------------------------------------- runner hooks
def build(config: Config, env: gym.Env, dataset: OfflineDataset | None, device: torch.device) -> DoC:
    """Tabular DoC for ``env`` (checked by :meth:`TabularConfig.check_env`); the return histogram
    comes from the data (:meth:`DoC.process_buffer`) or, when a run is evaluated, the checkpoint."""
    return DoC(config, env.action_space, env.observation_space, device)


# the runner's hooks the tabular agents share: the data checked before a run starts (one-step episodes,
# returns that are classes) and the bandit's exact expected return (eval/expected_return)
select_data = tabular.select_data
exact_scores = tabular.exact_scores


def train(config: Config, run: Any, state: dict[str, Any] | None) -> None:
    offline_train(sys.modules[__name__], config, run, state)


def evaluate(config: Config, state: dict[str, Any], episodes: int) -> dict[str, Any]:
    return offline_evaluate(sys.modules[__name__], config, state, episodes)
