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

**The sequence form (not built yet)**: the GPT-2 backbone DoC's neural form uses (3 layers, 1 head,
width 128, context 20) over (return-to-go, state, action) tokens, for the slippery FrozenLake; it
belongs in this module beside the tabular form.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch
import torch.nn.functional as F
from pydantic import Field
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
    learning_rate: float = Field(0.01, gt=0)  # Adam
    num_rtg: int = Field(2, ge=2)  # return classes: a return is one of 0 .. num_rtg - 1 (the bandit's 0, 1)
    init_std: float = Field(1.0, gt=0)  # the policy table starts truncated-normal with this std (cut at 2 std)


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


def build(config: Config, env: gym.Env, dataset: OfflineDataset | None, device: torch.device) -> TabularDT:
    """The tabular Decision Transformer for ``env`` (checked by :meth:`TabularConfig.check_env`)."""
    return TabularDT(config, env.action_space, env.observation_space, device)


# the runner's hooks the tabular agents share: the data checked before a run starts (one-step episodes,
# returns that are classes) and the bandit's exact expected return (eval/expected_return)
select_data = tabular.select_data
exact_scores = tabular.exact_scores


def train(config: Config, run: Any, state: dict[str, Any] | None) -> None:
    offline_train(sys.modules[__name__], config, run, state)


def evaluate(config: Config, state: dict[str, Any], episodes: int) -> dict[str, Any]:
    return offline_evaluate(sys.modules[__name__], config, state, episodes)
