"""BARFI against its REINFORCE baselines on the shaping tasks, with good and bad heuristics.

    python benchmarks/barfi_table.py [--tasks grid_world cart_pole mountain_car half_cheetah]
        [--aux good bad] [--seeds 10] [--workers 2] [--out benchmarks/barfi] [--set key=value ...]
        [--report-only]

For each task (the bundled configs ``barfi/<task>`` and ``reinforce/<task>``), heuristic
(``task_options.aux``) and seed, four methods train through the runner: BARFI, and REINFORCE on the
primary reward alone, on the naive sum ``r_primary + r_aux`` and with the heuristic as a potential
(``reinforce --set reward=primary|naive|potential``). Run folders go to ``OUT/runs/<task>/<aux>/<method>/
s<seed>`` (a rerun reuses finished runs and resumes unfinished ones); ``--set`` overrides apply to every
run (``--set episodes=300`` for a short HalfCheetah table), whose folders then end in a hash of them.
The primary-only run never reads the heuristic (the same run whatever ``aux``, to the bit): it trains
once per task and seed, and its row stands for every heuristic.
Each run's primary return at the end of training is the mean primary return of its last tenth of
training episodes (the paper's curves are training returns); ``OUT/results.json`` keeps it with the
run's curves, so the pictures survive the run folders. Outputs:

- ``OUT/table.md``: per task and heuristic, each method's final primary return, mean over seeds with
  the 95 % interval (Student's t), the best mean of a row in bold;
- ``OUT/curves.png``: the primary return over training per method (mean over seeds, smoothed), one
  panel per task and heuristic;
- ``OUT/barfi.png``: BARFI's learned weights (phi_bias, phi_primary, phi_aux, averaged over each
  update's states) and discount over training, mean over seeds, per task and heuristic.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from offline_table import locked_results, mean_curve, read_results  # results.json under a lock; mean curves

from aligngym.agents.marl.study import mean_ci  # the t interval over seeds (as the study's tables)

METHODS = {"barfi": ("barfi", []), "primary": ("reinforce", ["reward=primary"]),
           "naive": ("reinforce", ["reward=naive"]), "potential": ("reinforce", ["reward=potential"])}
NAMES = {"barfi": "BARFI", "primary": "REINFORCE, primary only", "naive": "REINFORCE, r_p + r_aux",
         "potential": "REINFORCE, potential shaping"}
BLEND_TAGS = ("barfi/phi_bias", "barfi/phi_primary", "barfi/phi_aux", "barfi/gamma")
RETURN_TAG = "train/primary_return"


def run_one(task: str, aux: str, method: str, seed: int, out: Path, extra: list[str]) -> dict:
    """Train (or finish) one run; its final primary return and curves."""
    from aligngym.agents.config import load_config
    from aligngym.agents.train import finish, read_curves

    agent, own = METHODS[method]
    # runs with --set overrides in their own folders (else a finished run of other settings, its length
    # among them, would be taken for this one)
    tag = f"-{hashlib.sha1(' '.join(extra).encode()).hexdigest()[:8]}" if extra else ""
    root = out / "runs" / task / aux / method / f"s{seed}{tag}"
    config = load_config(f"{agent}/{task}", [*own, f"task_options.aux={aux}", f"seed={seed}", "show_progress=false",
                                             "device=cpu", f"run_root={root}", *extra])
    started = time.process_time()
    run_dir = finish(config)
    curves = read_curves(run_dir, (RETURN_TAG, *BLEND_TAGS))
    steps, returns = curves[RETURN_TAG]
    tail = max(1, len(returns) // 10)
    return {"task": task, "aux": aux, "method": method, "seed": seed, "extra": extra, "episodes": config.episodes,
            "final": float(returns[-tail:].mean()), "cpu_seconds": time.process_time() - started,
            "curves": {tag: [c.tolist() for c in curves[tag]] for tag in (RETURN_TAG, *BLEND_TAGS) if len(curves[tag][0])}}


def seeds_mean(rows: list[dict], tag: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Steps and the mean over the runs' curves of ``tag`` (:func:`offline_table.mean_curve`), smoothed
    by a trailing rolling mean over a thirtieth of the run; None if no run logged it."""
    from aligngym.agents.marl.plots import rolling_mean

    curves = [list(zip(*r["curves"][tag])) for r in rows if tag in r["curves"]]
    if not curves:
        return None
    steps, mean, _ = mean_curve(curves)
    return steps, rolling_mean(mean, max(1, len(mean) // 30))


def write_outputs(out: Path, results: list[dict], tasks: list[str], auxes: list[str], command: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = {(t, a, m): [r for r in results if (r["task"], r["aux"], r["method"]) == (t, a, m)]
             for t in tasks for a in auxes for m in METHODS}
    lines = [f"`{command}`, {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}; "
             f"primary return at the end of training (mean of the last tenth of training episodes), mean over "
             f"seeds [95 % interval]\n",
             "| task | heuristic | seeds | episodes | " + " | ".join(NAMES[m] for m in METHODS) + " |",
             "|---|---|---|---|" + "---|" * len(METHODS)]
    for task in tasks:
        for aux in auxes:
            means = {m: np.mean([r["final"] for r in cells[task, aux, m]]) for m in METHODS if cells[task, aux, m]}
            if not means:
                continue
            best = max(means, key=means.get)
            row = []
            for m in METHODS:
                values = np.array([r["final"] for r in cells[task, aux, m]])
                if not len(values):
                    row.append("")
                    continue
                half = mean_ci(values)[1] if len(values) > 1 else float("nan")
                text = f"{values.mean():.1f} [{values.mean() - half:.1f}, {values.mean() + half:.1f}]"
                row.append(f"**{text}**" if m == best else text)
            seeds = max(len(cells[task, aux, m]) for m in METHODS)
            episodes = next(r["episodes"] for m in METHODS for r in cells[task, aux, m])
            lines.append(f"| {task} | {aux} | {seeds} | {episodes} | " + " | ".join(row) + " |")
    cpu = sum(r["cpu_seconds"] for r in results)
    lines.append(f"\nCPU time of the runs trained by this invocation and those before it: {cpu / 3600:.2f} h")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    panels = [(t, a) for t in tasks for a in auxes if any(cells[t, a, m] for m in METHODS)]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (task, aux) in zip(axes[0], panels):
        for m in METHODS:
            curve = seeds_mean(cells[task, aux, m], RETURN_TAG)
            if curve is not None:
                ax.plot(*curve, label=NAMES[m], lw=1.3)
        ax.set_title(f"{task}, {aux} heuristic", fontsize=9)
        ax.set_xlabel("episode")
        ax.set_ylabel("primary return")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(len(BLEND_TAGS), len(panels), figsize=(4 * len(panels), 2.2 * len(BLEND_TAGS)),
                             squeeze=False)
    for col, (task, aux) in enumerate(panels):
        for row, tag in enumerate(BLEND_TAGS):
            ax = axes[row][col]
            curve = seeds_mean(cells[task, aux, "barfi"], tag)
            if curve is not None:
                ax.plot(*curve, lw=1.3)
            ax.set_title(f"{task}, {aux}: {tag.split('/')[1]}", fontsize=8)
            if row == len(BLEND_TAGS) - 1:
                ax.set_xlabel("episode")
    fig.tight_layout()
    fig.savefig(out / "barfi.png", dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["grid_world", "cart_pole", "mountain_car"])
    parser.add_argument("--aux", nargs="+", default=["good", "bad"], choices=["none", "good", "bad"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--address", default=None,
                        help="a running Ray cluster, e.g. auto (default: a local Ray of --workers CPUs)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "barfi")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--report-only", action="store_true", help="write the outputs from results.json")
    args = parser.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    results = read_results(out)
    command = "python benchmarks/barfi_table.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    if not args.report_only:
        # seed by seed (every method and heuristic of a seed before the next seed): a table cut short
        # has as many seeds of every method
        def done(t: str, a: str, m: str, s: int) -> bool:
            return any((r["task"], r["aux"], r["method"], r["seed"], r["extra"]) == (t, a, m, s, args.extra)
                       for r in results)

        copies = [{**row, "aux": a} for row in results if row["method"] == "primary" and row["extra"] == args.extra
                  for a in args.aux if not done(row["task"], a, "primary", row["seed"])]
        if copies:
            with locked_results(out, indent=None) as results:  # (another invocation, on other tasks, may write it too)
                results += copies
        jobs = [(t, a, m, s) for s in range(args.seeds) for t in args.tasks for a in args.aux for m in args.methods
                if not done(t, a, m, s) and not (m == "primary" and a != args.aux[0])]
        from aligngym.agents.sweep import run_tasks

        def record(job: tuple[str, str, str, int], row: dict) -> None:
            with locked_results(out, indent=None) as results:
                results += [row] if row["method"] != "primary" else [{**row, "aux": a} for a in args.aux]
            print(f"{job}: {row['final']:.1f}", file=sys.stderr, flush=True)

        run_tasks(run_one, {job: (*job, out, args.extra) for job in jobs}, args.address, num_cpus=args.workers,
                  on_result=record)
        results = read_results(out)
    chosen = [r for r in results if r["extra"] == args.extra and r["task"] in args.tasks and r["aux"] in args.aux]
    write_outputs(out, chosen, args.tasks, args.aux, command)


if __name__ == "__main__":
    main()
