"""What the tabular agents share: DoC's tabular form (:mod:`aligngym.agents.doc`) and the tabular
Decision Transformer (:mod:`aligngym.agents.baselines.dt`), both the official ``run_tabular.py`` of
DoC (google-research ``dichotomy_of_control``) on the shared offline runner.

They learn one-step tasks (the Bernoulli bandit, ``aligngym/BernoulliBandit-v0``), where an episode's
reward is its whole return, from tables indexed by:

- the **state**: the observation's index of its largest entry (a one-hot observation's cell; the
  bandit's constant ``[0.0]`` is state 0 of 1), with as many states as the observation has entries;
- the **action**: the ``Discrete`` action's index;
- the **return class**: the episode's return, one of ``0 .. num_rtg - 1`` (the bandit's 0 or 1); the
  official code's ``num_rtg`` return classes. :func:`select_data` (the runner's hook, run before a
  run folder exists) refuses data whose returns are not such classes.

Their policies (:class:`TabularPolicy`) act through tianshou's ``Collector`` like every agent's: each
maps a batch of observations to action indices drawn from the table's action probabilities, as the
official ``sample`` does (its evaluation draws ``a ~ softmax(logits)``). Because a sampled return over
a few episodes is noisy, :func:`exact_scores` adds the policy's exact expected return on the bandit,
``eval/expected_return = sum_a pi(a) P(reward 1 | a)``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from tianshou.algorithm.algorithm_base import Algorithm, Policy
from tianshou.data import Batch, ReplayBuffer

from aligngym.agents.config import ConfigError
from aligngym.agents.offline import OfflineConfig, make_env
from aligngym.envs.data.dataset import OfflineDataset


class TabularConfig(OfflineConfig):
    """The checks the tabular agents' configs share (each agent's ``Config`` holds its fields)."""

    hparam_metrics: ClassVar[tuple[str, ...]] = ("eval/return", "eval/expected_return")
    num_rtg: int  # return classes: a return is one of 0 .. num_rtg - 1

    def check_env(self, env: gym.Env) -> None:
        """The tabular form learns one-step tasks with discrete actions and vector observations."""
        if not isinstance(env.action_space, gym.spaces.Discrete):
            raise ConfigError(f"{self.agent}'s tabular form needs discrete actions; {self.task} has {env.action_space}")
        space = env.observation_space
        if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
            raise ConfigError(f"{self.agent}'s tabular form reads a state from a vector observation (one-hot or "
                              f"the bandit's single state); {self.task} has {space}")
        steps = env.spec.max_episode_steps if env.spec is not None else None
        if steps != 1:
            raise ConfigError(f"{self.agent}'s tabular form learns one-step tasks, where a reward is the whole "
                              f"return (aligngym/BernoulliBandit-v0); {self.task} has episodes of up to {steps} "
                              f"steps (the sequence form learns those: form: sequence, or auto)")


def select_data(config: TabularConfig, dataset: OfflineDataset) -> OfflineDataset:
    """The runner's hook before a run starts: the whole dataset, refused (ConfigError) unless each
    episode is one step and its return one of the classes ``0 .. num_rtg - 1``."""
    lengths = dataset.episode_lengths()
    if np.any(lengths != 1):
        raise ConfigError(f"{config.agent}'s tabular form learns one-step episodes; the dataset has episodes of "
                          f"up to {int(lengths.max())} steps")
    returns = dataset.arrays["rewards"].astype(np.float64)
    classes = np.rint(returns)
    if np.any(classes != returns) or np.any((classes < 0) | (classes >= config.num_rtg)):
        found = ", ".join(f"{v:g}" for v in np.unique(returns)[:6])
        raise ConfigError(f"num_rtg: {config.agent}'s tabular form reads each return as a class 0 .. "
                          f"{config.num_rtg - 1}; the dataset holds the returns {found}")
    return dataset


def state_index(obs: Any, device: torch.device) -> torch.Tensor:
    """Each observation's state: the index of its largest entry (a one-hot cell; the bandit's 0)."""
    return torch.as_tensor(np.asarray(obs, dtype=np.float32), device=device).argmax(-1)


def transition_tables(buffer: ReplayBuffer, device: torch.device) -> dict[str, torch.Tensor]:
    """The buffer's transitions as index tensors on ``device``, in buffer order: ``states``,
    ``actions`` and ``returns`` (the return classes; one-step episodes: the reward)."""
    data = buffer[np.arange(len(buffer))]
    return {"states": state_index(data.obs, device),
            "actions": torch.as_tensor(np.asarray(data.act, dtype=np.int64), device=device).view(-1),
            "returns": torch.as_tensor(np.rint(np.asarray(data.rew, dtype=np.float64)).astype(np.int64),
                                       device=device).view(-1)}


def truncated_normal(*shape: int, std: float) -> torch.nn.Parameter:
    """A table initialised as TensorFlow's ``truncated_normal(stddev=std)`` (redrawn beyond 2 std), the
    official tables' initialiser."""
    return torch.nn.Parameter(torch.nn.init.trunc_normal_(torch.empty(*shape), std=std, a=-2 * std, b=2 * std))


class TabularPolicy(Policy):
    """Acts from a table: the observation's state (:func:`state_index`), an action index drawn from
    :meth:`action_probs` (the official evaluation samples too)."""

    def __init__(self, action_space: gym.spaces.Discrete, observation_space: gym.Space) -> None:
        super().__init__(action_space=action_space, observation_space=observation_space, action_bound_method=None)

    def action_probs(self, states: torch.Tensor) -> torch.Tensor:
        """``[B, A]``: the probability of each action in each of the ``states``."""
        raise NotImplementedError

    def forward(self, batch: Batch, state: Any = None, **kwargs: Any) -> Batch:
        device = next(self.parameters()).device
        probs = self.action_probs(state_index(batch.obs, device))
        act = torch.multinomial(probs, 1).squeeze(1)
        return Batch(act=act.cpu().numpy(), state=state)


def exact_scores(config: TabularConfig, algorithm: Algorithm) -> dict[str, float]:
    """The runner's hook: on the Bernoulli bandit (an env with ``arm_probs``), the policy's exact
    expected return ``eval/expected_return = sum_a pi(a | s) P(reward 1 | a)`` of its single state;
    nothing elsewhere."""
    env = make_env(config)
    try:
        arm_probs = getattr(env.unwrapped, "arm_probs", None)
    finally:
        env.close()
    if arm_probs is None:
        return {}
    device = next(algorithm.parameters()).device
    probs = algorithm.policy.action_probs(torch.zeros(1, dtype=torch.long, device=device))[0].detach()
    return {"eval/expected_return": float(probs.double().cpu().numpy() @ np.asarray(arm_probs, dtype=np.float64))}
