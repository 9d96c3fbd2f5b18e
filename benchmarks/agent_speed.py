"""Offline agents' training speed at their papers' batch sizes, with peak memory; FISOR's acting speed.

    python benchmarks/agent_speed.py [--agents fisor a2pr td3bc] [--device auto|cpu|cuda] [--threads 1]
                                     [--updates 20] [--rounds 3] [--states 20] [--compile] [--profile]

1. Gradient updates per second at the paper's batch sizes, on synthetic buffers of 100k transitions:
   FISOR (2048 sampled; the actor's two updates on 1024 each; the critics on 256) on BallCircle's
   shapes; A2PR and TD3+BC (256) on HalfCheetah's (17 observations, 6 actions); the sequence forms of
   DoC and the Decision Transformer (64 windows, context 20; DoC's windows 39 steps: context and future
   20) on the slippery FrozenLake's shapes (16 one-hot observations, 4 actions), the official neural
   sizes (DoC: three 3-layer GPT stacks of width 128; DT: one). The agents take turns:
   ``--rounds`` rounds of ``--updates`` timed updates each (after 3 untimed ones); the table gives each
   agent's median rate and each one's cost per update relative to the last agent listed, the median of
   the per-round ratios (agents timed side by side, so the drift of a shared machine's load cancels),
   and the CPU milliseconds per update (the process's CPU time over a round, every thread counted:
   what a busy machine charges, where wall time also counts waiting for a core).
2. FISOR only: actions per second when acting: ``--states`` states at once (an evaluation's parallel
   episodes), each with 16 candidates through 5 denoising steps and the Q_h ensemble; the figure
   counts env actions (states), not candidates.
3. The arithmetic of one update (torch's FlopCounterMode: matrix products), and its ratio to the
   last agent's: the floor of the cost ratio where both are bound by their matrix products.
4. Peak memory while each agent is built and trained: CUDA's max allocated on a GPU; on a CPU the
   process's peak resident set over the agent's turn (Linux: the high-water mark is reset before
   it, ``/proc/self/clear_refs``), with the part the agent added to what the process held before it.

With ``--profile``, each agent's CPU time by operation over 3 updates (torch.profiler). With
``--compile`` each agent is timed twice, the second time with its networks compiled
(``torch.compile``, as a config's ``compile: true``; the compilation happens in the warm-up).

Every agent trains on ``--threads`` torch threads (default 1, as the runner trains them). Compare
figures from one run on one machine: these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from tianshou.data import Batch, ReplayBuffer
from tianshou.utils.torch_utils import policy_within_training_step

import aligngym.envs  # noqa: F401
from aligngym.agents import a2pr, doc
from aligngym.agents.baselines import dt, td3bc
from aligngym.agents.fisor import FISOR
from aligngym.agents.fisor import Config as FISORConfig
from aligngym.agents.offline import compile_networks
from aligngym.agents.train import resolve_device
from aligngym.envs.data.dataset import OfflineDataset

AGENTS = ("fisor", "a2pr", "doc", "dt", "td3bc")  # the last is the reference of the cost ratios
TRANSITIONS = 100_000


def synthetic_buffer(n: int, obs_dim: int, act_dim: int) -> ReplayBuffer:
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer.from_data(
        obs=rng.standard_normal((n, obs_dim)).astype(np.float32),
        act=rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        rew=rng.standard_normal(n).astype(np.float32), terminated=np.zeros(n, bool),
        truncated=np.zeros(n, bool), done=np.zeros(n, bool),
        obs_next=rng.standard_normal((n, obs_dim)).astype(np.float32))
    buffer._meta.info = Batch(cost=(rng.random(n) < 0.2).astype(np.float32))
    return buffer


def locomotion_dataset(n: int, obs_dim: int, act_dim: int) -> OfflineDataset:
    """Random transitions shaped like a D4RL locomotion dataset (episodes end rarely)."""
    rng = np.random.default_rng(0)
    obs = rng.normal(1.0, 3.0, (n, obs_dim)).astype(np.float32)
    return OfflineDataset(arrays={
        "observations": obs, "next_observations": obs + rng.normal(0, 0.1, obs.shape).astype(np.float32),
        "actions": rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        "rewards": rng.standard_normal(n).astype(np.float32),
        "terminals": rng.random(n) < 0.001, "timeouts": np.zeros(n, bool)})


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------- memory
def _status_kib(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak(device: torch.device) -> int | None:
    """Start measuring a new peak; returns the resident set (KiB) held now (None where unknown)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) // 1024
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
    except OSError:
        return None
    return _status_kib("VmRSS")


def peak_memory(device: torch.device, before: int | None) -> str:
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) // 1024
        return f"{peak / 2**10:,.0f} MiB CUDA allocated (+{(peak - before) / 2**10:,.0f})"
    high = _status_kib("VmHWM") if before is not None else None
    if high is None:  # no resettable high-water mark: the process's peak so far
        return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:,.0f} MiB resident (process)"
    return f"{high / 2**10:,.0f} MiB resident (+{(high - before) / 2**10:,.0f})"


# ---------------------------------------------------------------------- agents
@dataclass
class Trainee:
    name: str
    algorithm: torch.nn.Module
    buffer: ReplayBuffer
    batch_size: int
    note: str
    obs_dim: int
    rates: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)  # CPU milliseconds per update, per round
    memory: str = ""
    flops: float = 0.0


def build_fisor(device: torch.device) -> Trainee:
    env = gym.make("aligngym/BallCircle-v0")
    config = FISORConfig(agent="fisor", task="aligngym/BallCircle-v0")
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    algo = FISOR(config, obs_dim, env.action_space, 1.0, device)
    buffer = algo.process_buffer(synthetic_buffer(TRANSITIONS, obs_dim, act_dim))
    params = sum(p.numel() for p in algo.actor.parameters())
    return Trainee("fisor", algo, buffer, config.batch_size,
                   f"batch {config.batch_size}, critics {config.critic_batch_size}; actor parameters {params:,}",
                   obs_dim)


def build_locomotion(name: str, device: torch.device) -> Trainee:
    module = {"a2pr": a2pr, "td3bc": td3bc}[name]
    env = gym.make("HalfCheetah-v5")
    config = module.Config(agent=name, task="HalfCheetah-v5")
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    data = locomotion_dataset(TRANSITIONS, obs_dim, act_dim)
    algo = module.build(config, env, data, device)
    env.close()
    buffer = algo.process_buffer(data.to_replay_buffer())
    params = sum(p.numel() for p in algo.parameters())
    return Trainee(name, algo, buffer, config.batch_size,
                   f"batch {config.batch_size}, HalfCheetah's shapes; parameters {params:,} (target copies included)",
                   obs_dim)


def lake_dataset(n: int, episode_length: int = 25) -> OfflineDataset:
    """``n`` synthetic transitions of the slippery FrozenLake's shapes: one-hot cells, action indices,
    episodes of ``episode_length`` steps ending with reward 1."""
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 16, n + 1)
    eye = np.eye(16, dtype=np.float32)
    ends = (np.arange(n) + 1) % episode_length == 0
    return OfflineDataset(arrays={
        "observations": eye[cells[:-1]], "next_observations": eye[cells[1:]],
        "actions": rng.integers(0, 4, n).astype(np.int64), "rewards": ends.astype(np.float32),
        "costs": np.zeros(n, np.float32), "terminals": ends, "timeouts": np.zeros(n, bool)})


def build_sequence(name: str, device: torch.device) -> Trainee:
    module = {"doc": doc, "dt": dt}[name]
    env = gym.make("aligngym/SlipperyFrozenLake-v0")
    config = module.Config(agent=name, task="aligngym/SlipperyFrozenLake-v0")  # form: sequence, official sizes
    data = lake_dataset(TRANSITIONS)
    algo = module.build(config, env, data, device)
    env.close()
    buffer = algo.process_buffer(data.to_replay_buffer())
    params = sum(p.numel() for p in algo.parameters())
    return Trainee(name, algo, buffer, config.batch_size,
                   f"batch {config.batch_size} windows, context {config.context_len}, FrozenLake's shapes; "
                   f"parameters {params:,}", 16)


def flops_per_update(trainee: Trainee, updates: int = 4) -> float:
    """The floating-point operations of one update (mean over ``updates``: TD3+BC's actor learns every
    second one), counted by torch's FlopCounterMode (matrix products and convolutions only)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with policy_within_training_step(trainee.algorithm.policy), counter:
        for _ in range(updates):
            trainee.algorithm.update(trainee.buffer, trainee.batch_size)
    return counter.get_total_flops() / updates


def timed_updates(trainee: Trainee, updates: int, device: torch.device) -> float:
    """Updates per second of wall time; the round's CPU milliseconds per update (this process, every
    thread) go to ``trainee.cpu_ms``."""
    with policy_within_training_step(trainee.algorithm.policy):
        synchronize(device)
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(updates):
            trainee.algorithm.update(trainee.buffer, trainee.batch_size)
        synchronize(device)
    trainee.cpu_ms.append(1000 * (time.process_time() - cpu) / updates)
    return updates / (time.perf_counter() - started)


def fisor_actions_per_second(algo: FISOR, obs_dim: int, states: int, device: torch.device) -> float:
    policy = algo.policy.eval()
    obs = torch.randn(states, obs_dim, device=device)
    policy.select(obs)
    synchronize(device)
    started, calls = time.perf_counter(), 0
    while time.perf_counter() - started < 3.0:
        policy.select(obs)
        calls += 1
    synchronize(device)
    return calls * states / (time.perf_counter() - started)


# each agent at its paper's batch size on synthetic data of its task's shapes
BUILDERS: dict[str, Callable[[torch.device], Trainee]] = {
    "fisor": build_fisor, "a2pr": lambda d: build_locomotion("a2pr", d),
    "td3bc": lambda d: build_locomotion("td3bc", d), "doc": lambda d: build_sequence("doc", d),
    "dt": lambda d: build_sequence("dt", d)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", nargs="+", default=list(AGENTS), choices=AGENTS)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the runner's default: 1)")
    parser.add_argument("--updates", type=int, default=20, help="timed updates per agent and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of turns")
    parser.add_argument("--states", type=int, default=20, help="FISOR's acting benchmark: states at once")
    parser.add_argument("--profile", action="store_true",
                        help="print where each agent's update spends its CPU time (torch.profiler, 3 updates)")
    parser.add_argument("--compile", action="store_true",
                        help="also time each agent with its networks torch.compile'd (the configs' compile: true)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    trainees: list[Trainee] = []
    variants = [(agent, compiled) for agent in dict.fromkeys(args.agents)
                for compiled in (False, True)[:1 + args.compile]]
    for agent, compiled in variants:  # each agent's peak over its build, warm-up and first round
        before = reset_peak(device)
        trainee = BUILDERS[agent](device)
        if compiled:
            compile_networks(trainee.algorithm)
            trainee.name += " (compiled)"
        timed_updates(trainee, 3, device)  # warm-up (and the compilation)
        trainee.cpu_ms.clear()
        trainee.rates.append(timed_updates(trainee, args.updates, device))
        trainee.memory = peak_memory(device, before)
        trainee.flops = flops_per_update(trainee)
        trainees.append(trainee)
    for _ in range(args.rounds - 1):
        for trainee in trainees:
            trainee.rates.append(timed_updates(trainee, args.updates, device))
    base = trainees[-1]
    print(f"| agent | updates/s (median of {args.rounds} x {args.updates}) | CPU ms per update | cost per update vs "
          f"{base.name} | MFLOP per update (vs {base.name}) | peak memory | setting |")
    print("|---|---|---|---|---|---|---|")
    for trainee in trainees:
        ratio = statistics.median(b / t for t, b in zip(trainee.rates, base.rates))
        print(f"| {trainee.name} | {statistics.median(trainee.rates):.2f} | {statistics.median(trainee.cpu_ms):.1f} "
              f"| {ratio:.2f}x | {trainee.flops / 1e6:,.0f} "
              f"({trainee.flops / base.flops:.1f}x) | {trainee.memory} | {trainee.note} |")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        for trainee in trainees:
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                timed_updates(trainee, 3, device)
            events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
            total = sum(e.self_cpu_time_total for e in events)
            shares = ", ".join(f"{e.key} {100 * e.self_cpu_time_total / total:.0f} %" for e in events[:6])
            print(f"\n{trainee.name}, CPU time by operation: {shares}")
    fisor = next((t for t in trainees if t.name == "fisor"), None)
    if fisor is not None:
        config = fisor.algorithm.config
        actions = fisor_actions_per_second(fisor.algorithm, fisor.obs_dim, args.states, device)
        print(f"\nFISOR acting: {actions:,.0f} actions/s ({args.states} states x {config.candidates} candidates, "
              f"{config.diffusion_steps} denoising steps)")


if __name__ == "__main__":
    main()
