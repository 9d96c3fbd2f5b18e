"""``aligngym sweep CONFIG``: one config over seeds and a grid of settings, every trial a run, on Ray.

    aligngym sweep CONFIG --seeds N [--grid KEY=V1,V2 ...] [--set KEY=VALUE ...] [--address ADDRESS]
                          [--out FOLDER] [--cpus-per-trial 1] [--metrics TAG ...] [--tail 1] [--report-only]

A trial is one point of the grid (the product of every ``--grid`` key's values; none: the config as
it is) and one seed; it trains through the runner like ``aligngym train CONFIG --set ...`` into
``OUT/runs/<point>/s<seed>/`` (``finish``: a finished run is reused, an interrupted one resumes from
its last checkpoint, so rerunning a sweep picks up where it stopped). Every setting of every point is
checked before anything starts. The trials run as Ray tasks: on a local Ray started for the sweep
(``--address`` left out: as many trials at once as ``CPUs / cpus-per-trial``), or on a running cluster
(``--address auto`` or ``ray://HOST:10001``; its nodes need aligngym installed and ``OUT`` on a shared
filesystem). A trial that fails is reported with its error and the others go on. An agent that trains
seeds together (the cooperation learners) trains the seeds of a point as one task, in one process.

The report, ``OUT/sweep.md``: per grid point and metric, the mean over seeds of each run's final value
(the mean of its last ``--tail`` logged values) with the half-width of its 95 % interval (Student's t),
the trials that failed, and ``OUT/curves.png``: each metric over training, the mean over seeds per grid
point with its 95 % band. Metrics: the scalar tags given by ``--metrics``, by default every ``eval/``
tag the runs logged (every tag but the ``loss/`` ones where they logged none).
"""

from __future__ import annotations

import inspect
import itertools
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm.auto import tqdm

from aligngym.agents.config import ConfigError, load_config
from aligngym.agents.marl.study import mean_ci
from aligngym.agents.train import finish_seeds, newest_run, read_curves, trains_seeds_together

REPORT = "sweep.md"
K = TypeVar("K")


@dataclass(frozen=True)
class Trial:
    point: tuple[tuple[str, str], ...]  # the grid's (key, value) settings of this trial
    seed: int

    @property
    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.point) or "(config)"

    def folder(self, out: Path) -> Path:
        return out / "runs" / point_folder(self.point) / f"s{self.seed}"

    def overrides(self, sets: list[str]) -> list[str]:
        return [*sets, *(f"{k}={v}" for k, v in self.point), f"seed={self.seed}"]


def point_folder(point: tuple[tuple[str, str], ...]) -> str:
    """A grid point's folder name: its settings, characters unsafe in a file name replaced."""
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", "__".join(f"{k}={v}" for k, v in point)) or "config"


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """``KEY=V1,V2,...`` items as ``(key, values)``, in order."""
    grid: list[tuple[str, list[str]]] = []
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--grid {item!r}: expected KEY=V1,V2,...")
        parts = [v.strip() for v in values.split(",")]
        if any(not v for v in parts):
            raise ConfigError(f"--grid {item!r}: an empty value (values are separated by commas)")
        if len(set(parts)) != len(parts):
            raise ConfigError(f"--grid {item!r}: a value given twice")
        if key in (k for k, _ in grid):
            raise ConfigError(f"--grid {key}: the key is given twice; list its values in one KEY=V1,V2")
        if key == "seed":
            raise ConfigError("--grid seed=...: seeds come from --seeds")
        grid.append((key, parts))
    return grid


def make_trials(grid: list[tuple[str, list[str]]], seeds: int) -> list[Trial]:
    """Every point of the grid (the product of its keys' values) for seeds 0 .. seeds - 1, seed by seed
    (a sweep cut short has as many seeds of every point)."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    keys = [k for k, _ in grid]
    points = [tuple(zip(keys, values)) for values in itertools.product(*(v for _, v in grid))]
    return [Trial(point, seed) for seed in range(seeds) for point in points]


@dataclass(frozen=True)
class Job:
    """One run to bring to its end: a config (file or bundled name), its ``--set`` overrides, the
    ``run_root`` it trains under and a name for messages."""
    config: str
    overrides: tuple[str, ...]
    root: Path
    label: str


def _finish_seeds(config: str, overrides: list[tuple[str, ...]], roots: list[str]) -> list[str]:
    """Train (or finish) the seeds of one setting in one process (``finish_seeds``); their folders."""
    configs = [load_config(config, [*o, f"run_root={root}", "show_progress=false"])
               for o, root in zip(overrides, roots)]
    return [str(d) for d in finish_seeds(configs)]


def run_jobs(jobs: list[Job], address: str | None = None, num_cpus: int | None = None, cpus_per_job: float = 1.0,
             desc: str = "runs") -> dict[Job, str]:
    """Every job brought to its end as a Ray task (``finish``: a finished run is reused, an interrupted
    one resumes); the failed jobs with their errors (:func:`run_tasks`). The seeds of one setting of an
    agent that trains seeds together (the cooperation learners) are one task: one process trains them
    all (``finish_seeds``)."""
    together = {c: trains_seeds_together(load_config(c).agent) for c in {job.config for job in jobs}}
    groups: dict[tuple[str, tuple[str, ...]], list[Job]] = {}
    for job in jobs:
        setting = tuple(o for o in job.overrides if not o.startswith("seed="))
        key = (job.config, setting) if together[job.config] else (job.config, (*setting, str(job.root)))
        groups.setdefault(key, []).append(job)
    calls = {tuple(group): (group[0].config, [j.overrides for j in group], [str(j.root) for j in group])
             for group in groups.values()}
    failed = run_tasks(_finish_seeds, calls, address, num_cpus, cpus_per_job, desc, say_interrupted=False,
                       label=lambda group: group[0].label + (f" and {len(group) - 1} more" if len(group) > 1 else ""))
    return {job: message for group, message in failed.items() for job in group}


def run_tasks(fn: Callable[..., Any], calls: dict[K, tuple], address: str | None = None, num_cpus: int | None = None,
              cpus_per_task: float = 1.0, desc: str = "runs", on_result: Callable[[K, Any], None] | None = None,
              label: Callable[[K], str] = str, say_interrupted: bool = True) -> dict[K, str]:
    """``fn(*args)`` for every ``key: args`` of ``calls`` as a Ray task, under a progress bar;
    ``on_result(key, value)`` as each returns (in this process); returns the keys whose call failed,
    with their errors (the others go on; a call whose worker process dies fails the same way). Uses the
    Ray this process has initialised, else starts one for the call: on the cluster at ``address``, or
    locally with ``num_cpus`` CPUs (None: all of them).
    The workers find ``fn``'s own folder on their import path (a benchmark script's sibling modules)."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    path = os.pathsep.join(p for p in (str(Path(inspect.getfile(fn)).resolve().parent), os.environ.get("PYTHONPATH"))
                           if p)
    env = {"env_vars": {"PYTHONPATH": path, "TQDM_DISABLE": "1"}}
    failures: dict[K, str] = {}
    try:
        task = ray.remote(num_cpus=cpus_per_task, max_retries=0, runtime_env=env)(fn)
        pending = {task.remote(*args): key for key, args in calls.items()}
        with tqdm(total=len(calls), desc=desc, unit="run") as progress:
            while pending:
                (done,), _ = ray.wait(list(pending), num_returns=1)
                key = pending.pop(done)
                try:
                    value = ray.get(done)
                except ray.exceptions.RayError as err:  # the call raised, or its worker died (killed, out of memory)
                    cause = err.cause if getattr(err, "cause", None) is not None else err
                    failures[key] = f"{type(cause).__name__}: {(str(cause).strip().splitlines() or [''])[-1][:300]}"
                    progress.write(f"{label(key)} failed: {failures[key]}")
                else:
                    if on_result is not None:
                        on_result(key, value)
                progress.update()
    except KeyboardInterrupt:
        if say_interrupted:  # (the aligngym command says it itself)
            print("interrupted: rerun the same command to resume (runs go on from their last checkpoints)")
        raise
    finally:
        if started:
            ray.shutdown()
    return failures


def run_sweep(config: str, seeds: int, grid: list[str], sets: list[str], out: Path, address: str | None = None,
              cpus_per_trial: float = 1.0, metrics: list[str] | None = None, tail: int = 1,
              report_only: bool = False) -> Path:
    """Run (or finish) every trial and write ``out/sweep.md``; returns the report's path.
    ``report_only`` trains nothing and reports on the runs already in ``out``."""
    if cpus_per_trial <= 0:
        raise ConfigError(f"--cpus-per-trial must be > 0, got {cpus_per_trial}")
    if tail < 1:
        raise ConfigError(f"--tail must be >= 1, got {tail}")
    trials = make_trials(parse_grid(grid), seeds)
    for trial in {t.point: t for t in trials}.values():  # every point's settings, before any work
        try:
            load_config(config, trial.overrides(sets))
        except ConfigError as err:
            raise ConfigError(f"grid point {trial.label}: {err}") from None
    out.mkdir(parents=True, exist_ok=True)
    failures: dict[Trial, str] = {}
    if not report_only:
        jobs = {Job(config, tuple(t.overrides(sets)), t.folder(out), f"trial {t.label}, seed {t.seed}"): t
                for t in trials}
        failed = run_jobs(list(jobs), address, cpus_per_job=cpus_per_trial, desc="sweep")
        failures = {jobs[job]: message for job, message in failed.items()}
    runs = {t: run for t in trials if t not in failures and (run := newest_run(t.folder(out))) is not None}
    if not runs:
        first = f" (every trial failed; the first: {next(iter(failures.values()))})" if failures else ""
        raise ConfigError(f"no finished runs under {out / 'runs'} to report on{first}")
    return write_report(out, config, trials, runs, failures, metrics, tail)


def write_report(out: Path, config: str, trials: list[Trial], runs: dict[Trial, Path], failures: dict[Trial, str],
                 metrics: list[str] | None, tail: int) -> Path:
    logged = {trial: read_curves(run) for trial, run in runs.items()}  # every tag: each run's events read once
    tags = sorted({tag for curves_ in logged.values() for tag in curves_})
    if metrics is None:
        metrics = [t for t in tags if t.startswith("eval/")] or [t for t in tags if not t.startswith("loss/")]
    unknown = [m for m in metrics if m not in tags]
    if unknown:
        raise ConfigError(f"--metrics {' '.join(unknown)}: no run logged it; the runs logged {', '.join(tags)}")
    empty = (np.array([], dtype=np.int64), np.array([]))
    read = {trial: {m: curves_.get(m, empty) for m in metrics} for trial, curves_ in logged.items()}
    points = list(dict.fromkeys(t.point for t in trials))
    labels = {p: Trial(p, 0).label for p in points}
    lines = [f"# Sweep of `{config}`", "",
             f"{len(points)} grid point(s) x {max(t.seed for t in trials) + 1} seed(s): {len(runs)} run(s) reported"
             + (f", {len(failures)} failed" if failures else "") + ".",
             f"Each cell: the mean over seeds of a run's final value (the mean of its last {tail} logged "
             "value(s)) +- the half-width of the 95 % interval (Student's t), and the number of seeds.", "",
             "| metric | " + " | ".join(labels[p] for p in points) + " |", "|---|" + "---|" * len(points)]
    for metric in metrics:
        cells = []
        for point in points:
            finals = [float(np.mean(values[-tail:])) for trial, curves_ in read.items() if trial.point == point
                      for _, values in [curves_[metric]] if len(values)]
            if not finals:
                cells.append("n/a")
                continue
            mean, half = mean_ci(np.array(finals))
            cells.append(f"{mean:.4g} +- {half:.2g} ({len(finals)})" if len(finals) > 1 else f"{mean:.4g} (1)")
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    if failures:
        lines += ["", "## Failed trials", ""]
        lines += [f"- {t.label}, seed {t.seed}: {failures[t]}" for t in trials if t in failures]
    plotted = [m for m in metrics if any(len(c[m][0]) > 1 for c in read.values())]
    if plotted:
        _plot(out / "curves.png", plotted, points, labels, read)
        lines += ["", "![each metric over training, mean over seeds per grid point](curves.png)"]
    report = out / REPORT
    report.write_text("\n".join(lines) + "\n")
    return report


def _plot(path: Path, metrics: list[str], points: list, labels: dict, read: dict) -> None:
    """One panel per metric: per grid point the mean over seeds (on the steps every seed logged)."""
    from matplotlib.figure import Figure

    columns = min(3, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    figure = Figure(figsize=(5 * columns, 3.6 * rows))
    for k, metric in enumerate(metrics):
        axes = figure.add_subplot(rows, columns, k + 1)
        for point in points:
            series = [c[metric] for t, c in read.items() if t.point == point and len(c[metric][0])]
            if not series:
                continue
            steps = np.array(sorted(set.intersection(*(set(s.tolist()) for s, _ in series))))
            if len(steps) == 0:
                continue
            values = np.stack([v[np.searchsorted(s, steps)] for s, v in series])
            mean = values.mean(0)
            axes.plot(steps, mean, label=labels[point])
            if len(series) > 1:
                half = np.array([mean_ci(values[:, j])[1] for j in range(len(steps))])
                axes.fill_between(steps, mean - half, mean + half, alpha=0.2)
        axes.set_title(metric, fontsize=9)
        axes.set_xlabel("step")
        if k == 0:
            axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def default_out(config: str) -> Path:
    return Path("runs") / "sweeps" / Path(config).stem
