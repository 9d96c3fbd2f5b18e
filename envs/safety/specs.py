"""One row per safe task: episode length, cost thresholds and the normalisation constants.

DSRL normalises an episode's return ``R`` and cost ``C`` with constants that belong to the task
(``dsrl/infos.py``): ``(R - R_min) / (R_max - R_min)`` and ``(C + e) / (L + e)`` with ``e = 1``
only when the threshold ``L`` is 0. AlignGym's tasks are re-implementations, so their returns are
not on DSRL's scale; ``reward_min`` / ``reward_max`` are the minimum and maximum episode return
of AlignGym's own generated ``full`` dataset for the task (``reference`` says which file gave
them). Where no full dataset has been generated yet, the DSRL constants stand in and
``reference`` says so.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SafeTaskSpec:
    name: str                          # DSRL's short name, e.g. "BallCircle"
    env_id: str                        # the Gymnasium id
    max_episode_steps: int             # T; truncation by gymnasium's TimeLimit
    reward_min: float                  # normalisation: lowest episode return in the reference data
    reward_max: float                  # normalisation: highest episode return in the reference data
    max_cost: float                    # highest episode cost kept in generated data (DSRL's cmax)
    cost_limits: tuple[float, ...]     # DSRL/OSRL benchmark thresholds
    default_cost_limit: float = 10.0   # FISOR's cost_limit (the threshold until set_target_cost)
    reference: str = "dsrl/infos.py (DSRL's constants; no AlignGym full dataset yet)"

    @property
    def dataset_name(self) -> str:
        """File stem of the task's datasets: ``<name>-v<version>``, e.g. ``BallCircle-v0``."""
        return self.env_id.split("/", 1)[1]


_BULLET = (10.0, 20.0, 40.0)
_OWN = "AlignGym's full dataset of the task, seed 0 (aligngym data generate TASK --size full)"
_VELOCITY = (20.0, 40.0, 80.0)

SAFE_TASKS: dict[str, SafeTaskSpec] = {spec.env_id: spec for spec in [
    SafeTaskSpec("BallRun", "aligngym/BallRun-v0", 100, -38.91, 1350.98, 80, _BULLET, reference=_OWN),
    SafeTaskSpec("BallCircle", "aligngym/BallCircle-v0", 200, -3.56, 654.1, 80, _BULLET, reference=_OWN),
    SafeTaskSpec("CarRun", "aligngym/CarRun-v0", 200, 204.29, 574.65, 40, _BULLET),
    SafeTaskSpec("CarCircle", "aligngym/CarCircle-v0", 300, 3.48, 534.31, 100, _BULLET),
    SafeTaskSpec("DroneRun", "aligngym/DroneRun-v0", 200, 10.56, 682.83, 140, _BULLET),
    SafeTaskSpec("DroneCircle", "aligngym/DroneCircle-v0", 300, 207.79, 996.39, 100, _BULLET),
    SafeTaskSpec("AntRun", "aligngym/AntRun-v0", 200, 0.0018, 955.48, 150, _BULLET),
    SafeTaskSpec("AntCircle", "aligngym/AntCircle-v0", 500, 0.0177, 460.71, 200, _BULLET),
    # Velocity tasks: DSRL publishes only the maximum return; the minimum is taken as 0.
    SafeTaskSpec("AntVelocity", "aligngym/AntVelocity-v1", 1000, 0.0, 2976.0, 250, _VELOCITY),
    SafeTaskSpec("HalfCheetahVelocity", "aligngym/HalfCheetahVelocity-v1", 1000, 0.0, 2807.0, 250,
                 _VELOCITY),
    SafeTaskSpec("HopperVelocity", "aligngym/HopperVelocity-v1", 1000, 0.0, 1911.0, 250, _VELOCITY),
    SafeTaskSpec("Walker2dVelocity", "aligngym/Walker2dVelocity-v1", 1000, 0.0, 3418.0, 300, _VELOCITY),
    SafeTaskSpec("SwimmerVelocity", "aligngym/SwimmerVelocity-v1", 1000, 0.0, 239.0, 200, _VELOCITY),
]}


def task_spec(env_id: str) -> SafeTaskSpec:
    """The spec of a safe task, by Gymnasium id (``aligngym/BallCircle-v0``) or short name."""
    if env_id in SAFE_TASKS:
        return SAFE_TASKS[env_id]
    for spec in SAFE_TASKS.values():
        if env_id in (spec.name, spec.dataset_name):
            return spec
    raise KeyError(f"{env_id!r} is not a safe task; known: {', '.join(SAFE_TASKS)}")
