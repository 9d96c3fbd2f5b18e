"""The shared runner: run folders, TensorBoard logging, checkpoints, and ``train`` / ``resume``.

A run folder ``runs/<task>__<agent>__s<seed>__<time>/`` holds ``config.yaml`` (the resolved config),
TensorBoard event files (with the hparams table), ``checkpoint.pt`` (the latest checkpoint),
``checkpoint.1.pt`` (the one before; ``keep_checkpoints`` says how many are kept) and, after
``aligngym eval``, ``eval.json``.

A checkpoint is one file: weights, optimiser state, the resolved config, the package version and
whatever the agent needs to continue exactly (replay buffers, RNG states). It is written to a
temporary file and renamed, so an interruption never leaves a half-written checkpoint, and it is
loaded with ``torch.load(weights_only=True)``: numpy arrays are stored as tensors and no pickled code
is ever executed. A damaged latest checkpoint (a disk or copy error) falls back to the one before,
with a warning naming both.

While a run trains, SIGINT (Ctrl-C) and SIGTERM (what ``timeout`` and job schedulers send) ask it to
stop: the agent's loop checks :meth:`Run.stopping` after each update (offline agents) or episode
(populations), saves a checkpoint at that point and raises :class:`Interrupted`; ``aligngym train``
then prints the resume command and exits with 128 + the signal's number (130, 143). A second signal
stops at once, without saving. ``aligngym train --resume`` continues exactly as if uninterrupted.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import threading
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from aligngym.agents.config import (AlignGymWarning, ConfigError, RunConfig, agent_module, dump_config,
                                    load_config, parse_override, validate)
from aligngym.envs.data.dataset import FolderInUseError, atomic_write, claim_folder, package_version

CHECKPOINT = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt or not AlignGym's."""


class RunInUseError(CheckpointError):
    """A run folder that another live process is training."""


class TrainingDiverged(RuntimeError):
    """Training produced non-finite weights; the run's last checkpoint (from before) is kept."""


class Interrupted(KeyboardInterrupt):
    """A run stopped by SIGINT or SIGTERM after checkpointing (``step``: the checkpoint's)."""

    def __init__(self, signum: int, step: int, unit: str = "step") -> None:
        super().__init__(signum, step, unit)
        self.signum, self.step, self.unit = signum, step, unit  # unit: "episode" or "step"

    @property
    def exit_status(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_stop_request: list[int] = []  # the signal that asked the running loop to stop (empty: none)


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """While training: the first SIGINT or SIGTERM asks the loop to stop at its next step (see
    :meth:`Run.stopping`); a second one raises KeyboardInterrupt at once. Only the main thread can
    take signals; elsewhere (a thread) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request(signum: int, frame: Any) -> None:
        if _stop_request:
            raise KeyboardInterrupt
        _stop_request.append(signum)
        note = (f"\naligngym: {signal.Signals(signum).name} received: stopping after this step with a checkpoint "
                f"(again to stop at once, without one)\n")
        try:  # straight to the descriptor: a handler may run while a progress bar is writing to sys.stderr
            os.write(2, note.encode())
        except OSError:
            pass

    previous = {sig: signal.signal(sig, request) for sig in _STOP_SIGNALS}
    _stop_request.clear()
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop_request.clear()


def apply_threads(config: RunConfig) -> int:
    """Set torch's CPU threads for this run: the config's ``threads``, else the agent's measured
    default (one: torch's extra threads spin on a busy machine, benchmarks/threads.py); returns the
    count it replaced."""
    before = torch.get_num_threads()
    torch.set_num_threads(config.threads or type(config).default_threads)
    return before


def _lock(directory: Path) -> Path:
    """Claim a run folder for this process (:func:`claim_folder`): two processes training one folder
    would interleave its checkpoints and TensorBoard events."""
    try:
        return claim_folder(directory, "trained")
    except FolderInUseError as err:
        raise RunInUseError(str(err)) from None
    except OSError as err:  # a read-only folder (or file system): a run trains in its own folder
        raise CheckpointError(f"cannot write in the run folder {directory} ({err.strerror or err}): a run "
                              f"trains in its own folder; copy the folder somewhere writable and resume the "
                              f"copy") from None


@contextmanager
def _holding(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s claim (:func:`_lock`) for one short look or edit, then release it; raises
    RunInUseError while another process trains the run."""
    lock = _lock(run_dir)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was requested but no CUDA device is available (use auto or cpu; "
                          "aligngym eval takes --device cpu)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


# ---------------------------------------------------------------------- checkpoints
def to_safe(obj: Any) -> Any:
    """numpy arrays -> tensors, recursively, so ``torch.load(weights_only=True)`` can read it back."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: to_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_safe(v) for v in obj)
    return obj


def to_numpy(obj: Any) -> Any:
    """The inverse of :func:`to_safe` for the parts of a checkpoint that hold numpy state."""
    if isinstance(obj, torch.Tensor):
        return obj.numpy()
    if isinstance(obj, dict):
        return {k: to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_numpy(v) for v in obj)
    return obj


@contextmanager
def checkpoint_errors(where: str = "") -> Iterator[None]:
    """Restoring a checkpoint's state: a missing or ill-shaped entry is a CheckpointError (``where``:
    what the message starts with, e.g. the run folder)."""
    try:
        yield
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as err:
        raise CheckpointError(f"{where}the checkpoint does not fit this config or is incomplete "
                              f"({type(err).__name__}: {(str(err).splitlines() or [''])[0][:160]})") from None


def save_checkpoint(path: Path, config: RunConfig, state: dict[str, Any]) -> None:
    """Write ``state`` atomically (temporary file, fsync, rename: a crash keeps the previous one)."""
    payload = {"format": "aligngym-checkpoint-1", "version": package_version(),
               "config": config.model_dump(mode="json"), "state": to_safe(state)}

    def write(tmp_name: str) -> None:
        with open(tmp_name, "wb") as fh:
            torch.save(payload, fh)

    atomic_write(path, write)


def load_checkpoint(path: str | Path) -> tuple[RunConfig, dict[str, Any]]:
    """Read a checkpoint without executing pickled code; returns (config, state)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:  # read once: the bytes checked below are the bytes loaded
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {err.strerror or err}") from None
    try:  # torch.load does not check the archive's checksums: a flipped bit would load as a bad weight
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, EOFError):
        damaged = None  # not a zip archive (or a truncated one): torch.load's refusal below says so
    if damaged is not None:
        raise CheckpointError(f"{path} is damaged: its part {damaged} fails its checksum (a disk or copy "
                              f"error); use a good copy or train again")
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for truncated / foreign / unsafe files
        raise CheckpointError(f"{path} is corrupt or not an AlignGym checkpoint "
                              f"({type(err).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != "aligngym-checkpoint-1":
        raise CheckpointError(f"{path} is not an AlignGym checkpoint (no 'format' marker)")
    if not isinstance(payload.get("config"), dict) or not isinstance(payload.get("state"), dict):
        raise CheckpointError(f"{path} is incomplete: it lacks its config or its state")
    config = validate(payload["config"], f"{path} (config)")
    return config, payload["state"]


def previous_checkpoint(directory: Path, k: int) -> Path:
    """The ``k``-th checkpoint before the latest (``checkpoint.1.pt``: the one before)."""
    return directory / f"{Path(CHECKPOINT).stem}.{k}{Path(CHECKPOINT).suffix}"


def _older_checkpoints(directory: Path) -> dict[int, Path]:
    """The checkpoints before the latest by ``k`` (:func:`previous_checkpoint`)."""
    stem, suffix = Path(CHECKPOINT).stem, Path(CHECKPOINT).suffix
    older = {}
    for path in directory.glob(f"{stem}.*{suffix}"):
        index = path.name[len(stem) + 1:-len(suffix)]
        if index.isdigit():
            older[int(index)] = path
    return older


def checkpoint_files(directory: Path) -> list[Path]:
    """The run folder's checkpoints, the latest first."""
    older = _older_checkpoints(directory)
    latest = directory / CHECKPOINT
    return ([latest] if latest.is_file() else []) + [older[k] for k in sorted(older)]


def has_checkpoint(directory: Path) -> bool:
    return bool(checkpoint_files(directory))


def newest_run(folder: Path) -> Path | None:
    """Of the run folders in ``folder`` (a ``run_root``), the one with the newest checkpoint; None before
    any has one (a root may also hold older runs, e.g. of a config edited since)."""
    checkpoints = list(Path(folder).glob(f"*/{CHECKPOINT}")) if Path(folder).is_dir() else []
    return max(checkpoints, key=lambda p: p.stat().st_mtime).parent if checkpoints else None


def load_run_checkpoint(directory: Path) -> tuple[RunConfig, dict[str, Any], Path]:
    """The run folder's latest checkpoint that loads: (config, state, its file). A damaged latest falls
    back to the one before (``keep_checkpoints``), with a warning naming both."""
    files = checkpoint_files(directory)
    if not files:
        if not directory.exists():
            raise CheckpointError(f"run folder not found: {directory}")
        if not directory.is_dir():
            raise CheckpointError(f"{directory} is not a run folder (a run folder holds config.yaml and "
                                  f"{CHECKPOINT})")
        raise CheckpointError(f"no checkpoint at {directory / CHECKPOINT}")
    failed: list[tuple[Path, CheckpointError]] = []
    if files[0].name != CHECKPOINT:
        failed.append((directory / CHECKPOINT, CheckpointError("it is missing")))
    for path in files:
        try:
            config, state = load_checkpoint(path)
        except CheckpointError as err:
            failed.append((path, err))
            continue
        if failed:
            bad, err = failed[0]
            warnings.warn(f"{bad} cannot be used ({err}); using {path.name} instead, the checkpoint before it "
                          f"(step {int(state.get('step', 0))})", AlignGymWarning, stacklevel=2)
        return config, state, path
    raise next(err for path, err in failed if path.exists())  # none loads: the latest one's error


# ---------------------------------------------------------------------- run folders
def _flat(prefix: str, data: Any) -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flat(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    if isinstance(data, (list, tuple)):
        return {prefix: ",".join(map(str, data))}
    if data is None:
        return {prefix: "none"}
    return {prefix: data}


EVALUATION = "eval.json"  # what `aligngym eval RUN_DIR` writes in the run folder (also logged there)


def _evaluation_at(directory: Path, step: int) -> dict[str, float]:
    """The ``eval/*`` scores of the run folder's evaluation, if it scored the checkpoint of ``step``."""
    try:
        result = json.loads((directory / EVALUATION).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(result, dict) or result.get("checkpoint_step") != step:
        return {}
    return {k.split("/", 1)[1]: float(v) for k, v in result.items()
            if k.startswith("eval/") and isinstance(v, (int, float)) and not isinstance(v, bool)}


class Run:
    """A run folder and its TensorBoard logger."""

    def __init__(self, directory: Path, config: RunConfig, first_step: int = 0) -> None:
        self.dir, self.config = directory, config
        self.lock = _lock(directory)  # RunInUseError while another process trains it
        for stale in directory.glob(f".{Path(CHECKPOINT).stem}.*.tmp"):  # a checkpoint write cut by a crash
            stale.unlink(missing_ok=True)
        # purge_step drops events logged after the last checkpoint by an interrupted process (events
        # at steps >= purge_step); those at the checkpoint's own step stay where they belong to it
        purge = first_step + int(config.logs_checkpoint_step) if first_step else None
        try:
            self.writer = SummaryWriter(str(directory), purge_step=purge)
        except BaseException:
            self.lock.unlink(missing_ok=True)
            raise
        scores = _evaluation_at(directory, first_step) if purge == first_step else {}
        if scores:  # the purge drops the scores `aligngym eval` logged at the checkpoint too: again
            self.log("eval", first_step, scores)

    @classmethod
    def create(cls, config: RunConfig) -> Run:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        task = re.sub(r"[^A-Za-z0-9_.-]+", "_", config.task.split("/")[-1])
        base = Path(config.run_root).expanduser() / f"{task}__{config.agent}__s{config.seed}__{stamp}"
        directory, n = base, 1
        while directory.exists():
            n += 1
            directory = base.with_name(f"{base.name}_{n}")
        try:
            directory.mkdir(parents=True)
            (directory / "config.yaml").write_text(dump_config(config))
        except OSError as err:
            raise ConfigError(f"run_root {config.run_root}: cannot create the run folder {directory} "
                              f"({err.strerror or err})") from None
        run = cls(directory, config)
        run.write_hparams()
        return run

    @property
    def checkpoint_path(self) -> Path:
        return self.dir / CHECKPOINT

    def write_hparams(self) -> None:
        flat = {k: v for k, v in _flat("", self.config.model_dump(mode="json")).items()
                if isinstance(v, (int, float, str, bool))}
        exp, ssi, sei = hparams(flat, {name: 0.0 for name in self.config.hparam_metrics})
        for summary in (exp, ssi, sei):
            self.writer.file_writer.add_summary(summary)

    def log(self, scope: str, step: int, scalars: dict[str, float]) -> None:
        """Scalars ``{name: value}`` under ``scope/`` (for example ``coop/cooperation_rate``), at ``step``
        (TensorBoard's own step axis: no ``scope/step`` scalar beside them)."""
        for name, value in scalars.items():
            self.writer.add_scalar(f"{scope}/{name}", value, global_step=step)

    def figure(self, tag: str, fig: Any, step: int, png: str | None = None) -> None:
        """A matplotlib figure to TensorBoard (images tab) and, with ``png``, to the run folder."""
        if png is not None:
            fig.savefig(self.dir / png)
        self.writer.add_figure(tag, fig, global_step=step, close=True)

    def save(self, state: dict[str, Any]) -> None:
        """Write the latest checkpoint; the one it replaces becomes ``checkpoint.1.pt`` (and so on, up
        to ``keep_checkpoints`` in all). The latest is never absent: the one before is linked, not moved."""
        keep, latest = self.config.keep_checkpoints, self.checkpoint_path
        for index, path in _older_checkpoints(self.dir).items():
            if index >= keep:  # keep_checkpoints was lowered
                path.unlink(missing_ok=True)
        if keep > 1 and latest.is_file():
            for k in range(keep - 1, 1, -1):
                if previous_checkpoint(self.dir, k - 1).is_file():
                    os.replace(previous_checkpoint(self.dir, k - 1), previous_checkpoint(self.dir, k))
            tmp = self.dir / f".{Path(CHECKPOINT).stem}.1.{os.getpid()}.tmp"
            try:
                os.link(latest, tmp)
            except OSError:  # a file system without hard links
                shutil.copy2(latest, tmp)
            os.replace(tmp, previous_checkpoint(self.dir, 1))
        save_checkpoint(latest, self.config, state)

    def stopping(self) -> bool:
        """Whether SIGINT or SIGTERM asked the run to stop: the agent's loop then saves a checkpoint
        and raises :meth:`interrupted`'s exception."""
        return bool(_stop_request)

    def interrupted(self, step: int) -> Interrupted:
        return Interrupted(_stop_request[0] if _stop_request else signal.SIGINT, step,
                           self.config.length_key.removesuffix("s"))

    def close(self) -> None:
        self.writer.close()
        self.lock.unlink(missing_ok=True)


def read_curves(run_dir: Path, tags: tuple[str, ...] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A run folder's logged scalar curves: per tag ``(steps, values)`` by step (a missing tag: empty
    arrays; ``tags`` None: every tag the run logged); a step logged twice (a run's last step, scored
    again by ``aligngym eval``) keeps the later value."""
    import logging

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tb_logging

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    tb_logger = tb_logging.get_logger()
    level = tb_logger.level
    tb_logger.setLevel(logging.ERROR)  # a resumed run's purge is expected: no "out of order" warning
    try:
        events.Reload()
    finally:
        tb_logger.setLevel(level)
    present = set(events.Tags()["scalars"])
    curves = {}
    for tag in sorted(present) if tags is None else tags:
        by_step = {e.step: e.value for e in events.Scalars(tag)} if tag in present else {}
        steps = np.array(sorted(by_step), dtype=np.int64)
        curves[tag] = (steps, np.array([by_step[s] for s in steps], dtype=np.float64))
    return curves


def changed_keys(a: RunConfig, b: RunConfig, ignore: tuple[str, ...] = ()) -> list[str]:
    """The dotted keys whose values differ between two configs, but for those under ``ignore``."""
    flat_a, flat_b = (_flat("", c.model_dump(mode="json")) for c in (a, b))
    return sorted(k for k in flat_a.keys() | flat_b.keys()
                  if flat_a.get(k) != flat_b.get(k) and k.split(".")[0] not in ignore)


# Keys that may differ between a run's config.yaml and its checkpoint when resuming (and that
# `aligngym train --resume RUN_DIR --set KEY=VALUE` may set).
RESUMABLE_KEYS = ("episodes", "steps", "checkpoint_every", "eval_every", "eval_episodes", "log_every",
                  "show_progress", "device", "run_root", "threads", "keep_checkpoints", "plot_every")


def _named(config: RunConfig, err: ConfigError) -> ConfigError:
    """``err`` with the config's file in front, as every other config error has it."""
    source = config._source
    return err if not source or str(err).startswith(source) else ConfigError(f"{source}: {err}")


@contextmanager
def _training_scope(config: RunConfig) -> Iterator[None]:
    """The agent's own loop runs inside: its torch threads, SIGINT/SIGTERM asking it to stop at a checkpoint."""
    before = apply_threads(config)
    try:
        with _stop_on_signals():
            yield
    finally:
        torch.set_num_threads(before)  # a caller's own setting (train() from Python) is left as it was


def _training(config: RunConfig, run: Run, state: dict[str, Any] | None) -> None:
    with _training_scope(config):
        agent_module(config.agent).train(config, run, state)


def _training_seeds(configs: list[RunConfig], runs: list[Run], states: list[dict[str, Any] | None]) -> None:
    """:func:`_training` for seeds of one condition trained together (the agent's ``train_seeds``)."""
    with _training_scope(configs[0]):
        agent_module(configs[0].agent).train_seeds(configs, runs, states)


def trains_seeds_together(agent: str) -> bool:
    """Whether the agent trains several seeds in one process (its module's ``train_seeds``)."""
    return hasattr(agent_module(agent), "train_seeds")


def train(config: RunConfig, on_start: Callable[[Path], None] | None = None) -> Path:
    """Create a run folder and train ``config``'s agent in it; returns the folder.
    ``on_start(run_dir)`` is called once the folder exists."""
    try:
        resolve_device(config.device)  # fail before creating anything
        config.preflight()
    except ConfigError as err:
        raise _named(config, err) from None
    run = Run.create(config)
    try:
        if on_start is not None:
            on_start(run.dir)
        _training(config, run, None)
    finally:
        run.close()
    return run.dir


def finish(config: RunConfig) -> Path:
    """Bring ``config``'s run to its end: return a finished run under its ``run_root`` whose config
    matches (up to RESUMABLE_KEYS), continue an unfinished one (with this config's length), or
    train a new one (in place of this run's folder if it was cut short before its first checkpoint)."""
    found = _matching_run(config)
    if found is None:
        return train(config)
    run_dir, step = found
    if step >= getattr(config, config.length_key):
        return run_dir
    with _holding(run_dir):  # not while another process trains it
        (run_dir / "config.yaml").write_text(dump_config(config))
    return resume(run_dir)


def finish_seeds(configs: list[RunConfig]) -> list[Path]:
    """:func:`finish` for seeds of one condition (configs that differ in their seed and run root) of an
    agent that trains seeds together (its module's ``train_seeds``): the unfinished ones are trained in
    one process, those at the same step together. Returns the run folders in the order of ``configs``."""
    if not trains_seeds_together(configs[0].agent) or len(configs) == 1:
        return [finish(config) for config in configs]
    out: dict[int, Path] = {}
    groups: dict[int, list[tuple[int, RunConfig, Path | None]]] = {}
    for k, config in enumerate(configs):
        try:
            resolve_device(config.device)
            config.preflight()
        except ConfigError as err:
            raise _named(config, err) from None
        found = _matching_run(config)
        if found is not None and found[1] >= getattr(config, config.length_key):
            out[k] = found[0]
            continue
        if found is not None:
            with _holding(found[0]):
                (found[0] / "config.yaml").write_text(dump_config(config))
        groups.setdefault(0 if found is None else found[1], []).append((k, config, None if found is None else found[0]))
    for members in groups.values():
        runs: list[Run] = []
        try:
            states: list[dict[str, Any] | None] = []
            for k, config, run_dir in members:
                if run_dir is None:
                    runs.append(Run.create(config))
                    states.append(None)
                else:
                    _, run, state = _reopen(run_dir, config)
                    runs.append(run)
                    states.append(state)
                out[k] = runs[-1].dir
            _training_seeds([config for _, config, _ in members], runs, states)
        finally:
            for run in runs:
                run.close()
    return [out[k] for k in range(len(configs))]


def _matching_run(config: RunConfig) -> tuple[Path, int] | None:
    """The run under ``config``'s run root that is this run (its config equal up to RESUMABLE_KEYS),
    with its checkpoint's step; folders of this run cut short before a checkpoint are removed."""
    root = Path(config.run_root).expanduser()

    def same_run(saved: RunConfig) -> bool:
        return not changed_keys(config, saved, ignore=RESUMABLE_KEYS)

    for run_dir in sorted(root.glob("*__*")) if root.is_dir() else []:
        if not has_checkpoint(run_dir):
            _drop_if_cut_short(run_dir, same_run)
            if not has_checkpoint(run_dir):  # (its first checkpoint may have landed meanwhile)
                continue
        saved, state, _ = load_run_checkpoint(run_dir)
        if same_run(saved):
            return run_dir, int(state.get("step", 0))
    return None


def _drop_if_cut_short(run_dir: Path, same_run: Callable[[RunConfig], bool]) -> None:
    """Delete ``run_dir`` if it is this run interrupted before its first checkpoint (nothing in it
    can be resumed; left, it would lie beside the new attempt's folder). A folder another process is
    training (its first checkpoint still to come) raises RunInUseError; one that is not a run of this
    config is left alone."""
    try:
        saved = load_config(run_dir / "config.yaml")
    except ConfigError:
        return
    if not same_run(saved):
        return
    with _holding(run_dir):  # RunInUseError while its process lives
        if not has_checkpoint(run_dir):  # (its first checkpoint may have landed meanwhile: keep it)
            shutil.rmtree(run_dir)


def resume(run_dir: Path, on_start: Callable[[Path], None] | None = None,
           overrides: list[str] | tuple[str, ...] = ()) -> Path:
    """Continue an interrupted run from its last checkpoint, in the same folder. Its config.yaml
    (or ``overrides``, ``KEY=VALUE`` as ``--set`` takes them, written into its config.yaml) may raise
    the run's length or change the other RESUMABLE_KEYS; any other change is refused. A damaged
    latest checkpoint falls back to the one before. ``on_start(run_dir)`` is called once the run is
    checked and locked."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run folder not found: {run_dir}" if not run_dir.exists() else
                          f"{run_dir} is not a run folder (give the folder, not a file in it)")
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no config.yaml)")
    for text in overrides:
        key = parse_override(text)[0]
        if key.split(".")[0] not in RESUMABLE_KEYS:
            raise ConfigError(f"--resume --set {text}: a resumed run may only change {', '.join(RESUMABLE_KEYS)} "
                              f"(anything else is another run: train it from its config)")
    config = load_config(run_dir / "config.yaml", overrides)
    config, run, state = _reopen(run_dir, config)
    try:
        if overrides:
            (run_dir / "config.yaml").write_text(dump_config(config))
        if on_start is not None:
            on_start(run_dir)
        _training(config, run, state)
    finally:
        run.close()
    return run_dir


def _reopen(run_dir: Path, config: RunConfig | None = None) -> tuple[RunConfig, Run, dict[str, Any]]:
    """A checked run folder opened to continue: its config (``config``, else its config.yaml), the
    locked :class:`Run` and the state of its last readable checkpoint (a damaged latest one is kept
    aside as ``checkpoint.pt.damaged``)."""
    config = load_config(run_dir / "config.yaml") if config is None else config
    if not has_checkpoint(run_dir):
        with _holding(run_dir):  # RunInUseError while a process still trains it towards its first checkpoint
            if not has_checkpoint(run_dir):  # (else its first checkpoint landed meanwhile)
                raise CheckpointError(f"{run_dir} has no checkpoint yet; start it again with aligngym train")
    saved, state, used = load_run_checkpoint(run_dir)
    changed = changed_keys(config, saved, ignore=RESUMABLE_KEYS)
    if changed:
        raise ConfigError(f"{run_dir / 'config.yaml'} differs from the checkpoint in {', '.join(changed)}; "
                          f"a resumed run may only change {', '.join(RESUMABLE_KEYS)}")
    resolve_device(config.device)
    done, length = int(state.get("step", 0)), getattr(config, config.length_key)
    if done >= length:
        warnings.warn(f"{run_dir} is at {config.length_key.rstrip('s')} {done} of {length}: nothing to train "
                      f"(raise {config.length_key} with --set {config.length_key}=N to train it longer)",
                      AlignGymWarning, stacklevel=3)
    run = Run(run_dir, config, first_step=done)
    try:
        if used != run.checkpoint_path:  # the latest is damaged (or gone): keep it aside, go on from the one used
            if run.checkpoint_path.exists():
                os.replace(run.checkpoint_path, run.dir / f"{CHECKPOINT}.damaged")
            shutil.copy2(used, run.checkpoint_path)
    except BaseException:
        run.close()
        raise
    return config, run, state
