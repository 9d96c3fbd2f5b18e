"""How many torch CPU threads each agent should train with: 1 or 2, on a quiet and on a busy machine.

    python benchmarks/threads.py [--agents independent_dqn fisor bc_all bcq_lag] [--seconds 20] [--rounds 2]

For every agent and thread count, a fresh child process builds the agent from its bundled CPU
config (``quickstart``; ``fisor/cpu``, ``bc_all/cpu``, ``bcq_lag/cpu`` on BallCircle-shaped synthetic
data, as benchmarks/agent_speed.py) and times its unit of training for ``--seconds`` after a warm-up:
one training episode of the quickstart population, one gradient step of an offline agent. It reports
wall seconds and CPU-seconds (user + system, every thread of the process) per unit. "busy" runs the
same beside one process spinning on a core (what a second job on a 2-core machine does). Thread
counts alternate within each round, so drift hits both alike; compare the ratios (2 threads / 1),
not the absolute times. The agents' ``default_threads`` (``RunConfig``; a config's ``threads``
overrides it) follow these figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

AGENTS = {"independent_dqn": "quickstart", "fisor": "fisor/cpu", "bc_all": "bc_all/cpu", "bcq_lag": "bcq_lag/cpu"}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(agent: str, threads: int, seconds: float) -> dict[str, float]:
    """Time ``agent``'s unit of training with ``threads`` torch threads (in this process)."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from aligngym.agents.config import agent_module, load_config

    config = load_config(AGENTS[agent], ["device=cpu", "show_progress=false"])
    if agent == "independent_dqn":
        from aligngym.agents.marl.batched import SeedBatch

        pop = SeedBatch([config], torch.device("cpu"))

        def unit() -> None:
            pop.learner.set_episode(pop.episode)
            pop.play_episode(explore=True, learn=True, keep_memory=pop.episode > 0)
        warmup = 15  # the replay fills and updates start
    else:
        import gymnasium as gym
        from tianshou.utils.torch_utils import policy_within_training_step

        sys.path.insert(0, str(Path(__file__).parent))
        from agent_speed import synthetic_buffer

        env = gym.make(config.task)
        algorithm = agent_module(agent).build(config, env, None, torch.device("cpu"))
        shape = (env.observation_space.shape[0], env.action_space.shape[0])
        buffer = algorithm.process_buffer(synthetic_buffer(100_000, *shape))
        buffer._random_state = np.random.RandomState(0)

        def unit() -> None:
            with policy_within_training_step(algorithm.policy):
                algorithm.update(buffer, config.batch_size)
        warmup = 10
    for _ in range(warmup):
        unit()
    n, wall0, cpu0 = 0, time.perf_counter(), _cpu_seconds()
    while time.perf_counter() - wall0 < seconds:
        unit()
        n += 1
    wall, cpu = time.perf_counter() - wall0, _cpu_seconds() - cpu0
    return {"units": n, "wall_per_unit": wall / n, "cpu_per_unit": cpu / n}


def _spin() -> None:
    while True:
        pass


def measure(agent: str, threads: int, seconds: float) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", agent, str(threads), str(seconds)],
                         capture_output=True, text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", nargs="+", default=list(AGENTS), choices=list(AGENTS))
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="measurements per setting (thread counts alternate)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), float(args.child[2]))))
        return
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    print("| agent (unit) | load | wall per unit, 1 thread | 2 threads | ratio 2/1 | CPU-s per unit, 1 thread "
          "| 2 threads | ratio 2/1 |")
    print("|---|---|---|---|---|---|---|---|")
    for agent in args.agents:
        for load in ("quiet", "busy"):
            spinner = multiprocessing.Process(target=_spin, daemon=True) if load == "busy" else None
            if spinner is not None:
                spinner.start()
            try:
                got: dict[int, list[dict[str, float]]] = {1: [], 2: []}
                for r in range(args.rounds):
                    for threads in ((1, 2) if r % 2 == 0 else (2, 1)):
                        got[threads].append(measure(agent, threads, args.seconds))
            finally:
                if spinner is not None:
                    spinner.terminate()
            mean = {t: {k: sum(m[k] for m in ms) / len(ms) for k in ("wall_per_unit", "cpu_per_unit")}
                    for t, ms in got.items()}
            unit = "episode" if agent == "independent_dqn" else "update"
            w1, w2 = mean[1]["wall_per_unit"], mean[2]["wall_per_unit"]
            c1, c2 = mean[1]["cpu_per_unit"], mean[2]["cpu_per_unit"]
            print(f"| {agent} ({unit}) | {load} | {w1 * 1e3:.1f} ms | {w2 * 1e3:.1f} ms | {w2 / w1:.2f} "
                  f"| {c1 * 1e3:.1f} ms | {c2 * 1e3:.1f} ms | {c2 / c1:.2f} |", flush=True)


if __name__ == "__main__":
    main()
