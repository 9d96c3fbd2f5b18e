"""FISOR and its baselines on the safe tasks: the paper's results table, on AlignGym's data.

    python benchmarks/safe_offline_table.py [--variant cpu|paper] [--seeds 3] [--tasks ball_circle ...]
        [--agents fisor bc_all bc_safe bcq_lag] [--workers 2] [--episodes 20] [--out benchmarks/safe_offline]
        [--set key=value ...] [--report-only]

Trains every (agent, task, seed) from the bundled config ``<agent>/<variant>`` (``configs/fisor/cpu.yaml``
...) with ``--set task=<the task's id>`` into ``OUT/runs/<agent>/<task>/s<seed>/``
(other variants and ``--set`` overrides: ``s<seed>-<variant>[-<hash of the overrides>]/``, so that a
baseline's ``paper`` run, which differs from its ``cpu`` run only in length, is not the same run)
in parallel worker processes (one core each; rerunning reuses finished runs and resumes
unfinished ones, keeps a recorded result whose run folder is gone, and skips a run another
invocation is training), evaluates each final policy over ``--episodes`` episodes at the config's cost
limit, and writes ``OUT/table.md`` (and its picture ``OUT/table.png``): per task and agent the normalised reward / normalised cost
(DSRL's normalisation, mean over seeds), unsafe entries (cost > 1) in gray italics, the best
safe reward of a row in bold, as in FISOR's Table 1; results accumulate in ``OUT/results.json``
across invocations (run agents or tasks in separate invocations, also at the same time: the file is
updated under a lock and replaced atomically), each with the variant, the ``--set`` overrides and
the number of evaluation episodes it was made with; the table shows those of this invocation's. A
run that fails is reported and the others go on; the command exits 1 at the end if any failed. The datasets must exist
(``aligngym data generate TASK --size full``).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import platform
import sys
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from aligngym.envs.data.dataset import atomic_write

ROOT = Path(__file__).resolve().parents[1]
TASKS = ["ball_run", "ball_circle", "car_run", "car_circle", "drone_run", "drone_circle", "ant_run", "ant_circle"]
AGENTS = ["bc_all", "bc_safe", "bcq_lag", "fisor"]
COLUMNS = [*AGENTS, "fisor_first_feasible"]  # FISOR scored with the opt-in acting rule too


def task_id(task: str) -> str:
    """``ball_circle`` -> ``aligngym/BallCircle-v0``."""
    return "aligngym/" + "".join(part.capitalize() for part in task.split("_")) + "-v0"


def run_root(out: Path, agent: str, task: str, seed: int, variant: str, extra: list[str]) -> Path:
    """The seed folder ``finish`` looks in: one per variant and set of overrides."""
    name = f"s{seed}"
    if variant != "cpu" or extra:
        name += f"-{variant}" + (f"-{hashlib.sha1(json.dumps(extra).encode()).hexdigest()[:8]}" if extra else "")
    return out / "runs" / agent / task / name


def run_one(agent: str, task: str, seed: int, variant: str, out: Path, episodes: int, extra: list[str]) -> list[dict]:
    """Train (or finish) one run and score it; runs in a worker process. FISOR runs are scored twice:
    with their own acting rule and with ``first_feasible`` (column ``fisor_first_feasible``). A run
    that another invocation is training gives no rows."""
    import torch

    torch.set_num_threads(1)
    from aligngym.agents.config import load_config
    from aligngym.agents.evaluate import evaluate, result_name
    from aligngym.agents.train import RunInUseError, finish

    overrides = [f"task={task_id(task)}", f"seed={seed}", "show_progress=false", f"run_root={run_root(out, agent, task, seed, variant, extra)}",
                 *extra]
    config = load_config(f"{agent}/{variant}", overrides)
    try:
        run_dir = finish(config)
    except RunInUseError as err:  # another invocation is training that run: its result comes from there
        print(f"skipped: {err}", flush=True)
        return []
    scorings = {agent: {}, **({"fisor_first_feasible": {"selection": "first_feasible"}} if agent == "fisor" else {})}
    rows = []
    for column, options in scorings.items():
        scored = run_dir / result_name(options)
        result = json.loads(scored.read_text()) if scored.is_file() else {}
        if result.get("episodes") != episodes or result.get("checkpoint_step") != config.steps:  # stale or other
            result = evaluate(run_dir, episodes=episodes, **options)
        rows.append({"agent": column, "task": task, "seed": seed, "variant": variant, "extra": list(extra),
                     "episodes": episodes, "run": str(run_dir), "reward": result["eval/normalized_return"],
                     "cost": result["eval/normalized_cost"]})
    return rows


def same_setting(row: dict, variant: str, extra: list[str], episodes: int) -> bool:
    """Whether a saved result was made with these configs and episodes (rows from before these were
    recorded: cpu, no overrides, 20 episodes)."""
    return (row.get("variant", "cpu") == variant and row.get("extra", []) == list(extra)
            and row.get("episodes", 20) == episodes)


def read_results(out: Path) -> list[dict]:
    """``OUT/results.json``'s rows (a plain read is whole: the file is only ever replaced atomically)."""
    saved = out / "results.json"
    return json.loads(saved.read_text()) if saved.is_file() else []


@contextmanager
def locked_results(out: Path) -> Iterator[list[dict]]:
    """``OUT/results.json``'s rows, for reading and changing in place: held under an exclusive lock
    (two invocations may run at once) and written back atomically on leaving."""
    with open(out / ".results.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = read_results(out)
        yield results
        text = json.dumps(results, indent=1)
        atomic_write(out / "results.json", lambda tmp: Path(tmp).write_text(text))


def write_table(out: Path, results: list[dict], variant: str, extra: list[str], episodes: int) -> Path:
    """``OUT/table.md`` from the results made with ``variant``, ``extra`` and ``episodes``.
    Cells average every seed on record; the header's seed count is the most any cell has (whatever
    ``--seeds`` the last invocation was given), and a cell with fewer says how many."""
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)  # (task, agent) -> its seeds' results
    for r in results:
        if same_setting(r, variant, extra, episodes):
            cells[r["task"], r["agent"]].append(r)
    seeds = max(map(len, cells.values()), default=0)
    tasks = [t for t in TASKS if any(task == t for task, _ in cells)]
    agents = [a for a in COLUMNS if any(agent == a for _, agent in cells)]
    lines = [f"Normalised reward / normalised cost (DSRL's normalisation, cost limit of the configs), mean over "
             f"{seeds} seeds (a cell over fewer says how many in brackets), `{variant}` configs, {episodes} "
             f"evaluation episodes per seed; *gray italics*: "
             f"unsafe (cost > 1); **bold**: the best safe reward of the row among the paper's algorithms; `fisor_first_feasible`: the "
             f"FISOR runs acting by the first feasible candidate (not the paper's rule, never bold). "
             f"`python benchmarks/safe_offline_table.py --variant {variant} --seeds {seeds}"
             f"{f' --episodes {episodes}' if episodes != 20 else ''}"
             f"{''.join(f' --set {e}' for e in extra)}` "
             f"on {platform.processor() or platform.machine()} ({os.cpu_count()} CPUs).", "",
             "| task | " + " | ".join(agents) + " |", "|---|" + "---|" * len(agents)]
    summary = {a: {"safe": 0, "tasks": 0} for a in agents}
    for task in tasks:
        row, scores, counts = [], {}, {}
        for agent in agents:
            rows = cells.get((task, agent))
            if rows:
                scores[agent] = (float(np.mean([r["reward"] for r in rows])), float(np.mean([r["cost"] for r in rows])))
                counts[agent] = len(rows)
        safe = {a: s for a, s in scores.items() if s[1] <= 1.0 and a in AGENTS}  # the paper's algorithms
        best = max(safe, key=lambda a: safe[a][0]) if safe else None
        for agent in agents:
            if agent not in scores:
                row.append("-")
                continue
            reward, cost = scores[agent]
            text = f"{reward:.2f} / {cost:.2f}" + (f" ({counts[agent]})" if counts[agent] < seeds else "")
            summary[agent]["tasks"] += 1
            summary[agent]["safe"] += int(cost <= 1.0)
            row.append(f"**{text}**" if agent == best else text if cost <= 1.0 else
                       f'<span style="color:gray">*{text}*</span>')
        lines.append(f"| {task} | " + " | ".join(row) + " |")
    lines.append("| safe on | " + " | ".join(f"{summary[a]['safe']}/{summary[a]['tasks']}" for a in agents) + " |")
    path = out / "table.md"
    path.write_text("\n".join(lines) + "\n")
    plot_table(out / "table.png", cells, tasks, agents)
    return path


def plot_table(path: Path, cells: dict[tuple[str, str], list[dict]], tasks: list[str], agents: list[str]) -> None:
    """``OUT/table.png``: one panel per task, normalised cost (x) against normalised reward (y), a
    small dot per seed and a large marker for the mean of each agent; right of the dashed line
    (cost 1) is unsafe. The picture of the table: safe and high is top left."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not tasks:
        path.unlink(missing_ok=True)  # no stale picture beside an empty table
        return
    cols = min(4, len(tasks))
    rows = -(-len(tasks) // cols)
    fig = Figure(figsize=(3.4 * cols, 3.0 * rows + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    markers = dict(zip(COLUMNS, "os^DP"))
    colors = dict(zip(COLUMNS, ("tab:gray", "tab:blue", "tab:green", "tab:red", "tab:orange")))
    handles = {}
    for ax, task in zip(axes, tasks):
        for agent in agents:
            if (task, agent) not in cells:
                continue
            cost, reward = [r["cost"] for r in cells[task, agent]], [r["reward"] for r in cells[task, agent]]
            ax.scatter(cost, reward, s=12, alpha=0.45, color=colors[agent], marker=markers[agent])
            handles[agent] = ax.scatter(np.mean(cost), np.mean(reward), s=70, color=colors[agent], marker=markers[agent],
                       edgecolors="black", linewidths=0.6)
        ax.axvline(1.0, linestyle="--", color="black", linewidth=0.8)
        ax.set_xlim(left=-0.2, right=max(2.0, ax.get_xlim()[1]))
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("normalised cost", fontsize=8)
        ax.set_ylabel("normalised reward", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    shown = [a for a in agents if a in handles]  # the table's column order
    fig.legend([handles[a] for a in shown], shown, loc="lower center", ncol=min(len(shown), 2 * cols), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.6 / (3.0 * rows + 0.6), 1, 1))
    fig.savefig(path, format="png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", choices=("cpu", "paper"), default="cpu")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tasks", nargs="+", default=TASKS, choices=TASKS)
    parser.add_argument("--agents", nargs="+", default=AGENTS, choices=AGENTS)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "safe_offline")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="override for every run (e.g. steps=5000)")
    parser.add_argument("--report-only", action="store_true", help="train nothing: rewrite the table from "
                        "OUT/results.json (every invocation adds its runs there)")
    args = parser.parse_args()
    for flag in ("seeds", "workers", "episodes"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file, not a folder")
    args.out.mkdir(parents=True, exist_ok=True)
    setting = (args.variant, args.extra, args.episodes)
    recorded = read_results(args.out)
    failed = []
    if not args.report_only:
        jobs = [(a, t, s) for t in args.tasks for a in args.agents for s in range(args.seeds)]
        # a result whose run folder is gone (a fresh checkout: runs/ is not in git) is kept, not retrained
        gone = {(r["agent"], r["task"], r["seed"]): r["run"] for r in recorded
                if same_setting(r, *setting) and not Path(r["run"]).exists()}
        for job in [j for j in jobs if j in gone]:
            print(f"{job[0]} {job[1]} s{job[2]}: kept the recorded result; its run {gone[job]} is gone "
                  "(delete its rows from results.json to train it again)", flush=True)
        jobs = [j for j in jobs if j not in gone]
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            futures = [pool.submit(run_one, a, t, s, args.variant, args.out, args.episodes, args.extra)
                       for a, t, s in jobs]
            for future in as_completed(futures):
                job = jobs[futures.index(future)]
                try:
                    rows = future.result()
                except Exception as err:  # noqa: BLE001  (one run's failure must not cost the others)
                    failed.append(job)
                    print(f"{job[0]} {job[1]} s{job[2]}: FAILED: {type(err).__name__}: {err}", flush=True)
                    continue
                with locked_results(args.out) as results:  # other invocations' rows too
                    for r in rows:  # replaces an earlier result of the same run
                        results[:] = [o for o in results if not (same_setting(o, *setting) and
                                      (o["agent"], o["task"], o["seed"]) == (r["agent"], r["task"], r["seed"]))]
                        results.append(r)
                        print(f"{r['agent']:8s} {r['task']:13s} s{r['seed']}: reward {r['reward']:.2f} "
                              f"cost {r['cost']:.2f}", flush=True)
                    recorded = list(results)
                write_table(args.out, recorded, *setting)
    print(write_table(args.out, recorded, *setting).read_text())
    if failed:
        print(f"{len(failed)} run(s) failed: " + ", ".join(f"{a} {t} s{s}" for a, t, s in failed), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
