"""Contract tests of the stacked independent DQN learners."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from aligngym.agents.marl.dqn import IndependentDQN, IndependentDQNConfig, QEnsemble, RowAdam
from aligngym.envs.cooperation.rules import GameRules

FULL = GameRules(partner_selection=True, reputation=True, direct_punishment=True,
                 third_party_punishment=True)


def _learner(**overrides) -> IndependentDQN:
    return IndependentDQN(IndependentDQNConfig(**overrides), FULL, feature_size=5, seed=0,
                          device=torch.device("cpu"))


def test_row_adam_matches_torch_adam_on_one_network_and_leaves_others_alone():
    torch.manual_seed(0)
    ens = QEnsemble(3, 4, 8, 2, torch.Generator().manual_seed(1))
    lr = torch.tensor([0.5, 0.01, 0.5])
    opt = RowAdam(list(ens.parameters()), lr)
    ref = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():
        ref[0].weight.copy_(ens.w1[1].T), ref[0].bias.copy_(ens.b1[1, 0])
        ref[2].weight.copy_(ens.w2[1].T), ref[2].bias.copy_(ens.b2[1, 0])
    ref_opt = torch.optim.Adam(ref.parameters(), lr=0.01)
    before = {n: p.detach().clone() for n, p in ens.named_parameters()}
    rows = torch.tensor([1])
    for _ in range(3):
        x, y = torch.randn(1, 6, 4), torch.randn(1, 6, 2)
        for p in ens.parameters():
            p.grad = None
        ((ens(rows, x) - y) ** 2).mean().backward()
        opt.step(rows, [p.grad[rows] for p in ens.parameters()])
        ref_opt.zero_grad()
        ((ref(x[0]) - y[0]) ** 2).mean().backward()
        ref_opt.step()
    torch.testing.assert_close(ens.w1[1].T, ref[0].weight)
    torch.testing.assert_close(ens.b2[1, 0], ref[2].bias)
    for name, p in ens.named_parameters():
        assert torch.equal(p[0], before[name][0]) and torch.equal(p[2], before[name][2]), name
    assert opt.steps.tolist() == [0, 3, 0]


def test_rows_are_agents_per_decision_with_their_learning_rates():
    learner = _learner()
    assert learner.row("select", 0) == 0 and learner.row("play", 2) == 7 and learner.row("punish", 4) == 14
    assert learner.decisions_of_row(7) == "play"
    lr = learner.optim.lr.tolist()
    assert lr[0] == pytest.approx(0.01) and lr[7] == pytest.approx(0.1) and lr[14] == pytest.approx(0.001)


def test_act_respects_each_decisions_action_count():
    learner = _learner()
    learner.epsilon[:] = 1.0  # all random
    rows = np.array([0] * 200 + [7] * 200)
    acts = learner.act(rows, np.random.default_rng(0).normal(size=(400, 5)), explore=True)
    assert set(acts[:200]) == {0, 1, 2, 3}  # select: N - 1 = 4 choices
    assert set(acts[200:]) == {0, 1}  # play: C or D
    greedy = learner.act(np.array([7]), np.zeros((1, 5)), explore=False)
    q = learner.online(torch.tensor([7]), torch.zeros(1, 1, 5))[0, 0, :2]
    assert greedy[0] == int(q.argmax())


def _batch(rows, rew, terminated, n=16, seed=0):
    rng = np.random.default_rng(seed)
    k = len(rows)
    return {"obs": rng.normal(size=(k, n, 5)), "obs_next": rng.normal(size=(k, n, 5)),
            "act": rng.integers(0, 2, size=(k, n)), "rew": np.full((k, n), rew),
            "terminated": np.full((k, n), terminated)}


def test_terminal_targets_are_the_reward_and_q_converges_to_it():
    learner = _learner(target_update=10_000)
    rows = np.array([7])
    x = np.ones((1, 16, 5))
    batch = _batch(rows, rew=2.5, terminated=True)
    batch["obs"] = x
    for _ in range(300):
        learner.update(rows, batch)
    q = learner.online(torch.tensor([7]), torch.ones(1, 1, 5))[0, 0, :2]
    assert q.detach().numpy() == pytest.approx([2.5, 2.5], abs=0.05)


def test_bootstrapped_target_uses_the_target_network_and_gamma():
    learner = _learner(target_update=10_000, huber=False)
    rows = np.array([7])
    batch = _batch(rows, rew=1.0, terminated=False)
    with torch.no_grad():
        nxt = learner.target(torch.tensor(rows), torch.tensor(batch["obs_next"], dtype=torch.float32))
        target = 1.0 + 0.9 * nxt[..., :2].max(dim=2).values
        q = learner.online(torch.tensor(rows), torch.tensor(batch["obs"], dtype=torch.float32))
        q = q.gather(2, torch.tensor(batch["act"])[..., None])[..., 0]
        expected = ((q - target) ** 2).mean().item()
    loss = learner.update(rows, batch)
    assert loss[0] == pytest.approx(expected, rel=1e-5)


def test_target_network_syncs_every_target_update_updates_of_that_network():
    learner = _learner(target_update=3)
    rows = np.array([7, 12])
    batch = _batch(rows, rew=1.0, terminated=False)
    for step in range(1, 4):
        learner.update(rows, batch)
        same = torch.equal(learner.target.w1[7], learner.online.w1[7])
        assert same == (step == 3)
    assert torch.equal(learner.target.w1[0], learner.online.w1[0])  # never updated, never diverged


def test_default_epsilon_decays_per_episode_to_each_decisions_end():
    learner = _learner(epsilon_decay_episodes=10)
    learner.set_episode(0)
    assert learner.mean_epsilon("play") == pytest.approx(0.8889)
    learner.set_episode(5)
    assert learner.mean_epsilon("play") == pytest.approx((0.8889 + 0.01) / 2)
    learner.set_episode(50)
    assert learner.mean_epsilon("select") == pytest.approx(0.0001)
    assert learner.mean_epsilon("punish") == pytest.approx(0.01)


def test_reference_epsilon_decay_hits_the_floor_after_a_few_updates():
    learner = _learner(reference_epsilon_decay=True, punish={"epsilon_end": 0.2})
    play, punish = np.array([7]), np.array([12])
    for _ in range(3):
        learner.update(play, _batch(play, 0.0, False))
    assert learner.epsilon[7] > 0.01  # 3 x 0.30007 of the range is not yet all of it
    learner.update(play, _batch(play, 0.0, False))
    assert learner.epsilon[7] == pytest.approx(0.01)
    for _ in range(2):
        learner.update(punish, _batch(punish, 0.0, False))
    assert learner.epsilon[12] == pytest.approx(0.2)
    assert learner.epsilon[0] == pytest.approx(0.8889)  # select never updated


def test_partial_decision_sections_keep_the_other_defaults():
    cfg = IndependentDQNConfig(play={"lr": 0.001})
    assert cfg.play.lr == 0.001 and cfg.play.buffer_size == 131072 and cfg.play.epsilon_end == 0.01
    assert cfg.punish.lr == 0.001 and cfg.punish.buffer_size == 524288


def test_state_dict_round_trip():
    a, b = _learner(), _learner()
    rows = np.array([3, 7])
    a.update(rows, _batch(rows, 1.0, False))
    for _ in range(3):  # draws from a's exploration generator: b must take its state over too
        a.act(rows, np.zeros((2, 5)), True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 4, 5)
    torch.testing.assert_close(a.online(torch.tensor(rows), x), b.online(torch.tensor(rows), x))
    a.update(rows, _batch(rows, 1.0, False, seed=1))
    b.update(rows, _batch(rows, 1.0, False, seed=1))
    torch.testing.assert_close(a.online.w2, b.online.w2)
    explored = [(a.act(rows, np.zeros((2, 5)), True).tolist(), b.act(rows, np.zeros((2, 5)), True).tolist())
                for _ in range(20)]
    assert all(x == y for x, y in explored)


@pytest.mark.parametrize("huber", [True, False])
def test_hand_gradients_are_autograds(monkeypatch, huber):
    """The update's gradients, written by hand for speed, are what autograd finds for each row's mean loss."""
    learner = _learner(huber=huber)
    rows = np.array([2, 7, 12])
    batch = _batch(rows, rew=1.0, terminated=False)
    batch["rew"] = np.random.default_rng(1).normal(scale=3.0, size=batch["rew"].shape)  # both Huber pieces
    net = type(learner.online)(learner.n_rows, 5, learner.config.hidden_size, learner.out_dim)
    net.load_state_dict(learner.online.state_dict())
    params = list(net.parameters())
    r = torch.tensor(rows)
    obs = torch.tensor(batch["obs"], dtype=torch.float32)
    with torch.no_grad():
        nxt = learner.target(r, torch.tensor(batch["obs_next"], dtype=torch.float32))
        nxt = nxt.masked_fill(~learner.valid_actions[r][:, None, :], -torch.inf)
        target = torch.tensor(batch["rew"], dtype=torch.float32) + 0.9 * nxt.amax(dim=2)
    q = torch.relu(torch.baddbmm(net.b1[r], obs, net.w1[r]))
    q = torch.baddbmm(net.b2[r], q, net.w2[r]).gather(2, torch.tensor(batch["act"])[..., None])[..., 0]
    loss = torch.nn.functional.smooth_l1_loss if huber else torch.nn.functional.mse_loss
    loss(q, target, reduction="none").mean(dim=1).sum().backward()
    seen = []
    monkeypatch.setattr(type(learner.optim), "step", lambda self, rows, grads: seen.append(grads))
    learner.update(rows, batch)
    (grads,) = seen
    for got, p in zip(grads, params):
        torch.testing.assert_close(got, p.grad[r], rtol=1e-4, atol=1e-6)
        assert p.grad[r].abs().max() > 1e-4  # a gradient that is really there
