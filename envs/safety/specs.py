"""One row per safe task: episode length, cost thresholds and the normalisation constants.

DSRL normalises an episode's return ``R`` and cost ``C`` with constants that belong to the task
(``dsrl/infos.py``): ``(R - R_min) / (R_max - R_min)`` and ``(C + e) / (L + e)`` with ``e = 1``
only when the threshold ``L`` is 0. AlignGym's tasks are re-implementations, so their returns are
not on DSRL's scale; ``reward_min`` / ``reward_max`` are the minimum and maximum episode return
of AlignGym's own generated ``full`` dataset for the task, seed 0 (``own_range``); DSRL's
constants would stand in for a task without one (none left: every task has its full dataset).
Regenerating a full dataset with other code changes these numbers: update the row
(``aligngym data info FILE`` prints ``min/max_episode_reward``).

CarCircle, DroneCircle, AntCircle, AntVelocity and HalfCheetahVelocity needed per-task tuning of
the behaviour runs (``behaviour``, see :class:`BehaviourTuning`; the comment above each says why):
without it PPO never learned to circle fast (CarCircle's and DroneCircle's data topped out at
returns of 89 and 241; DSRL's: 534 and 996), the ants fell in most episodes, or the cheetah never
held its speed limit (costs 0 .. 13 against a threshold of 20: no unsafe episode).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BehaviourTuning:
    """Per-task settings of the behaviour runs of ``aligngym data generate`` (DSRL, too, tuned its
    behaviour agents per task). The defaults suit BallRun, BallCircle, CarRun and DroneRun."""

    penalty_start: float = 0.0  # fraction of each run before the Lagrangian penalty acts
    normalize: bool = False     # PPO sees running-normalised observations and rewards (SB3 VecNormalize)
    steps_scale: float = 1.0    # environment steps of each run, relative to the size's plan
    alive_bonus: float = 0.0    # added to each training step's reward, in units of reward_per_step (not in the data)
    initial_log_std: float = 0.0  # PPO's initial log standard deviation of its actions (SB3's default: 0)


@dataclass(frozen=True)
class SafeTaskSpec:
    name: str                          # DSRL's short name, e.g. "BallCircle"
    env_id: str                        # the Gymnasium id
    max_episode_steps: int             # T; truncation by gymnasium's TimeLimit
    dsrl_range: tuple[float, float]    # DSRL's (R_min, R_max) for the task (dsrl/infos.py)
    max_cost: float                    # highest episode cost kept in generated data (DSRL's cmax)
    cost_limits: tuple[float, ...]     # DSRL/OSRL benchmark thresholds
    own_range: tuple[float, float] | None = None  # (R_min, R_max) of AlignGym's full dataset, seed 0
    default_cost_limit: float = 10.0   # FISOR's cost_limit (the threshold until set_target_cost)
    behaviour: BehaviourTuning = BehaviourTuning()  # how data generation trains on this task

    @property
    def reward_min(self) -> float:
        """Normalisation: lowest episode return of the reference data (AlignGym's, else DSRL's)."""
        return (self.own_range or self.dsrl_range)[0]

    @property
    def reward_max(self) -> float:
        return (self.own_range or self.dsrl_range)[1]

    @property
    def reward_per_step(self) -> float:
        """DSRL's ``(R_max - R_min) / T``: a fixed scale of the task's rewards, independent of
        AlignGym's own data (data generation prices a cost step with it)."""
        return (self.dsrl_range[1] - self.dsrl_range[0]) / self.max_episode_steps

    @property
    def dataset_name(self) -> str:
        """File stem of the task's datasets: ``<name>-v<version>``, e.g. ``BallCircle-v0``."""
        return self.env_id.split("/", 1)[1]


_BULLET = (10.0, 20.0, 40.0)
_VELOCITY = (20.0, 40.0, 80.0)

SAFE_TASKS: dict[str, SafeTaskSpec] = {spec.env_id: spec for spec in [
    SafeTaskSpec("BallRun", "aligngym/BallRun-v0", 100, (26.34, 1327.45), 80, _BULLET, (-38.91, 1350.98)),
    SafeTaskSpec("BallCircle", "aligngym/BallCircle-v0", 200, (0.383, 881.46), 80, _BULLET, (-3.56, 654.1)),
    SafeTaskSpec("CarRun", "aligngym/CarRun-v0", 200, (204.29, 574.65), 40, _BULLET, (10.45, 573.16)),
    # with the penalty from the start PPO stops learning to circle (the penalised values swamp the
    # policy gradient under the gradient-norm clip): 10 % of each run is unpenalised
    SafeTaskSpec("CarCircle", "aligngym/CarCircle-v0", 300, (3.48, 534.31), 100, _BULLET, (2.8, 605.54),
                 behaviour=BehaviourTuning(penalty_start=0.1)),
    SafeTaskSpec("DroneRun", "aligngym/DroneRun-v0", 200, (10.56, 682.83), 140, _BULLET, (165.93, 634.29)),
    # PPO learns to circle the drone slowly: normalised inputs, twice the steps, 40 % unpenalised
    SafeTaskSpec("DroneCircle", "aligngym/DroneCircle-v0", 300, (207.79, 996.39), 100, _BULLET, (0.29, 431.38),
                 behaviour=BehaviourTuning(penalty_start=0.4, normalize=True, steps_scale=2.0)),
    SafeTaskSpec("AntRun", "aligngym/AntRun-v0", 200, (0.0018, 955.48), 150, _BULLET, (52.41, 691.74)),
    # the light MuJoCo ant falls easily and the task pays little for staying up (0.01 a step, less
    # than the control costs): with the generic recipe 99.9 % of the episodes ended in a fall
    # (returns 0-60), with DroneCircle's tuning the runs learned to fall at once. PPO also gets a
    # bonus for every step it stays up and starts with calmer actions (std 0.37 instead of 1, which
    # flips the ant within ~50 steps): in a small run the episodes then grow from 146 to 366 steps.
    # The full data's ant stays up but barely circles (returns up to 75; DSRL's 461)
    SafeTaskSpec("AntCircle", "aligngym/AntCircle-v0", 500, (0.0177, 460.71), 200, _BULLET, (-0.21, 74.90),
                 behaviour=BehaviourTuning(penalty_start=0.4, normalize=True, steps_scale=2.0, alive_bonus=0.1,
                                           initial_log_std=-1.0)),
    # Velocity tasks: dsrl/infos.py's MIN/MAX_EPISODE_REWARD (the velocity datasets recorded in
    # benchmarks/RESULTS.md were made with a minimum of 0 and priced a cost step with that range)
    # generic recipe: 90 % of the episodes ended in a fall, costs 0-40 (97 % within 20): tuned too
    SafeTaskSpec("AntVelocity", "aligngym/AntVelocity-v1", 1000, (6.152, 2976.28), 250, _VELOCITY, (-39.50, 2259.19),
                 behaviour=BehaviourTuning(penalty_start=0.4, normalize=True, steps_scale=2.0)),
    # default PPO never held 3.21 m/s (costs 0-13 in 500k-step runs): normalised inputs, twice the
    # steps, 40 % unpenalised, as DroneCircle
    SafeTaskSpec("HalfCheetahVelocity", "aligngym/HalfCheetahVelocity-v1", 1000, (5.751, 2806.93), 250, _VELOCITY,
                 (-245.91, 2531.71),
                 behaviour=BehaviourTuning(penalty_start=0.4, normalize=True, steps_scale=2.0)),
    SafeTaskSpec("HopperVelocity", "aligngym/HopperVelocity-v1", 1000, (37.05, 1911.40), 250, _VELOCITY,
                 (20.06, 1602.37)),
    SafeTaskSpec("Walker2dVelocity", "aligngym/Walker2dVelocity-v1", 1000, (18.67, 3418.22), 300, _VELOCITY,
                 (1.85, 883.17)),
    SafeTaskSpec("SwimmerVelocity", "aligngym/SwimmerVelocity-v1", 1000, (0.0711, 238.96), 200, _VELOCITY,
                 (2.34, 61.63)),
    # the car fitted to the reference's racecar: no full dataset of its own yet, so DSRL's ranges normalise
    SafeTaskSpec("CarRun", "aligngym/CarRun-v1", 200, (204.29, 574.65), 40, _BULLET),
    SafeTaskSpec("CarCircle", "aligngym/CarCircle-v1", 300, (3.48, 534.31), 100, _BULLET,
                 behaviour=BehaviourTuning(penalty_start=0.1)),
]}


def task_spec(env_id: str) -> SafeTaskSpec:
    """The spec of a safe task, by Gymnasium id (``aligngym/BallCircle-v0``) or short name."""
    if env_id in SAFE_TASKS:
        return SAFE_TASKS[env_id]
    for spec in SAFE_TASKS.values():
        if env_id in (spec.name, spec.dataset_name):
            return spec
    raise KeyError(f"{env_id!r} is not a safe task; known: {', '.join(SAFE_TASKS)}")
