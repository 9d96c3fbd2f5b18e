"""FISOR's pieces against hand-computed values, its acting rule, save/load, determinism and the
runner (train, resume, eval) on a tiny generated dataset."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import aligngym.envs  # noqa: F401
from aligngym.agents.cli import main
from aligngym.agents.config import ConfigError, load_config
from aligngym.agents.evaluate import evaluate
from aligngym.agents.fisor import (FISOR, Config, EnsembleMLP, expectile_loss, feasibility_weights,
                                   reachability_target, reward_scale, reward_target, vp_beta_schedule)
from aligngym.agents.train import load_checkpoint, resume, train
from aligngym.envs.data.generate import generate

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "fisor"


def small_config(**update: object) -> Config:
    base = Config(agent="fisor", task="aligngym/BallCircle-v0").smoke()
    return base.model_copy(update=update)


def test_vp_schedule_matches_the_official_values() -> None:
    betas = vp_beta_schedule(5, 0.1, 10.0)
    np.testing.assert_allclose(betas, [0.1959, 0.4588, 0.6358, 0.7549, 0.8350], atol=1e-4)
    np.testing.assert_allclose(torch.cumprod(1 - betas, 0), [0.8041, 0.4352, 0.1585, 0.0389, 0.0064], atol=1e-4)


def test_value_targets_on_hand_made_numbers() -> None:
    h = torch.tensor([25.0, -1.0, -1.0, -1.0])
    next_v = torch.tensor([-3.0, 2.0, -3.0, 7.0])
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0])
    # (1 - g) h + g max(h, V'): 0.01*25 + 0.99*25; 0.01*-1 + 0.99*2; 0.01*-1 + 0.99*-1; terminal: h
    np.testing.assert_allclose(reachability_target(h, next_v, mask, 0.99), [25.0, 1.97, -1.0, -1.0], atol=1e-6)
    np.testing.assert_allclose(reward_target(torch.tensor([1.0, 2.0]), torch.tensor([10.0, 10.0]),
                                             torch.tensor([1.0, 0.0]), 0.9), [10.0, 2.0])
    diff = torch.tensor([2.0, -2.0])
    assert expectile_loss(diff, 0.9).item() == pytest.approx((0.9 * 4 + 0.1 * 4) / 2)
    # V_h uses 1 - 0.9: negative differences (V_h above Q_h) cost 0.9, positive 0.1
    assert expectile_loss(torch.tensor([-2.0]), 0.1).item() == pytest.approx(0.9 * 4)
    assert expectile_loss(torch.tensor([2.0]), 0.1).item() == pytest.approx(0.1 * 4)


def test_weights_in_each_region() -> None:
    cfg = small_config()
    reward_adv = torch.tensor([0.5, 10.0, 0.5, 0.0, 0.0])
    cost_q = torch.tensor([-0.5, -0.5, 0.5, 0.5, -100.0])
    cost_v = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0])
    w = feasibility_weights(reward_adv, cost_q, cost_v, cfg)
    expected = [np.exp(3 * 0.5),  # feasible state, feasible action: exp(alpha_r A_r)
                100.0,            # ... clipped at 100
                0.0,              # feasible state, infeasible action: dropped
                np.exp(5 * 0.5),  # infeasible state: exp(alpha_c (V_h - Q_h))
                150.0]            # ... clipped at 150
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-5)


def test_ensemble_members_are_independent_mlps() -> None:
    torch.manual_seed(0)
    net = EnsembleMLP(2, 3, (8,))
    x = torch.randn(5, 3)
    out = net(x)
    assert out.shape == (2, 5)
    for k in range(2):
        hidden = torch.relu(x @ net.weights[0][k] + net.biases[0][k])
        np.testing.assert_allclose(out[k].detach(), (hidden @ net.weights[1][k] + net.biases[1][k]).squeeze(-1).detach(),
                                   rtol=1e-5, atol=1e-6)


def make_fisor(**update: object) -> FISOR:
    torch.manual_seed(0)
    env = gym.make("aligngym/BallCircle-v0")
    return FISOR(small_config(**update), 8, env.action_space, 1.0, torch.device("cpu"))


def test_acting_samples_in_bounds_and_picks_the_lowest_cost_value(monkeypatch: pytest.MonkeyPatch) -> None:
    algo = make_fisor(candidates=4)
    policy = algo.policy.eval()
    obs = torch.randn(3, 8)
    sampled = policy.sample(obs.repeat_interleave(4, 0))
    assert sampled.shape == (12, 2) and sampled.abs().max() <= 1.0
    candidates = torch.tensor([[0.9, 0.0], [-0.2, 0.0], [0.5, 0.0], [0.1, 0.0]]).repeat(3, 1)
    monkeypatch.setattr(policy, "sample", lambda o: candidates)
    # Q_h of a candidate = its first action component (both ensemble members), so -0.2 is safest
    monkeypatch.setattr(policy.target_cost_q, "forward", lambda oa: oa[:, -2].unsqueeze(0).repeat(2, 1))
    chosen = policy.select(obs)
    np.testing.assert_allclose(chosen.numpy(), [[-0.2, 0.0]] * 3)
    policy.selection = "first_feasible"  # the first candidate with Q_h <= 0: -0.2 (0.9 and 0.5 are not)
    np.testing.assert_allclose(policy.select(obs).numpy(), [[-0.2, 0.0]] * 3)
    monkeypatch.setattr(policy.target_cost_q, "forward", lambda oa: (oa[:, -2] - 0.95).unsqueeze(0).repeat(2, 1))
    np.testing.assert_allclose(policy.select(obs).numpy(), [[0.9, 0.0]] * 3)  # all feasible: the first
    monkeypatch.setattr(policy.target_cost_q, "forward", lambda oa: (oa[:, -2] + 5).unsqueeze(0).repeat(2, 1))
    np.testing.assert_allclose(policy.select(obs).numpy(), [[-0.2, 0.0]] * 3)  # none feasible: the safest
    policy.selection = "min_cost"
    # candidates of all states and all denoising steps go through the network in one batch each
    calls = []
    monkeypatch.undo()
    original = policy.ema_actor.forward
    monkeypatch.setattr(policy.ema_actor, "forward", lambda *a: calls.append(a[0].shape[0]) or original(*a))
    policy.select(obs)
    assert calls == [12] * 5


def test_each_state_picks_among_its_own_candidates_by_the_ensembles_highest_q_h(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Candidates carry their state's index i (+0.01 i on the first component); Q_h is a[0] for
    member 0 and a[0] + 0.5 a[1] for member 1: the pessimistic reading (max over members) makes
    [0.1, 0] the safest, the optimistic one would take [-0.2, 1]."""
    policy = make_fisor(candidates=4).policy.eval()
    obs = torch.zeros(4, 8)
    obs[:, 0] = torch.arange(4.0)
    base = torch.tensor([[0.9, 0.0], [-0.2, 1.0], [0.5, 0.0], [0.1, 0.0]])

    def sample(tiled: torch.Tensor) -> torch.Tensor:
        offset = torch.stack([0.01 * tiled[:, 0], torch.zeros(len(tiled))], dim=1)
        return base.repeat(len(tiled) // len(base), 1) + offset

    monkeypatch.setattr(policy, "sample", sample)
    monkeypatch.setattr(policy.target_cost_q, "forward",
                        lambda oa: torch.stack([oa[:, -2], oa[:, -2] + 0.5 * oa[:, -1]]))
    np.testing.assert_allclose(policy.select(obs).numpy(), [[0.1 + 0.01 * i, 0.0] for i in range(4)], rtol=1e-5)


def test_the_sampler_inverts_the_noising_of_an_oracle_noise_predictor(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a network that predicts the exact noise of a known action x0, DDPM's last reverse step
    returns x0 from wherever the chain is, and without the added noise every step lands on the
    posterior mean ``sqrt(ab') beta / (1 - ab) x0 + sqrt(alpha) (1 - ab') / (1 - ab) x_t``."""
    policy = make_fisor().policy
    x0 = torch.tensor([0.3, -0.6])
    seen: list[torch.Tensor] = []

    def oracle(x: torch.Tensor, obs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(x.clone())
        alpha_bar = policy.alpha_bars[t].unsqueeze(-1)
        return (x - torch.sqrt(alpha_bar) * x0) / torch.sqrt(1 - alpha_bar)

    monkeypatch.setattr(policy.ema_actor, "forward", oracle)
    torch.manual_seed(0)
    np.testing.assert_allclose(policy.sample(torch.zeros(64, 8)).numpy(), x0.expand(64, 2).numpy(), atol=1e-5)
    seen.clear()
    monkeypatch.setattr(torch, "randn_like", torch.zeros_like)  # no noise between the steps
    policy.sample(torch.zeros(64, 8))
    betas, alphas, bars = policy.betas, policy.alphas, policy.alpha_bars
    for t, (x_t, x_prev) in zip(range(len(betas) - 1, 0, -1), zip(seen, seen[1:])):
        mean = (torch.sqrt(bars[t - 1]) * betas[t] / (1 - bars[t]) * x0
                + torch.sqrt(alphas[t]) * (1 - bars[t - 1]) / (1 - bars[t]) * x_t)
        np.testing.assert_allclose(x_prev.numpy(), mean.clamp(-1, 1).numpy(), atol=1e-5, err_msg=f"step {t}")


def test_a_training_step_moves_every_network_and_the_ema_slowly(tiny_data: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIGNGYM_DATA", str(tiny_data))
    from aligngym.agents.offline import load_data, make_env
    from tianshou.utils.torch_utils import policy_within_training_step

    cfg = small_config()
    env = make_env(cfg)
    ds = load_data(cfg, env)
    algo = make_fisor()
    buffer = algo.process_buffer(ds.to_replay_buffer())
    h = algo.data["h"].numpy()
    assert set(np.unique(h)) <= {25.0, -1.0} and (h == 25.0).sum() == ds.arrays["costs"].astype(bool).sum()
    before = {name: p.detach().clone() for name, p in algo.named_parameters()}
    with policy_within_training_step(algo.policy):
        stats = algo.update(buffer, cfg.batch_size)
    changed = {name for name, p in algo.named_parameters() if not torch.equal(p, before[name])}
    for module in ("actor.", "reward_q.", "reward_v.", "cost_q.", "cost_v.", "policy.ema_actor.",
                   "policy.target_cost_q.", "target_reward_q."):
        assert any(name.startswith(module) for name in changed), module
    ema = dict(algo.policy.ema_actor.named_parameters())["out.weight"]
    live = dict(algo.actor.named_parameters())["out.weight"]
    # two actor updates at tau 0.001 move the EMA about 0.2% of the way
    assert (ema - before["policy.ema_actor.out.weight"]).abs().max() < 0.01 * (live - before["actor.out.weight"]).abs().max() + 1e-6
    assert int(algo.actor_step) == cfg.actor_updates
    assert np.isfinite(stats.loss_actor) and stats.mean_weight >= 0


def test_the_actor_makes_actor_updates_updates_on_slices_covering_the_batch(
        tiny_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Also when batch_size is not a multiple of actor_updates (torch's chunk would make fewer)."""
    monkeypatch.setenv("ALIGNGYM_DATA", str(tiny_data))
    from aligngym.agents.offline import load_data, make_env
    from tianshou.utils.torch_utils import policy_within_training_step

    cfg = small_config(batch_size=10, critic_batch_size=5, actor_updates=7, critic_warmup=0)
    algo = make_fisor(batch_size=10, critic_batch_size=5, actor_updates=7, critic_warmup=0)
    buffer = algo.process_buffer(load_data(cfg, make_env(cfg)).to_replay_buffer())
    sizes, real = [], algo.update_actor
    monkeypatch.setattr(algo, "update_actor", lambda obs, act, w: sizes.append(len(obs)) or real(obs, act, w))
    with policy_within_training_step(algo.policy):
        algo.update(buffer, cfg.batch_size)
    assert sizes == [2, 2, 2, 1, 1, 1, 1] and int(algo.actor_step) == 7


def test_critic_warmup_trains_only_the_critics_first(tiny_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIGNGYM_DATA", str(tiny_data))
    from aligngym.agents.offline import load_data, make_env
    from tianshou.utils.torch_utils import policy_within_training_step

    cfg = small_config(critic_warmup=2)
    algo = make_fisor(critic_warmup=2)
    buffer = algo.process_buffer(load_data(cfg, make_env(cfg)).to_replay_buffer())
    actor = algo.actor.out.weight.detach().clone()
    critic = algo.cost_q.weights[0].detach().clone()
    for step in range(3):
        with policy_within_training_step(algo.policy):
            stats = algo.update(buffer, cfg.batch_size)
        if step < 2:  # warm-up: critics move, the actor and its EMA do not
            assert torch.equal(algo.actor.out.weight, actor) and int(algo.actor_step) == 0
            assert not torch.equal(algo.cost_q.weights[0], critic) and np.isnan(stats.loss_actor)
    assert not torch.equal(algo.actor.out.weight, actor) and int(algo.actor_step) == cfg.actor_updates
    assert int(algo.critic_step) == 3
    # a checkpoint written before critic_warmup existed (no critic_step) still loads
    old = {k: v for k, v in algo.state_dict().items() if k != "critic_step"}
    fresh = make_fisor(critic_warmup=2)
    fresh.load_state_dict(old)
    assert int(fresh.critic_step) == int(algo.actor_step) // cfg.actor_updates


def test_save_load_round_trip_gives_the_same_actions() -> None:
    algo = make_fisor()
    state = algo.state_dict()
    other = make_fisor()
    for p in other.parameters():
        torch.nn.init.normal_(p)
    other.load_state_dict(state)
    obs = torch.randn(4, 8)
    torch.manual_seed(1)
    a = algo.policy.eval().select(obs)
    torch.manual_seed(1)
    b = other.policy.eval().select(obs)
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_actor_loss_is_weighted_per_sample_and_its_learning_rate_decays_on_a_cosine() -> None:
    generator = torch.Generator().manual_seed(7)
    obs, act = torch.randn(32, 8, generator=generator), torch.rand(32, 2, generator=generator) * 2 - 1
    weight = torch.rand(32, generator=generator)

    def first_loss(w: torch.Tensor) -> float:  # a fresh agent (same initial nets), the same draws
        algo = make_fisor(actor_decay_steps=100)
        torch.manual_seed(3)
        return algo.update_actor(obs, act, w)

    algo = make_fisor(actor_decay_steps=100)
    torch.manual_seed(3)  # by hand: mean over samples of weight x squared noise-prediction error
    t = torch.randint(0, 5, (32,))
    noise = torch.randn_like(act)
    bar = algo.policy.alpha_bars[t].unsqueeze(-1)
    with torch.no_grad():
        error = ((algo.actor(torch.sqrt(bar) * act + torch.sqrt(1 - bar) * noise, obs, t) - noise) ** 2).sum(-1)
    assert first_loss(weight) == pytest.approx(float((weight * error).mean()), rel=1e-5)
    assert first_loss(2 * weight) == pytest.approx(2 * first_loss(weight), rel=1e-5)
    assert first_loss(torch.zeros(32)) == 0.0
    for step, fraction in [(0, 1.0), (50, 0.5), (100, 0.0), (150, 0.0)]:  # clamped at the end
        algo.actor_step.fill_(step)
        algo.update_actor(obs, act, weight)
        assert algo.actor_optim._optim.param_groups[0]["lr"] == pytest.approx(3e-4 * fraction, abs=1e-12)


def test_configs_hold_the_papers_settings_and_take_every_safe_task() -> None:
    assert {p.name for p in CONFIGS.glob("*.yaml")} == {"paper.yaml", "cpu.yaml"}
    for task in ("BallRun", "BallCircle", "CarRun", "CarCircle", "DroneRun", "DroneCircle", "AntRun", "AntCircle"):
        for preset in ("paper", "cpu"):
            config = load_config(f"fisor/{preset}", [f"task=aligngym/{task}-v0"])
            assert config.agent == "fisor" and config.task == f"aligngym/{task}-v0"
    paper = load_config(CONFIGS / "paper.yaml")  # the official configs/train_config.py, as the Config's defaults
    assert paper.model_dump() == type(paper)(agent="fisor", task=paper.task).model_dump()
    assert (paper.batch_size, paper.critic_batch_size, paper.candidates, paper.diffusion_steps) == (2048, 256, 16, 5)
    assert (paper.steps, paper.actor_decay_steps, paper.critic_warmup) == (1_000_000, 3_000_000, 0)
    assert (paper.actor_lr, paper.critic_lr, paper.value_lr) == (3e-4, 3e-4, 3e-4)
    assert (paper.discount, paper.actor_tau, paper.critic_tau) == (0.99, 0.001, 0.005)
    assert (paper.actor_hidden, paper.actor_blocks, paper.actor_dropout) == (256, 3, 0.1)
    assert (paper.reward_expectile, paper.cost_expectile, paper.cost_scale) == (0.9, 0.9, 25.0)
    cpu = load_config(CONFIGS / "cpu.yaml")
    assert (cpu.steps, cpu.critic_warmup, cpu.batch_size, cpu.actor_decay_steps) == (70_000, 50_000, 256, 60_000)
    with pytest.raises(ConfigError, match="did you mean 'cost_temperature'"):
        load_config(CONFIGS / "paper.yaml", ["cost_temprature=3"])


def test_runner_trains_resumes_and_evaluates_deterministically(tiny_data: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ALIGNGYM_DATA", str(tiny_data))
    overrides = [f"run_root={tmp_path}", "show_progress=false"]
    config = load_config(CONFIGS / "paper.yaml", overrides, smoke=True)
    assert config.steps == 4 and config.dataset.size == "tiny"
    first = train(config)
    second = train(config)
    _, s1 = load_checkpoint(first / "checkpoint.pt")
    _, s2 = load_checkpoint(second / "checkpoint.pt")
    assert s1["step"] == 4
    other_seed = train(config.model_copy(update={"seed": 1}))
    _, s4 = load_checkpoint(other_seed / "checkpoint.pt")
    assert not torch.equal(s4["algorithm"]["cost_v.weights.0"], s1["algorithm"]["cost_v.weights.0"])
    for key, value in s1["algorithm"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, s2["algorithm"][key]), key
    # interrupted at step 2 (its checkpoint), resumed to 4: the same weights as straight through
    third = train(config.model_copy(update={"steps": 2}))
    (third / "config.yaml").write_text((third / "config.yaml").read_text().replace("steps: 2", "steps: 4"))
    resume(third)
    _, s3 = load_checkpoint(third / "checkpoint.pt")
    for key, value in s1["algorithm"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, s3["algorithm"][key]), key
    monkeypatch.setenv("ALIGNGYM_DATA", str(tmp_path / "elsewhere"))  # a run is scored without its dataset
    assert main(["eval", str(first), "--episodes", "2"]) == 0
    printed = capsys.readouterr().out
    assert "episode_costs" not in printed.split("written to")[0]  # the per-episode lists stay in the file
    result = json.loads((first / "eval.json").read_text())
    assert {"eval/normalized_return", "eval/normalized_cost", "eval/return", "eval/cost"} <= set(result)
    assert result["cost_limit"] == 10.0 and len(result["episode_costs"]) == 2
    assert result["eval/cost"] == pytest.approx(np.mean(result["episode_costs"]))
    assert result["eval/unsafe_episodes"] == np.mean(np.array(result["episode_costs"]) > 10.0)
    # another acting rule for one evaluation: its own file, the run's config untouched
    other = evaluate(first, episodes=2, selection="first_feasible")
    assert other["written_to"].endswith("eval_selection-first_feasible.json")
    assert load_checkpoint(first / "checkpoint.pt")[0].selection == "min_cost"
    with pytest.raises(ConfigError, match="--background does not apply to fisor"):
        evaluate(first, episodes=2, background="tit_for_tat")
    with pytest.raises(ConfigError, match="selection"):
        evaluate(first, episodes=2, selection="best")


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")),
                         ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_config_runs_smoke_end_to_end(tiny_data: Path, tmp_path: Path, path: Path) -> None:
    config = load_config(path, [f"run_root={tmp_path}", "show_progress=false"], smoke=True)
    run_dir = train(config)
    result = evaluate(run_dir, episodes=1)
    assert result["checkpoint_step"] == 4 and np.isfinite(result["eval/normalized_cost"])
    events = EventAccumulator(str(run_dir))
    events.Reload()
    actor_loss = events.Scalars("loss/actor")
    assert all(np.isfinite(e.value) for e in actor_loss)  # no NaN logged while the actor waits
    assert [e.step for e in actor_loss] == ([4] if config.critic_warmup >= 2 else [2, 4])


@pytest.mark.slow
def test_fisor_learns_a_safe_policy_that_beats_random_on_small_ball_circle(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          request: pytest.FixtureRequest) -> None:
    """The issue's learning test: small generated BallCircle data, a shrunk FISOR (narrower nets,
    15k steps at batch 256), evaluated over 20 episodes: safe, and more reward than random actions."""
    from aligngym.envs.safety.bullet import BulletCore

    monkeypatch.setenv("ALIGNGYM_DATA", str(tmp_path))
    request.addfinalizer(lambda threads=torch.get_num_threads(): torch.set_num_threads(threads))  # later tests: as before
    torch.set_num_threads(1)
    generate("aligngym/BallCircle-v0", "small", seed=0)
    config = load_config(CONFIGS / "paper.yaml", [
        f"run_root={tmp_path}", "show_progress=false", "dataset.size=small", "steps=15000", "batch_size=256",
        "actor_hidden=64", "actor_blocks=2", "time_hidden=32", "critic_hidden=[64, 64]", "actor_tau=0.005",
        "actor_decay_steps=45000", "eval_every=15000", "checkpoint_every=5000", "log_every=500"])
    result = evaluate(train(config), episodes=20)
    core = BulletCore("Ball", "Circle", num_envs=500, seed=0)
    core.reset()
    rng, random_return = np.random.default_rng(0), np.zeros(500)
    for _ in range(core.max_episode_steps):
        random_return += core.step(rng.uniform(-1, 1, (500, 2)))[1]
    assert result["eval/normalized_cost"] <= 1.0, result
    assert result["eval/return"] > random_return.mean() + 10, (result, random_return.mean())


def test_missing_dataset_is_reported_with_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIGNGYM_DATA", str(tmp_path))
    from aligngym.envs.data.dataset import DatasetError

    config = load_config(CONFIGS / "paper.yaml", ["task=aligngym/CarRun-v0", f"run_root={tmp_path}"])
    with pytest.raises(DatasetError, match="aligngym data generate aligngym/CarRun-v0 --size full --seed 0"):
        train(config)


def test_evaluation_counts_every_step_including_the_last() -> None:
    """Full force along +x on BallRun: cost on steps 10..100 (91, the reference's figure), the last
    step included (an auto-reset must not swallow its info)."""
    from tianshou.data import Batch

    from aligngym.agents.offline import evaluate_policy

    class Push(torch.nn.Module):
        def __init__(self, pushed: int | None = None) -> None:  # only the first ``pushed`` envs push
            super().__init__()
            self.pushed = pushed

        def forward(self, batch: Batch, state: object = None) -> Batch:
            act = np.tile([1.0, 0.0], (len(batch.obs), 1))
            if self.pushed is not None:
                act[self.pushed:] = 0.0
            return Batch(act=act)

        def map_action(self, act: np.ndarray) -> np.ndarray:
            return act

    config = Config(agent="fisor", task="aligngym/BallRun-v0")
    result = evaluate_policy(config, Push(), episodes=3, seed=0)
    assert result["eval/cost"] == 91.0 and result["eval/length"] == 100.0
    assert result["eval/normalized_cost"] == pytest.approx(9.1) and result["safe"] is False
    assert result["episode_costs"] == [91.0] * 3 and len(result["episode_returns"]) == 3
    assert result["eval/unsafe_episodes"] == 1.0  # every episode above the limit of 10
    one = evaluate_policy(config, Push(pushed=1), episodes=3, seed=0)  # the other two balls stand still
    assert one["episode_costs"] == [91.0, 0.0, 0.0] and one["eval/cost"] == pytest.approx(91 / 3)
    assert one["eval/unsafe_episodes"] == pytest.approx(1 / 3) and one["safe"] is False  # 30.3 > 10 on average
    lenient = evaluate_policy(Config(agent="fisor", task="aligngym/BallRun-v0", cost_limit=91), Push(), 2, seed=0)
    assert lenient["eval/unsafe_episodes"] == 0.0 and lenient["safe"] is True  # 91 is not above 91


def test_critic_updates_use_the_right_networks_reductions_and_expectiles() -> None:
    """On one hand-made batch, with the optimiser steps switched off so every network keeps its
    values: each loss must be the one built from min over the target Q_r, max over the target Q_h,
    the upper (V_r) and lower (V_h) expectiles, and the V nets at s' in the backups; the actor's
    weights likewise read the *target* Q nets."""
    algo = make_fisor()
    torch.manual_seed(3)
    with torch.no_grad():  # targets differ from the online nets, members from each other
        for p in [*algo.target_reward_q.parameters(), *algo.policy.target_cost_q.parameters()]:
            p.add_(0.3 * torch.randn_like(p))
    for optim in (algo.reward_value_optim, algo.reward_q_optim, algo.cost_value_optim, algo.cost_q_optim):
        optim.step = lambda loss: None
    n = 16
    b = {"obs": torch.randn(n, 8), "obs_next": torch.randn(n, 8), "act": torch.rand(n, 2) * 2 - 1,
         "rew": torch.randn(n), "h": torch.where(torch.rand(n) < 0.3, 25.0, -1.0),
         "mask": (torch.rand(n) < 0.8).float()}
    obs_act = torch.cat([b["obs"], b["act"]], dim=-1)
    cfg = algo.config
    with torch.no_grad():
        target_rq, target_cq = algo.target_reward_q(obs_act), algo.policy.target_cost_q(obs_act)
        assert not torch.allclose(target_rq[0], target_rq[1]) and not torch.allclose(target_cq[0], target_cq[1])
        v_r, v_h = algo.reward_v(b["obs"])[0], algo.cost_v(b["obs"])[0]
        expected = {
            "loss_reward_value": expectile_loss(target_rq.min(dim=0).values - v_r, 0.9),
            "loss_reward_q": ((algo.reward_q(obs_act) - reward_target(
                b["rew"], algo.reward_v(b["obs_next"])[0], b["mask"], cfg.discount)) ** 2).mean(),
            "loss_cost_value": expectile_loss(target_cq.max(dim=0).values - v_h, 0.1),
            "loss_cost_q": ((algo.cost_q(obs_act) - reachability_target(
                b["h"], algo.cost_v(b["obs_next"])[0], b["mask"], cfg.discount)) ** 2).mean()}
        weights = feasibility_weights(target_rq.min(dim=0).values - v_r, target_cq.max(dim=0).values, v_h, cfg)
    np.testing.assert_allclose(algo.actor_weights(b["obs"], obs_act).numpy(), weights.numpy(), rtol=1e-6)
    losses = algo.update_critics(b, obs_act)
    for name, value in expected.items():
        assert losses[name] == pytest.approx(float(value), rel=1e-5), name
    # and the swapped readings would have given other numbers (the check can fail)
    assert float(expectile_loss(target_rq.max(dim=0).values - v_r, 0.9)) != pytest.approx(losses["loss_reward_value"])
    assert float(expectile_loss(target_cq.max(dim=0).values - v_h, 0.9)) != pytest.approx(losses["loss_cost_value"])


def test_config_refuses_settings_that_cannot_train() -> None:
    path = CONFIGS / "cpu.yaml"
    for override, message in [("steps=5000", "critic_warmup \\(50000\\) must be below steps"),
                              ("critic_batch_size=4096", "critic_batch_size .* at most batch_size"),
                              ("time_features=63", "time_features .* even"),
                              ("beta_max=0.05", "beta_max .* above beta_min"),
                              ("cost_weight_min=200", "cost_weight_min .* at most cost_weight_max"),
                              ("critic_hidden=[0]", "critic_hidden"),
                              ("actor_updates=4096", "batch_size \\(256\\) must be at least actor_updates")]:
        with pytest.raises(ConfigError, match=message):
            load_config(path, [override])
    load_config(path, ["steps=5000", "critic_warmup=0"])  # a short run without the warm-up is fine


def test_tasks_fisor_cannot_act_in_are_refused_before_a_run_folder_exists(tmp_path: Path) -> None:
    config = load_config(CONFIGS / "paper.yaml", [f"run_root={tmp_path}"])
    pendulum = gym.make("Pendulum-v1")  # actions in [-2, 2]
    with pytest.raises(ConfigError, match="samples actions in \\[-1, 1\\]"):
        reward_scale(config.model_copy(update={"task": "Pendulum-v1"}), pendulum)
    with pytest.raises(ConfigError, match="no normalisation constants"):
        reward_scale(config.model_copy(update={"task": "MountainCarContinuous-v0"}),
                     gym.make("MountainCarContinuous-v0"))
    with pytest.raises(ConfigError, match="samples actions in \\[-1, 1\\]"):  # through train's preflight
        train(config.model_copy(update={"task": "Pendulum-v1"}))
    typo = load_config(CONFIGS / "paper.yaml", [f"run_root={tmp_path}", "task=aligngym/BallCirle-v0"])
    with pytest.raises(ConfigError, match="did you mean 'aligngym/BallCircle-v0'"):
        train(typo)
    assert not list(tmp_path.iterdir())


def test_the_training_data_scale_rewards_mark_costs_and_stop_bootstrapping_at_any_episode_end() -> None:
    """process_buffer on a hand-made buffer: r times the reward scale, h = cost_scale (25) on a costly
    step and -1 otherwise, mask 0 after a termination and after a truncation (the official code
    bootstraps through neither), actions pulled just inside [-1, 1]."""
    from tianshou.data import Batch, ReplayBuffer

    buffer = ReplayBuffer(4)
    rows = [(0.5, 0.0, False, False, 1.0), (1.0, 2.0, True, False, -1.0),
            (-2.0, 0.0, False, True, 0.3), (4.0, 0.5, False, False, 0.0)]
    for rew, cost, terminated, truncated, act in rows:
        buffer.add(Batch(obs=np.zeros(8), act=np.full(2, act), rew=rew, terminated=terminated,
                         truncated=truncated, obs_next=np.ones(8), info={"cost": cost}))
    algo = FISOR(small_config(), 8, gym.make("aligngym/BallCircle-v0").action_space, 0.25, torch.device("cpu"))
    algo.process_buffer(buffer)
    data = {k: v.numpy() for k, v in algo.data.items()}
    np.testing.assert_allclose(data["rew"], [0.125, 0.25, -0.5, 1.0])
    np.testing.assert_array_equal(data["h"], [-1.0, 25.0, -1.0, 25.0])
    np.testing.assert_array_equal(data["mask"], [1.0, 0.0, 0.0, 1.0])
    assert data["act"].max() < 1.0 and data["act"].min() > -1.0 and data["act"][2, 0] == pytest.approx(0.3)


def test_reward_scale_is_the_tasks_constants_or_one() -> None:
    env = gym.make("aligngym/BallCircle-v0")
    task = env.unwrapped.task
    assert reward_scale(small_config(), env) == pytest.approx(
        task.max_episode_steps / (task.reward_max - task.reward_min))
    assert reward_scale(small_config(scale_rewards=False), env) == 1.0


def test_the_ema_network_samples_without_dropout_in_any_mode() -> None:
    algo = make_fisor(actor_dropout=0.5)
    obs = torch.randn(6, 8)
    torch.nn.Module.train(algo.policy.ema_actor, False)  # the reference: dropout certainly off
    torch.manual_seed(0)
    without_dropout = algo.policy.sample(obs)
    for mode in (True, False):
        algo.train(mode)
        assert not algo.policy.ema_actor.training
        torch.manual_seed(0)
        assert torch.equal(algo.policy.sample(obs), without_dropout)
    assert algo.actor.train().training  # the trained network keeps its dropout
