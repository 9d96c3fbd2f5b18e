"""The Decision Transformer: return-conditioned behaviour cloning, DoC's baseline.

Chen et al., "Decision Transformer: Reinforcement Learning via Sequence Modeling", NeurIPS 2021
(arXiv 2106.01345), in the form DoC compares against (Yang et al., ICLR 2023, arXiv 2210.13435;
google-research ``dichotomy_of_control``: ``models/tabular_sdt.py`` with ``scripts/run_tabular.py
--algo_name=dt``).

**The tabular form** (this module): a policy table ``pi(a | s, R)`` ``[S, num_rtg, A]`` over the
return's class ``R`` (:mod:`aligngym.agents.tabular`), initialised ``truncated_normal(std 1)`` and
trained by Adam (lr 0.01) on the cross-entropy of the dataset's action, ``batch_size`` (64)
transitions per step for 10,000 steps (the official tabular settings, DoC's). At test time it is
conditioned on the best return class, ``num_rtg - 1``, and draws ``a ~ softmax(pi(s, num_rtg - 1))``.
On the Bernoulli bandit this is the failure DoC's paper shows: ``P(a | r = 1)`` weighs each arm by
how often it was lucky in the data, and at p = 0.1 both arms won equally often (0.9 x 0.1 = 0.1 x 0.9),
so the policy plays each half of the time (expected return 0.5; the optimum is 0.9).

The runner logs ``loss/policy`` and scores the bandit exactly as ``eval/expected_return`` besides
the sampled ``eval/return``. Departures from the official code: batches come from tianshou's replay
buffer (uniform with replacement, seeded by the run's seed), Adam runs as PyTorch's fused kernel (the
same update rule, rounding aside), and evaluation plays ``eval_episodes`` (1000) pulls every
``eval_every`` (1000) steps through the runner's Collector.

**The sequence form** (``form: sequence``; ``auto``, the default, picks it for any task whose episodes
last more than one step: the slippery FrozenLake, ``configs/dt/frozen_lake.yaml``): the GPT backbone
DoC's sequence form uses (:class:`~aligngym.agents.sequence.TrajectoryTransformer`: 3 layers, 1 head,
width 128, inner 512, dropout 0.1, timestep embeddings, LayerNorm on the embeddings) over ``(R_t, s_t,
a_t)`` tokens with ``R_t`` the undiscounted return-to-go, a linear head on each state token's output
giving the action's logits, and the cross-entropy on the dataset's actions over ``batch_size`` (64)
windows of ``context_len`` (20) steps from ``sample_segments``; AdamW lr 1e-4 with a 1000-step linear
warm-up, weight decay 1e-4, gradient norm clipped at 0.25, 10,000 steps (DoC's official neural
settings). **Acting** (:class:`ReturnConditionedSequencePolicy`): ``R`` starts at ``target_return`` (None:
the best episode return in the data, 1 on FrozenLake; kept in the checkpoint) and falls by each reward
earned; the most likely action is taken; the history is kept by the Collector in the policy's ``state``.

Departures of the sequence form from DoC's official DT baseline (``run_neural_dt.py`` with the
Decision Transformer): the ``R`` slot holds the return-to-go, as the Decision Transformer's paper (the
official code feeds the per-step reward there, so its ``target_return`` is unused and nothing is
conditioned on a return); a cross-entropy over action logits with the most likely action when acting
(the official regresses one-hot actions through ``tanh``); ``torch.nn`` transformer blocks (pre-LayerNorm,
as GPT-2's); evaluation on 100 episodes (the official 10).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import nn
from pydantic import Field
from tianshou.algorithm.algorithm_base import OfflineAlgorithm, TrainingStats
from tianshou.algorithm.optim import TorchOptimizerFactory
from tianshou.data import ReplayBuffer

from aligngym.agents import sequence, tabular
from aligngym.agents.offline import offline_evaluate, offline_train
from aligngym.agents.sequence import (SequenceConfig, SequencePolicy, TrajectoryTransformer, action_cross_entropy,
                                      sample_windows, warmed_up_step)
from aligngym.agents.tabular import TabularPolicy, transition_tables, truncated_normal
from aligngym.envs.data.dataset import OfflineDataset


# the sequence form's defaults (agents/sequence.py: for every key a file leaves out): DoC's official neural
# settings, which its DT baseline shares (AdamW lr 1e-4 with a 1000-step warm-up, batch 64, 10k steps);
# 100 evaluation episodes every 1000 steps (the official 10)
SEQUENCE_DEFAULTS: dict[str, Any] = {"learning_rate": 1e-4, "eval_episodes": 100}


class Config(SequenceConfig):
    sequence_defaults: ClassVar[dict[str, Any]] = SEQUENCE_DEFAULTS

    steps: int = Field(10_000, ge=1)  # optimiser steps (official run_tabular num_steps; the neural 10 x 1000)
    batch_size: int = Field(64, ge=1)  # transitions per step (tabular) or trajectory windows (sequence)
    eval_every: int = Field(1_000, ge=1)  # the official code evaluates every 1000 steps ...
    eval_episodes: int = Field(1_000, ge=1)  # ... on 1000 episodes (bandit pulls; sequence: 100)
    learning_rate: float = Field(0.01, gt=0)  # tabular: Adam; sequence: AdamW's peak (1e-4)
    num_rtg: int = Field(2, ge=2)  # tabular: return classes, a return is one of 0 .. num_rtg - 1 (the bandit's 0, 1)
    init_std: float = Field(1.0, gt=0)  # tabular: the policy table starts truncated-normal with this std (cut at 2 std)
    target_return: float | None = None  # sequence: the return asked for when acting (None: the data's best episode)


@dataclass(kw_only=True)
class DTTrainingStats(TrainingStats):
    loss_policy: float  # cross-entropy of the dataset's action under pi(. | s, R)


class ReturnConditionedPolicy(TabularPolicy):
    """``pi(a | s, R)`` conditioned on the best return class ``num_rtg - 1`` when it acts."""

    def __init__(self, action_space: gym.spaces.Discrete, observation_space: gym.Space, states: int,
                 returns: int, std: float) -> None:
        super().__init__(action_space, observation_space)
        self.policy_logits = truncated_normal(states, returns, int(action_space.n), std=std)

    def action_probs(self, states: torch.Tensor) -> torch.Tensor:
        return self.policy_logits[states, -1].softmax(-1)


class TabularDT(OfflineAlgorithm[ReturnConditionedPolicy]):
    def __init__(self, config: Config, action_space: gym.spaces.Discrete, observation_space: gym.Space,
                 device: torch.device) -> None:
        policy = ReturnConditionedPolicy(action_space, observation_space, int(observation_space.shape[0]),
                                         config.num_rtg, config.init_std)
        super().__init__(policy=policy)
        self.config = config
        adam = TorchOptimizerFactory(torch.optim.Adam, lr=config.learning_rate, fused=True)  # fused: faster on a CPU
        self.policy_optim = self._create_optimizer(self.policy, adam)
        self.data: dict[str, torch.Tensor] = {}
        self.to(device)

    def process_buffer(self, buffer: ReplayBuffer) -> ReplayBuffer:
        self.data = transition_tables(buffer, self.policy.policy_logits.device)
        return buffer

    def _preprocess_batch(self, batch: Any, buffer: ReplayBuffer, indices: Any) -> Any:
        batch.indices = indices
        return batch

    def _update_with_batch(self, batch: Any) -> DTTrainingStats:
        idx = torch.as_tensor(batch.indices, device=self.policy.policy_logits.device)
        return self.learn(self.data["states"][idx], self.data["actions"][idx], self.data["returns"][idx])

    def learn(self, states: torch.Tensor, actions: torch.Tensor, returns: torch.Tensor) -> DTTrainingStats:
        loss = F.cross_entropy(self.policy.policy_logits[states, returns], actions)
        self.policy_optim.step(loss)
        return DTTrainingStats(loss_policy=loss.item())


# ---------------------------------------------------------------------- the sequence form
class ReturnConditionedSequencePolicy(SequencePolicy):
    """Acts greedily by ``pi(a | R_{<=t}, s_{<=t}, a_{<t})`` with ``R_t`` the return still to earn:
    ``target_return`` less the rewards earned so far."""

    def __init__(self, config: Config, action_space: gym.spaces.Discrete, observation_space: gym.Space,
                 max_timestep: int) -> None:
        super().__init__(action_space, observation_space, config.context_len)
        self.transformer = TrajectoryTransformer(self.obs_dim, int(action_space.n), max_timestep, config)
        self.action_head = nn.Linear(config.embed_dim, int(action_space.n))
        # the return asked for when acting: the config's, else the data's best (a buffer: evaluation has no data)
        self.register_buffer("target_return", torch.zeros(()))

    def action_logits(self, returns_to_go: torch.Tensor, states: torch.Tensor, actions: torch.Tensor,
                      timesteps: torch.Tensor) -> torch.Tensor:
        """``[B, T, A]``: the action's logits read at each state token."""
        return self.action_head(self.transformer(returns_to_go, states, actions, timesteps)[:, :, 1])

    def act(self, states: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, timesteps: torch.Tensor,
            lengths: torch.Tensor) -> torch.Tensor:
        earned_before = torch.cumsum(rewards, dim=1) - rewards
        logits = self.action_logits(self.target_return - earned_before, states, actions, timesteps)
        return self.last_step(logits, lengths).argmax(-1)


class SequenceDT(OfflineAlgorithm[ReturnConditionedSequencePolicy]):
    """The Decision Transformer (the module docstring): one AdamW, the action's cross-entropy."""

    def __init__(self, config: Config, env: gym.Env, dataset: OfflineDataset | None, device: torch.device) -> None:
        policy = ReturnConditionedSequencePolicy(config, env.action_space, env.observation_space,
                                                 config.timesteps_embedded(env))
        super().__init__(policy=policy)
        self.config = config
        if config.target_return is not None:
            policy.target_return.fill_(config.target_return)
        elif dataset is not None:
            policy.target_return.fill_(float(dataset.episode_returns().max()))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))  # steps taken: the warm-up's clock
        adamw = TorchOptimizerFactory(torch.optim.AdamW, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.policy_optim = self._create_optimizer(self.policy, adamw, max_grad_norm=config.grad_clip)
        self.dataset = dataset
        self.to(device)

    def _update_with_batch(self, batch: Any) -> DTTrainingStats:
        if self.dataset is None:
            raise RuntimeError("SequenceDT was built without data (an evaluation): it cannot train")
        return self.learn(sample_windows(self.dataset, self.config.batch_size, self.config.context_len,
                                         self.updates.device))

    def loss(self, windows: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.policy.action_logits(windows["returns_to_go"], windows["observations"], windows["actions"],
                                           windows["timesteps"])
        return action_cross_entropy(logits, windows["actions"], windows["mask"].float())

    def learn(self, windows: dict[str, torch.Tensor]) -> DTTrainingStats:
        loss = self.loss(windows)
        warmed_up_step(self.policy_optim, loss, self.updates, self.config)
        return DTTrainingStats(loss_policy=float(loss.detach()))


# ---------------------------------------------------------------------- runner hooks
def build(config: Config, env: gym.Env, dataset: OfflineDataset | None,
          device: torch.device) -> TabularDT | SequenceDT:
    """The Decision Transformer in the config's form: tabular (checked by
    :meth:`TabularConfig.check_env`) or sequence (its windows from ``dataset``; None when a run is
    evaluated, the target return then from the checkpoint)."""
    if config.sequence:
        return SequenceDT(config, env, dataset, device)
    return TabularDT(config, env.action_space, env.observation_space, device)


# the runner's hooks both forms' agents share: the data checked before a run starts (the tabular
# form's one-step episodes and return classes) and the bandit's exact expected return
select_data = sequence.select_data
exact_scores = tabular.exact_scores


def train(config: Config, run: Any, state: dict[str, Any] | None) -> None:
    offline_train(sys.modules[__name__], config, run, state)


def evaluate(config: Config, state: dict[str, Any], episodes: int) -> dict[str, Any]:
    return offline_evaluate(sys.modules[__name__], config, state, episodes)
