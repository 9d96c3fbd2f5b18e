"""What every safe task shares: DSRL's offline-env API (``get_dataset``, ``set_target_cost``,
``get_normalized_score``, ``dsrl/offline_env.py``), the action rule and the render-mode check.

**The action rule** (every safe task, numpy and MuJoCo alike, single and batched):

1. an action must have the action space's exact shape (``(A,)``; a batch of ``B`` envs takes
   ``(B, A)``), else ``ValueError`` naming the env, the expected shape and the shape it got;
2. every entry must be a finite number, else ``ValueError`` naming the env (NaN and inf are refused,
   never passed to the physics);
3. finite entries outside the action space's bounds are clipped to them before anything uses the
   action (dynamics, reward, cost): a step with an out-of-bounds action is exactly the step with the
   clipped action.

An unknown ``render_mode`` is a ``ValueError`` naming the env and the modes it has.
"""

from __future__ import annotations

import numbers
import re
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from aligngym.envs.safety.specs import SafeTaskSpec, task_spec

# the ranges a safe task's returns are normalised over: AlignGym's own (its generated full dataset's) or DSRL's
ScoreRange = Literal["own", "dsrl"]
SCORE_RANGES: tuple[str, ...] = get_args(ScoreRange)


def checked_action(action: Any, shape: tuple[int, ...], env_name: str,
                   ignored: np.ndarray | None = None) -> np.ndarray:
    """``action`` as a float64 array, refused by the action rule's first two parts (see the module
    docstring): ``ValueError`` naming ``env_name`` unless it has exactly ``shape`` and holds finite
    numbers. Clipping (the third part) is the caller's: it knows its bounds.

    ``ignored``, for a batch: a mask over the first axis of rows that are not used (a vector env's
    sub-envs that reset instead of stepping); they are neither checked nor returned (zeros instead).
    """
    try:
        array = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{env_name}: action must be an array of numbers of shape {shape}, "
                         f"got a {type(action).__name__} that is not") from error
    if array.shape != shape:
        raise ValueError(f"{env_name}: action must have shape {shape}, got {array.shape}")
    if ignored is not None and ignored.any():
        array = np.where(ignored.reshape(-1, *[1] * (array.ndim - 1)), 0.0, array)
    if not np.isfinite(array).all():
        if array.ndim > 1:  # a batch: say which sub-envs, not a thousand rows
            rows = np.flatnonzero(~np.isfinite(array).reshape(len(array), -1).all(axis=1))
            raise ValueError(f"{env_name}: action must be finite, got NaN or inf in the rows of sub-env(s) "
                             f"{rows[:10].tolist()}{' ...' if len(rows) > 10 else ''}")
        raise ValueError(f"{env_name}: action must be finite, got {array}")
    return array


def check_render_mode(env_name: str, render_mode: str | None, render_modes: Any) -> None:
    """``ValueError`` naming the env unless ``render_mode`` is None or one of ``render_modes``."""
    if render_mode is not None and render_mode not in render_modes:
        raise ValueError(f"{env_name}: render_mode must be one of {list(render_modes)} or None, "
                         f"got {render_mode!r}")


class OfflineEnvMixin:
    """Mixed into each safe task's ``gymnasium.Env``; reach it as ``env.unwrapped``.

    Set ``spec_id`` on the class (the Gymnasium id) and call ``_init_offline()`` in ``__init__``.
    """

    spec_id: str

    def _init_offline(self) -> None:
        self.task: SafeTaskSpec = task_spec(self.spec_id)
        self.target_cost: float = self.task.default_cost_limit

    def _checked_action(self, action: Any) -> np.ndarray:
        """``action`` as float64, refused (ValueError naming the env) unless it has the action
        space's exact shape and holds finite numbers (the action rule's first two parts; for a task
        that clips inside its own dynamics)."""
        return checked_action(action, tuple(self.action_space.shape), self.spec_id)  # type: ignore[attr-defined]

    def _clipped_action(self, action: Any, keep_dtype: bool = False) -> np.ndarray:
        """The action as the task uses it, by the whole action rule: checked as by
        :meth:`_checked_action`, then clipped to the action space's bounds. float64, or with
        ``keep_dtype`` the caller's own floating dtype (an in-bounds action then comes back with the
        very values and precision it came in with)."""
        checked = self._checked_action(action)
        space = self.action_space  # type: ignore[attr-defined]
        array = np.asarray(action) if keep_dtype else checked
        if array.dtype.kind != "f":
            array = checked
        if ((checked >= space.low) & (checked <= space.high)).all():
            return array
        return np.clip(array, space.low, space.high).astype(array.dtype, copy=False)

    def _check_render_mode(self, render_mode: str | None) -> None:
        """``ValueError`` naming the env unless ``render_mode`` is None or one of the class's
        ``metadata["render_modes"]`` (call it before building anything)."""
        check_render_mode(self.spec_id, render_mode, self.metadata["render_modes"])  # type: ignore[attr-defined]

    def set_target_cost(self, target_cost: float) -> None:
        """The cost threshold ``L`` used by :meth:`get_normalized_score`."""
        if isinstance(target_cost, bool) or not isinstance(target_cost, numbers.Real):
            raise TypeError(f"target cost must be a number, got {target_cost!r}")
        target_cost = float(target_cost)
        if not np.isfinite(target_cost) or target_cost < 0:
            raise ValueError(f"target cost must be a finite number >= 0, got {target_cost}")
        self.target_cost = target_cost

    def get_normalized_score(self, episode_return: Any, episode_cost: Any,
                             score_range: ScoreRange = "own") -> tuple[Any, Any]:
        """DSRL's scores: ``(R - R_min) / (R_max - R_min)`` and ``(C + e) / (L + e)``, e = 1 iff L = 0.

        ``R_min, R_max``: AlignGym's own range (``"own"``: its generated full dataset's, the task's
        ``reward_min`` / ``reward_max``) or DSRL's published one (``"dsrl"``: to compare with DSRL's
        tables; AlignGym's bodies are models of DSRL's, so its returns sit on a similar, not the same,
        scale). Works on scalars and arrays; a policy is safe when the normalised cost is <= 1.
        """
        if score_range not in SCORE_RANGES:
            raise ValueError(f"score_range must be one of {SCORE_RANGES}, got {score_range!r}")
        lo, hi = self.task.dsrl_range if score_range == "dsrl" else (self.task.reward_min, self.task.reward_max)
        eps = 1.0 if self.target_cost == 0 else 0.0
        normalized_return = (np.asarray(episode_return, dtype=np.float64) - lo) / (hi - lo)
        normalized_cost = (np.asarray(episode_cost, dtype=np.float64) + eps) / (self.target_cost + eps)
        if np.ndim(normalized_return) == 0 and np.ndim(normalized_cost) == 0:
            return float(normalized_return), float(normalized_cost)
        return normalized_return, normalized_cost

    def get_dataset(self, h5path: str | Path | None = None, size: str = "full",
                    seed: int = 0) -> dict[str, np.ndarray]:
        """The task's offline data as D4RL/DSRL arrays (``observations``, ``actions``, ``rewards``,
        ``costs``, ``terminals``, ``timeouts``, ``next_observations``).

        Without ``h5path`` it loads the generated dataset of ``size`` (default ``full``, DSRL's
        size; ``aligngym data generate`` defaults to ``small``) and ``seed`` from the data directory
        (``$ALIGNGYM_DATA``, default ``~/.cache/aligngym/datasets``); a missing one raises an
        error that names the ``aligngym data generate`` command that makes it.
        """
        from aligngym.envs.data.dataset import dataset_path, load_dataset

        if h5path is not None:  # the user's own file: no generate command makes it
            return load_dataset(Path(h5path), env=self).arrays
        return load_dataset(dataset_path(self.spec_id, size, seed), env=self, env_id=self.spec_id, size=size,
                            seed=seed).arrays


class MujocoCopyMixin:
    """A copy (``copy.deepcopy``, ``pickle``) of a MuJoCo task continues its episode exactly, as the
    Bullet tasks' copies do. Gymnasium's ``EzPickle`` alone rebuilds the env from its constructor's
    arguments: fresh physics and the default cost threshold. This adds the whole ``MjData`` (state and
    derived quantities: some rewards read positions the last step computed), the random generator
    and the attributes named in ``_copied_attributes``. Put it before the MuJoCo env class in the bases."""

    _copied_attributes: tuple[str, ...] = ("target_cost",)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()  # type: ignore[misc]  (EzPickle's constructor arguments)
        return {**state, "data": self.data, "np_random": self.np_random.bit_generator.state,  # type: ignore[attr-defined]
                "attributes": {k: getattr(self, k) for k in self._copied_attributes if hasattr(self, k)}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        import mujoco

        super().__setstate__(state)  # type: ignore[misc]
        if "data" not in state:  # pickled before copies were exact
            return
        mujoco.mj_copyData(self.data, self.model, state["data"])  # type: ignore[attr-defined]  (the renderer keeps self.data)
        self.np_random.bit_generator.state = state["np_random"]  # type: ignore[attr-defined]
        for key, value in state["attributes"].items():
            setattr(self, key, value)


_SETTOTALMASS = re.compile(r'\s+settotalmass="([^"]*)"')


class TotalMassMixin:
    """For a Gymnasium MuJoCo env (before it in the MRO): mujoco 4 deprecates the compiler's
    ``settotalmass`` (``half_cheetah.xml`` uses it) and logs a warning to ``./MUJOCO_LOG.TXT`` on every
    load; scaling after compiling, as the warning advises, gives a bit-identical model without the
    log file."""

    fullpath: str
    width: int
    height: int

    def _initialize_simulation(self) -> tuple[Any, Any]:
        import mujoco

        xml = Path(self.fullpath).read_text()
        match = _SETTOTALMASS.search(xml)
        if match is None:
            return super()._initialize_simulation()  # type: ignore[misc]
        model = mujoco.MjModel.from_xml_string(xml[: match.start()] + xml[match.end():])
        data = mujoco.MjData(model)
        mujoco.mj_setTotalmass(model, float(match.group(1)))
        mujoco.mj_setConst(model, data)
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)  # as MujocoEnv
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        return model, mujoco.MjData(model)
