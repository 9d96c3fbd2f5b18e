"""Generate safe-task datasets and record what they took and what they hold.

    python benchmarks/safety_datasets.py [--size full] [--seed 0] [--tasks BallRun-v0 ...]
                                         [--out benchmarks/datasets]

(the MuJoCo tasks' files: ``--tasks HopperVelocity-v1 ... --out benchmarks/datasets/mujoco``)

For each task: ``aligngym data generate`` (resuming finished stages, reusing a finished file),
then the wall time of that call, file size, transitions, episodes, return and cost ranges and the
share of episodes under each DSRL threshold, into ``OUT/datasets_<size>.md``; the reward-cost
scatter of each file goes to ``OUT/<task>-<size>.png``. A reused file reports the generation
time stored in the file.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from aligngym.envs.data.dataset import dataset_path, load_dataset, plot_reward_cost
from aligngym.envs.data.generate import generate
from aligngym.envs.safety.specs import SAFE_TASKS

NUMPY_TASKS = [f"{a}{t}-v0" for a in ("Ball", "Car", "Drone") for t in ("Run", "Circle")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="full", choices=("tiny", "small", "full"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", nargs="+", default=NUMPY_TASKS, help="dataset names, e.g. BallRun-v0")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "datasets")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.tasks:
        env_id = f"aligngym/{name}"
        spec = SAFE_TASKS[env_id]
        path = dataset_path(env_id, args.size, args.seed)
        started = time.perf_counter()
        if not path.exists():
            generate(env_id, args.size, args.seed)
        elapsed = time.perf_counter() - started
        ds = load_dataset(path)
        seconds = float(ds.attrs.get("seconds", elapsed))  # compute time of all its stages
        returns, costs = ds.episode_returns(), ds.episode_costs()
        under = " / ".join(f"{np.mean(costs <= limit):.0%}" for limit in spec.cost_limits)
        under += f" ({' / '.join(f'{limit:g}' for limit in spec.cost_limits)})"
        plot_reward_cost(ds, args.out / f"{spec.name}-{args.size}.png", cost_limits=list(spec.cost_limits),
                         title=f"{env_id} ({args.size}, seed {args.seed})")
        rows.append(f"| {spec.name} | {seconds / 60:.1f} | {path.stat().st_size / 2**20:.1f} | {len(ds):,} | "
                    f"{len(returns)} | {returns.min():.1f} .. {returns.max():.1f} | {costs.min():.0f} .. "
                    f"{costs.max():.0f} | {under} |")
        print(rows[-1], flush=True)
    table_path = args.out / f"datasets_{args.size}.md"
    table = "\n".join([
        f"Datasets of size `{args.size}`, seed {args.seed}, on {platform.processor() or platform.machine()} "
        f"({os.cpu_count()} CPUs); "
        f"`python benchmarks/safety_datasets.py --size {args.size} --tasks TASK ...` (a row per task, "
        "the latest invocation's; rows of other tasks are kept).", "",
        "| task | minutes | MiB | transitions | episodes | episode return | episode cost | share with cost <= each DSRL threshold (the thresholds) |",
        "|---|---|---|---|---|---|---|---|", *merge_rows(table_path, rows), ""])
    table_path.write_text(table)
    print(table)


def merge_rows(table: Path, rows: list[str]) -> list[str]:
    """``rows`` with the rows of other tasks already in ``table`` (earlier invocations), in the order of
    ``SAFE_TASKS``."""
    by_task = {}
    if table.exists():
        for line in table.read_text().splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if line.startswith("| ") and cells[0] in {s.name for s in SAFE_TASKS.values()}:
                by_task[cells[0]] = line
    by_task.update({row.split("|")[1].strip(): row for row in rows})
    return [by_task[s.name] for s in SAFE_TASKS.values() if s.name in by_task]


if __name__ == "__main__":
    main()
