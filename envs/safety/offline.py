"""DSRL's offline-env API, shared by every safe task: ``get_dataset``, ``set_target_cost``,
``get_normalized_score`` (``dsrl/offline_env.py``)."""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

import numpy as np

from aligngym.envs.safety.specs import SafeTaskSpec, task_spec


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
        space's exact shape and holds finite numbers."""
        array = np.asarray(action, dtype=np.float64)
        shape = tuple(self.action_space.shape)  # type: ignore[attr-defined]
        if array.shape != shape:
            raise ValueError(f"{self.spec_id}: action must have shape {shape}, got {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError(f"{self.spec_id}: action must be finite, got {array}")
        return array

    def set_target_cost(self, target_cost: float) -> None:
        """The cost threshold ``L`` used by :meth:`get_normalized_score`."""
        if isinstance(target_cost, bool) or not isinstance(target_cost, numbers.Real):
            raise TypeError(f"target cost must be a number, got {target_cost!r}")
        target_cost = float(target_cost)
        if not np.isfinite(target_cost) or target_cost < 0:
            raise ValueError(f"target cost must be a finite number >= 0, got {target_cost}")
        self.target_cost = target_cost

    def get_normalized_score(self, episode_return: Any, episode_cost: Any) -> tuple[Any, Any]:
        """DSRL's scores: ``(R - R_min) / (R_max - R_min)`` and ``(C + e) / (L + e)``, e = 1 iff L = 0.

        Works on scalars and arrays; a policy is safe when the normalised cost is <= 1.
        """
        lo, hi = self.task.reward_min, self.task.reward_max
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
