"""CQL on tianshou's CQL: its losses recomputed by hand on a hand-made batch (the conservative term over
every sampled action of a state, uniform actions over the whole box, no entropy in the backup, the
behaviour-cloning warm-up), the alpha optimiser in checkpoints, the configs end to end, TensorBoard
names, exact resume and determinism."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tianshou.data import Batch
from tianshou.utils.torch_utils import policy_within_training_step

import aligngym.envs  # noqa: F401
from aligngym.agents.baselines import cql
from aligngym.agents.config import ConfigError, load_config
from aligngym.agents.evaluate import evaluate
from aligngym.agents.train import load_checkpoint, resume, train

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "cql"
BALL_CIRCLE = "aligngym/BallCircle-v0"


def smoke_config(run_root: Path, *overrides: str) -> cql.Config:
    return load_config(CONFIGS / "paper.yaml", [f"run_root={run_root}", "show_progress=false", "device=cpu",
                                                *overrides], smoke=True)


def make_cql(bound: float = 1.0, **update: object) -> cql.ConservativeQLearning:
    torch.manual_seed(0)
    config = cql.Config(agent="cql", task=BALL_CIRCLE).smoke().model_copy(update=update)
    return cql.ConservativeQLearning(config, 8, gym.spaces.Box(-bound, bound, (2,), np.float32), bound,
                                     torch.device("cpu"))



# ---------------------------------------------------------------------- the losses, by hand
def hand_made_batch(bound: float) -> Batch:
    generator = torch.Generator().manual_seed(5)
    n = 10
    terminated, truncated = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    terminated[[1, 6]] = True
    truncated[[3]] = True  # a timeout bootstraps (D4RL's terminals)
    act = (torch.rand(n, 2, generator=generator) * 1.8 - 0.9) * bound
    return Batch(obs=torch.randn(n, 8, generator=generator).numpy(), act=act.numpy(),
                 rew=torch.randn(n, generator=generator).numpy(), terminated=terminated, truncated=truncated,
                 done=terminated | truncated, obs_next=torch.randn(n, 8, generator=generator).numpy())


def policy_sample(obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A stand-in for the policy's sampling: a fixed action and log-probability per state."""
    return torch.tanh(obs[:, :2] + 0.1), 0.5 * obs[:, 2:3] - 1.0


@pytest.mark.parametrize(("bound", "warm_up"), [(1.0, True), (1.0, False), (2.0, False)])
def test_cql_losses_on_a_hand_made_batch(bound: float, warm_up: bool) -> None:
    """Optimiser steps off and alpha fixed at 0.3, the policy's samples a known function of the state:
    alpha's loss -log(alpha) (log pi - |A|); the actor's mean(alpha log pi - min(Q1, Q2)(s, a~)), or in
    the warm-up mean(alpha log pi - log pi(a|s)) under the tanh Gaussian; each critic's
    MSE(Q_k(s, a), r + 0.99 (1 - terminal) min(Q1', Q2')(s', a')) (no entropy term, timeouts
    bootstrap) + 5 (logsumexp over all 3 x 3 sampled actions of a state - Q_k(s, a)), the uniform
    actions drawn over the whole box [-1, 1]^2 (in units of the bound)."""
    algo = make_cql(bound=bound, cql_samples=3, bc_steps=1)
    algo.update_step.fill_(0 if warm_up else 1)
    torch.manual_seed(3)
    with torch.no_grad():
        algo.alpha._log_alpha.fill_(math.log(0.3))
        for p in [*algo.critic_old.parameters(), *algo.critic2_old.parameters()]:  # targets differ from the critics
            p.add_(0.3 * torch.randn_like(p))
    algo.alpha._optim.step = lambda: None
    for optim in (algo.actor_optim, algo.critic_optim, algo.critic2_optim):
        optim.step = lambda loss: None
    algo._policy_pred = policy_sample
    captured = {}
    real_term = algo.conservative_term
    algo.conservative_term = lambda critic, obs, samples, q: (captured.update(samples)
                                                              or real_term(critic, obs, samples, q))
    batch = hand_made_batch(bound)
    obs, obs_next = torch.as_tensor(batch.obs), torch.as_tensor(batch.obs_next)
    with torch.no_grad():  # the target critics before the update's Polyak step
        next_act, next_log_pi = policy_sample(obs_next)
        next_q = torch.min(algo.critic_old(obs_next, next_act), algo.critic2_old(obs_next, next_act)).squeeze(-1)
    targets_before = [p.detach().clone() for p in [*algo.critic_old.parameters(), *algo.critic2_old.parameters()]]
    with policy_within_training_step(algo.policy):
        stats = algo._update_with_batch(batch)

    act, reward = torch.as_tensor(batch.act) / bound, torch.as_tensor(batch.rew)
    terminal = torch.as_tensor(batch.terminated).float()
    n, size = 3, len(obs)
    uniform = captured["uniform"]
    assert uniform.shape == (size * n, 2) and uniform.abs().max() <= 1.0
    assert uniform.min() < -0.5 and uniform.max() > 0.5, "uniform over [-1, 1] (tianshou 2.0.1 draws U(1, 1))"
    with torch.no_grad():
        new_act, log_pi = policy_sample(obs)
        assert stats.loss_alpha == pytest.approx(float(-(math.log(0.3) * (log_pi - 2.0)).mean()), rel=1e-5)
        if warm_up:
            (loc, scale), _ = algo.policy.actor(obs)
            pre_tanh = torch.atanh(act)
            data_log_prob = (torch.distributions.Normal(loc, scale).log_prob(pre_tanh).sum(-1)
                             - torch.log(1 - act**2 + np.finfo(np.float32).eps).sum(-1))
            actor_loss = (0.3 * log_pi.squeeze(-1) - data_log_prob).mean()
        else:
            actor_loss = (0.3 * log_pi - torch.min(algo.critic(obs, new_act), algo.critic2(obs, new_act))).mean()
        assert stats.loss_actor == pytest.approx(float(actor_loss), rel=1e-5)

        target = reward + 0.99 * (1 - terminal) * next_q
        tiled, tiled_next = obs.repeat_interleave(n, 0), obs_next.repeat_interleave(n, 0)
        current, current_log_pi = policy_sample(tiled)
        following, following_log_pi = policy_sample(tiled_next)
        for critic, loss in ((algo.critic, stats.loss_critic), (algo.critic2, stats.loss_critic2)):
            q_data = critic(obs, act).squeeze(-1)
            candidates = torch.cat([(critic(tiled, uniform) - 2 * math.log(0.5)).view(size, n),
                                    (critic(tiled, following) - following_log_pi).view(size, n),
                                    (critic(tiled, current) - current_log_pi).view(size, n)], dim=1)
            gap = torch.logsumexp(candidates, dim=1) - q_data
            assert loss == pytest.approx(float(F.mse_loss(q_data, target) + 5.0 * gap.mean()), rel=1e-5)
            # the readings one could take by mistake give other numbers (the check can fail)
            per_sample = torch.logsumexp(candidates.view(size, 3, n).transpose(1, 2), dim=2)  # tianshou 2.0.1's
            assert float(F.mse_loss(q_data, target) + 5.0 * (per_sample.mean() - q_data.mean())) != pytest.approx(loss)
            entropy_target = target - 0.99 * (1 - terminal) * 0.3 * next_log_pi.squeeze(-1)
            assert float(F.mse_loss(q_data, entropy_target) + 5.0 * gap.mean()) != pytest.approx(loss)
            done_target = reward + 0.99 * (1 - torch.as_tensor(batch.done).float()) * next_q
            assert float(F.mse_loss(q_data, done_target) + 5.0 * gap.mean()) != pytest.approx(loss)
    assert int(algo.update_step) == (1 if warm_up else 2)
    # the targets move tau = 0.005 of the way to the critics (unchanged here: their steps are off)
    live = [p.detach() for p in [*algo.critic.parameters(), *algo.critic2.parameters()]]
    for target, before, critic in zip([*algo.critic_old.parameters(), *algo.critic2_old.parameters()],
                                      targets_before, live):
        assert not torch.equal(target, before)
        assert torch.allclose(target, before + 0.005 * (critic - before), rtol=0, atol=1e-7)


def test_the_actor_reads_the_entropy_weight_after_its_update() -> None:
    """alpha steps first (a large rate: log alpha moves by about 1), the actor's loss then weighs
    log pi with the new alpha, as the official code does."""
    algo = make_cql(alpha_lr=1.0, bc_steps=0)
    with torch.no_grad():
        algo.alpha._log_alpha.fill_(math.log(0.3))
    for optim in (algo.actor_optim, algo.critic_optim, algo.critic2_optim):
        optim.step = lambda loss: None
    algo._policy_pred = policy_sample
    batch = hand_made_batch(1.0)
    obs = torch.as_tensor(batch.obs)
    with torch.no_grad():
        new_act, log_pi = policy_sample(obs)
        assert float((log_pi - 2.0).mean()) < 0  # the gradient on log alpha is positive: Adam's first step is -1
        min_q = torch.min(algo.critic(obs, new_act), algo.critic2(obs, new_act))
    with policy_within_training_step(algo.policy):
        stats = algo._update_with_batch(batch)
    new_alpha = 0.3 * math.exp(-1.0)
    assert stats.alpha == pytest.approx(new_alpha, rel=1e-5)
    assert stats.loss_actor == pytest.approx(float((new_alpha * log_pi - min_q).mean()), rel=1e-5)
    assert stats.loss_actor != pytest.approx(float((0.3 * log_pi - min_q).mean()), rel=1e-3)


def test_the_warm_up_clones_for_exactly_bc_steps_updates(tiny_data: Path) -> None:
    from aligngym.envs.data.dataset import dataset_path, load_dataset

    algo = make_cql(bc_steps=2)
    buffer = load_dataset(dataset_path(BALL_CIRCLE, "tiny", 0)).to_replay_buffer()
    calls = []
    real = algo.log_prob
    algo.log_prob = lambda obs, act: calls.append(int(algo.update_step)) or real(obs, act)
    with policy_within_training_step(algo.policy):
        for _ in range(4):
            algo.update(buffer, 32)
    assert calls == [0, 1]


def test_the_bc_log_probability_is_the_tanh_gaussians() -> None:
    """log pi(a|s) of the squashed Gaussian equals the change of variables, and stays finite at +-1."""
    algo = make_cql()
    obs = torch.randn(4, 8)
    act = torch.tensor([[0.3, -0.7], [0.0, 0.99], [1.0, -1.0], [-0.2, 0.5]])
    with torch.no_grad():
        log_prob = algo.log_prob(obs, act).squeeze(-1)
        (loc, scale), _ = algo.policy.actor(obs)
    u = torch.atanh(act[[0, 1, 3]])
    by_hand = (torch.distributions.Normal(loc[[0, 1, 3]], scale[[0, 1, 3]]).log_prob(u)
               - torch.log(1 - torch.tanh(u) ** 2)).sum(-1)
    np.testing.assert_allclose(log_prob[[0, 1, 3]].numpy(), by_hand.numpy(), rtol=1e-4)
    assert torch.isfinite(log_prob[2])


def test_acting_is_the_squashed_mean_scaled_to_the_bounds() -> None:
    algo = make_cql(bound=2.0)
    obs = torch.randn(5, 8)
    with torch.no_grad():
        (loc, _), _ = algo.policy.actor(obs)
        acted = algo.policy(Batch(obs=obs.numpy(), info={})).act
        with policy_within_training_step(algo.policy):  # training samples
            sampled = algo.policy(Batch(obs=obs.numpy(), info={})).act
    assert torch.allclose(acted, torch.tanh(loc)) and not torch.allclose(sampled, torch.tanh(loc))
    np.testing.assert_allclose(algo.policy.map_action(acted), 2.0 * torch.tanh(loc).numpy(), rtol=1e-5, atol=1e-6)


def test_the_alpha_optimiser_is_named_and_saved(tiny_data: Path) -> None:
    """tianshou keeps AutoAlpha's Adam to itself; here it is one of the algorithm's optimisers, so a
    checkpoint holds its moments and a restored agent continues with them."""
    from aligngym.agents.offline import optimizer_names
    from aligngym.envs.data.dataset import dataset_path, load_dataset

    algo = make_cql()
    assert optimizer_names(algo) == ["actor", "critic", "critic2", "alpha"]
    buffer = load_dataset(dataset_path(BALL_CIRCLE, "tiny", 0)).to_replay_buffer()
    with policy_within_training_step(algo.policy):
        algo.update(buffer, 32)
    state = algo.state_dict()
    assert len(state["_optimizers"]) == 4 and state["_optimizers"][3]["state"][0]["exp_avg"].numel() == 1
    fresh = make_cql()
    fresh.load_state_dict({**state, "_optimizers": list(state["_optimizers"])})
    moments = state["_optimizers"][3]["state"][0]["exp_avg"]
    assert torch.equal(fresh.alpha._optim.state_dict()["state"][0]["exp_avg"], moments)
    assert fresh.alpha.value == algo.alpha.value != 1.0


# ---------------------------------------------------------------------- configs and the runner
def test_configs_hold_the_official_settings() -> None:
    assert {p.name for p in CONFIGS.glob("*.yaml")} == {"paper.yaml", "cpu.yaml"}
    paper, cpu = load_config("cql/paper"), load_config("cql/cpu")
    assert paper.model_dump() == cql.Config(agent="cql", task=paper.task).model_dump(), \
        "cql/paper must hold only what differs from the Config's defaults"
    assert (paper.cql_weight, paper.cql_samples, paper.cql_temperature, paper.backup_entropy, paper.bc_steps) == \
        (5.0, 10, 1.0, False, 40_000)
    assert (paper.hidden, paper.actor_lr, paper.critic_lr, paper.alpha_lr, paper.target_entropy) == \
        ((256, 256, 256), 1e-4, 3e-4, 1e-4, None)
    assert (paper.steps, paper.batch_size, paper.discount, paper.tau, paper.eval_every, paper.eval_episodes) == \
        (1_000_000, 256, 0.99, 0.005, 5_000, 10)
    differs = {k for k, v in paper.model_dump().items() if cpu.model_dump()[k] != v}
    assert differs == {"steps", "eval_every", "checkpoint_every", "bc_steps"} and cpu.steps // cpu.eval_every == 10
    assert cpu.bc_steps / cpu.steps == paper.bc_steps / paper.steps  # the warm-up shrinks in proportion
    for task in ("aligngym/CarRun-v0", "aligngym/DroneCircle-v0"):
        assert load_config("cql/cpu", [f"task={task}"]).task == task
    with pytest.raises(ConfigError, match="did you mean 'cql_weight'"):
        load_config("cql/paper", ["cql_wieght=10"])
    algo = make_cql(cql_weight=10.0, cql_samples=4, cql_temperature=0.5, tau=0.01, discount=0.9)
    assert (algo.cql_weight, algo.num_repeat_actions, algo.temperature, algo.tau, algo.gamma) == \
        (10.0, 4, 0.5, 0.01, 0.9)
    assert not algo.with_lagrange and not algo.calibrated and algo.critic_optim._max_grad_norm is None


@pytest.mark.parametrize("name", ["paper", "cpu"])
def test_every_config_runs_smoke_end_to_end_with_its_tensorboard_names(tiny_data: Path, tmp_path: Path, name: str,
                                                                      scalars) -> None:
    config = load_config(f"cql/{name}", [f"run_root={tmp_path}", "show_progress=false"], smoke=True)
    assert config.bc_steps == 2  # a smoke run's 4 steps: 2 cloning, 2 conservative
    run_dir = train(config)
    logged = scalars(run_dir)
    losses = {t.removeprefix("loss/") for t in logged if t.startswith("loss/")}
    rates = {t.removeprefix("train/lr_") for t in logged if t.startswith("train/lr_")}
    assert losses == rates == {"actor", "critic", "critic2", "alpha"}, sorted(logged)
    assert {"train/alpha", "train/conservative_gap", "train/q_data"} <= set(logged)
    assert [s for s, _ in logged["loss/critic"]] == [2, 4] and [s for s, _ in logged["eval/return"]] == [2, 4]
    assert all(np.isfinite(v) for tag in logged for _, v in logged[tag])
    result = evaluate(run_dir, episodes=1)  # from the run folder alone
    assert result["checkpoint_step"] == 4 and np.isfinite(result["eval/normalized_return"])
    assert result["eval/normalized_cost"] == pytest.approx(result["eval/cost"] / config.cost_limit)


def test_an_interrupted_run_resumes_exactly_and_runs_are_deterministic(tiny_data: Path, tmp_path: Path,
                                                                      cut_offline_run, scalars, same_state) -> None:
    """6 steps straight; the same run interrupted in step 5 (after its checkpoint at 4) and resumed:
    the same weights, target critics, alpha and every optimiser's state, curves and actions. Another
    seed trains other weights."""
    update = {"steps": 6, "checkpoint_every": 2, "eval_every": 6}
    reference = train(smoke_config(tmp_path / "ref").model_copy(update=update))
    split = cut_offline_run(smoke_config(tmp_path / "split").model_copy(update=update), 5)
    assert int(load_checkpoint(split / "checkpoint.pt")[1]["step"]) == 4
    resume(split)
    (_, ref_state), (_, state) = load_checkpoint(reference / "checkpoint.pt"), load_checkpoint(split / "checkpoint.pt")
    assert int(state["step"]) == 6 and int(state["algorithm"]["update_step"]) == 6
    same_state(state["algorithm"], ref_state["algorithm"], "algorithm")
    assert scalars(split)["loss/critic"] == scalars(reference)["loss/critic"]
    assert evaluate(split, episodes=1)["episode_returns"] == evaluate(reference, episodes=1)["episode_returns"]
    other = train(smoke_config(tmp_path / "seed1", "seed=1").model_copy(update=update))
    _, other_state = load_checkpoint(other / "checkpoint.pt")
    key = "critic.preprocess.model.model.0.weight"
    assert not torch.equal(other_state["algorithm"][key], ref_state["algorithm"][key])
