"""DoC against the Decision Transformer on the slippery FrozenLake (sequence forms, the official settings).

    python benchmarks/doc_frozen_lake.py [--preset frozen_lake] [--seeds 5] [--success-probs 0.333333 0.6]
                                         [--steps 10000] [--episodes 500] [--device auto] [--workers 1]
                                         [--out FOLDER] [--plot FILE.png]

For each slip level ``q`` (``success_prob``, the chance of moving as intended) and seed, each agent
trains through the runner (``aligngym train doc/PRESET`` / ``dt/PRESET`` with ``--set
task_options.success_prob=Q seed=S dataset.seed=S``: every seed its own 100 epsilon-greedy trajectories)
and its final policy plays ``--episodes`` episodes (the run's last evaluation, ``eval/return``: a return
is 1 when the agent reaches the goal, so the mean is the success rate). The table gives the mean success
rate over seeds with a 95 % interval (Student's t over seeds; with one seed, Wilson's interval over its
episodes), the range over seeds, the behaviour's and the optimal policy's success rates (the dataset's
``behaviour_return`` / ``optimal_return``) and the CPU-seconds of the runs. What DoC's paper shows: DoC
above the Decision Transformer, the gap growing with the slip (lower ``q``). ``--preset frozen_lake``
has the official sizes (hours per DoC run on a CPU core); ``frozen_lake_cpu`` smaller stacks that a CPU
trains in minutes (``--steps 3000``, its own length). ``--workers`` runs that many trainings at once
(tasks on a local Ray through :func:`aligngym.agents.sweep.run_tasks`, one torch thread each).

The consistency plot (``--plot``, PNG): each run's achieved success rate against what the agent was
conditioned on: DoC's value ``V(z*)`` of the latent it picks at the start state (the mean over
``--episodes`` draws of its K = 100 prior samples), the Decision Transformer's target return (the data's
best, 1). A consistent agent lies on the diagonal: it achieves what it asks for.

Datasets and run folders go to ``--out`` (default: a temporary folder, removed afterwards); every run
evaluates once, at its end (``eval_every`` = the run's length: evaluations draw from forks of the random
streams, so this changes nothing that is trained).
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aligngym.agents.marl.study import mean_ci  # the t interval over seeds

AGENTS = ("doc", "dt")
NAMES = {"doc": "DoC (sequence)", "dt": "Decision Transformer (sequence)"}
LAKE = "aligngym/SlipperyFrozenLake-v0"


@dataclass
class Outcome:
    success: float  # the final policy's success rate over the evaluation episodes
    conditioned: float  # DoC: the mean V(z*) at the start; DT: the target return
    cpu_seconds: float  # the run's training and scoring, in its own process


def wilson(successes: float, n: int) -> tuple[float, float]:
    """Wilson's 95 % interval of a success rate from ``n`` episodes."""
    z = 1.96
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def train_and_score(agent: str, preset: str, q: float, seed: int, steps: int, episodes: int, device: str,
                    out: Path) -> Outcome:
    """Train ``agent`` on the lake at ``q`` with ``seed`` (its own data) through the runner; its final
    success rate and what it was conditioned on."""
    import torch

    from aligngym.agents.config import agent_module, load_config
    from aligngym.agents.offline import setup
    from aligngym.agents.train import load_checkpoint, read_curves, resolve_device, train

    started = time.process_time()
    os.environ["ALIGNGYM_DATA"] = str(out / "data")  # this run's datasets (a Ray worker's own environment)
    runs = out / "runs"
    config = load_config(f"{agent}/{preset}", [
        f"task_options.success_prob={q}", f"seed={seed}", f"dataset.seed={seed}", f"steps={steps}",
        f"eval_every={steps}", f"eval_episodes={episodes}", f"checkpoint_every={steps}", "show_progress=false",
        f"device={device}", f"run_root={runs / preset / agent / f'q{q:g}'}"])
    run_dir = train(config)
    logged, values = read_curves(run_dir, ("eval/return",))["eval/return"]
    assert logged[-1] == steps, run_dir
    saved, state = load_checkpoint(run_dir / "checkpoint.pt")
    _, _, algorithm = setup(agent_module(agent), saved, state, resolve_device(saved.device), data=False)
    policy = algorithm.policy.eval()
    if agent == "doc":
        start = np.zeros((episodes, policy.obs_dim), np.float32)
        start[:, 0] = 1.0  # the start cell, S (state 0)
        torch.manual_seed(seed)
        conditioned = float(policy.first_step_value(start).mean())
    else:
        conditioned = float(policy.target_return)
    return Outcome(success=float(values[-1]), conditioned=conditioned, cpu_seconds=time.process_time() - started)


def consistency_plot(results: dict[tuple[str, float], list[Outcome]], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    colours, markers = {"doc": "tab:blue", "dt": "tab:orange"}, "osD^v<>"
    levels = sorted({q for _, q in results})
    for (agent, q), outcomes in sorted(results.items()):
        axes.scatter([o.conditioned for o in outcomes], [o.success for o in outcomes], c=colours[agent],
                     marker=markers[levels.index(q) % len(markers)], alpha=0.8, label=f"{NAMES[agent]}, q = {q:g}")
    axes.plot([0, 1.05], [0, 1.05], color="grey", linestyle="--", linewidth=1, label="achieved = conditioned on")
    axes.set(xlim=(0, 1.05), ylim=(0, 1.05), xlabel="conditioned on: V(z*) at the start (DoC), target return (DT)",
             ylabel="achieved success rate", title="Slippery FrozenLake: consistency")
    axes.legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="frozen_lake", choices=("frozen_lake", "frozen_lake_cpu"),
                        help="the configs doc/PRESET and dt/PRESET (frozen_lake: the official sizes)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--success-probs", type=float, nargs="+", default=[1 / 3, 0.6],
                        help="slip levels: the probability of moving as intended (1/3: the stock slippery lake)")
    parser.add_argument("--steps", type=int, default=10_000, help="gradient steps per run (official: 10000)")
    parser.add_argument("--episodes", type=int, default=500, help="evaluation episodes of each final policy")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--workers", type=int, default=1, help="trainings at once (tasks on a local Ray)")
    parser.add_argument("--address", default=None,
                        help="a running Ray cluster, e.g. auto (default: a local Ray of --workers CPUs)")
    parser.add_argument("--out", type=Path, default=None, help="keep the datasets and run folders here")
    parser.add_argument("--plot", type=Path, default=Path("benchmarks/doc_frozen_lake.png"))
    args = parser.parse_args()
    command = "python benchmarks/doc_frozen_lake.py " + shlex.join(sys.argv[1:])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        out = (args.out or Path(scratch)).expanduser()
        os.environ["ALIGNGYM_DATA"] = str(out / "data")  # where the datasets are made (and each run reads them)
        from aligngym.envs.stochastic.data import generate_stochastic, load_stochastic, stochastic_dataset_path

        reference: dict[float, tuple[float, float]] = {}
        for q in args.success_probs:
            for seed in range(args.seeds):
                if not stochastic_dataset_path(LAKE, "full", seed, success_prob=q).exists():
                    generate_stochastic(LAKE, "full", seed, success_prob=q)
            attrs = load_stochastic(LAKE, "full", 0, success_prob=q).attrs
            reference[q] = (float(attrs["behaviour_return"]), float(attrs["optimal_return"]))
        jobs = [(agent, q, seed) for q in args.success_probs for agent in AGENTS for seed in range(args.seeds)]
        outcomes: dict[tuple[str, float, int], Outcome] = {}
        from aligngym.agents.sweep import run_tasks

        def report(job: tuple[str, float, int], outcome: Outcome) -> None:
            agent, q, seed = job
            outcomes[job] = outcome
            print(f"{agent} q={q:g} seed {seed}: success {outcome.success:.3f}, conditioned on "
                  f"{outcome.conditioned:.3f}, {outcome.cpu_seconds:.0f} CPU-s", file=sys.stderr, flush=True)

        calls = {(agent, q, seed): (agent, args.preset, q, seed, args.steps, args.episodes, args.device, out)
                 for agent, q, seed in jobs}
        failed = run_tasks(train_and_score, calls, args.address, num_cpus=args.workers, on_result=report)
        if failed:
            sys.exit(f"{len(failed)} run(s) failed: " + "; ".join(f"{job}: {err}" for job, err in failed.items()))
        results = {(agent, q): [outcomes[agent, q, seed] for seed in range(args.seeds)]
                   for q in args.success_probs for agent in AGENTS}
    cpu = {agent: np.mean([o.cpu_seconds for (a, _), runs in results.items() if a == agent for o in runs])
           for agent in AGENTS}
    print(f"`{command.strip()}`, {time.strftime('%Y-%m-%d')}, {time.perf_counter() - started:.0f} s wall: "
          f"{args.seeds} seeds, {args.steps:,} steps each, the `{args.preset}` configs; success rate of each final "
          f"policy over {args.episodes} episodes; CPU-seconds per run, mean: "
          + ", ".join(f"{NAMES[agent]} {cpu[agent]:.0f}" for agent in AGENTS) + "\n")
    print("| success_prob | behaviour | optimal | agent | mean success rate | 95 % interval | range over seeds "
          "| conditioned on (mean) |")
    print("|---|---|---|---|---|---|---|---|")
    for q in args.success_probs:
        for agent in AGENTS:
            rates = np.array([o.success for o in results[agent, q]])
            if len(rates) > 1:
                half = mean_ci(rates)[1]
                low, high = rates.mean() - half, rates.mean() + half
            else:
                low, high = wilson(rates[0] * args.episodes, args.episodes)
            behaviour, optimal = reference[q]
            print(f"| {q:.3g} | {behaviour:.3f} | {optimal:.3f} | {NAMES[agent]} | {rates.mean():.3f} | "
                  f"[{low:.3f}, {high:.3f}] | {rates.min():.3f}-{rates.max():.3f} | "
                  f"{np.mean([o.conditioned for o in results[agent, q]]):.3f} |")
    consistency_plot(results, args.plot)
    print(f"\nconsistency plot: {args.plot}")


if __name__ == "__main__":
    main()
