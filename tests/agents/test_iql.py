"""IQL and the expectile value learning it shares with FISOR (agents/iql_core.py): FISOR's reward
critics exactly as before the code moved, IQL's losses recomputed by hand on a hand-made batch, the
clipped advantage weights, the configs end to end, TensorBoard names, exact resume and determinism."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from tianshou.data import Batch
from tianshou.utils.torch_utils import policy_within_training_step

import aligngym.envs  # noqa: F401
from aligngym.agents import fisor, iql_core
from aligngym.agents.baselines import iql
from aligngym.agents.config import ConfigError, load_config
from aligngym.agents.evaluate import evaluate
from aligngym.agents.fisor import FISOR
from aligngym.agents.fisor import Config as FISORConfig
from aligngym.agents.offline import setup
from aligngym.agents.train import load_checkpoint, resume, train
from aligngym.envs.data.dataset import dataset_path, load_dataset, write_dataset

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "iql"
BALL_CIRCLE = "aligngym/BallCircle-v0"


def smoke_config(run_root: Path, *overrides: str) -> iql.Config:
    return load_config(CONFIGS / "paper.yaml", [f"run_root={run_root}", "show_progress=false", "device=cpu",
                                                *overrides], smoke=True)


def make_iql(bound: float = 1.0, reward_scale: float = 1.0, **update: object) -> iql.IQL:
    torch.manual_seed(0)
    config = iql.Config(agent="iql", task=BALL_CIRCLE).smoke().model_copy(update=update)
    return iql.IQL(config, 8, gym.spaces.Box(-bound, bound, (2,), np.float32), bound, reward_scale,
                   torch.device("cpu"))



# ---------------------------------------------------------------------- the shared implementation: FISOR as before
def test_fisors_reward_critics_learn_exactly_as_before_the_code_was_shared() -> None:
    """Two identically seeded FISORs, one updated by its own update_critics (now the shared code), the
    other by the reward-critic updates as agents/fisor.py wrote them before: the same losses, weights,
    targets and actor weights, bit for bit, over several steps (Adam's moments included)."""
    def make() -> FISOR:
        torch.manual_seed(0)
        config = FISORConfig(agent="fisor", task=BALL_CIRCLE).smoke()
        return FISOR(config, 8, gym.spaces.Box(-1, 1, (2,), np.float32), 1.0, torch.device("cpu"))

    shared, former = make(), make()
    cfg = former.config
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        n = 16
        b = {"obs": torch.randn(n, 8, generator=generator), "obs_next": torch.randn(n, 8, generator=generator),
             "act": torch.rand(n, 2, generator=generator) * 2 - 1, "rew": torch.randn(n, generator=generator),
             "h": torch.where(torch.rand(n, generator=generator) < 0.3, 25.0, -1.0),
             "mask": (torch.rand(n, generator=generator) < 0.8).float()}
        obs_act = torch.cat([b["obs"], b["act"]], dim=-1)
        losses = shared.update_critics(b, obs_act)
        # the former code, verbatim in its operations
        with torch.no_grad():
            reward_q_target = former.target_reward_q(obs_act).min(dim=0).values
        diff = reward_q_target - former.reward_v(b["obs"])[0]
        loss_rv = (torch.abs(cfg.reward_expectile - (diff < 0).float()) * diff**2).mean()
        former.reward_value_optim.step(loss_rv)
        with torch.no_grad():
            target = b["rew"] + cfg.discount * b["mask"] * former.reward_v(b["obs_next"])[0]
        loss_rq = ((former.reward_q(obs_act) - target) ** 2).mean()
        former.reward_q_optim.step(loss_rq)
        with torch.no_grad():
            for t, s in zip(former.target_reward_q.parameters(), former.reward_q.parameters()):
                t.lerp_(s, cfg.critic_tau)
        assert losses["loss_reward_value"] == loss_rv.item() and losses["loss_reward_q"] == loss_rq.item()
        for name in ("reward_v", "reward_q", "target_reward_q"):
            for p, q in zip(getattr(shared, name).parameters(), getattr(former, name).parameters()):
                assert torch.equal(p, q), name
        with torch.no_grad():  # the actor's reward advantage and its weights exp(3 A_r) clipped at 100, as before
            adv = former.target_reward_q(obs_act).min(dim=0).values - former.reward_v(b["obs"])[0]
            read = []
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(fisor, "feasibility_weights", lambda reward_adv, *rest: read.append(reward_adv))
                shared.actor_weights(b["obs"], obs_act)
            assert torch.equal(read[0], adv)
            for a in (adv, torch.tensor([-3.0, 0.0, 1.0, 1.6, 10.0])):  # past the clip too
                assert torch.equal(iql_core.advantage_weights(a, cfg.reward_temperature, cfg.reward_weight_max),
                                   torch.exp(a * cfg.reward_temperature).clamp(0, cfg.reward_weight_max))
    assert shared.state_dict().keys() == former.state_dict().keys()  # FISOR's checkpoints load as before
    for step in (0, 7, 1000, 3_000_000, 4_000_000):  # its actor's cosine schedule, as before
        progress = min(step, cfg.actor_decay_steps) / cfg.actor_decay_steps
        assert iql_core.apply_cosine_decay(shared.actor_optim, cfg.actor_lr, step, cfg.actor_decay_steps) == \
            cfg.actor_lr * 0.5 * (1 + math.cos(math.pi * progress))


def test_expectile_and_member_reductions_on_hand_made_numbers() -> None:
    diff = torch.tensor([2.0, -2.0, 1.0])
    assert iql_core.expectile_loss(diff, 0.7).item() == pytest.approx((0.7 * 4 + 0.3 * 4 + 0.7 * 1) / 3)
    ensemble = iql_core.EnsembleMLP(2, 3, (4,))
    value = iql_core.EnsembleMLP(1, 3, (4,))

    class NoStep:
        def step(self, loss: torch.Tensor) -> None:
            pass

    obs_act, obs_next = torch.randn(5, 3), torch.randn(5, 3)
    reward, mask = torch.randn(5), torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0])
    with torch.no_grad():
        target = reward + 0.9 * mask * value(obs_next)[0]
        q = ensemble(obs_act)
    per_member = ((q - target) ** 2).mean(dim=1)
    mean = iql_core.update_q(ensemble, NoStep(), obs_act, reward, obs_next, mask, value, 0.9)
    summed = iql_core.update_q(ensemble, NoStep(), obs_act, reward, obs_next, mask, value, 0.9, members="sum")
    assert mean == pytest.approx(float(per_member.mean()), rel=1e-6)
    assert summed == pytest.approx(float(per_member.sum()), rel=1e-6) and summed != pytest.approx(mean)
    # orthogonal kernels (IQL) keep the flax shapes and are orthogonal with gain sqrt(2)
    orthogonal = iql_core.EnsembleMLP(2, 8, (16,), init="orthogonal")
    w = orthogonal.weights[0][1]  # (in 8, out 16): its rows are orthogonal, of norm sqrt(2)
    np.testing.assert_allclose((w @ w.T).detach().numpy(), 2 * np.eye(8), atol=1e-5)


# ---------------------------------------------------------------------- IQL's losses, by hand
def hand_made_batch(bound: float = 1.0) -> Batch:
    generator = torch.Generator().manual_seed(5)
    n = 12
    act = (torch.rand(n, 2, generator=generator) * 2 - 1) * bound
    act[0] = torch.tensor([bound, -bound])  # at the bounds: clipped to +-(1 - 1e-5)
    terminated = np.zeros(n, dtype=bool)
    truncated = np.zeros(n, dtype=bool)
    terminated[[1, 4]] = True
    truncated[[2, 7]] = True  # a timeout: IQL bootstraps through it (D4RL's terminals)
    return Batch(obs=torch.randn(n, 8, generator=generator).numpy(), act=act.numpy(),
                 rew=torch.randn(n, generator=generator).numpy(), terminated=terminated, truncated=truncated,
                 done=terminated | truncated, obs_next=torch.randn(n, 8, generator=generator).numpy())


def log_prob_by_hand(algo: iql.IQL, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """log N(a; tanh(mu(s)), exp(clip(log_std, -5, 2))) summed over action dimensions."""
    actor = algo.policy.actor
    mean = torch.tanh(actor.mu(actor.preprocess(obs)[0]))
    log_std = actor.sigma_param.view(-1).clamp(-5.0, 2.0)
    return (-0.5 * ((act - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


@pytest.mark.parametrize("bound", [1.0, 2.0])
def test_iql_losses_on_a_hand_made_batch(bound: float) -> None:
    """Optimiser steps off, so every network keeps its values: V's loss is the 0.7 expectile of
    min(Q1', Q2') over the *target* critics, the critics' loss is (Q1 - y)^2 + (Q2 - y)^2 with
    y = scale r + 0.99 (1 - terminal) V(s') (timeouts bootstrap), the actor's -mean(w log pi(a|s))
    with w = min(exp(3 A), 100); actions are divided by the bound and clipped to +-(1 - 1e-5)."""
    algo = make_iql(bound=bound, reward_scale=2.5)
    torch.manual_seed(3)
    with torch.no_grad():  # targets differ from the live critics, and the members from each other
        for p in algo.critic_target.parameters():
            p.add_(0.3 * torch.randn_like(p))
        algo.policy.actor.sigma_param.copy_(torch.tensor([[-7.0], [0.5]]))  # one below the clip at -5
    for optim in (algo.actor_optim, algo.critic_optim, algo.value_optim):
        optim.step = lambda loss: None
    batch = hand_made_batch(bound)
    obs, obs_next = torch.as_tensor(batch.obs), torch.as_tensor(batch.obs_next)
    act = (torch.as_tensor(batch.act) / bound).clamp(-1 + 1e-5, 1 - 1e-5)
    seen = []
    real_actor = algo.update_actor
    algo.update_actor = lambda o, a, q: seen.append(a) or real_actor(o, a, q)
    obs_act = torch.cat([obs, act], dim=-1)
    with torch.no_grad():
        target_q = algo.critic_target(obs_act)
        assert not torch.allclose(target_q[0], target_q[1])
        q_min = target_q.min(dim=0).values
        v = algo.value(obs)[0]
        u = q_min - v
        value_loss = (torch.where(u > 0, 0.7, 0.3) * u**2).mean()
        next_v = algo.value(obs_next)[0]
        y = 2.5 * torch.as_tensor(batch.rew) + 0.99 * (1 - torch.as_tensor(batch.terminated).float()) * next_v
        q1, q2 = algo.critic(obs_act)
        critic_loss = ((q1 - y) ** 2 + (q2 - y) ** 2).mean()
        weight = torch.minimum(torch.exp(3.0 * u), torch.tensor(100.0))
        actor_loss = -(weight * log_prob_by_hand(algo, obs, act)).mean()
    with policy_within_training_step(algo.policy):
        stats = algo._update_with_batch(batch)
    assert stats.loss_value == pytest.approx(float(value_loss), rel=1e-5)
    assert stats.loss_critic == pytest.approx(float(critic_loss), rel=1e-5)
    assert stats.loss_actor == pytest.approx(float(actor_loss), rel=1e-5)
    assert stats.mean_weight == pytest.approx(float(weight.mean()), rel=1e-5)
    assert torch.equal(seen[0], act) and float(seen[0].abs().max()) == pytest.approx(1 - 1e-5, abs=1e-7)
    # the readings one could swap by mistake give other numbers (the checks can fail)
    with torch.no_grad():
        u_max = target_q.max(dim=0).values - v
        assert float((torch.where(u_max > 0, 0.7, 0.3) * u_max**2).mean()) != pytest.approx(stats.loss_value)
        y_done = 2.5 * torch.as_tensor(batch.rew) + 0.99 * (1 - torch.as_tensor(batch.done).float()) * next_v
        assert float(((q1 - y_done) ** 2 + (q2 - y_done) ** 2).mean()) != pytest.approx(stats.loss_critic)
        assert float(critic_loss) / 2 != pytest.approx(stats.loss_critic)  # FISOR's mean over members


def test_advantage_weights_are_clipped_at_weight_max() -> None:
    """The actor's loss on advantages chosen by hand (q = V(s) + A): weights exp(3 A), at most 100."""
    algo = make_iql()
    obs = torch.randn(6, 8)
    act = torch.rand(6, 2) * 1.8 - 0.9
    advantage = torch.tensor([-1.0, 0.0, 0.5, 1.5, 1.6, 10.0])  # exp(3 A) > 100 from A = 1.535
    with torch.no_grad():
        q = algo.value(obs)[0] + advantage
        expected_weight = torch.tensor([math.exp(-3), 1.0, math.exp(1.5), math.exp(4.5), 100.0, 100.0])
        log_prob = log_prob_by_hand(algo, obs, act)
    loss, weight, adv = algo.update_actor(obs, act, q)
    np.testing.assert_allclose(adv.numpy(), advantage.numpy(), atol=1e-5)
    np.testing.assert_allclose(weight.numpy(), expected_weight.numpy(), rtol=1e-5)
    assert loss == pytest.approx(float(-(expected_weight * log_prob).mean()), rel=1e-5)
    assert loss != pytest.approx(float(-(torch.exp(3 * advantage) * log_prob).mean()), rel=1e-3)  # unclipped


def test_the_value_steps_before_the_actor_and_the_critics_after_it(tiny_data: Path) -> None:
    """The official order: V from the target critics, then the actor with the *updated* V, then the
    critics towards the updated V, then the Polyak average of the targets."""
    algo = make_iql()
    buffer = load_dataset(dataset_path(BALL_CIRCLE, "tiny", 0)).to_replay_buffer()
    snapshot = lambda module: [p.detach().clone() for p in module.parameters()]  # noqa: E731
    value0, critic0, target0 = snapshot(algo.value), snapshot(algo.critic), snapshot(algo.critic_target)
    seen = {}
    real_actor = algo.update_actor

    def spy(obs: torch.Tensor, act: torch.Tensor, q: torch.Tensor) -> tuple:
        seen["value"], seen["critic"] = snapshot(algo.value), snapshot(algo.critic)
        with torch.no_grad():
            seen["q"], seen["q_passed"] = algo.critic_target(torch.cat([obs, act], -1)).min(dim=0).values, q
        return real_actor(obs, act, q)

    algo.update_actor = spy
    with policy_within_training_step(algo.policy):
        algo.update(buffer, 64)
    assert torch.equal(seen["q_passed"], seen["q"]), "the actor's advantages read the target critics' minimum"
    assert any(not torch.equal(a, b) for a, b in zip(seen["value"], value0)), "V stepped before the actor"
    assert all(torch.equal(a, b) for a, b in zip(seen["critic"], critic0)), "the critics step after the actor"
    assert all(not torch.equal(a, b) for a, b in zip(snapshot(algo.critic), critic0))
    for t, t0, c, c0 in zip(snapshot(algo.critic_target), target0, snapshot(algo.critic), critic0):
        # the targets started as copies (t0 = c0) and move tau = 0.005 of the way to the stepped critics
        assert (t - t0).abs().max() > 0 and torch.allclose(t - t0, 0.005 * (c - c0), rtol=0, atol=1e-7)
    assert int(algo.actor_step) == 1


def test_the_actors_learning_rate_decays_on_a_cosine_over_the_run() -> None:
    algo = make_iql(actor_decay_steps=None, steps=100)
    obs, act = torch.randn(4, 8), torch.rand(4, 2) * 2 - 1
    q = torch.zeros(4)
    for step, fraction in [(0, 1.0), (25, 0.5 * (1 + math.cos(math.pi / 4))), (50, 0.5), (100, 0.0), (150, 0.0)]:
        algo.actor_step.fill_(step)
        algo.update_actor(obs, act, q)
        assert algo.actor_optim._optim.param_groups[0]["lr"] == pytest.approx(3e-4 * fraction, abs=1e-12)
    assert make_iql(actor_decay_steps=40, steps=100).config.decay_steps == 40


def test_acting_takes_the_mean_scaled_to_the_bounds() -> None:
    algo = make_iql(bound=2.0)
    obs = torch.randn(5, 8)
    with torch.no_grad():
        mean = torch.tanh(algo.policy.actor.mu(algo.policy.actor.preprocess(obs)[0]))
        first = algo.policy(Batch(obs=obs.numpy())).act
        again = algo.policy(Batch(obs=obs.numpy())).act
    assert torch.equal(first, again) and torch.allclose(first, mean)  # deterministic: the mean
    np.testing.assert_allclose(algo.policy.map_action(first), 2.0 * mean.numpy(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- data: reward scale
def test_rewards_are_scaled_by_the_spread_of_episode_returns(tiny_data: Path, tmp_path: Path) -> None:
    dataset = load_dataset(dataset_path(BALL_CIRCLE, "tiny", 0))
    returns = dataset.episode_returns()
    config = smoke_config(tmp_path)
    assert iql.reward_scale(config, dataset) == pytest.approx(1000.0 / (returns.max() - returns.min()))
    assert iql.reward_scale(config.model_copy(update={"scale_rewards": False}), dataset) == 1.0
    _, _, algorithm = setup(iql, config, None, torch.device("cpu"))  # the runner builds it with the data
    assert float(algorithm.reward_scale) == pytest.approx(1000.0 / (returns.max() - returns.min()))
    # one episode: no spread to scale by, refused before a run folder exists
    own = tmp_path / "one_episode.hdf5"
    one_episode = dataset.select_episodes([0])
    write_dataset(own, one_episode.arrays, dataset.attrs)
    with pytest.raises(ConfigError, match="spread of the dataset's episode returns.*scale_rewards: false"):
        train(smoke_config(tmp_path / "runs", f"dataset.path={own}"))
    assert not (tmp_path / "runs").exists()
    assert iql.reward_scale(config.model_copy(update={"scale_rewards": False}), one_episode) == 1.0


# ---------------------------------------------------------------------- configs and the runner
def test_configs_hold_the_official_settings() -> None:
    assert {p.name for p in CONFIGS.glob("*.yaml")} == {"paper.yaml", "cpu.yaml"}
    paper, cpu = load_config("iql/paper"), load_config("iql/cpu")
    assert paper.model_dump() == iql.Config(agent="iql", task=paper.task).model_dump(), \
        "iql/paper must hold only what differs from the Config's defaults"
    assert (paper.expectile, paper.temperature, paper.weight_max, paper.discount, paper.tau) == \
        (0.7, 3.0, 100.0, 0.99, 0.005)
    assert (paper.hidden, paper.actor_lr, paper.critic_lr, paper.value_lr) == ((256, 256), 3e-4, 3e-4, 3e-4)
    assert (paper.steps, paper.batch_size, paper.decay_steps, paper.eval_every, paper.eval_episodes) == \
        (1_000_000, 256, 1_000_000, 5_000, 10)
    assert (paper.log_std_min, paper.log_std_max, paper.reward_range, paper.scale_rewards) == (-5.0, 2.0, 1000.0, True)
    differs = {k for k, v in paper.model_dump().items() if cpu.model_dump()[k] != v}
    assert differs == {"steps", "eval_every", "checkpoint_every"} and cpu.steps // cpu.eval_every == 10
    assert cpu.decay_steps == cpu.steps == 20_000  # the cosine spans the shorter run
    for task in ("aligngym/CarRun-v0", "aligngym/DroneCircle-v0"):
        assert load_config("iql/cpu", [f"task={task}"]).task == task
    with pytest.raises(ConfigError, match="did you mean 'expectile'"):
        load_config("iql/paper", ["expectle=0.9"])
    with pytest.raises(ConfigError, match="log_std_min"):
        load_config("iql/paper", ["log_std_min=3"])


@pytest.mark.parametrize("name", ["paper", "cpu"])
def test_every_config_runs_smoke_end_to_end_with_its_tensorboard_names(tiny_data: Path, tmp_path: Path, name: str,
                                                                      scalars) -> None:
    config = load_config(f"iql/{name}", [f"run_root={tmp_path}", "show_progress=false"], smoke=True)
    run_dir = train(config)
    logged = scalars(run_dir)
    losses = {t.removeprefix("loss/") for t in logged if t.startswith("loss/")}
    rates = {t.removeprefix("train/lr_") for t in logged if t.startswith("train/lr_")}
    assert losses == rates == {"actor", "critic", "value"}, sorted(logged)
    assert {"train/mean_weight", "train/advantage"} <= set(logged)
    assert [s for s, _ in logged["loss/actor"]] == [2, 4] and [s for s, _ in logged["eval/return"]] == [2, 4]
    assert all(np.isfinite(v) for tag in logged for _, v in logged[tag])
    result = evaluate(run_dir, episodes=1)  # from the run folder alone
    assert result["checkpoint_step"] == 4 and np.isfinite(result["eval/normalized_return"])
    assert result["eval/normalized_cost"] == pytest.approx(result["eval/cost"] / config.cost_limit)


def test_an_interrupted_run_resumes_exactly_and_runs_are_deterministic(tiny_data: Path, tmp_path: Path,
                                                                      cut_offline_run, scalars, same_state) -> None:
    """6 steps straight; the same run interrupted in step 5 (after its checkpoint at 4) and resumed:
    the same weights, optimiser states (the actor's cosine position included), curves and actions.
    Another seed trains other weights."""
    update = {"steps": 6, "checkpoint_every": 2, "eval_every": 6}
    reference = train(smoke_config(tmp_path / "ref").model_copy(update=update))
    split = cut_offline_run(smoke_config(tmp_path / "split").model_copy(update=update), 5)
    assert int(load_checkpoint(split / "checkpoint.pt")[1]["step"]) == 4
    resume(split)
    (_, ref_state), (_, state) = load_checkpoint(reference / "checkpoint.pt"), load_checkpoint(split / "checkpoint.pt")
    assert int(state["step"]) == 6 and int(state["algorithm"]["actor_step"]) == 6
    same_state(state["algorithm"], ref_state["algorithm"], "algorithm")
    scale = iql.reward_scale(smoke_config(tmp_path), load_dataset(dataset_path(BALL_CIRCLE, "tiny", 0)))
    assert float(state["algorithm"]["reward_scale"]) == pytest.approx(scale)  # what the run derived from its data
    assert scalars(split)["loss/actor"] == scalars(reference)["loss/actor"]
    assert evaluate(split, episodes=1)["episode_returns"] == evaluate(reference, episodes=1)["episode_returns"]
    other = train(smoke_config(tmp_path / "seed1", "seed=1").model_copy(update=update))
    _, other_state = load_checkpoint(other / "checkpoint.pt")
    assert not torch.equal(other_state["algorithm"]["value.weights.0"], ref_state["algorithm"]["value.weights.0"])
