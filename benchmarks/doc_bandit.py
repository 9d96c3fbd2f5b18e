"""DoC against the Decision Transformer on the Bernoulli bandit (tabular forms, the official settings).

    python benchmarks/doc_bandit.py [--seeds 10] [--p 0.1 0.3] [--steps 10000] [--out FOLDER]

For each ``p`` and seed, each agent trains through the runner (``aligngym train doc/paper`` /
``dt/paper`` with ``--set task_options.p=P seed=S dataset.seed=S``: every seed its own 1000 pulls of
data) and is scored by its policy's exact expected return (``eval/expected_return``,
``sum_a pi(a) P(reward 1 | a)``) after the last step. The table gives the mean over seeds with a 95 %
interval (Student's t), the range over seeds and the optimum ``max(p, 1 - p)``. The issue's targets:
DoC >= 0.85 at p = 0.1 and >= 0.65 at p = 0.3; the Decision Transformer about 0.5.

Datasets and run folders go to ``--out`` (default: a temporary folder, removed afterwards); every run
evaluates once, at its end (``eval_every`` = the run's length: the evaluations draw from forks of the
random streams, so this changes nothing that is trained).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aligngym.agents.marl.study import mean_ci  # the t interval over seeds

AGENTS = ("doc", "dt")
NAMES = {"doc": "DoC (tabular)", "dt": "Decision Transformer (tabular)"}


def expected_return(agent: str, p: float, seed: int, steps: int, runs: Path) -> float:
    """Train ``agent`` on the bandit at ``p`` with ``seed`` (its own data) through the runner; the
    exact expected return of its policy at the end."""
    from aligngym.agents.config import load_config
    from aligngym.agents.train import read_curves, train

    config = load_config(f"{agent}/paper", [f"task_options.p={p}", f"seed={seed}", f"dataset.seed={seed}",
                                             f"steps={steps}", f"eval_every={steps}", "show_progress=false",
                                             "device=cpu", f"run_root={runs / agent / f'p{p}'}"])
    run_dir = train(config)
    steps_logged, values = read_curves(run_dir, ("eval/expected_return",))["eval/expected_return"]
    assert steps_logged[-1] == steps, run_dir
    return float(values[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--p", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument("--steps", type=int, default=10_000, help="gradient steps per run (official: 10000)")
    parser.add_argument("--out", type=Path, default=None, help="keep the datasets and run folders here")
    args = parser.parse_args()
    command = "python benchmarks/doc_bandit.py " + shlex.join(sys.argv[1:])
    with tempfile.TemporaryDirectory() as scratch:
        out = (args.out or Path(scratch)).expanduser()
        os.environ["ALIGNGYM_DATA"] = str(out / "data")  # read when a dataset is located, not at import
        from aligngym.envs.stochastic.bandit import optimal_return
        from aligngym.envs.stochastic.data import generate_stochastic, stochastic_dataset_path

        started = time.perf_counter()
        results: dict[tuple[str, float], np.ndarray] = {}
        for p in args.p:
            for seed in range(args.seeds):
                if not stochastic_dataset_path("aligngym/BernoulliBandit-v0", "full", seed, p=p).exists():
                    generate_stochastic("aligngym/BernoulliBandit-v0", "full", seed, p=p)
            for agent in AGENTS:
                values = []
                for seed in range(args.seeds):
                    values.append(expected_return(agent, p, seed, args.steps, out / "runs"))
                    print(f"{agent} p={p:g} seed {seed}: {values[-1]:.3f}", file=sys.stderr, flush=True)
                results[agent, p] = np.array(values)
    print(f"`{command.strip()}`, {time.strftime('%Y-%m-%d')}, {time.perf_counter() - started:.0f} s: "
          f"{args.seeds} seeds, {args.steps:,} steps each, the official tabular settings; exact expected "
          f"return of each final policy\n")
    print("| p | optimum | agent | mean expected return | 95 % interval | range over seeds |")
    print("|---|---|---|---|---|---|")
    for p in args.p:
        for agent in AGENTS:
            values = results[agent, p]
            half = mean_ci(values)[1] if len(values) > 1 else float("nan")
            print(f"| {p:g} | {optimal_return(p):.2f} | {NAMES[agent]} | {values.mean():.3f} | "
                  f"[{values.mean() - half:.3f}, {values.mean() + half:.3f}] | {values.min():.3f}-{values.max():.3f} |")


if __name__ == "__main__":
    main()
