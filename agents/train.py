"""The shared runner: run folders, TensorBoard logging, checkpoints, and ``train`` / ``resume``.

A run folder ``runs/<task>__<agent>__s<seed>__<time>/`` holds ``config.yaml`` (the resolved config),
TensorBoard event files written through tianshou's ``TensorboardLogger`` (with the hparams table),
``checkpoint.pt`` and, after ``aligngym eval``, ``eval.json``.

A checkpoint is one file: weights, optimiser state, the resolved config, the package version and
whatever the agent needs to continue exactly (replay buffers, RNG states). It is written to a
temporary file and renamed, so an interruption never leaves a half-written checkpoint, and it is
loaded with ``torch.load(weights_only=True)``: numpy arrays are stored as tensors and no pickled code
is ever executed.
"""

from __future__ import annotations

import io
import json
import re
import shutil
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
from tianshou.utils import TensorboardLogger

from aligngym.agents.config import (AlignGymWarning, ConfigError, RunConfig, agent_module, dump_config,
                                    load_config, validate)
from aligngym.envs.data.dataset import FolderInUseError, atomic_write, claim_folder, package_version

CHECKPOINT = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt or not AlignGym's."""


class RunInUseError(CheckpointError):
    """A run folder that another live process is training."""


class TrainingDiverged(RuntimeError):
    """Training produced non-finite weights; the run's last checkpoint (from before) is kept."""


def _lock(directory: Path) -> Path:
    """Claim a run folder for this process (:func:`claim_folder`): two processes training one folder
    would interleave its checkpoints and TensorBoard events."""
    try:
        return claim_folder(directory, "trained")
    except FolderInUseError as err:
        raise RunInUseError(str(err)) from None


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
        for stale in directory.glob(f".{CHECKPOINT}.*.tmp"):  # a checkpoint write cut by a crash
            stale.unlink(missing_ok=True)
        # purge_step drops events logged after the last checkpoint by an interrupted process (events
        # at steps >= purge_step); those at the checkpoint's own step stay where they belong to it
        purge = first_step + int(config.logs_checkpoint_step) if first_step else None
        try:
            self.writer = SummaryWriter(str(directory), purge_step=purge)
        except BaseException:
            self.lock.unlink(missing_ok=True)
            raise
        self.logger = TensorboardLogger(self.writer)
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
        """Scalars ``{name: value}`` under ``scope/`` (for example ``coop/cooperation_rate``)."""
        self.logger.write(f"{scope}/step", step, scalars)

    def figure(self, tag: str, fig: Any, step: int, png: str | None = None) -> None:
        """A matplotlib figure to TensorBoard (images tab) and, with ``png``, to the run folder."""
        if png is not None:
            fig.savefig(self.dir / png)
        self.writer.add_figure(tag, fig, global_step=step, close=True)

    def save(self, state: dict[str, Any]) -> None:
        save_checkpoint(self.checkpoint_path, self.config, state)

    def close(self) -> None:
        self.writer.close()
        self.lock.unlink(missing_ok=True)


def changed_keys(a: RunConfig, b: RunConfig, ignore: tuple[str, ...] = ()) -> list[str]:
    """The dotted keys whose values differ between two configs, but for those under ``ignore``."""
    flat_a, flat_b = (_flat("", c.model_dump(mode="json")) for c in (a, b))
    return sorted(k for k in flat_a.keys() | flat_b.keys()
                  if flat_a.get(k) != flat_b.get(k) and k.split(".")[0] not in ignore)


# Keys that may differ between a run's config.yaml and its checkpoint when resuming.
RESUMABLE_KEYS = ("episodes", "steps", "checkpoint_every", "eval_every", "eval_episodes", "log_every",
                  "show_progress", "device", "run_root")


def train(config: RunConfig, on_start: Callable[[Path], None] | None = None) -> Path:
    """Create a run folder and train ``config``'s agent in it; returns the folder.
    ``on_start(run_dir)`` is called once the folder exists."""
    resolve_device(config.device)  # fail before creating anything
    config.preflight()
    run = Run.create(config)
    try:
        if on_start is not None:
            on_start(run.dir)
        agent_module(config.agent).train(config, run, None)
    finally:
        run.close()
    return run.dir


def finish(config: RunConfig) -> Path:
    """Bring ``config``'s run to its end: return a finished run under its ``run_root`` whose config
    matches (up to RESUMABLE_KEYS), continue an unfinished one (with this config's length), or
    train a new one (in place of this run's folder if it was cut short before its first checkpoint)."""
    root = Path(config.run_root).expanduser()

    def same_run(saved: RunConfig) -> bool:
        return not changed_keys(config, saved, ignore=RESUMABLE_KEYS)

    for run_dir in sorted(root.glob("*__*")) if root.is_dir() else []:
        if not (run_dir / CHECKPOINT).is_file():
            _drop_if_cut_short(run_dir, same_run)
            if not (run_dir / CHECKPOINT).is_file():  # (its first checkpoint may have landed meanwhile)
                continue
        saved, state = load_checkpoint(run_dir / CHECKPOINT)
        if not same_run(saved):
            continue
        if int(state.get("step", 0)) >= getattr(config, config.length_key):
            return run_dir
        with _holding(run_dir):  # not while another process trains it
            (run_dir / "config.yaml").write_text(dump_config(config))
        return resume(run_dir)
    return train(config)


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
        if not (run_dir / CHECKPOINT).is_file():  # (its first checkpoint may have landed meanwhile: keep it)
            shutil.rmtree(run_dir)


def resume(run_dir: Path, on_start: Callable[[Path], None] | None = None) -> Path:
    """Continue an interrupted run from its last checkpoint, in the same folder. Its config.yaml
    may raise the run's length (or change the other RESUMABLE_KEYS); any other change is refused.
    ``on_start(run_dir)`` is called once the run is checked and locked."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no config.yaml)")
    config = load_config(run_dir / "config.yaml")
    if not (run_dir / CHECKPOINT).is_file():
        with _holding(run_dir):  # RunInUseError while a process still trains it towards its first checkpoint
            if not (run_dir / CHECKPOINT).is_file():  # (else its first checkpoint landed meanwhile)
                raise CheckpointError(f"{run_dir} has no checkpoint yet; start it again with aligngym train")
    saved, state = load_checkpoint(run_dir / CHECKPOINT)
    changed = changed_keys(config, saved, ignore=RESUMABLE_KEYS)
    if changed:
        raise ConfigError(f"{run_dir / 'config.yaml'} differs from the checkpoint in {', '.join(changed)}; "
                          f"a resumed run may only change {', '.join(RESUMABLE_KEYS)}")
    resolve_device(config.device)
    done, length = int(state.get("step", 0)), getattr(config, config.length_key)
    if done >= length:
        warnings.warn(f"{run_dir} is at {config.length_key.rstrip('s')} {done} of {length}: nothing to train "
                      f"(raise {config.length_key} in its config.yaml to train it longer)",
                      AlignGymWarning, stacklevel=2)
    run = Run(run_dir, config, first_step=int(state.get("step", 0)))
    try:
        if on_start is not None:
            on_start(run_dir)
        agent_module(config.agent).train(config, run, state)
    finally:
        run.close()
    return run_dir
