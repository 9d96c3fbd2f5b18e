"""The offline agents' results tables, on AlignGym's data: FISOR's safe comparison and A2PR's locomotion one.

    python benchmarks/offline_table.py [--suite safe|locomotion] [--variant cpu|paper] [--seeds 3]
        [--tasks ...] [--agents ...] [--size full|small|tiny] [--workers 2] [--episodes 20] [--out OUT]
        [--set key=value ...] [--report-only]

Two suites, each with its own rows, agents and output folder:

- ``--suite safe`` (the default; FISOR's Table 1): agents ``bc_all bc_safe bcq_lag fisor`` on the safe
  tasks ``ball_run ... ant_circle`` (the task's id by ``--set task=aligngym/BallRun-v0``), into
  ``benchmarks/safe_offline``. ``OUT/table.md``: per task and agent the normalised reward /
  normalised cost (DSRL's normalisation, at the config's cost limit, mean over seeds), unsafe entries
  (cost > 1) in gray italics, the best safe reward of a row in bold; FISOR is scored a second time
  acting by the first feasible candidate (column ``fisor_first_feasible``). ``OUT/table.png``: per
  task, normalised cost against normalised reward, a dot per seed and a marker per agent's mean.
- ``--suite locomotion`` (A2PR's table): agents ``a2pr td3bc iql cql bc_all`` on the D4RL-style
  datasets ``hopper-random ... walker2d-mixed`` (robots Hopper, HalfCheetah, Walker2d x kinds random,
  medium, medium-replay, medium-expert, mixed; the dataset by ``--set task=Hopper-v5 --set
  dataset.kind=medium``), into ``benchmarks/locomotion_offline``. ``OUT/table.md``: per dataset and agent
  D4RL's normalised score x 100 (``eval/d4rl_score``) of the final policy, mean ± standard deviation
  over seeds, the best of a row in bold, a total over the datasets every agent has, and the number of
  gradient steps per run in the header. ``OUT/curves.png``: the learning curves (``eval/d4rl_score``
  against the gradient step, mean over seeds with a ± standard deviation band), one panel per dataset,
  one line per agent, from each run's TensorBoard events (kept in ``results.json``, so the picture
  survives the run folders). An agent with a bundled config for a dataset (A2PR's per-dataset
  settings, ``configs/a2pr/hopper_medium.yaml`` ...) trains there with that file's settings (the keys
  where it differs from ``<agent>/paper``) on top of ``<agent>/<variant>``: with ``cpu``, the cpu
  preset's length and A2PR's per-dataset alpha, mask, vae_weight and discount; with ``paper``, the
  per-dataset file itself. Such cells carry a dagger. The presets' lengths are equal but for
  ``paper``'s ``bc_all`` (OSRL's 100k steps; the others 1M): ``--variant paper --set steps=1000000``
  keeps them equal (the header says when they are not).

Every (agent, row, seed) trains from the bundled config ``<agent>/<variant>`` (``configs/fisor/cpu.yaml``
...) into ``OUT/runs/<agent>/<row>/s<seed>/`` (other variants, ``--set`` overrides and ``--size``:
``s<seed>-<variant>[-<hash of the overrides>]/``, so that a baseline's ``paper`` run, which differs
from its ``cpu`` run only in length, is not the same run) as tasks on a local Ray (``--workers`` at
once, one core each, :func:`aligngym.agents.sweep.run_tasks` as ``aligngym sweep``; ``--address``: on a
cluster; rerunning reuses finished runs and resumes unfinished ones, keeps a recorded result whose run
folder is gone, and skips a run another invocation is training), and its final policy is evaluated
over ``--episodes`` episodes. Results accumulate in ``OUT/results.json`` across invocations (run
agents or rows in separate invocations, also at the same time: the file is updated under a lock and
replaced atomically), each with the variant, the ``--set`` overrides (``--size`` is the override
``dataset.size``) and the number of evaluation episodes it was made with; the table shows those of
this invocation's. A run that fails is reported and the others go on; the command exits 1 at the
end if any failed. The datasets must exist (``aligngym data generate TASK --size full``: for a
locomotion robot, ``aligngym data generate Hopper-v5 --size full`` makes all its kinds).
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
from contextlib import contextmanager
from functools import reduce
from pathlib import Path
from typing import NamedTuple

import numpy as np

from aligngym.envs.data.dataset import atomic_write

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("cpu", "paper")
SIZES = ("full", "small", "tiny")

TASKS = ["ball_run", "ball_circle", "car_run", "car_circle", "drone_run", "drone_circle", "ant_run", "ant_circle"]
AGENTS = ["bc_all", "bc_safe", "bcq_lag", "fisor"]
COLUMNS = [*AGENTS, "fisor_first_feasible"]  # FISOR scored with the opt-in acting rule too

ROBOTS = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5", "walker2d": "Walker2d-v5"}
KINDS = ["random", "medium", "medium-replay", "medium-expert", "mixed"]  # A2PR's table: D4RL's four and mixed
DATASETS = [f"{robot}-{kind}" for robot in ROBOTS for kind in KINDS]
LOCOMOTION_AGENTS = ["a2pr", "td3bc", "iql", "cql", "bc_all"]
SCORE = "eval/d4rl_score"  # the locomotion table's figure and its curves' scalar


class Suite(NamedTuple):
    """One results table: its rows, its agents (and the columns they give) and its default folder."""

    tasks: list[str]
    agents: list[str]
    columns: list[str]
    out: Path


SUITES = {
    "safe": Suite(TASKS, AGENTS, COLUMNS, ROOT / "benchmarks" / "safe_offline"),
    "locomotion": Suite(DATASETS, LOCOMOTION_AGENTS, LOCOMOTION_AGENTS, ROOT / "benchmarks" / "locomotion_offline"),
}


def task_id(task: str) -> str:
    """``ball_circle`` -> ``aligngym/BallCircle-v0``."""
    return "aligngym/" + "".join(part.capitalize() for part in task.split("_")) + "-v0"


def selection(task: str) -> list[str]:
    """The overrides that pick a row's task and data: ``ball_circle`` -> ``task=aligngym/BallCircle-v0``,
    ``hopper-medium-replay`` -> ``task=Hopper-v5``, ``dataset.kind=medium-replay``."""
    robot, _, kind = task.partition("-")
    if robot in ROBOTS:
        return [f"task={ROBOTS[robot]}", f"dataset.kind={kind}"]
    return [f"task={task_id(task)}"]


def dataset_settings(agent: str, select: list[str]) -> tuple[str | None, list[str]]:
    """The bundled config of ``agent`` for the data ``select`` picks, other than its presets
    (``a2pr/hopper_medium``), and its settings as overrides for any preset: the keys where it differs
    from ``<agent>/paper`` on those data. ``(None, [])`` when the agent has none for them."""
    from aligngym.agents.config import bundled_configs, load_config
    from aligngym.agents.train import changed_keys

    files = sorted(p for p in (bundled_configs() / agent).glob("*.yaml") if p.stem not in VARIANTS)
    if not files:
        return None, []
    paper = load_config(f"{agent}/paper", select)
    for path in files:
        config = load_config(path)
        if (config.task, config.dataset.kind) == (paper.task, paper.dataset.kind):
            values = config.model_dump(mode="json")
            return f"{agent}/{path.stem}", [f"{key}={json.dumps(reduce(dict.get, key.split('.'), values))}"
                                            for key in changed_keys(config, paper)]
    return None, []


def run_root(out: Path, agent: str, task: str, seed: int, variant: str, extra: list[str]) -> Path:
    """The seed folder ``finish`` looks in: one per variant and set of overrides."""
    name = f"s{seed}"
    if variant != "cpu" or extra:
        name += f"-{variant}" + (f"-{hashlib.sha1(json.dumps(extra).encode()).hexdigest()[:8]}" if extra else "")
    return out / "runs" / agent / task / name


def learning_curve(run_dir: Path, tag: str) -> list[list[float]]:
    """``[[step, value], ...]`` of a scalar the run logged, by step (a step logged twice, a run's last
    one scored again by ``aligngym eval``, keeps the later value)."""
    from aligngym.agents.train import read_curves

    steps, values = read_curves(run_dir, (tag,))[tag]
    return [[int(step), float(value)] for step, value in zip(steps, values)]


def run_one(agent: str, task: str, seed: int, variant: str, out: Path, episodes: int, extra: list[str]) -> list[dict]:
    """Train (or finish) one run and score it; runs in a worker process. FISOR runs are scored twice:
    with their own acting rule and with ``first_feasible`` (column ``fisor_first_feasible``). A run
    that another invocation is training gives no rows."""
    import torch

    torch.set_num_threads(1)
    from aligngym.agents.config import load_config
    from aligngym.agents.evaluate import evaluate, result_name
    from aligngym.agents.train import RunInUseError, finish

    select = selection(task)
    settings, settings_overrides = dataset_settings(agent, select)
    overrides = [*select, f"seed={seed}", "show_progress=false",
                 f"run_root={run_root(out, agent, task, seed, variant, extra)}", *settings_overrides, *extra]
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
        row = {"agent": column, "task": task, "seed": seed, "variant": variant, "extra": list(extra),
               "episodes": episodes, "run": str(run_dir)}
        if SCORE in result:  # a locomotion robot: D4RL's score, and no costs
            row |= {"steps": config.steps, "score": result[SCORE], "curve": learning_curve(run_dir, SCORE),
                    **({"settings": settings} if settings else {})}
        else:
            row |= {"reward": result["eval/normalized_return"], "cost": result["eval/normalized_cost"]}
        rows.append(row)
    return rows


def describe(row: dict) -> str:
    """One result as the progress line shows it."""
    head = f"{row['agent']:8s} {row['task']:13s} s{row['seed']}: "
    return head + (f"D4RL score {row['score']:.1f}" if "score" in row else
                   f"reward {row['reward']:.2f} cost {row['cost']:.2f}")


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
def locked_results(out: Path, indent: int | None = 1) -> Iterator[list[dict]]:
    """``OUT/results.json``'s rows, for reading and changing in place: held under an exclusive lock
    (two invocations may run at once) and written back atomically on leaving (``indent`` None: one
    line, for rows that carry long curves)."""
    with open(out / ".results.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = read_results(out)
        yield results
        text = json.dumps(results, indent=indent)
        atomic_write(out / "results.json", lambda tmp: Path(tmp).write_text(text))


def command(suite: str, variant: str, seeds: int, extra: list[str], episodes: int) -> str:
    """The invocation that makes this table (``--size`` for the ``dataset.size`` override it adds)."""
    size = [e.removeprefix("dataset.size=") for e in extra[:1] if e.startswith("dataset.size=")]
    rest = extra[len(size):]
    return (f"python benchmarks/offline_table.py{'' if suite == 'safe' else f' --suite {suite}'} --variant {variant} "
            f"--seeds {seeds}{f' --size {size[0]}' if size else ''}{f' --episodes {episodes}' if episodes != 20 else ''}"
            f"{''.join(f' --set {e}' for e in rest)}")


def write_table(out: Path, results: list[dict], variant: str, extra: list[str], episodes: int,
                suite: str = "safe") -> Path:
    """``OUT/table.md`` (and its picture) from the suite's results made with ``variant``, ``extra`` and
    ``episodes``. Cells average every seed on record; the header's seed count is the most any cell has
    (whatever ``--seeds`` the last invocation was given), and a cell with fewer says how many."""
    spec = SUITES[suite]
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)  # (task, agent) -> its seeds' results
    for r in results:
        if same_setting(r, variant, extra, episodes) and r["task"] in spec.tasks and r["agent"] in spec.columns:
            cells[r["task"], r["agent"]].append(r)
    seeds = max(map(len, cells.values()), default=0)
    tasks = [t for t in spec.tasks if any(task == t for task, _ in cells)]
    agents = [a for a in spec.columns if any(agent == a for _, agent in cells)]
    table = safe_table if suite == "safe" else locomotion_table
    lines = table(cells, tasks, agents, seeds, command(suite, variant, seeds, extra, episodes), variant, extra, episodes)
    path = out / "table.md"
    path.write_text("\n".join(lines) + "\n")
    if suite == "safe":
        plot_table(out / "table.png", cells, tasks, agents)
    else:
        plot_curves(out / "curves.png", cells, tasks, agents)
    return path


def machine() -> str:
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs)"


def safe_table(cells: dict[tuple[str, str], list[dict]], tasks: list[str], agents: list[str], seeds: int,
               invocation: str, variant: str, extra: list[str], episodes: int) -> list[str]:
    """FISOR's Table 1: normalised reward / cost, unsafe in gray italics, the best safe reward in bold."""
    lines = [f"Normalised reward / normalised cost (DSRL's normalisation, cost limit of the configs), mean over "
             f"{seeds} seeds (a cell over fewer says how many in brackets), `{variant}` configs, {episodes} "
             f"evaluation episodes per seed; *gray italics*: "
             f"unsafe (cost > 1); **bold**: the best safe reward of the row among the paper's algorithms; `fisor_first_feasible`: the "
             f"FISOR runs acting by the first feasible candidate (not the paper's rule, never bold). "
             f"`{invocation}` on {machine()}.", "",
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
    return lines


def locomotion_table(cells: dict[tuple[str, str], list[dict]], tasks: list[str], agents: list[str], seeds: int,
                     invocation: str, variant: str, extra: list[str], episodes: int) -> list[str]:
    """A2PR's table: D4RL scores, mean ± standard deviation over seeds, the best of a row in bold,
    the total over the datasets every agent has; the gradient steps of each agent's runs in the header."""
    steps_of = {a: sorted({r["steps"] for (_, agent), rows in cells.items() if agent == a for r in rows})
                for a in agents}
    if not agents:
        steps = "no results yet"
    elif len({s for a in agents for s in steps_of[a]}) == 1:
        steps = f"{steps_of[agents[0]][0]:,} gradient steps per run for every agent"
    else:  # e.g. bc_all's paper length is OSRL's 100k, the others' 1M: say so rather than hide it
        steps = ("gradient steps per run NOT equal across agents: "
                 + ", ".join(f"{a} {' / '.join(f'{s:,}' for s in steps_of[a])}" for a in agents))
    size = next((e.removeprefix("dataset.size=") for e in extra if e.startswith("dataset.size=")), "full")
    tuned = sorted({r["settings"] for rows in cells.values() for r in rows if r.get("settings")})
    lines = [f"D4RL normalised score x 100 (0: uniform random actions, 100: D4RL's expert; Gymnasium's v5 robots, "
             f"so only loosely comparable with published D4RL figures) of the final policy, mean ± standard "
             f"deviation over {seeds} seeds (a cell over fewer says how many in brackets), `{variant}` configs, "
             f"{steps}, `{size}` datasets, {episodes} evaluation episodes per seed; **bold**: the best "
             f"mean of the row"
             + (f"; †: with the agent's per-dataset settings ({', '.join(f'`{t}`' for t in tuned)}: their keys on "
                f"top of `<agent>/{variant}`)" if tuned else "")
             + f"; learning curves in `curves.png`. `{invocation}` on {machine()}.", "",
             "| dataset | " + " | ".join(agents) + " |", "|---|" + "---|" * len(agents)]
    totals = dict.fromkeys(agents, 0.0)
    complete = 0
    for task in tasks:
        means = {a: float(np.mean([r["score"] for r in cells[task, a]])) for a in agents if (task, a) in cells}
        best = max(means, key=means.get) if len(means) > 1 else None
        row = []
        for agent in agents:
            if agent not in means:
                row.append("-")
                continue
            scores = [r["score"] for r in cells[task, agent]]
            text = f"{means[agent]:.1f}" + (f" ± {np.std(scores):.1f}" if len(scores) > 1 else "")
            text += "†" if any(r.get("settings") for r in cells[task, agent]) else ""
            text += f" ({len(scores)})" if len(scores) < seeds else ""
            row.append(f"**{text}**" if agent == best else text)
        lines.append(f"| {task} | " + " | ".join(row) + " |")
        if len(means) == len(agents):
            complete += 1
            for agent in agents:
                totals[agent] += means[agent]
    if complete:
        best = max(totals, key=totals.get) if len(totals) > 1 else None
        lines.append(f"| total ({complete} dataset{'s' if complete > 1 else ''}) | "
                     + " | ".join(f"**{totals[a]:.1f}**" if a == best else f"{totals[a]:.1f}" for a in agents) + " |")
    return lines


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


def mean_curve(curves: list[list[list[float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps, mean and standard deviation over the seeds' curves (at each step, over the seeds that
    logged it: a seed still training has fewer points)."""
    at: dict[float, list[float]] = defaultdict(list)
    for curve in curves:
        for step, value in curve:
            at[step].append(value)
    steps = np.array(sorted(at))
    return steps, np.array([np.mean(at[s]) for s in steps]), np.array([np.std(at[s]) for s in steps])


def plot_curves(path: Path, cells: dict[tuple[str, str], list[dict]], tasks: list[str], agents: list[str]) -> None:
    """``OUT/curves.png``: one panel per dataset (a row per robot when all five kinds are there), the
    D4RL score against the gradient step, per agent the mean over seeds with a ± standard deviation
    band. Results without a curve (their run's events were unreadable) are left out."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not tasks:
        path.unlink(missing_ok=True)  # no stale picture beside an empty table
        return
    cols = min(len(KINDS), len(tasks))
    rows = -(-len(tasks) // cols)
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows + 0.5), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    colors = dict(zip(LOCOMOTION_AGENTS, ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:gray")))
    handles = {}
    for ax, task in zip(axes, tasks):
        for agent in agents:
            curves = [r["curve"] for r in cells.get((task, agent), []) if r.get("curve")]
            if not curves:
                continue
            steps, mean, std = mean_curve(curves)
            (handles[agent],) = ax.plot(steps, mean, color=colors[agent], linewidth=1.4, marker=".", markersize=3)
            ax.fill_between(steps, mean - std, mean + std, color=colors[agent], alpha=0.15, linewidth=0)
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("gradient step", fontsize=8)
        ax.set_ylabel("D4RL score", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(tasks):]:
        ax.set_visible(False)
    shown = [a for a in agents if a in handles]  # the table's column order
    fig.legend([handles[a] for a in shown], shown, loc="lower center", ncol=max(1, len(shown)), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.5 / (2.6 * rows + 0.5), 1, 1))
    fig.savefig(path, format="png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", choices=tuple(SUITES), default="safe",
                        help="safe: FISOR's table on the safe tasks; locomotion: A2PR's on the D4RL-style datasets")
    parser.add_argument("--variant", choices=VARIANTS, default="cpu")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tasks", "--datasets", dest="tasks", nargs="+", metavar="ROW",
                        help=f"rows (default: all of the suite's): safe: {' '.join(TASKS)}; "
                             f"locomotion: {' '.join(DATASETS)}")
    parser.add_argument("--agents", nargs="+", metavar="AGENT",
                        help=f"(default: all of the suite's) safe: {' '.join(AGENTS)}; "
                             f"locomotion: {' '.join(LOCOMOTION_AGENTS)}")
    parser.add_argument("--size", choices=SIZES, default="full",
                        help="the datasets' size (the override dataset.size; small or tiny for a quick look)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--address", default=None,
                        help="a running Ray cluster, e.g. auto (default: a local Ray of --workers CPUs)")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--out", type=Path, help="(default: benchmarks/safe_offline, benchmarks/locomotion_offline)")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="override for every run (e.g. steps=5000)")
    parser.add_argument("--report-only", action="store_true", help="train nothing: rewrite the table from "
                        "OUT/results.json (every invocation adds its runs there)")
    args = parser.parse_args(argv)
    suite = SUITES[args.suite]
    for flag, known in (("tasks", suite.tasks), ("agents", suite.agents)):
        unknown = [name for name in getattr(args, flag) or [] if name not in known]
        if unknown:
            parser.error(f"--{flag} {' '.join(unknown)}: not in the {args.suite} suite ({' '.join(known)})")
    tasks, agents = args.tasks or suite.tasks, args.agents or suite.agents
    out = args.out or suite.out
    for flag in ("seeds", "workers", "episodes"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    extra = ([f"dataset.size={args.size}"] if args.size != "full" else []) + args.extra
    setting = (args.variant, extra, args.episodes)
    recorded = read_results(out)
    failed = []
    if not args.report_only:
        jobs = [(a, t, s) for t in tasks for a in agents for s in range(args.seeds)]
        # a result whose run folder is gone (a fresh checkout: runs/ is not in git) is kept, not retrained
        gone = {(r["agent"], r["task"], r["seed"]): r["run"] for r in recorded
                if same_setting(r, *setting) and not Path(r["run"]).exists()}
        for job in [j for j in jobs if j in gone]:
            print(f"{job[0]} {job[1]} s{job[2]}: kept the recorded result; its run {gone[job]} is gone "
                  "(delete its rows from results.json to train it again)", flush=True)
        jobs = [j for j in jobs if j not in gone]
        from aligngym.agents.sweep import run_tasks

        def record(job: tuple[str, str, int], rows: list[dict]) -> None:
            nonlocal recorded
            with locked_results(out) as results:  # other invocations' rows too
                for r in rows:  # replaces an earlier result of the same run
                    results[:] = [o for o in results if not (same_setting(o, *setting) and
                                  (o["agent"], o["task"], o["seed"]) == (r["agent"], r["task"], r["seed"]))]
                    results.append(r)
                    print(describe(r), flush=True)
                recorded = list(results)
            write_table(out, recorded, *setting, suite=args.suite)

        calls = {(a, t, s): (a, t, s, args.variant, out, args.episodes, extra) for a, t, s in jobs}
        failed = list(run_tasks(run_one, calls, args.address, num_cpus=args.workers, on_result=record,
                                label=lambda job: f"{job[0]} {job[1]} s{job[2]}"))
    print(write_table(out, recorded, *setting, suite=args.suite).read_text())
    if failed:
        print(f"{len(failed)} run(s) failed: " + ", ".join(f"{a} {t} s{s}" for a, t, s in failed), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
