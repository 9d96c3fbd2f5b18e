"""The safe offline baselines (BC-All, BC-Safe, BCQ-Lag): data selection, the Lagrangian, every config
end to end through the runner, exact resume and config errors. Data is generated inside the tests."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest
import torch
import yaml
from tianshou.algorithm.imitation.imitation_base import OfflineImitationLearning
from tianshou.data import Batch
from tianshou.utils.torch_utils import policy_within_training_step

from aligngym.agents.baselines import bc, bcq_lag
from aligngym.agents.baselines.bcq_lag import PIDLagrangian, cost_threshold
from aligngym.agents.config import ConfigError, load_config, validate
from aligngym.agents.evaluate import evaluate
from aligngym.agents.offline import evaluate_policy, setup
from aligngym.agents.train import load_checkpoint, resume, train
from aligngym.envs.data.dataset import OfflineDataset, dataset_path, load_dataset

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
BALL_CIRCLE = "aligngym/BallCircle-v0"
TASKS = {"ball_run": "aligngym/BallRun-v0", "ball_circle": BALL_CIRCLE, "car_run": "aligngym/CarRun-v0",
         "car_circle": "aligngym/CarCircle-v0", "drone_run": "aligngym/DroneRun-v0",
         "drone_circle": "aligngym/DroneCircle-v0", "ant_run": "aligngym/AntRun-v0",
         "ant_circle": "aligngym/AntCircle-v0"}
AGENTS = ("bc_all", "bc_safe", "bcq_lag")
CONFIG_FILES = sorted(p for agent in AGENTS for p in (CONFIGS / agent).glob("*.yaml"))


def ball_circle() -> OfflineDataset:
    return load_dataset(dataset_path(BALL_CIRCLE, "tiny", 0))


def smoke_config(agent: str, run_root: Path, *overrides: str):
    return load_config(CONFIGS / agent / "paper.yaml",
                       [f"run_root={run_root}", "show_progress=false", "device=cpu", *overrides], smoke=True)


# ---------------------------------------------------------------------- BC-Safe's data
def test_bc_safe_trains_only_on_the_episodes_within_the_cost_limit(tiny_data, tmp_path, monkeypatch):
    dataset = ball_circle()
    costs, lengths = dataset.episode_costs(), dataset.episode_lengths()
    limit = float(np.median(costs))
    kept = np.flatnonzero(costs <= limit)
    assert 0 < len(kept) < len(costs), "the limit must split the data for this test to mean anything"
    buffers = []
    real = OfflineImitationLearning.process_buffer
    monkeypatch.setattr(OfflineImitationLearning, "process_buffer",
                        lambda self, buffer: buffers.append(buffer) or real(self, buffer))
    for agent in ("bc_safe", "bc_all"):  # the real filter: cost_limit (not --smoke's)
        train(smoke_config(agent, tmp_path, f"cost_limit={limit}").model_copy(update={"filter_limit": None}))
    safe, everything = buffers

    assert len(everything) == len(dataset)
    assert len(safe) == lengths[kept].sum() < len(dataset)
    rows = safe[np.arange(len(safe))]
    expected = dataset.select_episodes(kept)
    np.testing.assert_array_equal(rows.obs, expected.arrays["observations"])
    np.testing.assert_array_equal(rows.act, expected.arrays["actions"])
    # every episode of the buffer, cut at its done flags, costs at most the limit
    ends = np.flatnonzero(rows.done) + 1
    episode_costs = [c.sum() for c in np.split(np.asarray(rows.info.cost), ends[:-1])]
    assert len(episode_costs) == len(kept) and max(episode_costs) <= limit


def test_bc_safe_refuses_a_limit_that_keeps_no_episode(tiny_data, tmp_path):
    lowest = ball_circle().episode_costs().min()
    assert lowest > 1
    with pytest.raises(ValueError, match=rf"cost_limit {lowest - 1:g} .*lowest episode cost: {lowest:g}"):
        train(smoke_config("bc_safe", tmp_path, f"cost_limit={lowest - 1}").model_copy(update={"filter_limit": None}))
    with pytest.raises(ValueError, match=rf"filter_limit {lowest - 1:g} .*raise filter_limit"):
        train(smoke_config("bc_safe", tmp_path, f"filter_limit={lowest - 1}"))
    assert not list(tmp_path.glob("*__bc_safe__*")), "refused before a run folder was made"
    bc_all = smoke_config("bc_all", tmp_path, f"cost_limit={lowest - 1}")
    assert bc.select_data(bc_all, ball_circle()).arrays["observations"].shape[0] == len(ball_circle())


@pytest.mark.parametrize("agent", AGENTS)
def test_a_missing_dataset_names_the_command_before_a_run_folder_exists(agent, tmp_path, monkeypatch):
    from aligngym.envs.data.dataset import DatasetError

    monkeypatch.setenv("ALIGNGYM_DATA", str(tmp_path / "empty"))
    config = load_config(CONFIGS / agent / "paper.yaml", ["task=aligngym/CarRun-v0", f"run_root={tmp_path / 'runs'}"])
    with pytest.raises(DatasetError, match="aligngym data generate aligngym/CarRun-v0 --size full --seed 0"):
        train(config)
    mine = load_config(CONFIGS / agent / "paper.yaml", ["task=aligngym/CarRun-v0", f"run_root={tmp_path / 'runs'}",
                                                          f"dataset.path={tmp_path / 'mine.hdf5'}"])
    with pytest.raises(DatasetError, match="mine.hdf5 is missing$"):  # a user's file: no command makes it
        train(mine)
    # a file that is there but unusable is refused before the run folder too (the whole file is checked)
    (tmp_path / "mine.hdf5").write_text("not HDF5")
    with pytest.raises(DatasetError, match="mine.hdf5 is truncated or corrupt"):
        train(mine)
    with h5py.File(tmp_path / "mine.hdf5", "w") as file:
        for key in ("observations", "rewards", "costs", "terminals", "timeouts"):
            file[key] = np.zeros((3, 2))[:, 0] if key != "observations" else np.zeros((3, 2))
    with pytest.raises(DatasetError, match="mine.hdf5 has no 'actions' dataset"):
        train(mine)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("agent", AGENTS)
def test_a_new_run_reads_its_dataset_once(agent, tiny_data, tmp_path, monkeypatch):
    """preflight checks the whole file before the run folder exists and hands it on to training."""
    import aligngym.agents.offline as offline

    reads = []
    real = offline.load_dataset
    monkeypatch.setattr(offline, "load_dataset", lambda *a, **k: reads.append(a) or real(*a, **k))
    run_dir = train(smoke_config(agent, tmp_path))
    assert len(reads) == 1
    evaluate(run_dir, episodes=1)  # scored without its dataset
    assert len(reads) == 1


# ---------------------------------------------------------------------- BCQ-Lag's Lagrangian
def test_cost_threshold_is_the_discounted_value_of_the_limit_spread_over_the_episode():
    limit, gamma, steps = 10.0, 0.99, 200
    assert cost_threshold(limit, gamma, steps) == pytest.approx(limit * (1 - gamma**steps) / (1 - gamma) / steps)
    spread = sum(gamma**t * limit / steps for t in range(steps))  # L/T per step, discounted over T steps
    assert cost_threshold(limit, gamma, steps) == pytest.approx(spread)
    assert cost_threshold(limit, 1 - 1e-9, steps) == pytest.approx(limit, rel=1e-5)  # undiscounted: L itself


def test_bcq_lag_uses_the_tasks_episode_length_and_cost_scale(tiny_data):
    config = smoke_config("bcq_lag", Path("unused"))
    _, _, algorithm = setup(bcq_lag, config, None, torch.device("cpu"))
    assert algorithm.qc_thres == pytest.approx(cost_threshold(10.0, 0.99, 200))  # BallCircle: T = 200
    assert algorithm.controller.threshold == algorithm.qc_thres
    changed = config.model_copy(update={"episode_len": 50, "cost_scale": 2.0, "cost_limit": 5.0})
    _, _, algorithm = setup(bcq_lag, changed, None, torch.device("cpu"))
    assert algorithm.qc_thres == pytest.approx(2.0 * cost_threshold(5.0, 0.99, 50))


def test_pid_multiplier_rises_above_the_threshold_and_falls_to_zero_below():
    pid = PIDLagrangian(0.1, 0.003, 0.001, threshold=2.0)
    above = [float(pid.control(torch.tensor([2.5, 3.5]))) for _ in range(20)]  # error +1 on average
    assert above[0] == pytest.approx(0.1 + 0.003 + 0.001)  # KP e + KI I + KD de with e = I = de = 1
    assert all(b > a for a, b in zip(above, above[1:])), "the integral keeps the multiplier rising"
    assert float(pid.error_integral) == pytest.approx(20.0)
    below = [float(pid.control(torch.tensor([1.0, 1.0]))) for _ in range(30)]  # error -1
    assert below[0] < above[-1] and all(b <= a for a, b in zip(below, below[1:]))
    assert below.index(0.0) == 19 and set(below[19:]) == {0.0}, "zero once the integral has drained"
    assert float(pid.error_integral) == 0.0


def test_bcq_lag_feeds_its_cost_critic_into_the_multiplier(tiny_data):
    """Cost critics pinned above, then below the threshold: lambda rises, then falls back to 0."""
    config = smoke_config("bcq_lag", Path("unused"))
    env, dataset, algorithm = setup(bcq_lag, config, None, torch.device("cpu"))
    buffer = algorithm.process_buffer(dataset.to_replay_buffer())

    def pin_cost_critic(value: float) -> None:
        with torch.no_grad():
            for member in [*algorithm.cost_critic.q1, *algorithm.cost_critic.q2]:
                last = member.model[-1]
                last.weight.zero_()
                last.bias.fill_(value)

    def lagrangians(steps: int) -> list[float]:
        with policy_within_training_step(algorithm.policy):
            return [algorithm.update(buffer, config.batch_size).lagrangian for _ in range(steps)]

    pin_cost_critic(algorithm.qc_thres + 5.0)
    rising = lagrangians(4)
    assert rising[0] > 0 and all(b > a for a, b in zip(rising, rising[1:]))
    pin_cost_critic(algorithm.qc_thres - 5.0)
    falling = lagrangians(6)
    assert falling[0] < rising[-1] and falling[-1] == 0.0
    env.close()


def test_bcq_lag_targets_mix_the_twin_critics_and_take_the_best_sample(tiny_data, monkeypatch):
    """Hand-made target: VAE samples a0 in {-0.5, 0, 0.5}, the target actor leaves them, Q1' = 10 a0 + s0,
    Q2' = 4 a0 + s0. Mix 0.75 min + 0.25 max per sample: -4.25, 0, 2.75 (+ s0); max over samples 2.75 + s0
    (a plain min would give 2, max 5, mean 3.5). Reward backups stop at episode ends; cost backups do not."""
    config = smoke_config("bcq_lag", Path("unused"), "sample_action_num=3")
    env, dataset, algorithm = setup(bcq_lag, config, None, torch.device("cpu"))
    calls, batches = [], []  # what the update regresses each critic on, and the batch it drew
    monkeypatch.setattr(algorithm, "backup", lambda t, o, sig, m: calls.append((t, sig, m)) or sig)
    update_with_batch = algorithm._update_with_batch
    monkeypatch.setattr(algorithm, "_update_with_batch", lambda b: batches.append(b) or update_with_batch(b))
    buffer = algorithm.process_buffer(dataset.to_replay_buffer())
    with policy_within_training_step(algorithm.policy):
        algorithm.update(buffer, 2048)  # large enough to hold episode ends
    (reward_target, reward_signal, reward_mask), (cost_target, cost_signal, cost_mask) = calls
    assert reward_target is algorithm.critic_target and cost_target is algorithm.cost_critic_target
    (batch,) = batches
    np.testing.assert_allclose(reward_signal.numpy(), 0.1 * np.asarray(batch.rew), rtol=1e-6)  # reward_scale
    np.testing.assert_allclose(cost_signal.numpy(), np.asarray(batch.info.cost), rtol=1e-6)
    assert np.asarray(batch.info.cost).any() and not np.allclose(0.1 * np.asarray(batch.rew), batch.info.cost)
    assert 0 < int((reward_mask == 0).sum()) < len(reward_mask), "reward backups stop at episode ends"
    assert bool((cost_mask == 1).all()), "the cost backup bootstraps through every transition (OSRL)"
    monkeypatch.undo()

    samples = torch.tensor([[-0.5, 0.0], [0.0, 0.0], [0.5, 0.0]])
    monkeypatch.setattr(algorithm.policy.vae, "decode", lambda s: samples.repeat(len(s) // 3, 1))
    monkeypatch.setattr(algorithm.actor_target, "forward", lambda s, a: a)
    target = lambda s, a: (10 * a[:, 0] + s[:, 0], 4 * a[:, 0] + s[:, 0])  # noqa: E731
    obs_next = torch.zeros(3, 8)  # each state's best sample is taken among its own samples
    obs_next[:, 0] = torch.tensor([1.0, -2.0, 3.0])
    signal, mask = torch.tensor([0.5, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    expected = signal + 0.99 * mask * (2.75 + obs_next[:, 0])
    np.testing.assert_allclose(algorithm.backup(target, obs_next, signal, mask).numpy(), expected.numpy(), rtol=1e-6)
    env.close()


def _bcq_lag_with_hand_made_critics(monkeypatch, cost: float):
    """BCQ-Lag whose actor reads hand-made critics linear in the first action coordinate ``a0``:
    Q1 = 5 - a0, Q2 = a0 (so min(Q1, Q2) = a0 near a0 = 0; Q1 alone or the max is 5 - a0) and
    Qc1 = Qc2 = qc_thres + cost + 10 a0."""
    config = smoke_config("bcq_lag", Path("unused"))
    env, dataset, algorithm = setup(bcq_lag, config, None, torch.device("cpu"))
    monkeypatch.setattr(algorithm.policy.critic, "forward", lambda s, a: (5 - a[:, 0], a[:, 0]))
    qc = lambda s, a: algorithm.qc_thres + cost + 10 * a[:, 0]  # noqa: E731
    monkeypatch.setattr(algorithm.cost_critic, "forward", lambda s, a: (qc(s, a), qc(s, a)))
    buffer = algorithm.process_buffer(dataset.to_replay_buffer())
    env.close()
    return algorithm, buffer


@pytest.mark.parametrize(("cost", "direction"), [(-5.0, 1), (5.0, -1)])
def test_bcq_lag_actor_climbs_the_lower_reward_q_until_the_multiplier_outweighs_it(
        tiny_data, monkeypatch, cost, direction):
    """Below the cost threshold the multiplier is 0 and the actor raises min(Q1, Q2) = a0; above it
    (lambda about 0.5, times dQc/da0 = 10) the Lagrangian term wins and the actor lowers a0."""
    algorithm, buffer = _bcq_lag_with_hand_made_critics(monkeypatch, cost)
    obs = torch.as_tensor(buffer.obs[:256], dtype=torch.float32)
    base = torch.zeros(len(obs), 2)
    before = algorithm.policy.actor_perturbation(obs, base)[:, 0].detach()
    with policy_within_training_step(algorithm.policy):
        stats = algorithm.update(buffer, 256)
    after = algorithm.policy.actor_perturbation(obs, base)[:, 0].detach()
    assert (stats.lagrangian > 0) == (cost > 0)
    moved = float((after - before).mean())
    assert moved * direction > 0, f"the actor moved a0 by {moved:+.2e}"


def test_bcq_lag_vae_loss_is_reconstruction_plus_half_the_kl(tiny_data, monkeypatch):
    """OSRL's VAE loss, MSE(recon, a) + beta KL(N(mean, std) || N(0, 1)) with beta = kl_weight, recomputed
    by hand from the same draw (the VAE's forward is the update's first use of torch's generator)."""
    config = smoke_config("bcq_lag", Path("unused"), "kl_weight=0.7")
    env, dataset, algorithm = setup(bcq_lag, config, None, torch.device("cpu"))
    env.close()
    buffer = algorithm.process_buffer(dataset.to_replay_buffer())
    batch, indices = buffer.sample(config.batch_size)
    seen = []
    real_step = algorithm.vae_optim.step
    monkeypatch.setattr(algorithm.vae_optim, "step", lambda loss: seen.append(loss.item()) or real_step(loss))
    vae = algorithm.policy.vae
    weights = {k: v.clone() for k, v in vae.state_dict().items()}
    torch.manual_seed(5)
    with policy_within_training_step(algorithm.policy):
        algorithm._update_with_batch(batch)
    vae.load_state_dict(weights)
    torch.manual_seed(5)
    obs = torch.as_tensor(np.asarray(batch.obs), dtype=torch.float32)
    act = torch.as_tensor(np.asarray(batch.act), dtype=torch.float32)
    with torch.no_grad():
        recon, mean, std = vae(obs, act)
    kl = (0.5 * (std**2 + mean**2 - 1) - torch.log(std)).mean()
    assert seen == [pytest.approx(float(((recon - act) ** 2).mean() + 0.7 * kl), rel=1e-5)]


def test_bcq_lag_regresses_every_critic_member_and_moves_its_target_networks(tiny_data, monkeypatch):
    """With a constant backup of 3, every member of both groups of the reward and the cost critic
    moves towards 3, and each target network takes tau of the online one (Polyak)."""
    config = smoke_config("bcq_lag", Path("unused"))
    env, dataset, algorithm = setup(bcq_lag, config, None, torch.device("cpu"))
    env.close()
    monkeypatch.setattr(algorithm, "backup", lambda t, o, sig, m: torch.full_like(sig, 3.0))
    buffer = algorithm.process_buffer(dataset.to_replay_buffer())
    obs = torch.as_tensor(buffer.obs[:512], dtype=torch.float32)
    act = torch.as_tensor(buffer.act[:512], dtype=torch.float32)
    critics = (algorithm.policy.critic, algorithm.cost_critic)
    gaps = [(c.members(obs, act) - 3).abs().mean(dim=1).detach() for c in critics]
    pairs = [(algorithm.policy.actor_perturbation, algorithm.actor_target),
             (algorithm.policy.critic, algorithm.critic_target), (algorithm.cost_critic, algorithm.cost_critic_target)]
    old_targets = [[p.detach().clone() for p in target.parameters()] for _, target in pairs]
    with policy_within_training_step(algorithm.policy):
        for _ in range(3):
            algorithm.update(buffer, 512)
            for (online, target), olds in zip(pairs, old_targets):
                for new, old, live in zip(target.parameters(), olds, online.parameters()):
                    torch.testing.assert_close(new.detach(), 0.995 * old + 0.005 * live.detach())
                    old.copy_(new.detach())
    for critic, before in zip(critics, gaps):
        after = (critic.members(obs, act) - 3).abs().mean(dim=1).detach()
        assert bool((after < before).all()), f"members not regressed: {before.tolist()} -> {after.tolist()}"


def test_bcq_lag_acting_with_several_samples_takes_each_states_best_by_the_lower_reward_q(tiny_data, monkeypatch):
    """act_samples = 3 (the original BCQ): per state, the sample with the highest min(Q1, Q2) among its
    own samples. Q1 = a[0], Q2 = a[0] - 0.5 a[1] over samples [-0.5, 0], [0.4, 1], [0.1, 0] (+0.01 per
    state index): min -> [0.1, 0]; max would take [0.4, 1]."""
    config = smoke_config("bcq_lag", Path("unused"), "act_samples=3")
    env, _, algorithm = setup(bcq_lag, config, None, torch.device("cpu"))
    policy = algorithm.policy
    samples = torch.tensor([[-0.5, 0.0], [0.4, 1.0], [0.1, 0.0]])

    def decode(tiled: torch.Tensor) -> torch.Tensor:
        return samples.repeat(len(tiled) // 3, 1) + torch.stack([0.01 * tiled[:, 0], torch.zeros(len(tiled))], 1)

    monkeypatch.setattr(policy.vae, "decode", decode)
    monkeypatch.setattr(policy.actor_perturbation, "forward", lambda s, a: a)
    monkeypatch.setattr(policy.critic, "forward", lambda s, a: (a[:, 0], a[:, 0] - 0.5 * a[:, 1]))
    obs = np.zeros((3, 8), dtype=np.float32)
    obs[:, 0] = np.arange(3)
    act = policy(Batch(obs=obs, info={})).act
    np.testing.assert_allclose(np.asarray(act), [[0.1 + 0.01 * i, 0.0] for i in range(3)], rtol=1e-5)
    env.close()


# ---------------------------------------------------------------------- configs through the runner
def test_configs_cover_every_agent_and_task_with_osrl_settings():
    """One file per agent and preset: the paper's (the Config's defaults, OSRL's) and cpu (fewer steps);
    every task by --set task=..."""
    for agent in AGENTS:
        assert {p.name for p in (CONFIGS / agent).glob("*.yaml")} == {"paper.yaml", "cpu.yaml"}
        for stem, env_id in TASKS.items():
            full, cpu = (load_config(f"{agent}/{preset}", [f"task={env_id}"]) for preset in ("paper", "cpu"))
            assert (full.agent, full.task, full.cost_limit, full.dataset.size, full.device) == \
                   (agent, env_id, 10.0, "full", "auto")
            assert (full.steps, full.batch_size, full.eval_every, full.eval_episodes) == (100_000, 512, 2_500, 10)
            assert cpu.steps == (10_000 if agent == "bcq_lag" else 20_000)  # about an hour on a core (BCQ-Lag 45-70 min)
            assert cpu.steps // cpu.eval_every >= 10, "at least 10 evaluations per run"
            differs = {k for k, v in full.model_dump().items() if cpu.model_dump()[k] != v}
            assert differs == {"steps", "eval_every", "checkpoint_every"}, f"{agent}/cpu: {differs}"
            paper_defaults = type(full)(agent=agent, task=env_id)
            assert full.model_dump() == paper_defaults.model_dump(), f"{agent}/paper must hold only what differs from the Config's defaults"
    bcql = load_config(CONFIGS / "bcq_lag" / "paper.yaml")
    assert (bcql.phi, bcql.lambda_mix, bcql.pid, bcql.num_q, bcql.num_qc, bcql.reward_scale, bcql.cost_scale,
            bcql.sample_action_num, bcql.vae_hidden, bcql.actor_lr, bcql.critic_lr, bcql.vae_lr, bcql.kl_weight,
            bcql.gamma, bcql.tau, bcql.actor_hidden, bcql.critic_hidden) == \
           (0.05, 0.75, (0.1, 0.003, 0.001), 2, 2, 0.1, 1.0, 10, 400, 1e-3, 1e-3, 1e-3, 0.5, 0.99, 0.005,
            (256, 256), (256, 256))


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_config_runs_smoke_end_to_end(tiny_data, tmp_path, path):
    overrides = [f"run_root={tmp_path}", "show_progress=false"]
    config = load_config(path, overrides, smoke=True)
    if config.agent == "bc_safe":  # --smoke lifts the filter only: no tiny episode is within 10
        assert (config.filter_limit, config.cost_limit) == (bc.SMOKE_FILTER_LIMIT, 10)
    run_dir = train(config)
    result = evaluate(run_dir, episodes=1)
    assert math.isfinite(result["eval/normalized_cost"])  # DSRL's normalisation at the config's limit
    assert result["eval/normalized_cost"] == pytest.approx(result["eval/cost"] / config.cost_limit)
    assert math.isfinite(result["eval/normalized_return"])
    assert result["checkpoint_step"] == config.steps and result["episodes"] == 1
    assert (run_dir / "eval.json").is_file()
    with pytest.raises(ConfigError, match=f"--selection does not apply to {config.agent} runs"):
        evaluate(run_dir, episodes=1, selection="first_feasible")  # FISOR's option


# ---------------------------------------------------------------------- scoring and unsuitable tasks
class _Countdown(gym.Env):
    """Episodes of 2, 3 or 4 steps (by reset seed), reward 1 and cost 1 per step; no episode limit
    in its spec. ``low`` sets the action space's lower bound."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, low: float = -1.0) -> None:
        self.action_space = gym.spaces.Box(low, 1.0, (1,), np.float32)
        self.left = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.left = 2 + (seed or 0) % 3
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.left -= 1
        return np.zeros(1, np.float32), 1.0, self.left == 0, False, {"cost": 1.0}


@pytest.fixture
def countdown():
    ids = {"symmetric": "aligngym_test/Countdown-v0", "skewed": "aligngym_test/SkewedCountdown-v0"}
    gym.register(ids["symmetric"], entry_point=_Countdown)
    gym.register(ids["skewed"], entry_point=lambda: _Countdown(low=0.0))
    yield ids
    for env_id in ids.values():
        gym.registry.pop(env_id)


@pytest.mark.parametrize("chunk", [100, 2])
def test_evaluation_counts_each_episode_only_until_it_ends(tmp_path, countdown, monkeypatch, chunk):
    """Episodes of 2, 3 and 4 steps played side by side: each one's return, cost and length stop
    at its own end (the envs that finished early keep stepping while the others play); played in
    chunks of 2, the episodes keep their seeds."""
    monkeypatch.setattr("aligngym.agents.offline.EVAL_CHUNK", chunk)

    class Still(torch.nn.Module):
        def forward(self, batch, state=None):
            return Batch(act=np.zeros((len(batch.obs), 1), np.float32))

        def map_action(self, act):
            return act

    config = smoke_config("bc_all", tmp_path, f"task={countdown['symmetric']}", "cost_limit=2.5")
    result = evaluate_policy(config, Still(), episodes=3, seed=0)
    assert result["episode_returns"] == result["episode_costs"] == [2.0, 3.0, 4.0]
    assert result["eval/length"] == 3.0 and result["eval/unsafe_episodes"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(("agent", "task", "message"), [
    ("bc_all", "skewed", "bounded in \\[-a, a\\]"), ("bcq_lag", "skewed", "bounded in \\[-a, a\\]"),
    ("bcq_lag", "symmetric", "no episode length"),
])
def test_a_task_the_agent_cannot_use_is_refused_before_a_run_folder_exists(tmp_path, countdown, agent, task,
                                                                           message):
    config = smoke_config(agent, tmp_path / "runs", f"task={countdown[task]}")
    with pytest.raises(ConfigError, match=message):
        train(config)
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("agent", ["bc_safe", "bcq_lag"])
def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(tiny_data, tmp_path, agent, scalars):
    reference = train(smoke_config(agent, tmp_path / "ref").model_copy(update={"steps": 6}))
    first = train(smoke_config(agent, tmp_path / "split"))  # smoke: 4 steps
    saved = yaml.safe_load((first / "config.yaml").read_text())
    saved["steps"] = 6
    (first / "config.yaml").write_text(yaml.safe_dump(saved))
    assert resume(first) == first
    (_, ref_state), (_, state) = load_checkpoint(reference / "checkpoint.pt"), load_checkpoint(first / "checkpoint.pt")
    assert int(state["step"]) == int(ref_state["step"]) == 6
    weights, ref_weights = state["algorithm"], ref_state["algorithm"]
    assert weights.keys() == ref_weights.keys()
    for key, value in ref_weights.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(weights[key], value), key
    assert torch.equal(state["algorithm"]["_optimizers"][0]["state"][0]["exp_avg"],
                       ref_state["algorithm"]["_optimizers"][0]["state"][0]["exp_avg"])
    if agent == "bcq_lag":
        assert float(ref_weights["controller.error_old"]) != 0, "the PID's state must be in the checkpoint"
        for name in ("controller.error_old", "controller.error_integral"):
            assert float(weights[name]) == float(ref_weights[name]), name
    # the curves too: the scores logged at the checkpoint's step (4) survive the resume's purge
    ref_logged, logged = scalars(reference), scalars(first)
    for tag in [t for t in ref_logged if t.startswith(("loss/", "eval/"))]:
        assert [s for s, _ in ref_logged[tag]] == [2, 4, 6], tag
        assert logged[tag] == ref_logged[tag], tag
    # the checkpoint alone rebuilds the agent, and its evaluation is reproducible
    assert evaluate(first, episodes=1)["eval/return"] == evaluate(reference, episodes=1)["eval/return"]


def test_a_checkpoint_with_the_earlier_random_state_layout_resumes_exactly(tiny_data, tmp_path):
    """Checkpoints written before the runner saved numpy's own dict layout ({keys, pos, gauss}) still
    continue every random stream where it stopped."""
    reference = train(smoke_config("bcq_lag", tmp_path / "ref").model_copy(update={"steps": 6}))
    first = train(smoke_config("bcq_lag", tmp_path / "split"))
    payload = torch.load(first / "checkpoint.pt", weights_only=True)
    for name in ("buffer", "numpy"):
        new = payload["state"]["rng"][name]
        payload["state"]["rng"][name] = {"keys": new["state"]["key"], "pos": new["state"]["pos"],
                                         "gauss": [new["has_gauss"], new["gauss"]]}
    torch.save(payload, first / "checkpoint.pt")
    (first / "config.yaml").write_text((first / "config.yaml").read_text().replace("steps: 4", "steps: 6"))
    resume(first)
    (_, ref_state), (_, state) = load_checkpoint(reference / "checkpoint.pt"), load_checkpoint(first / "checkpoint.pt")
    assert int(state["step"]) == 6 and "keys" not in state["rng"]["numpy"]
    for key, value in ref_state["algorithm"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(state["algorithm"][key], value), key


def test_how_often_a_run_evaluates_does_not_change_what_it_trains(tiny_data, tmp_path):
    """BCQ-Lag samples its evaluation actions from torch's generator: evaluations draw from a fork."""
    runs = [train(smoke_config("bcq_lag", tmp_path / str(n)).model_copy(update={"eval_episodes": n}))
            for n in (1, 3)]  # (--smoke sets eval_episodes to 1: changed after it)
    (_, one), (_, three) = (load_checkpoint(r / "checkpoint.pt") for r in runs)
    for key, value in one["algorithm"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(three["algorithm"][key], value), key


def test_an_interrupted_run_logs_the_losses_an_uninterrupted_one_does(tiny_data, tmp_path, cut_offline_run, scalars):
    """A checkpoint between two logs carries the losses gathered since the last log, so the first
    log after a resume averages the same steps as it would have without the interruption."""
    update = {"steps": 6, "log_every": 3, "checkpoint_every": 2, "eval_every": 6}
    reference = train(smoke_config("bc_all", tmp_path / "ref").model_copy(update=update))
    # cut in step 5: after the checkpoint at 4, with step 4's loss not yet logged
    split = cut_offline_run(smoke_config("bc_all", tmp_path / "split").model_copy(update=update), 5)
    assert int(load_checkpoint(split / "checkpoint.pt")[1]["step"]) == 4
    resume(split)
    ref_logged, logged = scalars(reference), scalars(split)
    assert [s for s, _ in ref_logged["loss/actor"]] == [3, 6]
    assert logged["loss/actor"] == ref_logged["loss/actor"]


def test_a_diverged_run_stops_clearly_and_keeps_its_last_good_checkpoint(tiny_data, tmp_path, monkeypatch):
    from aligngym.agents import offline
    from aligngym.agents.cli import main
    from aligngym.agents.train import TrainingDiverged

    real, calls = offline.policy_within_training_step, []

    def poisoned_in_step_3(policy):
        calls.append(1)
        if len(calls) == 3:
            next(policy.parameters()).data.fill_(float("nan"))
        return real(policy)

    monkeypatch.setattr(offline, "policy_within_training_step", poisoned_in_step_3)
    config = smoke_config("bc_all", tmp_path)  # checkpoints at steps 2 and 4
    with pytest.raises(TrainingDiverged, match=r"diverged by step 4: \d+ weight tensors hold NaN or inf"):
        train(config)
    (run_dir,) = tmp_path.iterdir()
    _, state = load_checkpoint(run_dir / "checkpoint.pt")
    assert int(state["step"]) == 2
    assert all(torch.isfinite(v).all() for v in state["algorithm"].values() if isinstance(v, torch.Tensor))
    calls.clear()
    assert main(["train", str(CONFIGS / "bc_all" / "paper.yaml"), "--smoke", "--set", f"run_root={tmp_path}",
                 "--set", "show_progress=false", "--set", "device=cpu"]) == 1


def test_resume_refuses_a_dataset_file_rewritten_since(tiny_data, tmp_path):
    from aligngym.agents.train import CheckpointError
    from aligngym.envs.data.dataset import write_dataset

    own = tmp_path / "mine.hdf5"
    original = ball_circle()
    write_dataset(own, original.arrays, original.attrs)
    run_dir = train(smoke_config("bc_all", tmp_path / "runs", f"dataset.path={own}"))
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    saved["steps"] = 6
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    write_dataset(own, {**original.arrays, "rewards": original.arrays["rewards"] + 1}, original.attrs)
    with pytest.raises(CheckpointError, match=r"mine.hdf5 is not the data this run was trained on"):
        resume(run_dir)
    write_dataset(own, original.arrays, original.attrs)  # the same data again: resumes
    resume(run_dir)
    assert int(load_checkpoint(run_dir / "checkpoint.pt")[1]["step"]) == 6


def test_dataset_path_is_made_absolute_and_may_not_be_empty(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(CONFIGS / "bc_all" / "paper.yaml", ["dataset.path=data/mine.hdf5"])
    assert config.dataset.path == str(tmp_path / "data" / "mine.hdf5")
    home = load_config(CONFIGS / "bc_all" / "paper.yaml", ["dataset.path=~/mine.hdf5"])
    assert home.dataset.path == str(Path.home() / "mine.hdf5")
    with pytest.raises(ConfigError, match="dataset.path"):
        load_config(CONFIGS / "bc_all" / "paper.yaml", ["dataset.path="])


@pytest.mark.parametrize("entry", ["step", "rng", "algorithm"])
def test_a_checkpoint_lacking_an_entry_is_refused_clearly_on_resume(tiny_data, tmp_path, entry):
    from aligngym.agents.train import CheckpointError

    run = train(smoke_config("bc_all", tmp_path))
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    del payload["state"][entry]
    payload["config"]["steps"] = 6
    torch.save(payload, run / "checkpoint.pt")
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("steps: 4", "steps: 6"))
    with pytest.raises(CheckpointError, match="incomplete"):
        resume(run)


# ---------------------------------------------------------------------- config errors
def test_wrong_config_keys_and_values_are_refused():
    path = CONFIGS / "bcq_lag" / "paper.yaml"
    with pytest.raises(ConfigError, match="unknown key 'actor_lrr' \\(did you mean 'actor_lr'\\?\\)"):
        load_config(path, ["actor_lrr=0.01"])
    with pytest.raises(ConfigError, match="pid"):
        load_config(path, ["pid=[0.1, 0.2]"])
    with pytest.raises(ConfigError, match="unknown key 'phi'"):
        load_config(CONFIGS / "bc_safe" / "paper.yaml", ["phi=0.05"])  # a BCQ-Lag key on BC
    with pytest.raises(ConfigError, match="lambda_mix"):
        validate({"agent": "bcq_lag", "task": BALL_CIRCLE, "lambda_mix": 1.5}, "inline")


def test_compile_true_trains_compiled_networks_into_the_same_checkpoint(tiny_data, tmp_path, monkeypatch):
    """``compile: true`` torch.compiles the agent's networks; the run and its checkpoint are as without it."""
    compiled = []
    real = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(type(self).__name__)
                        or real(self, *a, **k))
    update = {"steps": 4}
    plain = train(smoke_config("bc_all", tmp_path / "plain").model_copy(update=update))
    assert compiled == []
    fast = train(smoke_config("bc_all", tmp_path / "compiled", "compile=true").model_copy(update=update))
    assert compiled  # the actor (under the algorithm or its policy)
    (_, a), (_, b) = load_checkpoint(plain / "checkpoint.pt"), load_checkpoint(fast / "checkpoint.pt")
    assert sorted(a["algorithm"]) == sorted(b["algorithm"])  # the same keys: no "_orig_mod" prefixes
    for key, tensor in a["algorithm"].items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            torch.testing.assert_close(tensor, b["algorithm"][key], rtol=1e-4, atol=1e-5)
