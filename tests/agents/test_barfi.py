"""BARFI (agents/barfi.py) and its REINFORCE baselines (agents/baselines/reinforce.py)."""

from __future__ import annotations

import os
import signal

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.func import grad, hessian

import aligngym.envs  # noqa: F401  (registers the shaping tasks)
from aligngym.agents.barfi import (BarfiLearner, Config, EpisodeBuffer, Features, LinearPolicy, discounted_returns,
                                   neumann_inverse, reinforce_objective)
from aligngym.agents.cli import main
from aligngym.agents.config import ConfigError, config_names, load_config
from aligngym.agents.evaluate import evaluate
from aligngym.agents.train import load_checkpoint, read_curves, resume, train

GRID = "aligngym/ShapingGridWorld-v0"


# past BARFI's warm-up within a few episodes (what --smoke sets, but for the length)
SHORT = ("first_mul=1", "inner_mul=1", "hess_mul=2", "checkpoint_every=3", "eval_episodes=1")


def _config(name: str, run_root, *overrides: str, smoke: bool = True):
    return load_config(name, [f"run_root={run_root}", "show_progress=false", "device=cpu", *overrides], smoke=smoke)


# ---------------------------------------------------------------------- the mathematics
@pytest.mark.parametrize("horizon", [1, 4, 7, 50])
def test_discounted_returns_match_the_backward_recursion_and_differentiate_in_gamma(horizon):
    # horizons that fill their blocks of about sqrt(H) steps exactly (4) and that do not (7, 50)
    rewards = torch.randn(2, horizon, generator=torch.Generator().manual_seed(horizon), dtype=torch.float64)
    gamma = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
    got = discounted_returns(rewards, gamma)
    expected = torch.zeros_like(rewards)
    running = torch.zeros(2, dtype=torch.float64)
    for t in range(horizon - 1, -1, -1):
        running = rewards[:, t] + 0.9 * running
        expected[:, t] = running
    assert torch.allclose(got, expected)
    (d_gamma,) = torch.autograd.grad(got.sum(), gamma)
    eps = 1e-6
    fd = (discounted_returns(rewards, 0.9 + eps).sum() - discounted_returns(rewards, 0.9 - eps).sum()) / (2 * eps)
    assert float(d_gamma) == pytest.approx(float(fd), rel=1e-6, abs=1e-9)


def test_the_neumann_series_approaches_the_exact_inverse_of_a_small_quadratic():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(6, 6, generator=generator, dtype=torch.float64)
    hessian_ = -(a @ a.T + 0.5 * torch.eye(6, dtype=torch.float64))  # a maximum's Hessian: negative definite
    v = {"x": torch.randn(6, generator=generator, dtype=torch.float64)}
    exact = torch.linalg.solve(hessian_, v["x"])
    alpha = 1.0 / float(torch.linalg.eigvalsh(-hessian_).max())

    def hvp(u):
        return {"x": hessian_ @ u["x"]}

    errors = [float(torch.linalg.norm(neumann_inverse(hvp, v, steps, alpha)["x"] - exact) / torch.linalg.norm(exact))
              for steps in (0, 5, 50, 3000)]
    assert errors[-1] < 1e-6
    assert errors[0] > errors[1] > errors[2] > errors[3]  # each term brings it closer


def _tiny_learner(tmp_path, **overrides):
    """A BARFI learner on the gridworld with 4 Fourier features, in float64."""
    config = _config("barfi/grid_world", tmp_path, "fourier_order=1", *[f"{k}={v}" for k, v in overrides.items()],
                     smoke=False)
    env = gym.make(GRID, aux="bad")
    learner = BarfiLearner(config, env, torch.device("cpu"))
    env.close()
    for module in (learner.policy, learner.reward, learner.features):
        module.double()
    return learner


def _episodes(generator, n, horizon=4, features=4, actions=4):
    return {"feats": torch.rand(n, horizon, features, generator=generator, dtype=torch.float64),
            "act": torch.randint(0, actions, (n, horizon), generator=generator),
            "rew": torch.rand(n, horizon, generator=generator, dtype=torch.float64) + 0.5,
            "aux": torch.rand(n, horizon, generator=generator, dtype=torch.float64),
            "mask": torch.ones(n, horizon, dtype=torch.float64)}


def test_the_hypergradient_matches_finite_differences_through_the_inner_optimum(tmp_path):
    """dJ/dphi by the implicit function theorem (the learner's hypergradient with a long Neumann series)
    against central differences of J(theta*(phi)), theta* found by Newton's method."""
    learner = _tiny_learner(tmp_path, neumann_steps=700, entropy=1.0)
    generator = torch.Generator().manual_seed(1)
    # 40 episodes and a strong entropy bonus: a well-conditioned inner maximum (its Hessian's nonzero
    # eigenvalues within a factor of about 60), so that 700 Neumann terms converge (to about 1e-5)
    inner_batch, outer_batch = _episodes(generator, 40), _episodes(generator, 3)
    policy, reward = learner.policy, learner.reward
    names = list(policy.params())
    shapes = {n: p.shape for n, p in policy.params().items()}

    def unflat(x):
        out, i = {}, 0
        for n in names:
            size = int(np.prod(shapes[n]))
            out[n] = x[i:i + size].view(shapes[n])
            i += size
        return out

    def inner(x, phi):
        returns = discounted_returns(reward.reward(phi, inner_batch), reward.discount(phi))
        return reinforce_objective(policy, unflat(x), inner_batch, returns, 1.0)

    def outer(x):
        returns = discounted_returns(outer_batch["rew"], 0.99)
        return reinforce_objective(policy, unflat(x), outer_batch, returns, 0.0)

    def optimum(phi, start=None, iterations=8):
        x = torch.zeros(sum(int(np.prod(s)) for s in shapes.values()), dtype=torch.float64) if start is None else start
        for _ in range(iterations):  # Newton (the softmax's shift of all logits is a flat direction: pinv)
            g, h = grad(inner)(x, phi), hessian(inner)(x, phi)
            x = x - torch.linalg.pinv(h, hermitian=True) @ g
        assert float(torch.linalg.norm(grad(inner)(x, phi))) < 1e-9
        return x

    phi = learner.phi()
    x = optimum(phi, iterations=40)
    with torch.no_grad():
        for n, p in policy.params().items():
            p.copy_(unflat(x)[n])
    h = hessian(inner)(x, phi)
    largest = float(torch.linalg.eigvalsh(-h).max())
    learner.config = learner.config.model_copy(update={"neumann_alpha": 1.0 / largest})
    v = unflat(grad(outer)(x))
    direction = learner.hypergradient(inner_batch, v)  # descent direction: -dJ/dphi
    eps = 1e-5
    for name, indices in (("phi.bias", [(0,), (2,)]), ("phi.weight", [(0, 1), (2, 3)]), ("gamma_param", [()])):
        for index in indices:
            up, down = dict(phi), dict(phi)
            up[name], down[name] = phi[name].clone(), phi[name].clone()
            up[name][index] += eps
            down[name][index] -= eps
            fd = (outer(optimum(up, x)) - outer(optimum(down, x))) / (2 * eps)
            assert float(-direction[name][index]) == pytest.approx(float(fd), rel=2e-3, abs=1e-7), (name, index)


def test_first_order_hypergradient_aligns_the_two_policy_gradients(tmp_path):
    """H^-1 = -I: the direction is -grad_phi <grad_theta J_phi, grad_theta J>."""
    learner = _tiny_learner(tmp_path, hypergradient="first_order")
    generator = torch.Generator().manual_seed(2)
    batch = _episodes(generator, 4)
    v = {n: torch.randn(p.shape, generator=generator, dtype=torch.float64) for n, p in learner.policy.params().items()}
    theta = {n: p.detach() for n, p in learner.policy.params().items()}

    def alignment(phi):
        returns = discounted_returns(learner.reward.reward(phi, batch), learner.reward.discount(phi))
        g = grad(lambda t: reinforce_objective(learner.policy, t, batch, returns, learner.config.entropy))(theta)
        return sum((g[n] * v[n]).sum() for n in g)

    expected = grad(alignment)(learner.phi())
    got = learner.hypergradient(batch, v)
    for name in expected:
        assert torch.allclose(got[name], -expected[name]), name


def test_the_learned_reward_blends_as_configured(tmp_path):
    learner = _tiny_learner(tmp_path)
    batch = _episodes(torch.Generator().manual_seed(3), 2)
    phi = learner.phi()
    w = batch["feats"] @ phi["phi.weight"].T + phi["phi.bias"]
    assert torch.allclose(learner.reward.reward(phi, batch), w[..., 0] + batch["rew"] + w[..., 2] * batch["aux"])
    assert float(learner.reward.discount(phi)) == pytest.approx(0.990, abs=1e-3)
    learned = _tiny_learner(tmp_path, learn_primary_weight=True)
    phi = learned.phi()
    w = batch["feats"] @ phi["phi.weight"].T + phi["phi.bias"]
    assert torch.allclose(learned.reward.reward(phi, batch), w[..., 0] + w[..., 1] * batch["rew"] + w[..., 2] * batch["aux"])


def test_the_outer_step_follows_the_hypergradient_and_the_penalties(tmp_path, monkeypatch):
    """With no hypergradient the penalties alone move phi: gamma_l2 pulls the discount down and
    reward_l2 the weights' norms (the official L2_reg, unsquared) towards 0; with one, both optimisers
    descend it."""
    learner = _tiny_learner(tmp_path, reward_l2=1.0, gamma_l2=4.0)
    generator = torch.Generator().manual_seed(4)
    batch = _episodes(generator, 4)
    learner.batch = lambda slots: batch  # every draw: these episodes
    learner.buffer.size = 10
    before = {n: p.detach().clone() for n, p in learner.reward.named_parameters()}
    zero = {n: torch.zeros_like(p) for n, p in learner.reward.named_parameters()}
    monkeypatch.setattr(learner, "hypergradient", lambda batch, v: zero)
    learner.outer_step()
    assert float(learner.reward.gamma_param.detach()) < float(before["gamma_param"])
    for name in ("phi.weight", "phi.bias"):
        assert float(learner.reward.get_parameter(name).detach().norm()) < float(before[name].norm()), name
    learner = _tiny_learner(tmp_path, reward_l2=0.0, gamma_l2=0.0)
    learner.batch, learner.buffer.size = (lambda slots: batch), 10
    up = {n: torch.ones_like(p) for n, p in learner.reward.named_parameters()}
    monkeypatch.setattr(learner, "hypergradient", lambda batch, v: up)
    before = {n: p.detach().clone() for n, p in learner.reward.named_parameters()}
    learner.outer_step()
    for name, param in learner.reward.named_parameters():  # a positive direction: every entry descends
        assert torch.all(param.detach() < before[name]), name


@pytest.mark.parametrize("at_end", [True, False])
def test_the_schedule_of_updates(tmp_path, monkeypatch, at_end):
    """Warm-up (first_mul + inner_mul episodes): one naive step per update; the first update after it:
    the naive step and delta x inner_mul + first_mul inner steps (none with
    ``inner_steps_at_warmup_end: false``, the official MountainCar code's), no outer step; then an
    outer step and delta x inner_mul inner steps per update."""
    learner = _tiny_learner(tmp_path, first_mul=4, inner_mul=2, inner_steps_at_warmup_end=at_end)
    generator = torch.Generator().manual_seed(5)
    learner.batch = lambda slots: _episodes(generator, max(len(slots), 1))
    learner.buffer.size = 12
    calls = {"policy": 0, "outer": 0}
    step, outer = learner.policy_step, learner.outer_step

    def count_policy(*args):
        calls["policy"] += 1
        return step(*args)

    def count_outer():
        calls["outer"] += 1
        return outer()

    monkeypatch.setattr(learner, "policy_step", count_policy)
    monkeypatch.setattr(learner, "outer_step", count_outer)
    seen = []
    for episodes in (3, 6, 9, 12, 15):
        learner.episodes = episodes
        calls.update(policy=0, outer=0)
        learner.update()
        seen.append((calls["policy"], calls["outer"]))
    assert seen == [(1, 0), (1, 0), (1 + (3 * 2 + 4 if at_end else 0), 0), (3 * 2, 1), (3 * 2, 1)]


@pytest.mark.parametrize("reward", ["primary", "naive", "potential"])
def test_the_baselines_returns(tmp_path, monkeypatch, reward):
    from aligngym.agents.baselines.reinforce import ReinforceLearner

    config = _config("reinforce/grid_world", tmp_path, f"reward={reward}")
    env = gym.make(GRID, aux="bad")
    learner = ReinforceLearner(config, env, torch.device("cpu"))
    env.close()
    batch = {"feats": torch.rand(3, 4, 16), "act": torch.zeros(3, 4, dtype=torch.long),
             "rew": torch.rand(3, 4), "aux": torch.rand(3, 4), "mask": torch.ones(3, 4)}
    learner.batch = lambda slots: batch
    seen = {}
    monkeypatch.setattr(learner, "policy_step", lambda b, returns: seen.setdefault("returns", returns) is None or 0.0)
    learner.update()
    primary = discounted_returns(batch["rew"], 0.99)
    expected = {"primary": primary, "naive": discounted_returns(batch["rew"] + batch["aux"], 0.99),
                "potential": primary - batch["aux"]}[reward]
    assert torch.allclose(seen["returns"], expected)


def test_the_gaussian_policy_log_probability_and_entropy():
    """The closed forms against torch.distributions."""
    env = gym.make("aligngym/ShapingHalfCheetah-v0")
    config = Config(task="aligngym/ShapingHalfCheetah-v0", features="random_relu", policy_std=0.3)
    features = Features(config, env, seed=0)
    policy = LinearPolicy(config, env, features)
    feats = features(torch.randn(5, 17))
    act = torch.randn(5, 6)
    log_prob, entropy = policy.log_prob_entropy(policy.params(), feats, act)
    mean = torch.sigmoid(policy.linear(feats)) * 2.0 - 1.0  # HalfCheetah's actions: [-1, 1]
    normal = torch.distributions.Independent(torch.distributions.Normal(mean, 0.3), 1)
    assert torch.allclose(log_prob, normal.log_prob(act), atol=1e-5)
    assert torch.allclose(entropy, normal.entropy(), atol=1e-5)
    env.close()


# ---------------------------------------------------------------------- the parts
def test_features():
    env = gym.make(GRID)
    fourier = Features(Config(fourier_order=3), env, seed=0)
    obs = torch.tensor([[0.0, 0.0], [0.5, 1.0]])
    out = fourier(obs)
    assert out.shape == (2, 16)
    assert torch.allclose(out[0], torch.ones(16))  # cos(0)
    assert float(out[1, 1]) == pytest.approx(np.cos(np.pi * 1.0), abs=1e-6)  # coefficients (0, 1): cos(pi y)
    tiles = Features(Config(features="tiles", tiles=4, tilings=5), env, seed=0)
    coded = tiles(torch.rand(7, 2))
    assert coded.shape == (7, 5 * 25)
    assert torch.allclose(coded.sum(-1), torch.ones(7))  # one active tile per tiling, scaled by 1 / tilings
    assert torch.equal(tiles(torch.tensor([[0.3, 0.3]])), tiles(torch.tensor([[0.31, 0.31]])))
    assert not torch.equal(tiles(torch.tensor([[0.3, 0.3]])), tiles(torch.tensor([[0.9, 0.9]])))
    env.close()


def test_the_episode_buffer_keeps_the_last_episodes_and_samples_only_older_ones():
    from tianshou.data import Batch

    buffer = EpisodeBuffer(4, 5, (2,), (), discrete=True)
    for k in range(6):
        n = k % 3 + 1
        buffer.add(Batch(obs=np.full((n, 2), k, np.float32), act=np.zeros(n, np.int64), rew=np.full(n, k, np.float32),
                         info=Batch(aux_reward=np.zeros(n, np.float32))))
    assert buffer.size == 4
    assert [int(buffer.rew[s, 0]) for s in buffer.last(3)] == [5, 4, 3]
    assert buffer.mask[buffer.last(1)[0]].sum() == 3  # episode 5 has 3 steps; the padding is masked
    rng = np.random.RandomState(0)
    older = {int(buffer.rew[s, 0]) for s in buffer.sample(200, rng, skip_last=3)}
    assert older == {2}
    assert {int(buffer.rew[s, 0]) for s in buffer.sample(200, rng)} == {2, 3, 4, 5}


# ---------------------------------------------------------------------- runs
@pytest.mark.parametrize("name", [n for n in config_names() if n.split("/")[0] in ("barfi", "reinforce")])
def test_every_bundled_config_runs_end_to_end(name, tmp_path):
    config = _config(name, tmp_path, "episodes=9" if "mountain_car" in name or "cheetah" in name else "episodes=12")
    run_dir = train(config)
    _, state = load_checkpoint(run_dir / "checkpoint.pt")
    assert state["step"] == config.episodes
    curves = read_curves(run_dir, ("train/primary_return", "eval/return", "barfi/gamma"))
    assert len(curves["train/primary_return"][0]) == config.episodes // config.delta
    assert len(curves["eval/return"][0]) == 1
    assert (run_dir / "curves.png").is_file()
    if config.agent == "barfi":
        assert len(curves["barfi/gamma"][0]) > 0


def test_same_seed_same_run_different_seed_different(tmp_path):
    runs = [train(_config("barfi/grid_world", tmp_path / name, f"seed={seed}", "episodes=12"))
            for name, seed in (("a", 1), ("b", 1), ("c", 2))]
    states = [load_checkpoint(r / "checkpoint.pt")[1] for r in runs]
    for key in ("policy", "reward"):
        for name, tensor in states[0][key].items():
            assert torch.equal(tensor, states[1][key][name]), (key, name)
    assert not torch.equal(states[0]["policy"]["weight"], states[2]["policy"]["weight"])


def test_a_resumed_run_continues_exactly(tmp_path):
    """12 episodes, then resumed to 21, against 21 in one go: the same weights, optimiser states,
    buffer and curves (the outer steps start within the first 12)."""
    reference = train(_config("barfi/grid_world", tmp_path / "ref", *SHORT, "episodes=21", smoke=False))
    cut = train(_config("barfi/grid_world", tmp_path / "cut", *SHORT, "episodes=12", smoke=False))
    resume(cut, overrides=["episodes=21"])
    (_, ref), (_, got) = load_checkpoint(reference / "checkpoint.pt"), load_checkpoint(cut / "checkpoint.pt")
    assert got["step"] == ref["step"] == 21
    for key in ("policy", "reward"):
        for name, tensor in ref[key].items():
            assert torch.equal(tensor, got[key][name]), (key, name)
    assert torch.equal(ref["buffer"]["obs"], got["buffer"]["obs"])
    assert ref["reward_optim"]["state"][0]["square_avg"].equal(got["reward_optim"]["state"][0]["square_avg"])
    tags = ("train/primary_return", "barfi/phi_aux", "barfi/gamma")
    a, b = read_curves(reference, tags), read_curves(cut, tags)
    for tag in tags:
        assert np.array_equal(a[tag][0], b[tag][0]) and np.array_equal(a[tag][1], b[tag][1]), tag


def test_a_run_extended_past_a_short_last_group_keeps_the_update_schedule(tmp_path):
    """10 episodes (groups 0-2, 3-5, 6-8 and a short one, 9), extended to 15: the extension completes
    the group 9-11 and updates after it, as a run of 15 does (the same reset seeds; the short group's
    episodes draw their actions apart, so the draws differ from the uninterrupted run's)."""
    cut = train(_config("barfi/grid_world", tmp_path / "cut", *SHORT, "episodes=10", smoke=False))
    resume(cut, overrides=["episodes=15"])
    played, _ = read_curves(cut, ("train/primary_return",))["train/primary_return"]
    assert played.tolist() == [0, 3, 6, 9, 10, 12]  # each logged at its first episode
    updated, _ = read_curves(cut, ("barfi/inner_objective",))["barfi/inner_objective"]
    assert updated.tolist() == [0, 3, 6, 10, 12]  # after episodes 3, 6, 9, 12 and 15, as a run of 15


def test_sigterm_stops_at_a_checkpoint_that_resumes_exactly(tmp_path, monkeypatch, capsys):
    import aligngym.agents.barfi as barfi

    reference = train(_config("barfi/grid_world", tmp_path / "ref", *SHORT, "episodes=18", "checkpoint_every=100",
                              smoke=False))
    real, calls = barfi.play_episodes, {"n": 0}

    def play(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # while the 4th group of episodes plays
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(barfi, "play_episodes", play)
    code = main(["train", "barfi/grid_world", *(f"--set={o}" for o in (
        f"run_root={tmp_path / 'cut'}", "show_progress=false", "device=cpu", *SHORT, "episodes=18",
        "checkpoint_every=100"))])  # no regular checkpoint before the end: the signal's is the one
    monkeypatch.undo()
    (run_dir,) = (tmp_path / "cut").iterdir()
    assert code == 143 and f"aligngym train --resume {run_dir}" in capsys.readouterr().err
    assert load_checkpoint(run_dir / "checkpoint.pt")[1]["step"] == 12  # the interrupted group kept
    resume(run_dir)
    (_, ref), (_, got) = load_checkpoint(reference / "checkpoint.pt"), load_checkpoint(run_dir / "checkpoint.pt")
    for key in ("policy", "reward"):
        for name, tensor in ref[key].items():
            assert torch.equal(tensor, got[key][name]), (key, name)


def test_eval_rebuilds_the_policy_from_the_run_folder(tmp_path):
    run_dir = train(_config("reinforce/grid_world", tmp_path, "episodes=6"))
    result = evaluate(run_dir, episodes=3)
    assert len(result["episode_returns"]) == 3
    assert {"eval/return", "eval/aux_return", "eval/length"} <= set(result)


def test_a_task_without_a_heuristic_is_refused_before_the_run_starts(tmp_path):
    with pytest.raises(ConfigError, match="aux_reward"):
        train(_config("barfi/grid_world", tmp_path).model_copy(update={"task": "CartPole-v1", "task_options": {}}))
    with pytest.raises(ConfigError, match="task_options"):
        train(_config("barfi/grid_world", tmp_path, "task_options.aux=awful"))
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_barfi_recovers_from_the_misleading_heuristic_where_the_naive_blend_fails(tmp_path):
    """The gridworld with the centre bonus: the naive blend learns to loiter (its primary return stays
    near -5, 50 steps of -0.1), BARFI learns to reach the goal (the paper's Figure 3, one seed)."""
    results = {}
    for name in ("barfi/grid_world", "reinforce/grid_world"):
        run_dir = train(_config(name, tmp_path / name.split("/")[0], smoke=False))
        steps, values = read_curves(run_dir, ("train/primary_return",))["train/primary_return"]
        results[name] = float(np.mean(values[-100:]))  # the last 300 episodes
    assert results["reinforce/grid_world"] < 20
    assert results["barfi/grid_world"] > results["reinforce/grid_world"] + 30
