"""Offline datasets in the D4RL / DSRL HDF5 layout: paths, atomic writing, checked loading.

A file holds one array per key, row ``i`` being transition ``i``:

=====================  ===========  ==========================================================
key                    dtype        meaning
=====================  ===========  ==========================================================
observations           float32 (*)  ``s_t``, shape ``(N, *obs_shape)``
next_observations      float32 (*)  ``s_{t+1}``; optional on load (old D4RL v0), see below
actions                float32 (*)  ``a_t``, shape ``(N, *act_shape)``
rewards                float32      ``r_t``, shape ``(N,)``
costs                  float32      DSRL's per-step cost (0/1); absent in D4RL files
terminals              bool         the episode ended in a terminal state at ``t``
timeouts               bool         the episode was truncated (time limit) at ``t``
=====================  ===========  ==========================================================

(*) integer observations / actions (discrete spaces) stay ``int64`` so they remain indices.
File attributes record the env id, how the data was made, ``aligngym_version`` and
``format="d4rl"``; dicts and lists are stored as JSON strings and decoded again on load.

An episode ends at a row where ``terminals | timeouts`` holds, or at the last row. When a file
has no ``next_observations`` (D4RL v0) the loader takes ``observations[t + 1]`` within the
episode, like ``d4rl.qlearning_dataset``: a transition ending in a terminal state keeps a copy
of its own observation as a placeholder (it is never bootstrapped from), while the last
transition of a truncated or unfinished episode has no successor and is dropped; the row before
it then carries ``timeouts=True`` so the episode stays an episode.

Every bad input raises :class:`DatasetError` with a one-line message.

D4RL's locomotion robots (``Hopper-v5``, ``HalfCheetah-v5``, ``Walker2d-v5``) have one file per
dataset *kind* (:data:`LOCOMOTION_KINDS`) and are scored on D4RL's normalised scale
(:func:`d4rl_normalized_score`) from D4RL's reference returns (:data:`D4RL_REFERENCE_RETURNS`).
These robots are Gymnasium's v5 MuJoCo models, not the mujoco-py v3 models D4RL's data and
reference returns were made with (other simulator, slightly different models and reset noise), so
a score here compares with published D4RL figures only loosely.
"""

from __future__ import annotations

import copy
import json
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import h5py
import numpy as np

if TYPE_CHECKING:
    from tianshou.data import ReplayBuffer

SIZES = ("tiny", "small", "full")
REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
FLOAT_KEYS = ("observations", "next_observations", "actions", "rewards", "costs")
FLAG_KEYS = ("terminals", "timeouts")
SCALAR_KEYS = ("rewards", "costs", "terminals", "timeouts")  # one number per transition
_SPACE_KEYS = ("observations", "next_observations", "actions")  # may hold discrete indices
_JSON_ATTRS = "aligngym_json_attrs"  # names the attributes that were JSON-encoded on write
DEFAULT_COST_THRESHOLDS = (10.0, 20.0, 40.0)  # DSRL's Bullet thresholds: for files of no known task
GYMNASIUM_COST_THRESHOLDS = (20.0, 40.0, 80.0)  # DSRL's Safety-Gymnasium ones (navigation, velocity)

# D4RL's reference returns of each robot, (random, expert): d4rl/infos.py REF_MIN_SCORE (uniform
# random actions) and REF_MAX_SCORE (D4RL's SAC expert), the same for every dataset of a robot.
# D4RL measured them on mujoco-py's v3 robots; here they score Gymnasium's v5 models of the same
# robots, so the scores compare with published D4RL figures only loosely.
D4RL_REFERENCE_RETURNS: dict[str, tuple[float, float]] = {
    "Hopper-v5": (-20.272305, 3234.3),
    "HalfCheetah-v5": (-280.178953, 12135.0),
    "Walker2d-v5": (1.629008, 4592.3),
}
# the D4RL-style files made per robot (aligngym data generate): D4RL's five kinds and ``mixed``
# (mostly random with a small share of expert transitions, envs/data/generate.py)
LOCOMOTION_KINDS = ("random", "medium", "expert", "medium-replay", "medium-expert", "mixed")


class DatasetError(Exception):
    """A dataset file or its arrays cannot be used; the message says which and why."""


class FolderInUseError(DatasetError):
    """A folder (a run, a dataset's work folder) that another live process is using."""


LOCK = ".lock"


def claim_folder(directory: Path, doing: str) -> Path:
    """Claim ``directory`` for this process: writes ``directory/.lock`` (pid, host, boot) and returns
    its path (unlink it to release). A lock left by a process of this machine that is gone, or by an
    earlier boot of it, is taken over; a live one, or one from another machine, raises
    :class:`FolderInUseError` ("... is being ``doing`` by process ..."). Claims on one machine are
    serialised (``flock`` on the folder), so two processes finding one stale lock cannot both take it."""
    path = directory / LOCK
    here = [socket.gethostname(), _boot_id()]
    with _serialised(directory):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = path.read_text().split() if path.is_file() else []
            pid = int(owner[0]) if owner and owner[0].isdigit() else None
            if not (pid is not None and owner[1:2] == here[:1] and (owner[2:] != here[1:] or not _alive(pid))):
                raise FolderInUseError(f"{directory} is being {doing} by process "
                                       f"{' on '.join(owner[:2]) or '?'}; wait for it, or delete {path} if "
                                       f"that process is gone") from None
            path.unlink()  # its process is gone (or the machine has restarted since)
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(fd, "w") as fh:
            fh.write(" ".join([str(os.getpid()), *here]))
    return path


@contextmanager
def _serialised(directory: Path) -> Iterator[None]:
    """One claimer of ``directory`` at a time on this machine (an exclusive ``flock`` on the folder;
    nothing where the OS has no ``fcntl``)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd closes
        except OSError:  # a file system without flock: unserialised, as before
            pass
        yield
    finally:
        os.close(fd)


def _boot_id() -> str:
    """This boot of the machine (pids are reused across restarts); "-" where the OS does not say."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or "-"
    except OSError:
        return "-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def data_dir() -> Path:
    """Where generated datasets live: ``$ALIGNGYM_DATA``, else ``~/.cache/aligngym/datasets``."""
    env = os.environ.get("ALIGNGYM_DATA")
    if not env:
        return Path.home() / ".cache" / "aligngym" / "datasets"
    folder = Path(env).expanduser()
    if folder.exists() and not folder.is_dir():
        raise DatasetError(f"ALIGNGYM_DATA={env} is not a folder; point it at the folder for datasets")
    return folder


def dataset_path(env_id: str, size: str, seed: int, kind: str | None = None) -> Path:
    """``<data_dir>/<stem>[-<kind>]-<size>-s<seed>.hdf5``; the stem drops any namespace and
    module prefix (``aligngym.envs:aligngym/BallCircle-v0`` -> ``BallCircle-v0``)."""
    if size not in SIZES:
        raise DatasetError(f"dataset size must be one of {', '.join(SIZES)}, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DatasetError(f"dataset seed must be an integer >= 0, got {seed!r}")
    stem = env_id.split(":")[-1].split("/")[-1]
    if not stem:
        raise DatasetError(f"cannot name a dataset for env id {env_id!r}")
    return data_dir() / f"{stem}{'-' + kind if kind else ''}-{size}-s{int(seed)}.hdf5"


def locomotion_task(env_id: str | None, file_name: str = "") -> str | None:
    """The locomotion robot (a key of :data:`D4RL_REFERENCE_RETURNS`) an env id names (any namespace or
    module prefix), else, without an env id, the one a D4RL file's name starts with
    (``hopper-medium-v2.hdf5``, ``halfcheetah_medium_replay-v2.hdf5``); else None."""
    if env_id:
        stem = env_id.split(":")[-1].split("/")[-1]
        return stem if stem in D4RL_REFERENCE_RETURNS else None
    name = file_name.lower()
    for task in D4RL_REFERENCE_RETURNS:
        if re.match(rf"{task.split('-')[0].lower()}[-_]", name):
            return task
    return None


def d4rl_normalized_score(env_id: str, returns: Any) -> Any:
    """D4RL's normalised score of episode returns, x 100 as D4RL's tables report it:
    ``100 (R - random) / (expert - random)`` with the robot's :data:`D4RL_REFERENCE_RETURNS` (0: uniform
    random actions, 100: D4RL's expert; ``d4rl``'s ``get_normalized_score`` is this / 100). A float for
    a float, an array for an array. Gymnasium's v5 robots, not D4RL's: a loose comparison only."""
    task = locomotion_task(env_id)
    if task is None:
        raise DatasetError(f"no D4RL reference returns for {env_id!r}; known: {', '.join(D4RL_REFERENCE_RETURNS)}")
    ref_min, ref_max = D4RL_REFERENCE_RETURNS[task]
    score = 100.0 * (np.asarray(returns, dtype=np.float64) - ref_min) / (ref_max - ref_min)
    return float(score) if score.ndim == 0 else score


def generate_command(env_id: str, size: str, seed: int) -> str:
    """The shell command that makes the dataset :func:`dataset_path` names."""
    return f"aligngym data generate {env_id} --size {size} --seed {seed}"


def package_version() -> str:
    """The installed AlignGym version (recorded in datasets and checkpoints)."""
    try:
        return metadata.version("aligngym")
    except metadata.PackageNotFoundError:
        return "unknown"


def _cast(key: str, array: np.ndarray, where: str) -> np.ndarray:
    """Cast one column to the layout's dtype and check it holds finite numbers."""
    array = np.asarray(array)
    if array.ndim == 0:
        raise DatasetError(f"{where}: '{key}' is a scalar, expected one row per transition")
    if key in SCALAR_KEYS and array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]  # DSRL stores some columns as (N, 1)
    if key in SCALAR_KEYS and array.ndim != 1:
        raise DatasetError(f"{where}: '{key}' has shape {array.shape}, expected (N,)")
    if array.dtype.kind not in "biuf":
        raise DatasetError(f"{where}: '{key}' has non-numeric dtype {array.dtype}")
    if key in FLAG_KEYS:
        if not np.isin(array, (0, 1)).all():
            raise DatasetError(f"{where}: '{key}' holds values other than 0 and 1 (it is a true/false flag)")
        return array.astype(bool)
    if key in _SPACE_KEYS and array.dtype.kind in "biu":
        return array.astype(np.int64)
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise DatasetError(f"{where}: '{key}' contains NaN or infinite values")
    if key in FLOAT_KEYS:
        with np.errstate(over="ignore"):
            cast = array.astype(np.float32)
        if not np.all(np.isfinite(cast)):
            raise DatasetError(f"{where}: '{key}' holds values beyond float32's range (largest "
                               f"magnitude {np.abs(array).max():.3g}); the layout stores float32")
        array = cast
    if key == "costs" and (array < 0).any():
        raise DatasetError(f"{where}: 'costs' has negative values (a cost counts constraint violations)")
    return array


def _check_shapes(arrays: dict[str, np.ndarray], where: str) -> int:
    """The number of transitions; every array has one row each, and a successor observation is shaped
    like an observation."""
    lengths = {key: len(value) for key, value in arrays.items()}
    if len(set(lengths.values())) > 1:
        found = ", ".join(f"{k}={n}" for k, n in lengths.items())
        raise DatasetError(f"{where}: arrays have unequal lengths ({found})")
    if "next_observations" in arrays and arrays["next_observations"].shape[1:] != arrays["observations"].shape[1:]:
        raise DatasetError(f"{where}: next_observations have shape {arrays['next_observations'].shape[1:]} per "
                           f"transition but observations have {arrays['observations'].shape[1:]}")
    return next(iter(lengths.values()), 0)


def _encode_attr(key: str, value: Any) -> Any:
    if isinstance(value, (str, bytes, bool, int, float, np.generic, np.ndarray)):
        return value
    try:  # dicts, lists, tuples, None: JSON keeps them readable by any HDF5 tool
        return json.dumps(value)
    except TypeError as err:
        raise DatasetError(f"attribute '{key}' cannot be stored ({err})") from None


def _decode_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray) and value.dtype.kind in "OS":
        return [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_dataset(path: str | Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> Path:
    """Validate, cast and write ``arrays`` + ``attrs`` to ``path`` atomically.

    Requires every key but ``costs`` (D4RL locomotion data has none). The file is written to a
    temporary sibling and renamed over ``path`` only when complete, so a crash or a bad array
    never leaves a half-written dataset and an existing file is untouched until then.
    """
    path = Path(path)
    where = f"cannot write {path}"
    missing = [k for k in (*REQUIRED_KEYS, "next_observations") if k not in arrays]
    if missing:
        raise DatasetError(f"{where}: missing key(s) {', '.join(missing)}")
    cast = {key: _cast(key, value, where) for key, value in arrays.items()}
    if _check_shapes(cast, where) == 0:
        raise DatasetError(f"{where}: the dataset has no transitions")
    if _JSON_ATTRS in attrs:
        raise DatasetError(f"{where}: attribute name '{_JSON_ATTRS}' is reserved")
    encoded = {key: _encode_attr(key, value) for key, value in attrs.items()}
    encoded.update(aligngym_version=package_version(), format="d4rl")
    json_keys = [k for k, v in attrs.items() if isinstance(encoded[k], str)
                 and not isinstance(v, str) and k not in ("aligngym_version", "format")]
    encoded[_JSON_ATTRS] = json.dumps(json_keys)

    def write(tmp_name: str) -> None:
        with h5py.File(tmp_name, "w") as file:
            for key, value in cast.items():
                file.create_dataset(key, data=value, compression="gzip", compression_opts=4)
            for key, value in encoded.items():
                file.attrs[key] = value

    return atomic_write(path, write)


def check_writable(path: Path, folder_hint: str = "") -> None:
    """Refuse, before any work, a file ``path`` that cannot be written (``folder_hint`` follows the
    message when it is a folder); create its folder."""
    if path.is_dir():
        raise DatasetError(f"cannot write {path}: it is a folder{folder_hint}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise DatasetError(f"cannot write {path}: {parent} is a file, not a folder")
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DatasetError(f"cannot create the folder of {path}: {err.strerror}") from None
    if not os.access(path.parent, os.W_OK):
        raise DatasetError(f"cannot write {path}: {path.parent} is not writable")


def atomic_write(path: Path, write: Callable[[str], None]) -> Path:
    """Run ``write`` on a temporary sibling of ``path``, then rename it over ``path``: readers
    see the old file or the complete new one, never a partial one; a failure leaves no temp."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_name, 0o666 & ~umask)  # a plain file's permissions (mkstemp makes it owner-only)
    try:
        write(tmp_name)
        with open(tmp_name, "rb+") as handle:  # durable before it becomes visible
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def _read_file(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every dataset (nested ones by their HDF5 path) and every attribute, as numpy/Python."""
    arrays: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as file:
        file.visititems(lambda name, obj: arrays.__setitem__(name, obj[()])
                        if isinstance(obj, h5py.Dataset) else None)
        attrs = {key: _decode_attr(value) for key, value in file.attrs.items()}
    return arrays, attrs


def _decode_json_attrs(attrs: dict[str, Any], where: str) -> dict[str, Any]:
    """The attributes ``write_dataset`` JSON-encoded, decoded; a malformed one is named."""
    listed = attrs.pop(_JSON_ATTRS, "[]")
    try:
        keys = json.loads(listed) if isinstance(listed, str) else None
    except ValueError:
        keys = None
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        raise DatasetError(f"{where}: attribute '{_JSON_ATTRS}' should be a JSON list of attribute "
                           f"names, got {listed!r}")
    for key in keys:
        if isinstance(attrs.get(key), str):
            try:
                attrs[key] = json.loads(attrs[key])
            except ValueError as err:
                raise DatasetError(f"{where}: attribute '{key}' is not valid JSON ({err})") from None
    limits = attrs.get("cost_limits")
    if limits is not None:
        try:
            values = np.atleast_1d(np.asarray(limits, dtype=np.float64))
        except (TypeError, ValueError):
            values = np.array([np.nan])
        if values.ndim != 1 or not np.all(np.isfinite(values)) or np.any(values < 0):
            raise DatasetError(f"{where}: attribute 'cost_limits' should be a list of finite costs >= 0, "
                               f"got {limits!r}")
    return attrs


def _derive_next_observations(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``next_observations`` from the following row within each episode (see module docstring)."""
    obs, terminals, timeouts = arrays["observations"], arrays["terminals"], arrays["timeouts"]
    n = len(obs)
    ends = terminals | timeouts
    ends[-1:] = True
    next_obs = np.empty_like(obs)
    next_obs[:-1] = obs[1:]
    next_obs[terminals] = obs[terminals]  # placeholder: never bootstrapped from
    keep = ~ends | terminals  # a truncated / unfinished episode's last row has no successor
    out = {key: value[keep] for key, value in arrays.items() if len(value) == n}
    out["next_observations"] = next_obs[keep]
    # The row before a dropped one, if in the same episode, now ends that (truncated) episode.
    before_dropped = np.flatnonzero(~keep) - 1
    before_dropped = before_dropped[before_dropped >= 0]
    before_dropped = before_dropped[~ends[before_dropped]]
    timeouts_out = timeouts.copy()
    timeouts_out[before_dropped] = True
    out["timeouts"] = timeouts_out[keep]
    return out


def load_dataset(path: str | Path, env: Any = None, env_id: str | None = None,
                 size: str | None = None, seed: int | None = None) -> OfflineDataset:
    """Read a D4RL/DSRL/AlignGym HDF5 file fully into memory and check it.

    ``env`` (a Gymnasium env), when given, fixes the expected observation / action shapes, and
    a safe task (one whose unwrapped env has a ``task`` spec) also requires ``costs``.
    ``env_id``/``size``/``seed`` only serve the missing-file message.
    """
    path = Path(path).expanduser()  # configs may write dataset.path: ~/data/x.hdf5
    if not path.exists():
        hint = ""
        if env_id is not None and size is not None and seed is not None:
            hint = f"; generate it with: {generate_command(env_id, size, seed)}"
        raise DatasetError(f"dataset file {path} is missing{hint}")
    if not path.is_file():
        raise DatasetError(f"{path} is not a file")
    try:
        raw, attrs = _read_file(path)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        # h5py reports a non-HDF5, truncated or unreadable file as OSError (sometimes others).
        raise DatasetError(f"{path} is truncated or corrupt ({err})") from None
    attrs = _decode_json_attrs(attrs, str(path))

    required = list(REQUIRED_KEYS)
    if env is not None and hasattr(getattr(env, "unwrapped", env), "task"):
        required.append("costs")
    for key in required:
        if key not in raw:
            raise DatasetError(f"{path} has no '{key}' dataset (found: {', '.join(sorted(raw))})")
    where = str(path)
    arrays = {k: _cast(k, raw[k], where) for k in (*REQUIRED_KEYS, "next_observations", "costs")
              if k in raw}
    n = _check_shapes(arrays, where)
    # Extra per-transition data (D4RL's infos/qpos, ...) travels along; other datasets are
    # metadata (D4RL's metadata/*) and become attributes.
    for key, value in raw.items():
        if key in arrays:
            continue
        if np.ndim(value) >= 1 and len(value) == n:
            arrays[key] = value
        elif np.ndim(value) == 0:
            attrs.setdefault(key, _decode_attr(value))
    if n == 0:
        raise DatasetError(f"{path} holds no transitions")
    if "next_observations" not in arrays:
        arrays = _derive_next_observations(arrays)
        if len(arrays["observations"]) == 0:
            raise DatasetError(f"{path} has no transition with a successor observation")

    if env is not None:
        spec_id = getattr(getattr(env, "spec", None), "id", None)
        env_name = spec_id or type(env).__name__
        made_for, told_by = attrs.get("env_id"), "its env_id attribute"
        if not (isinstance(made_for, str) and made_for):  # DSRL's files: only their name says
            named = task_named(None, path.name)
            made_for, told_by = (named.env_id, "its file name") if named else (None, "")
        if spec_id and made_for and made_for.split(":")[-1] != spec_id.split(":")[-1]:
            raise DatasetError(f"{path} holds {made_for} data, not {env_name}'s ({told_by}); "
                               f"use a dataset made for {env_name} (aligngym data generate {env_name})")
        for key, space in (("observations", env.observation_space), ("actions", env.action_space)):
            expected, found = getattr(space, "shape", None), arrays[key].shape[1:]
            if expected is not None and tuple(expected) != found:
                raise DatasetError(f"{path}: {key} have shape {found} per transition but {env_name} "
                                   f"expects {tuple(expected)}")
        _check_action_range(arrays["actions"], env.action_space, where, env_name)
    return OfflineDataset(arrays=arrays, attrs=attrs, path=path)


def _check_action_range(actions: np.ndarray, space: Any, where: str, env_name: str) -> None:
    """Refuse actions far outside a Box action space (by more than half its width): another env's
    or unscaled actions. Small overshoots (noise added before clipping) pass."""
    low, high = getattr(space, "low", None), getattr(space, "high", None)
    if low is None or high is None or not len(actions) or getattr(space, "dtype", None) is None \
            or not np.issubdtype(space.dtype, np.floating):
        return
    low, high = np.broadcast_to(low, actions.shape[1:]), np.broadcast_to(high, actions.shape[1:])
    margin = np.where(np.isfinite(high - low), (high - low) / 2, np.inf)
    worst = np.max(np.maximum(actions - high - margin, low - margin - actions))
    if worst > 0:
        raise DatasetError(f"{where}: actions reach [{actions.min():.3g}, {actions.max():.3g}], far outside "
                           f"{env_name}'s bounds [{low.min():g}, {high.max():g}]: another env's or unscaled "
                           f"actions")


@dataclass
class OfflineDataset:
    """Transitions in memory. Treat ``arrays`` as read-only: episode indices are cached."""

    arrays: dict[str, np.ndarray]
    attrs: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.arrays["observations"])

    def _costs(self) -> np.ndarray:
        return self.arrays.get("costs", np.zeros(len(self), dtype=np.float32))

    def _episode_ends_mask(self) -> np.ndarray:
        ends = self.arrays["terminals"] | self.arrays["timeouts"]
        ends[-1:] = True  # unfinished final episode still counts as an episode
        return ends

    def episode_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Start and end (exclusive) row of every episode, in file order."""
        if "bounds" not in self._cache:
            ends = np.flatnonzero(self._episode_ends_mask()) + 1
            starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
            self._cache["bounds"] = (starts, ends.astype(np.int64))
        return self._cache["bounds"]

    def episode_lengths(self) -> np.ndarray:
        starts, ends = self.episode_bounds()
        return ends - starts

    def _episode_sum(self, values: np.ndarray) -> np.ndarray:
        starts, _ = self.episode_bounds()
        if len(starts) == 0:
            return np.zeros(0)
        return np.add.reduceat(values.astype(np.float64), starts)

    def episode_returns(self) -> np.ndarray:
        return self._episode_sum(self.arrays["rewards"])

    def episode_terminated(self) -> np.ndarray:
        """Whether each episode ended in a termination (a fall, a flip), not a timeout."""
        return self._episode_sum(self.arrays["terminals"]) > 0

    def episode_costs(self) -> np.ndarray:
        """Undiscounted cost per episode; zeros when the data has no ``costs`` (D4RL)."""
        return self._episode_sum(self._costs())

    def _to_go(self) -> tuple[np.ndarray, np.ndarray]:
        """Per row, the undiscounted reward and cost sums from that row to its episode's end."""
        if "to_go" not in self._cache:
            starts, ends = self.episode_bounds()
            episode_end = np.repeat(ends, ends - starts)

            def suffix(values: np.ndarray) -> np.ndarray:
                # one reversed cumsum for all episodes; float64 so the subtraction stays exact
                tail = np.concatenate([np.cumsum(values[::-1].astype(np.float64))[::-1], [0.0]])
                return (tail[:-1] - tail[episode_end]).astype(np.float32)

            self._cache["to_go"] = (suffix(self.arrays["rewards"]), suffix(self._costs()))
        return self._cache["to_go"]

    def _rows(self, episodes: np.ndarray) -> np.ndarray:
        starts, ends = self.episode_bounds()
        if len(episodes) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(starts[e], ends[e]) for e in episodes])

    def select_episodes(self, indices: Sequence[int] | np.ndarray) -> OfflineDataset:
        """A new dataset holding the given episodes in the given order (``path`` is None)."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        count = len(self.episode_bounds()[0])
        if np.any((indices < 0) | (indices >= count)):
            raise DatasetError(f"episode indices must lie in [0, {count}), got {indices.tolist()}")
        rows = self._rows(indices)
        arrays = {key: value[rows] for key, value in self.arrays.items()}
        arrays["timeouts"] = arrays["timeouts"].copy()
        # An episode that ended only because the data ended must not merge with its successor.
        last_rows = np.cumsum(self.episode_lengths()[indices]) - 1
        arrays["timeouts"][last_rows] |= ~arrays["terminals"][last_rows]
        return OfflineDataset(arrays=arrays, attrs=copy.deepcopy(self.attrs), path=None)

    @classmethod
    def concatenate(cls, datasets: Sequence[OfflineDataset]) -> OfflineDataset:
        """Datasets one after another; attrs come from the first. Keys and shapes must match."""
        if not datasets:
            raise DatasetError("cannot concatenate an empty list of datasets")
        keys = set(datasets[0].arrays)
        for ds in datasets[1:]:
            if set(ds.arrays) != keys:
                raise DatasetError(f"cannot concatenate datasets with keys {sorted(keys)} and "
                                   f"{sorted(ds.arrays)}")
        sealed = [ds.select_episodes(np.arange(len(ds.episode_bounds()[0]))) for ds in datasets]
        try:
            arrays = {key: np.concatenate([ds.arrays[key] for ds in sealed]) for key in keys}
        except ValueError as err:
            raise DatasetError(f"cannot concatenate datasets: {err}") from None
        return cls(arrays=arrays, attrs=copy.deepcopy(datasets[0].attrs), path=None)

    def trajectories(self) -> list[dict[str, np.ndarray]]:
        """One dict of array slices (views) per episode."""
        return [{key: value[s:e] for key, value in self.arrays.items()}
                for s, e in zip(*self.episode_bounds())]

    def to_replay_buffer(self) -> ReplayBuffer:
        """A tianshou ``ReplayBuffer`` of all transitions, costs in ``info.cost``.

        ``ReplayBuffer.from_data`` takes no ``info``, so the cost column is set on the buffer's
        storage batch afterwards; ``buffer[idx]`` and ``buffer.sample(n)`` then return
        ``batch.info.cost`` for exactly those transitions (zeros when the data has no costs).
        The final row counts as truncated when the data ends mid-episode.
        """
        from tianshou.data import Batch, ReplayBuffer

        if "next_observations" not in self.arrays:
            raise DatasetError("a replay buffer needs 'next_observations'")
        terminated = self.arrays["terminals"]
        truncated = self._episode_ends_mask() & ~terminated
        buffer = ReplayBuffer.from_data(
            obs=self.arrays["observations"], act=self.arrays["actions"],
            rew=self.arrays["rewards"], terminated=terminated, truncated=truncated,
            done=terminated | truncated, obs_next=self.arrays["next_observations"])
        if len(self):
            buffer._meta.info = Batch(cost=self._costs().copy())
        return buffer

    def sample_segments(self, batch_size: int, length: int,
                        rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Random windows of ``length`` steps inside episodes, for sequence models (DT, DoC).

        An episode is drawn with probability proportional to its length and the window starts
        uniformly where it fits (at 0 when the episode is shorter than ``length``, then the
        window is right-padded with zeros and ``mask`` is False there). ``returns_to_go`` and
        ``costs_to_go`` are undiscounted sums from each step to the end of the whole episode;
        ``timesteps`` is the step's index within its episode. ``next_observations`` come too when
        the file has them (the observation after a window's last step, or an episode's last).
        """
        if batch_size < 1 or length < 1:
            raise DatasetError(f"batch_size and length must be >= 1, got {batch_size}, {length}")
        if len(self) == 0:
            raise DatasetError("cannot sample segments from an empty dataset")
        starts, ends = self.episode_bounds()
        lengths = ends - starts
        rtg, ctg = self._to_go()
        episodes = rng.choice(len(starts), size=batch_size, p=lengths / lengths.sum())
        offsets = rng.integers(0, np.maximum(lengths[episodes] - length, 0) + 1)
        rows = starts[episodes, None] + offsets[:, None] + np.arange(length)[None, :]
        mask = rows < ends[episodes, None]
        rows = np.where(mask, rows, 0)

        def gather(values: np.ndarray) -> np.ndarray:
            out = values[rows]
            out[~mask] = 0
            return out

        segments = {
            "observations": gather(self.arrays["observations"]),
            "actions": gather(self.arrays["actions"]),
            "rewards": gather(self.arrays["rewards"]),
            "costs": gather(self._costs()),
            "returns_to_go": gather(rtg),
            "costs_to_go": gather(ctg),
            "timesteps": np.where(mask, offsets[:, None] + np.arange(length)[None, :], 0),
            "mask": mask,
        }
        if "next_observations" in self.arrays:
            segments["next_observations"] = gather(self.arrays["next_observations"])
        return segments


def _stats(values: np.ndarray, digits: int = 3) -> str:
    if len(values) == 0:
        return "n/a"
    return f"min {values.min():.{digits}f}  mean {values.mean():.{digits}f}  max {values.max():.{digits}f}"


def summary(ds: OfflineDataset) -> str:
    """Human-readable description, printed by ``aligngym data info FILE``."""
    returns, costs = ds.episode_returns(), ds.episode_costs()
    lines = [f"path: {ds.path}", "attributes:"]
    lines += [f"  {key}: {value}" for key, value in sorted(ds.attrs.items())]
    lines.append("arrays:")
    lines += [f"  {key}: shape {value.shape} dtype {value.dtype}"
              for key, value in sorted(ds.arrays.items())]
    terminated = ds.episode_terminated()
    lines += [f"transitions: {len(ds)}", f"episodes: {len(returns)}",
              f"episode return: {_stats(returns)}", f"episode cost: {_stats(costs)}",
              f"episodes ending in a termination: {float(np.mean(terminated)) if len(costs) else float('nan'):.1%}"]
    if "costs" not in ds.arrays:
        lines.append("(no costs in this file: episode costs are 0)")
    task = locomotion_task(str(ds.attrs.get("env_id", "")), ds.path.name if ds.path is not None else "")
    if task is not None:
        lines.append(f"D4RL score of the episodes (x100, {task}'s reference returns; v5 robots, compare with "
                     f"D4RL's figures loosely): {_stats(d4rl_normalized_score(task, returns), 1)}")
    for limit in cost_thresholds(ds):
        within = costs <= limit
        share = float(np.mean(within)) if len(costs) else float("nan")
        ended = f" ({float(np.mean(terminated[within])):.0%} of them end in a termination)" if within.any() else ""
        lines.append(f"episodes with cost <= {limit:g}: {share:.1%}{ended}")
    return "\n".join(lines)


def cost_thresholds(ds: OfflineDataset) -> tuple[float, ...]:
    """The cost thresholds a file is judged at: its ``cost_limits`` attribute (AlignGym's files), else
    those of the safe task its ``env_id`` attribute or file name names (DSRL's files carry no
    attributes but are named after their task, e.g. ``SafetyHopperVelocityGymnasium-v1-...``), else
    DSRL's Safety-Gymnasium thresholds (20, 40, 80) for a ``...Gymnasium-v...`` file and its Bullet ones
    (10, 20, 40) for any other; none for a file without costs (D4RL's) and for AlignGym's locomotion
    files (an ``env_id`` that is no safe task, costs all 0)."""
    if "costs" not in ds.arrays:
        return ()

    limits = ds.attrs.get("cost_limits")
    if limits is not None and np.size(limits) > 0:
        return tuple(float(x) for x in np.atleast_1d(np.asarray(limits, dtype=np.float64)))
    env_id = str(ds.attrs.get("env_id", ""))
    name = ds.path.name if ds.path is not None else ""
    spec = task_named(env_id, name)
    if spec is not None:
        return spec.cost_limits
    if env_id and not np.any(ds.arrays["costs"]):  # AlignGym's locomotion data: D4RL's, costs 0
        return ()
    return GYMNASIUM_COST_THRESHOLDS if re.search(r"Gymnasium-v\d", name) else DEFAULT_COST_THRESHOLDS


def task_named(env_id: str | None, file_name: str) -> Any:
    """The safe task (its :class:`~aligngym.envs.safety.specs.SafeTaskSpec`) a file's ``env_id``
    attribute names, else the one its name names (DSRL's files: ``SafetyCarRun-v0-...``), else None."""
    from aligngym.envs.safety.specs import SAFE_TASKS

    for spec in SAFE_TASKS.values():  # the whole task name: SafetyCarCircle1Gymnasium is not CarCircle
        if env_id == spec.env_id or re.search(rf"{spec.name}(Gymnasium)?-v\d", file_name):
            return spec
    return None


def reward_cost_figure(costs: Sequence[float], returns: Sequence[float], cost_limits: Sequence[float] = (),
                       title: str = "") -> Any:
    """DSRL's reward-cost plane: one point per episode at (episode cost, episode return), a dashed
    vertical line at each of ``cost_limits``. A matplotlib ``Figure`` on an Agg canvas of its own, so
    the caller's pyplot backend is left alone."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter(np.asarray(costs, dtype=float), np.asarray(returns, dtype=float), s=8, alpha=0.6)
    for limit in cost_limits:
        ax.axvline(float(limit), linestyle="--", color="tab:red", linewidth=1)
    ax.set_xlabel("episode cost")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def return_histogram_figure(returns: Sequence[float], title: str = "", task: str | None = None) -> Any:
    """A histogram of episode returns, with D4RL's normalised score on the top axis when ``task`` is a
    locomotion robot (:func:`d4rl_normalized_score`) and a dashed line at the mean. A matplotlib
    ``Figure`` on an Agg canvas of its own, as :func:`reward_cost_figure`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    returns = np.asarray(returns, dtype=float)
    fig = Figure(figsize=(6, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.hist(returns, bins=int(np.clip(len(returns) // 5, 10, 50)), color="tab:blue", alpha=0.8)
    if len(returns):
        ax.axvline(float(returns.mean()), linestyle="--", color="tab:red", linewidth=1, label="mean")
        ax.legend(loc="upper right")
    ax.set_xlabel("episode return")
    ax.set_ylabel("episodes")
    if task is not None:
        ref_min, ref_max = D4RL_REFERENCE_RETURNS[task]
        scale = 100.0 / (ref_max - ref_min)
        top = ax.secondary_xaxis("top", functions=(lambda r: (r - ref_min) * scale, lambda s: s / scale + ref_min))
        top.set_xlabel("D4RL score (x100)")
        if len(returns):
            title = f"{title}: mean D4RL score {d4rl_normalized_score(task, returns.mean()):.1f}"
    ax.set_title(title)
    fig.tight_layout()
    return fig


def has_costs(ds: OfflineDataset) -> bool:
    """Whether the file's costs mean something: a safe task's file (it has cost thresholds) or any
    nonzero cost; not D4RL's files (no ``costs``) nor AlignGym's locomotion files (costs all 0)."""
    return "costs" in ds.arrays and (bool(cost_thresholds(ds)) or bool(np.any(ds.arrays["costs"])))


def plot_dataset(ds: OfflineDataset, out_png: str | Path, title: str | None = None) -> Path:
    """``aligngym data plot``: a file with costs on DSRL's reward-cost plane (:func:`plot_reward_cost`), a
    file without (D4RL locomotion data) as a histogram of its episode returns (:func:`plot_returns`)."""
    if has_costs(ds):
        return plot_reward_cost(ds, out_png, title=title)
    return plot_returns(ds, out_png, title=title)


def plot_returns(ds: OfflineDataset, out_png: str | Path, title: str | None = None) -> Path:
    """A histogram of the episode returns (:func:`return_histogram_figure`; a locomotion file's with
    D4RL's score on its top axis), saved atomically."""
    out_png = Path(out_png)
    task = locomotion_task(str(ds.attrs.get("env_id", "")), ds.path.name if ds.path is not None else "")
    fig = return_histogram_figure(ds.episode_returns(), title or (ds.path.name if ds.path else "offline dataset"),
                                  task)
    return atomic_write(out_png, lambda tmp_name: fig.savefig(tmp_name, format="png"))


def plot_reward_cost(ds: OfflineDataset, out_png: str | Path,
                     cost_limits: Sequence[float] | None = None,
                     title: str | None = None) -> Path:
    """DSRL-style scatter of episode cost (x) against episode return (y) (:func:`reward_cost_figure`),
    saved atomically. Dashed vertical lines mark ``cost_limits`` (default: :func:`cost_thresholds`)."""
    out_png = Path(out_png)
    cost_limits = cost_thresholds(ds) if cost_limits is None else np.atleast_1d(np.asarray(cost_limits, float))
    fig = reward_cost_figure(ds.episode_costs(), ds.episode_returns(), cost_limits,
                             title or (ds.path.name if ds.path else "offline dataset"))
    return atomic_write(out_png, lambda tmp_name: fig.savefig(tmp_name, format="png"))
