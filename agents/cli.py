"""The ``aligngym`` command: train (or resume), evaluate, run a study, make datasets, list.

    aligngym train CONFIG [--set key.sub=value ...] [--smoke]     CONFIG: a YAML file or a bundled
                                                                  config's name (fisor/cpu, quickstart)
    aligngym train --resume RUN_DIR [--set steps=N ...]
    aligngym eval RUN_DIR [--episodes N] [--device D] [--background BOT --focal K] [--selection RULE]
                          [--score-range own|dsrl]
    aligngym study cooperation [--seeds N] [--episodes E] [--conditions ...] [--workers W]
                               [--preset ours|reference] [--tail T] [--out DIR] [--report-only]
    aligngym data generate TASK [--size tiny|small|full] [--seed S] [--out PATH] [--force]
    aligngym data info FILE
    aligngym data plot FILE [--out PNG]
    aligngym list

Bad input (a config error, a missing or corrupt checkpoint, a wrong flag) prints one clear message
and exits with status 2. A training stopped by Ctrl-C or SIGTERM saves a checkpoint, says how to
resume and exits with 130 or 143. torch, tianshou and the agents are imported only by the commands
that need them: ``--help`` and ``list`` answer at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path


def _cmd_train(args: argparse.Namespace) -> int:
    from aligngym.agents.config import ConfigError, load_config
    from aligngym.agents.train import Interrupted, has_checkpoint, resume, train

    started: list[Path] = []

    def announce(run_dir: Path) -> None:
        started.append(run_dir)
        print(f"run folder: {run_dir}", flush=True)

    try:
        if args.resume is not None:
            if args.config is not None or args.smoke:
                raise ConfigError("--resume takes the run folder (and --set for what a resumed run may "
                                  "change: steps, episodes, intervals, device...): the run keeps its saved config")
            run_dir = resume(Path(args.resume), on_start=announce, overrides=args.overrides)
        else:
            if args.config is None:
                raise ConfigError("train needs a CONFIG file or name (or --resume RUN_DIR); "
                                  "aligngym list shows the bundled configs")
            config = load_config(args.config, args.overrides, smoke=args.smoke)
            run_dir = train(config, on_start=announce)
    except Interrupted as stop:
        print(f"\naligngym: stopped at {stop.unit} {stop.step} with a checkpoint. Continue with "
              f"aligngym train --resume {started[0]}", file=sys.stderr)
        return stop.exit_status
    except KeyboardInterrupt:
        if started and has_checkpoint(started[0]):
            hint = f" Continue from the last checkpoint with aligngym train --resume {started[0]}"
        elif started:
            hint = f" {started[0]} holds no checkpoint yet: start the run again with aligngym train"
        else:
            hint = ""
        print(f"\naligngym: interrupted.{hint}", file=sys.stderr)
        return 130
    print(f"watch it:   tensorboard --logdir {run_dir.parent}")
    print(f"score it:   aligngym eval {run_dir}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from aligngym.agents.evaluate import evaluate

    result = evaluate(Path(args.run_dir), args.episodes, args.device, score_range=args.score_range,
                      background=args.background, focal=args.focal, selection=args.selection)
    written = result.pop("written_to")
    per_episode = [k for k in result if k.startswith("episode_")]  # long lists: in the file only
    print(json.dumps({k: v for k, v in result.items() if k not in per_episode}, indent=2, sort_keys=True))
    print(f"written to {written}" + (f" (with {', '.join(sorted(per_episode))})" if per_episode else ""))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    import gymnasium
    import pettingzoo

    import aligngym.envs  # noqa: F401  (registers everything)
    from aligngym.agents.config import AGENTS, bundled_configs, config_names

    print("PettingZoo environments (pettingzoo.make('parallel', ID)):")
    for env_id in sorted(i for i in pettingzoo.parallel_registry if i.startswith("aligngym/")):
        print(f"  {env_id}")
    gym_ids = sorted(i for i in gymnasium.registry if i.startswith("aligngym/"))
    print("Gymnasium environments (gym.make('aligngym.envs:ID')):")
    for env_id in gym_ids or ["(none yet)"]:
        print(f"  {env_id}")
    print("Agents:")
    for name in sorted(AGENTS):
        print(f"  {name}")
    print(f"Configs (aligngym train NAME; the files are in {bundled_configs()}):")
    for name in config_names():
        print(f"  {name}")
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    from aligngym.agents.marl.study import run_study

    out = args.out or ("runs/study" if args.preset == "ours" else f"runs/study-{args.preset}")
    report = run_study(Path(out).expanduser(), args.seeds, args.episodes, args.conditions, args.workers,
                       args.tail, report_only=args.report_only, preset=args.preset)
    print(f"study report: {report}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from aligngym.agents.sweep import default_out, run_sweep

    out = Path(args.out).expanduser() if args.out else default_out(args.config)
    report = run_sweep(args.config, args.seeds, args.grid, args.overrides, out, args.address, args.cpus_per_trial,
                       args.metrics, args.tail, report_only=args.report_only)
    print(f"sweep report: {report}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from aligngym.agents.config import ConfigError
    from aligngym.envs.data.dataset import DatasetError, check_writable, load_dataset, plot_dataset, summary

    if args.action == "generate":
        from aligngym.envs.data.generate import generate

        options = {}
        for option in args.option:
            name, sep, value = option.partition("=")
            try:
                options[name.strip()] = float(value)
            except ValueError:
                raise DatasetError(f"--option takes NAME=NUMBER (e.g. p=0.3), got {option!r}") from None
        paths = generate(args.task, args.size, args.seed, Path(args.out).expanduser() if args.out else None,
                         args.force, options)
        for path in paths:
            print(f"wrote {path}")
        print(f"inspect it: aligngym data info {paths[0]}")
        return 0
    file = Path(args.file).expanduser()  # a quoted ~ too: else the plot lands in a folder named ~
    ds = load_dataset(file)
    if args.action == "info":
        print(summary(ds))
        return 0
    out = Path(args.out).expanduser() if args.out else file.with_suffix(".png")
    if out.suffix.lower() != ".png" and not out.is_dir():
        raise ConfigError(f"--out {out}: the plot is a PNG picture; name a .png file")
    check_writable(out, f" (--out names the picture's file, e.g. {out / 'plot.png'})")
    plot_dataset(ds, out, title=" ".join(str(ds.attrs[k]) for k in ("env_id", "kind") if k in ds.attrs) or file.stem)
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aligngym", description="AlignGym: train and evaluate agents.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train an agent from a YAML config, or resume a run",
                       description="Train from CONFIG (a YAML file, or the name of a bundled config: "
                                   "aligngym list shows them) into a new run folder, or continue an "
                                   "interrupted run with --resume RUN_DIR. Ctrl-C or SIGTERM stops a "
                                   "run with a checkpoint it resumes from exactly.")
    p.add_argument("config", nargs="?", help="YAML config file or bundled config name, e.g. quickstart, "
                                             "fisor/cpu, configs/cooperation/dp.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value with a dotted key, e.g. --set learner.play.lr=0.01 or "
                        "--set task=aligngym/CarRun-v0 (repeatable; with --resume: steps, episodes, "
                        "intervals, device, threads)")
    p.add_argument("--smoke", action="store_true",
                   help="shrink the run to a few seconds (tests; offline agents then train on the tiny dataset)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run folder from its last checkpoint")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="evaluate a run folder's last checkpoint",
                       description="Rebuild the agent from RUN_DIR alone, play greedy episodes and "
                                   "write RUN_DIR/eval.json (with --background, --focal, --selection or "
                                   "--score-range: RUN_DIR/eval_<option>-<value>....json, e.g. "
                                   "eval_selection-first_feasible.json, not logged to TensorBoard).")
    p.add_argument("run_dir", help="a run folder under runs/")
    p.add_argument("--episodes", type=int, default=None, help="episodes to play (default: the config's)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                   help="override the run's device (e.g. evaluate a CUDA run on a CPU machine)")
    p.add_argument("--background", default=None, metavar="BOT",
                   help="cooperation games: scripted partners (always_cooperate, always_defect, "
                        "tit_for_tat, reformed_defector) replace all but the first --focal agents")
    p.add_argument("--focal", type=int, default=None,
                   help="cooperation games: how many trained agents stay (default 1 with --background)")
    p.add_argument("--selection", choices=("min_cost", "first_feasible"), default=None,
                   help="FISOR: score with this candidate rule instead of the run's own")
    # (envs.safety.offline.SCORE_RANGES, spelled out: the command's start does not import the envs)
    p.add_argument("--score-range", choices=("own", "dsrl"), default=None,
                   help="offline agents on safe tasks: normalise returns with AlignGym's own range or "
                        "DSRL's published one (to put the scores beside DSRL's tables)")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("study", help="run a study: every condition of a paper over many seeds",
                       description="Run every condition config of SUITE (configs/<suite>/) for N "
                                   "seeds as tasks on a local Ray and write OUT/study.md with "
                                   "a table (mean and 95% interval per metric per condition), the "
                                   "paper's claims checked, and curve plots. Rerunning the same "
                                   "command reuses finished runs and resumes interrupted ones.")
    p.add_argument("suite", choices=("cooperation",), help="which study")
    p.add_argument("--seeds", type=int, default=5, help="seeds per condition (default 5)")
    p.add_argument("--episodes", type=int, default=None,
                   help="episodes per run (default: each config's, the paper's 2000)")
    p.add_argument("--conditions", nargs="+", default=None, metavar="NAME",
                   help="only these conditions (file names in configs/cooperation/)")
    p.add_argument("--workers", type=int, default=None,
                   help="conditions at once on a local Ray, each training its seeds together (default: CPU count)")
    p.add_argument("--tail", type=int, default=100,
                   help="final value of a run = mean over its last TAIL episodes (default 100)")
    p.add_argument("--preset", choices=("ours", "reference"), default="ours",
                   help="settings for every condition: ours (the configs as they are) or reference (the "
                        "authors' exploration and raw cumulative reputation; agents/marl/study.py)")
    p.add_argument("--out", default=None,
                   help="output folder (default runs/study, or runs/study-PRESET for another preset)")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: rewrite study.md from the runs already in OUT")
    p.set_defaults(func=_cmd_study)

    p = sub.add_parser("sweep", help="run a config over seeds and a grid of settings on Ray",
                       description="Train CONFIG for every seed and every point of the grid (the product "
                                   "of the --grid values) as Ray tasks, each a normal run folder under "
                                   "OUT/runs/, then write OUT/sweep.md (mean and 95%% interval over seeds "
                                   "of each metric's final value per grid point, the failed trials) and "
                                   "OUT/curves.png. A local Ray by default, a cluster with --address. "
                                   "Rerunning the same command reuses finished runs and resumes the others.")
    p.add_argument("config", help="YAML config file or bundled config name, e.g. fisor/cpu")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 per grid point (default 3)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a dotted config key and its values, e.g. --grid actor_lr=1e-3,1e-4 (repeatable: "
                        "the grid is the product)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value in every trial (repeatable)")
    p.add_argument("--address", default=None,
                   help="a running Ray cluster (auto, or ray://HOST:10001); default: a local Ray for the sweep")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs Ray reserves per trial (default 1)")
    p.add_argument("--metrics", nargs="+", default=None, metavar="TAG",
                   help="scalar tags to report (default: every eval/ tag the runs logged)")
    p.add_argument("--tail", type=int, default=1,
                   help="final value of a run = mean of its last TAIL logged values (default 1)")
    p.add_argument("--out", default=None, help="output folder (default runs/sweeps/<config name>)")
    p.add_argument("--report-only", action="store_true", help="train nothing: report on the runs already in OUT")
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("data", help="offline datasets: generate, inspect, plot",
                       description="Generate offline datasets locally in the D4RL/DSRL HDF5 layout "
                                   "(into $ALIGNGYM_DATA, default ~/.cache/aligngym/datasets), print "
                                   "a file's contents, or plot its episodes: on the reward-cost plane "
                                   "(safe tasks) or as a histogram of their returns (locomotion, D4RL "
                                   "files: no costs).")
    data = p.add_subparsers(dest="action", required=True)
    g = data.add_parser("generate", help="train behaviour policies and write a dataset",
                        description="Safe tasks (aligngym/BallCircle-v0 ...): PPO-Lagrangian behaviour "
                                    "runs over a sweep of cost limits plus noisy rollouts, DSRL's grid "
                                    "filter, one HDF5. Locomotion (Hopper-v5, HalfCheetah-v5, "
                                    "Walker2d-v5): a SAC run as D4RL's, then D4RL's random/medium/expert/medium-replay/"
                                    "medium-expert files and a low-quality mixed one (90% random + "
                                    "10% expert transitions), <Task>-<kind>-<size>-s<seed>.hdf5. "
                                    "Stochastic tasks (DoC's): the paper's behaviour policies, "
                                    "<Task>[-p0.3]-<size>-s<seed>.hdf5. "
                                    "Rerunning resumes from finished stages.")
    g.add_argument("task", help="a safe task id (aligngym/BallCircle-v0, or BallCircle), "
                                "Hopper-v5/HalfCheetah-v5/Walker2d-v5, or a stochastic task "
                                "(aligngym/BernoulliBandit-v0, aligngym/SlipperyFrozenLake-v0)")
    g.add_argument("--size", choices=("tiny", "small", "full"), default="small",
                   help="tiny: seconds (tests); small: minutes for a safe task, about an hour for a "
                        "locomotion robot (200k SAC steps); full: DSRL- and D4RL-sized, hours (default small)")
    g.add_argument("--seed", type=int, default=0, help="the same seed gives the same file (default 0)")
    g.add_argument("--out", default=None, help="output file (locomotion: folder) instead of the data directory")
    g.add_argument("--force", action="store_true", help="replace an existing file")
    g.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="a stochastic task's option (aligngym/BernoulliBandit-v0: p, default 0.1; "
                        "aligngym/SlipperyFrozenLake-v0: success_prob, default 1/3); repeatable")
    i = data.add_parser("info", help="keys, sizes, return and cost statistics of a dataset file (locomotion: "
                                     "also the episodes' D4RL scores)")
    i.add_argument("file")
    pl = data.add_parser("plot", help="reward-cost scatter of a dataset's episodes, or a histogram of their "
                                      "returns for a file without costs (PNG)")
    pl.add_argument("file")
    pl.add_argument("--out", default=None, help="PNG path (default: next to FILE)")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("list", help="list registered environments, agents and configs")
    p.set_defaults(func=_cmd_list)
    return parser


# What an interrupted command (Ctrl-C) keeps, by command (train says it itself, naming its run).
_INTERRUPTED = {
    "study": " Finished runs are kept: the same command reuses them and resumes the interrupted ones.",
    "sweep": " Finished runs are kept: the same command reuses them and resumes the interrupted ones.",
    "generate": " Finished stages are kept: the same command continues from them.",
    "eval": " Nothing was written.",
}


_python_warning_line = warnings.formatwarning


def _warning_line(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> str:
    if category.__name__ == "AlignGymWarning":  # AlignGym's own notices: one line, not a source line
        return f"aligngym: warning: {message}\n"
    return _python_warning_line(message, category, *args, **kwargs)


# The errors that mean bad input (exit 2) or a run that diverged (exit 1), by the module that defines
# them: looked up only in modules already imported (one that is not cannot have raised them), so the
# CLI imports none of them up front.
_BAD_INPUT = {"aligngym.agents.config": "ConfigError", "aligngym.agents.train": "CheckpointError",
              "aligngym.envs.data.dataset": "DatasetError"}
_FAILED = {"aligngym.agents.train": "TrainingDiverged"}


def _raised(err: BaseException, kinds: dict[str, str]) -> bool:
    return any(isinstance(err, getattr(sys.modules[module], name))
               for module, name in kinds.items() if module in sys.modules)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _warning_line
    try:
        return args.func(args)
    except BrokenPipeError:  # the reader went away (`aligngym list | head`): no Traceback
        _quiet_stdout()
        return 141  # 128 + SIGPIPE, as a shell reports it
    except KeyboardInterrupt:
        hint = _INTERRUPTED.get(getattr(args, "action", None) or args.command, "")
        print(f"\naligngym: interrupted.{hint}", file=sys.stderr)
        return 130
    except Exception as err:
        status = 2 if _raised(err, _BAD_INPUT) else 1 if _raised(err, _FAILED) else 0
        if not status:
            raise
        print(f"aligngym: error: {err}", file=sys.stderr)
        return status


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's own flush at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real stdout (captured in tests)
        pass


if __name__ == "__main__":
    sys.exit(main())
