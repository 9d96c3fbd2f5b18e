"""TD3+BC on tianshou's TD3BC: the official target smoothing (noise scaled by the action bound, the
action clipped to it), bootstrapping through timeouts but not terminals, the actor's rhythm, the
shared state normalisation in every network, the optimisers' names and the configs. Runner-level
checks (normalisation in the checkpoint and when acting, exact resume, determinism, every config end
to end) run beside A2PR's in test_a2pr.py."""

from __future__ import annotations

import math
import types

import gymnasium as gym
import numpy as np
import pytest
import torch
from tianshou.data import Batch, ReplayBuffer
from tianshou.utils.torch_utils import policy_within_training_step

from aligngym.agents.baselines import td3bc
from aligngym.agents.baselines.td3bc import Config, TD3PlusBC
from aligngym.agents.config import load_config
from aligngym.agents.offline import optimizer_names
from aligngym.envs.data.dataset import OfflineDataset


def make(bound: float = 1.0, observations: np.ndarray | None = None, **update: object) -> TD3PlusBC:
    """TD3+BC with --smoke's small networks on 4 observations and 3 actions in [-bound, bound]."""
    torch.manual_seed(0)
    spaces = types.SimpleNamespace(action_space=gym.spaces.Box(-bound, bound, (3,), np.float32),
                                   observation_space=gym.spaces.Box(-np.inf, np.inf, (4,), np.float32))
    config = Config(agent="td3bc", task="Hopper-v5").smoke().model_copy(update=update)
    data = None if observations is None else OfflineDataset(arrays={"observations": observations})
    return td3bc.build(config, spaces, data, torch.device("cpu"))


def buffer_of(n: int, seed: int = 0, terminated: np.ndarray | None = None,
              truncated: np.ndarray | None = None) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    terminated = np.zeros(n, bool) if terminated is None else terminated
    truncated = np.zeros(n, bool) if truncated is None else truncated
    return ReplayBuffer.from_data(obs=rng.normal(2.0, 3.0, (n, 4)).astype(np.float32),
                                  act=rng.uniform(-1, 1, (n, 3)).astype(np.float32),
                                  rew=rng.normal(size=n).astype(np.float32), terminated=terminated,
                                  truncated=truncated, done=terminated | truncated,
                                  obs_next=rng.normal(2.0, 3.0, (n, 4)).astype(np.float32))


def test_target_actions_are_smoothed_with_noise_scaled_by_the_bound_and_clipped_to_it(monkeypatch) -> None:
    """Bound 2: noise N(0, 0.4) clipped to +-1.0 around the target actor's 1.9, the sum clipped to 2
    (tianshou's own TD3 would neither scale the noise nor clip the action)."""
    algo = make(bound=2.0)
    monkeypatch.setattr(algo.actor_old, "forward", lambda obs, state=None, info=None: (torch.full((len(obs), 3), 1.9),
                                                                                        None))
    n = 20_000
    torch.manual_seed(0)
    act = algo._target_q_compute_action(Batch(obs=np.zeros((n, 4), np.float32), info=[None] * n)).act.numpy()
    assert act.max() == 2.0 and act.min() == pytest.approx(0.9)
    assert np.mean(act == 2.0) == pytest.approx(0.401, abs=0.015)  # P(N(0, 0.4) > 0.1)
    assert np.mean(np.isclose(act, 0.9)) == pytest.approx(0.0062, abs=0.003)  # P(N(0, 0.4) < -1.0)


def test_targets_bootstrap_through_timeouts_but_not_terminals() -> None:
    algo = make(policy_noise=0.0)
    buffer = buffer_of(3, terminated=np.array([False, False, True]), truncated=np.array([False, True, False]))
    batch, indices = buffer.sample(0)
    returns = algo._preprocess_batch(batch, buffer, indices).returns.flatten()
    with torch.no_grad():
        obs_next = torch.as_tensor(buffer.obs_next)
        act_next = algo.actor_old(obs_next)[0].clamp(-1, 1)
        next_q = torch.min(algo.critic_old(obs_next, act_next), algo.critic2_old(obs_next, act_next)).flatten()
    expected = torch.as_tensor(buffer.rew) + 0.99 * torch.tensor([1.0, 1.0, 0.0]) * next_q
    torch.testing.assert_close(returns, expected)


def test_the_actor_and_the_targets_learn_on_every_second_update() -> None:
    algo = make(observations=buffer_of(512).obs)
    buffer = buffer_of(512)
    nets = {"actor": algo.policy.actor, "critic": algo.critic, "actor_old": algo.actor_old,
            "critic_old": algo.critic_old}
    with policy_within_training_step(algo.policy):
        for update in range(1, 5):
            before = {k: [p.detach().clone() for p in net.parameters()] for k, net in nets.items()}
            stats = algo.update(buffer, 64)
            moved = {k for k, net in nets.items()
                     if any(not torch.equal(p, b) for p, b in zip(net.parameters(), before[k]))}
            learns = update % 2 == 0  # the official total_it counts from 1
            assert moved == {"critic"} | ({"actor", "actor_old", "critic_old"} if learns else set()), update
            assert math.isnan(stats.loss_actor) != learns and stats.loss_critic > 0
    assert int(algo.updates) == 4 and optimizer_names(algo) == ["actor", "critic", "critic2"]


def test_every_network_reads_the_datasets_normalised_states() -> None:
    observations = buffer_of(1000).obs
    algo = make(observations=observations)
    mean, std = observations.mean(0), observations.std(0) + np.float32(1e-3)
    for net in (algo.policy.actor, algo.critic, algo.critic2):
        np.testing.assert_array_equal(net.normalizer.mean.numpy(), mean)
        np.testing.assert_array_equal(net.normalizer.std.numpy(), std)
    obs, act = observations[:5], np.zeros((5, 3), np.float32)
    with torch.no_grad():
        torch.testing.assert_close(algo.critic(obs, act), algo.critic.module(torch.as_tensor((obs - mean) / std), act))
        torch.testing.assert_close(algo.critic_old(obs, act), algo.critic(obs, act))  # the target copies too
    identity = make(observations=observations, normalize_states=False)
    assert not identity.critic.normalizer.mean.any() and bool((identity.critic.normalizer.std == 1).all())


def test_the_configs_hold_the_official_settings() -> None:
    paper = load_config("td3bc/paper")
    assert paper.model_dump() == Config(agent="td3bc", task="Hopper-v5", dataset={"kind": "medium"}).model_dump()
    assert (paper.steps, paper.batch_size, paper.discount, paper.tau, paper.policy_noise, paper.noise_clip,
            paper.policy_freq, paper.alpha, paper.actor_lr, paper.critic_lr) == \
           (1_000_000, 256, 0.99, 0.005, 0.2, 0.5, 2, 2.5, 3e-4, 3e-4)
    assert (paper.actor_hidden, paper.critic_hidden, paper.normalize_states, paper.normalize_eps) == \
           ((256, 256), (256, 256), True, 1e-3)
    assert (paper.device, paper.eval_every, paper.eval_episodes) == ("auto", 5_000, 10)
    cpu = load_config("td3bc/cpu")
    assert cpu.steps == load_config("a2pr/cpu").steps == 20_000, "equal budgets for the comparison"
    differs = {k for k, v in paper.model_dump().items() if cpu.model_dump()[k] != v}
    assert differs == {"steps", "eval_every", "checkpoint_every"}
