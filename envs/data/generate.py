"""``aligngym data generate``: offline datasets made locally, the way DSRL and D4RL made theirs.

Safe tasks (DSRL, ``scripts/train_trpol_expert.py`` + FSRL's ``TrajectoryBuffer``):

1. **Behaviour runs.** ``runs`` PPO agents (stable-baselines3) learn with a Lagrangian cost
   penalty: the reward they see is ``r - lambda u c`` and ``lambda`` follows FSRL's PID rule
   (KP, KI, KD = 0.05, 0.005, 0.1) after every rollout. ``u = (R_max - R_min) / T`` with DSRL's
   constants (fixed, so the data does not depend on the normalisation constants derived from it)
   prices a cost step in the task's reward per step (FSRL instead normalises the Lagrangian's advantages); with
   a bare ``r - lambda c`` the multiplier needs many minutes of integration before it matters on
   tasks whose rewards per step are large (BallRun: about 13). As in DSRL, the cost limit moves
   linearly during each run (between 10 % and 90 % of its steps) so that one run walks the whole
   reward-cost trade-off; even runs go from strict (0) to loose (the task's ``max_cost``), odd
   runs the other way. Every episode collected during training is kept. Per-task tuning
   (``SafeTaskSpec.behaviour``): ``penalty_start`` lets PPO learn the task unpenalised for a
   first part of each run (the sweep then starts there), ``normalize`` gives PPO running-normalised
   observations and rewards (SB3 ``VecNormalize``; the data keep the raw ones), ``alive_bonus`` adds
   that many ``u`` to every step PPO trains on (not to the data), so that falling early stops paying,
   and ``initial_log_std`` starts PPO with calmer exploration.
2. **Noisy rollouts** of each run's final policy (Gaussian noise of each scale in ``noise``
   added to its deterministic action) widen the coverage.
3. **Filter.** Episodes costlier than the task's ``max_cost`` (DSRL's cmax) or earning less than
   uniformly random actions do on average (DSRL's rmin; ``random_return`` in the file) are dropped, then
   DSRL's grid density filter (60 cost x 50 reward bins) keeps at most ``max_per_bin`` episodes
   per bin, with ``max_per_bin`` the largest value that keeps at most ``episodes`` episodes.
4. **Write** the D4RL/DSRL HDF5 atomically into the data directory, with DSRL's attributes
   (``max_episode_reward`` ...) and how the file was made.

D4RL locomotion (``Hopper-v5``, ``HalfCheetah-v5``, ``Walker2d-v5``): one SAC run (stable-baselines3,
with the settings of rlkit's SAC that D4RL's behaviour agents were trained with: learning rates 3e-4,
batch 256, 256 x 256 nets, discount 0.99, tau 0.005, automatic entropy tuning, one gradient step per
environment step; ``full`` runs D4RL's 1M steps) that snapshots its actor every
``checkpoint_every`` steps with the mean return of the training episodes since the last snapshot.
``expert`` = rollouts of the best of the ``EXPERT_CANDIDATES`` (5) snapshots whose training episodes
scored best, each scored again on ``SCORING_EPISODES`` (16) fresh episodes (the best of a few noisy
training windows over a whole run flatters: in Hopper's small run the best window's snapshot (2662)
played 1978 on fresh episodes, the best rescored one 2787), ``medium`` = rollouts of the earlier
snapshot whose training return is closest to a third of the way from the random policy's return to
the expert's fresh score (D4RL's "about a third of the expert"; measured from random, so that it also
means something where returns are negative, as in HalfCheetah), both played with the policy's own
sampled actions as D4RL's were; ``medium-replay`` = every training episode up to that snapshot (the replay
buffer of the run up to the medium policy), ``random`` = uniform actions, ``medium-expert`` = medium +
expert, and ``mixed`` = low-quality mixed data as in
A2PR's suboptimal mixed datasets: ``1 - MIXED_EXPERT_SHARE`` (90 %) of the plan's transitions from
the random set and ``MIXED_EXPERT_SHARE`` (10 %) from the expert set, the first rows of each (whole
episodes, the last one cut where the share ends and marked as a timeout). The share counts
transitions, not episodes: offline learners sample transitions, and a Hopper expert episode lasts
up to 1000 steps where a random one ends after about 20, so 10 % of the episodes would be most of
the transitions. ``mixed`` is made from the random and expert stages, with no further training.
A run whose best snapshot does not beat the random policy is refused (a DatasetError: nothing was
learned to make medium or expert data of). The files record D4RL's reference returns
(``ref_min_score`` / ``ref_max_score``, :data:`~aligngym.envs.data.dataset.D4RL_REFERENCE_RETURNS`)
for D4RL's normalised score ``100 (R - random) / (expert - random)``
(:func:`~aligngym.envs.data.dataset.d4rl_normalized_score`) and the behaviour policies' scores
(``behaviour_expert_score``, ``behaviour_medium_score``); the robots are Gymnasium's v5 models,
so these scores compare with published D4RL figures only loosely. Deviations from D4RL: the first
``warmup`` steps (10,000) play uniformly random actions (SB3's and Spinning Up's habit; rlkit plays
its untrained policy for 1,000), medium-replay holds whole episodes (D4RL's also cuts episodes at
its 1000-step training iterations), and the ``small`` size trains 200,000 steps: its experts are
weaker than D4RL's.

A safe task's behaviour run is at least long enough for each of its environments to finish two
episodes at the task's time limit (this lengthens only ``tiny`` runs of the MuJoCo velocity tasks,
whose episodes last 1000 steps). The ``tiny`` locomotion plan (seconds, for tests) trains a smaller
SAC (64 x 64, batch 64) for 3,000 steps.

Resumable: every finished stage (a behaviour run with its saved policies, a set of rollouts)
is written to ``<data dir>/.work/<Task>-<size>-s<seed>/`` (whatever ``--out`` says) and skipped when the command runs again (stages
made with another plan, tuning or seed, as recorded in ``recipe.json`` there, are deleted and redone).
A behaviour run also saves its progress about ``SAVES_PER_RUN`` times (``run<k>.partial/``: the
weights and optimisers, the Lagrangian's state or SAC's entropy coefficient, the observation and
reward statistics, the episodes so far, all without pickles) and an interrupted run goes on from its
last save, with fresh episodes (the ones under way at the save are dropped), SAC's replay buffer
refilled from the saved episodes, and environment and learner seeds offset by the save's number.
Deterministic: the same task, size and seed give the same file (on the same machine; the behaviour
nets run on one thread); a run resumed from a save gives other data than an
uninterrupted one (deterministic again for the same save). Deviations from DSRL: PPO instead of TRPO,
far fewer environment steps on CPU. A locomotion run of the ``full`` plan takes hours on one core
(benchmarks/RESULTS.md: SAC's update is bound by its matrix products, not by SB3's overhead).
"""

from __future__ import annotations

import json
import math
import numbers
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper, VecNormalize
from tqdm import tqdm

from aligngym.envs.data.dataset import (D4RL_REFERENCE_RETURNS, LOCK, LOCOMOTION_KINDS, DatasetError,
                                        OfflineDataset, atomic_write, check_writable, claim_folder,
                                        d4rl_normalized_score, data_dir, dataset_path, load_dataset, write_dataset)
from aligngym.envs.data.filters import grid_filter
from aligngym.envs.safety.specs import SAFE_TASKS, SafeTaskSpec, task_spec

# the locomotion robots and D4RL's reference returns of each (d4rl/infos.py REF_MIN_SCORE /
# REF_MAX_SCORE), defined once in envs/data/dataset.py, which scores them
LOCOMOTION = D4RL_REFERENCE_RETURNS
MIXED_EXPERT_SHARE = 0.1  # the share of expert transitions in a ``mixed`` set (the rest: random)
EXPERT_CANDIDATES = 5  # a locomotion run's snapshots with the best training returns, each scored again ...
SCORING_EPISODES = 16  # ... by this many fresh episodes: the best of them plays the expert data
PID_GAINS = (0.05, 0.005, 0.1)  # FSRL's PID Lagrangian (KP, KI, KD)
SWEEP = (0.1, 0.9)  # fractions of a behaviour run between which the cost limit sweeps
SAVES_PER_RUN = 10  # a behaviour run saves its progress this many times, so that it can resume


@dataclass(frozen=True)
class Plan:
    """How much work one dataset size is."""

    runs: int                    # behaviour runs (safe tasks) or 1 (locomotion)
    steps_per_run: int           # environment steps of each PPO run
    n_envs: int                  # parallel environments per run
    n_steps: int                 # PPO rollout length per environment
    noise: tuple[float, ...]     # action-noise scales of the extra rollouts
    noisy_episodes: int          # episodes per (run, noise scale)
    episodes: int                # at most this many episodes survive the grid filter
    transitions: int             # locomotion: transitions per dataset kind
    net: tuple[int, ...] = (64, 64)


PLANS = {
    "tiny": Plan(runs=1, steps_per_run=2_048, n_envs=4, n_steps=128, noise=(0.5,), noisy_episodes=4,
                 episodes=40, transitions=2_000),
    "small": Plan(runs=2, steps_per_run=100_000, n_envs=8, n_steps=256, noise=(0.3, 0.8), noisy_episodes=40,
                  episodes=400, transitions=50_000),
    "full": Plan(runs=4, steps_per_run=500_000, n_envs=16, n_steps=256, noise=(0.2, 0.5, 1.0),
                 noisy_episodes=100, episodes=1500, transitions=1_000_000),
}


@dataclass(frozen=True)
class LocomotionPlan:
    """How much work one locomotion dataset size is: a SAC run, then rollouts of its snapshots."""

    steps: int                   # environment steps of the SAC run (D4RL: 1M)
    warmup: int                  # uniformly random steps before SAC learns
    checkpoint_every: int        # environment steps between policy snapshots (medium / expert candidates)
    transitions: int             # transitions per dataset kind (medium-replay: as many as its run made)
    n_envs: int                  # parallel environments of the rollouts
    batch: int = 256             # SAC's minibatch
    net: tuple[int, ...] = (256, 256)  # SAC's actor and critics


LOCOMOTION_PLANS = {
    # tiny: seconds, for tests (a smaller SAC; a few thousand steps cannot make a real expert)
    "tiny": LocomotionPlan(steps=3_000, warmup=500, checkpoint_every=250, transitions=2_000, n_envs=4, batch=64,
                           net=(64, 64)),
    "small": LocomotionPlan(steps=200_000, warmup=10_000, checkpoint_every=5_000, transitions=100_000, n_envs=8),
    "full": LocomotionPlan(steps=1_000_000, warmup=10_000, checkpoint_every=10_000, transitions=1_000_000, n_envs=16),
}


# ---------------------------------------------------------------------- vector envs and recording
def make_vec_env(env_id: str, n_envs: int, seed: int) -> VecEnv:
    """An SB3 VecEnv: the batched numpy core for the Ball and Drone tasks, else DummyVecEnv. The Car
    tasks step through DummyVecEnv: an earlier test of the name's first four letters never matched
    them, their datasets (benchmarks/RESULTS.md) were made so, and batching them would change what
    a seed generates."""
    import aligngym.envs  # noqa: F401  (registers the ids)

    spec = SAFE_TASKS.get(env_id)
    if spec is not None and spec.name.startswith(("Ball", "Drone")):
        return CoreVecEnv(spec, n_envs, seed)
    venv = DummyVecEnv([lambda: gym.make(env_id) for _ in range(n_envs)])
    venv.seed(seed)
    return venv


class CoreVecEnv(VecEnv):
    """:class:`~aligngym.envs.safety.bullet.BulletCore` as an SB3 VecEnv (auto-reset, T limit)."""

    def __init__(self, spec: SafeTaskSpec, n_envs: int, seed: int) -> None:
        from aligngym.envs.safety.bullet import BulletCore

        agent = next(a for a in ("Ball", "Car", "Drone") if spec.name.startswith(a))
        self.core = BulletCore(agent, spec.name[len(agent):], n_envs, spec.max_episode_steps, seed=seed)
        env = gym.make(spec.env_id)
        self.render_mode = None
        super().__init__(n_envs, env.observation_space, env.action_space)
        self._actions = np.zeros((n_envs, self.core.act_dim))

    def reset(self) -> np.ndarray:
        return self.core.reset().astype(np.float32)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, -1)

    def step_wait(self):  # noqa: ANN202
        obs, reward, cost, _, _, terminated, truncated = self.core.step(self._actions)
        done = terminated | truncated
        infos: list[dict[str, Any]] = [{"cost": c} for c in cost.tolist()]
        if done.any():
            finished = np.flatnonzero(done)
            for i in finished:
                infos[i]["terminal_observation"] = obs[i].astype(np.float32)
                infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            obs = self.core.reset(finished)
        return obs.astype(np.float32), reward.astype(np.float32), done, infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(self, attr_name)] * self.num_envs

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any) -> list[Any]:
        raise NotImplementedError("the batched core has no per-env methods")

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False] * self.num_envs


class EpisodeRecorder:
    """Collects every finished episode of a VecEnv as D4RL arrays (actions as the env got them)."""

    def __init__(self, n_envs: int) -> None:
        self.open: list[list[tuple]] = [[] for _ in range(n_envs)]
        self.done: list[dict[str, np.ndarray]] = []
        self.last_obs: np.ndarray | None = None

    def record(self, actions: np.ndarray, obs: np.ndarray, rewards: np.ndarray, dones: np.ndarray,
               infos: list[dict[str, Any]]) -> np.ndarray:
        """Add one vector step; returns the per-env costs."""
        costs = np.array([float(info.get("cost", 0.0)) for info in infos])
        for i, info in enumerate(infos):
            next_obs = info["terminal_observation"] if dones[i] else obs[i]
            self.open[i].append((self.last_obs[i], actions[i], rewards[i], costs[i], next_obs))
            if dones[i]:
                self._close(i, timeout=bool(info.get("TimeLimit.truncated", False)))
        self.last_obs = obs
        return costs

    def _close(self, i: int, timeout: bool) -> None:
        steps = self.open[i]
        n = len(steps)
        terminals, timeouts = np.zeros(n, bool), np.zeros(n, bool)
        (timeouts if timeout else terminals)[-1] = True
        self.done.append({
            "observations": np.array([s[0] for s in steps], np.float32),
            "actions": np.array([s[1] for s in steps], np.float32),
            "rewards": np.array([s[2] for s in steps], np.float32),
            "costs": np.array([s[3] for s in steps], np.float32),
            "next_observations": np.array([s[4] for s in steps], np.float32),
            "terminals": terminals, "timeouts": timeouts})
        self.open[i] = []

    def take(self) -> list[dict[str, np.ndarray]]:
        episodes, self.done = self.done, []
        return episodes


def episodes_to_dataset(episodes: list[dict[str, np.ndarray]], attrs: dict[str, Any]) -> OfflineDataset:
    if not episodes:
        raise DatasetError("no finished episodes were collected (raise the plan's steps)")
    return OfflineDataset({k: np.concatenate([e[k] for e in episodes]) for k in episodes[0]}, dict(attrs))


class PIDLagrangian:
    """FSRL's PID Lagrangian multiplier: ``lambda = max(0, KP e + I + KD max(0, de))``, ``e = J_c - limit``."""

    def __init__(self, gains: tuple[float, float, float] = PID_GAINS) -> None:
        self.kp, self.ki, self.kd = gains
        self.integral = 0.0
        self.previous_cost = 0.0
        self.value = 0.0

    def update(self, episode_cost: float, limit: float) -> float:
        error = episode_cost - limit
        self.integral = max(0.0, self.integral + self.ki * error)
        derivative = max(0.0, episode_cost - self.previous_cost)
        self.previous_cost = episode_cost
        self.value = max(0.0, self.kp * error + self.integral + self.kd * derivative)
        return self.value


def _wrap_recording(venv: VecEnv, recorder: EpisodeRecorder, penalty: PIDLagrangian | None,
                    cost_unit: float = 1.0, alive_bonus: float = 0.0) -> VecEnv:
    """A VecEnvWrapper that records episodes (the env's own rewards) and trains on
    ``r + alive_bonus cost_unit - lambda cost_unit c`` (without a penalty: ``r``)."""

    class _Recording(VecEnvWrapper):
        def reset(self) -> np.ndarray:
            obs = self.venv.reset()
            recorder.last_obs = obs
            recorder.open = [[] for _ in range(self.num_envs)]
            return obs

        def step_async(self, actions: np.ndarray) -> None:
            low, high = self.action_space.low, self.action_space.high
            self._actions = np.clip(actions, low, high)
            self.venv.step_async(self._actions)

        def step_wait(self):  # noqa: ANN202
            obs, rewards, dones, infos = self.venv.step_wait()
            costs = recorder.record(self._actions, obs, rewards, dones, infos)
            if penalty is not None:
                rewards = rewards + alive_bonus * cost_unit - penalty.value * cost_unit * costs
            return obs, rewards.astype(np.float32), dones, infos

    return _Recording(venv)


# ---------------------------------------------------------------------- stages
class Workspace:
    """``<data dir>/.work/<Task>-<size>-s<seed>/`` (:func:`work_folder`): finished stages as HDF5
    (+ SB3 policies) and the saves of an unfinished behaviour run (``<stage>.partial/``), for resuming.
    ``recipe`` (the task, plan and tuning that make the stages) is kept in ``recipe.json``; stages made
    by another recipe are deleted rather than reused. :func:`generate` holds the folder's lock."""

    def __init__(self, root: Path, recipe: dict[str, Any]) -> None:
        self.root = root
        self.stage_seconds = 0.0  # what the stages this call used cost to make
        self.made_seconds = 0.0   # of which made by this call
        recorded = self.root / "recipe.json"
        wanted = json.dumps(recipe, sort_keys=True)
        if not recorded.is_file() or recorded.read_text() != wanted:
            stale = [p for p in self.root.iterdir() if p not in (recorded, self.root / LOCK)]
            if stale:
                tqdm.write(f"{self.root}: {len(stale)} stages or saves made by another recipe, starting again")
                for p in stale:
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
            recorded.write_text(wanted)

    def stage(self, name: str, make: Callable[[], OfflineDataset]) -> OfflineDataset:
        path = self.root / f"{name}.hdf5"
        partial = PartialRun(self.partial(name))
        if path.exists():
            try:
                ds = load_dataset(path)
                self.stage_seconds += float(ds.attrs.get("seconds", 0.0))
                partial.discard()  # left by a call stopped right after writing the stage
                return ds
            except DatasetError:
                path.unlink()  # an unreadable stage is redone
        started = time.perf_counter()
        earlier = partial.seconds()  # an interrupted call's work on the stage
        ds = make()
        now = time.perf_counter() - started
        ds.attrs["seconds"] = round(earlier + now, 1)  # what the stage cost to make
        write_dataset(path, ds.arrays, ds.attrs)
        partial.discard()
        self.made_seconds += now
        self.stage_seconds += ds.attrs["seconds"]
        return ds

    def seconds(self, started: float) -> float:
        """Compute time of the dataset: every stage it used (made now or by an earlier, interrupted
        call) plus this call's time outside the stages it made."""
        return round(self.stage_seconds + time.perf_counter() - started - self.made_seconds, 1)

    def policy(self, name: str) -> Path:
        return self.root / f"{name}.zip"

    def partial(self, name: str) -> Path:
        """Where the stage's behaviour run keeps its saves until the stage is written."""
        return self.root / f"{name}.partial"


class PartialRun:
    """The saves of one unfinished behaviour run: ``state.pt`` (tensors and numbers, read with
    ``weights_only``) and ``part<k>.hdf5`` (the episodes finished between saves k - 1 and k)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state_path = root / "state.pt"
        self.aside = root.with_name(root.name + ".unreadable")

    def _state(self) -> dict[str, Any]:
        return torch.load(self.state_path, map_location="cpu", weights_only=True)

    def seconds(self) -> float:
        """Compute time of the run up to its last save (0 without a readable save)."""
        try:
            return float(self._state()["seconds"]) if self.state_path.is_file() else 0.0
        except Exception:  # load() says why
            return 0.0

    def load(self) -> dict[str, Any] | None:
        """The last save with its ``episodes``, or None (none yet, or unreadable: set aside)."""
        if not self.state_path.is_file():
            return None
        try:
            state = self._state()
            state["episodes"] = [episode for k in range(state["parts"])
                                 for episode in load_dataset(self.root / f"part{k}.hdf5").trajectories()]
        except Exception as err:  # a foreign or damaged save
            self.set_aside(err)
            return None
        return state

    def set_aside(self, err: Exception) -> None:
        """Move saves that cannot be resumed out of the way (kept until the stage is written)."""
        shutil.rmtree(self.aside, ignore_errors=True)
        self.root.rename(self.aside)
        tqdm.write(f"{self.root}: cannot resume from it ({type(err).__name__}: {str(err)[:200]}); kept as "
                   f"{self.aside.name}, the run starts again")

    def discard(self) -> None:
        for folder in (self.root, self.aside):
            shutil.rmtree(folder, ignore_errors=True)

    def save(self, state: dict[str, Any], new_episodes: list[dict[str, np.ndarray]]) -> int:
        """Write the episodes finished since the last save, then (the commit point) the state;
        returns the number of episode parts the save holds."""
        self.root.mkdir(parents=True, exist_ok=True)
        if new_episodes:
            write_dataset(self.root / f"part{state['parts']}.hdf5", episodes_to_dataset(new_episodes, {}).arrays, {})
            state = {**state, "parts": state["parts"] + 1}
        save_tensors(self.state_path, state)
        return state["parts"]


def save_tensors(path: Path, obj: Any) -> None:
    """``torch.save`` of tensors and plain values, atomically (read back with ``weights_only``)."""
    def write(tmp_name: str) -> None:
        with open(tmp_name, "wb") as fh:
            torch.save(obj, fh)

    atomic_write(path, write)


def _schedule(run: int, max_cost: float, begin: float = SWEEP[0]) -> Callable[[float], float]:
    """DSRL's linear cost-limit schedule from ``begin`` to ``SWEEP[1]`` of a run; direction alternates."""
    start, end = (0.0, max_cost) if run % 2 == 0 else (max_cost, 0.0)

    def limit(progress: float) -> float:
        frac = float(np.clip((progress - begin) / (SWEEP[1] - begin), 0.0, 1.0))
        return start + frac * (end - start)

    return limit


def _ppo(venv: VecEnv, plan: Plan, seed: int, log_std_init: float = 0.0) -> PPO:
    return PPO("MlpPolicy", venv, n_steps=plan.n_steps, batch_size=min(256, plan.n_steps * plan.n_envs),
               seed=seed, device="cpu", verbose=0,
               policy_kwargs={"net_arch": list(plan.net), "activation_fn": torch.nn.Tanh, "log_std_init": log_std_init})


def _train_run(env_id: str, spec: SafeTaskSpec, plan: Plan, seed: int, run: int,
               policy_path: Path) -> list[dict[str, np.ndarray]]:
    """One PPO-Lagrangian behaviour run of a safe task; returns every episode it played. Saves its
    progress next to ``policy_path`` (``<stem>.partial/``) and goes on from the last save if there is one."""
    started = time.perf_counter()
    given_plan = plan
    recorder = EpisodeRecorder(plan.n_envs)
    tuning = spec.behaviour
    plan = replace(plan, steps_per_run=int(plan.steps_per_run * tuning.steps_scale))
    # every environment must finish a couple of episodes, however long they are (a MuJoCo velocity
    # task's last 1000 steps: a tiny run would otherwise finish none)
    plan = replace(plan, steps_per_run=max(plan.steps_per_run, 2 * plan.n_envs * spec.max_episode_steps))
    partial = PartialRun(policy_path.with_suffix(".partial"))
    saved = partial.load()
    resumed = 0 if saved is None else int(saved["saves"])  # offsets the seeds of a resumed run
    penalty = PIDLagrangian()
    limit = _schedule(run, spec.max_cost, max(SWEEP[0], tuning.penalty_start))
    # a cost step is priced in units of the task's typical reward per step, so that lambda ~ 1 means
    # "as bad as a step's reward is good" on every task (rewards per step differ 100-fold across tasks)
    cost_unit = spec.reward_per_step
    venv = _wrap_recording(make_vec_env(env_id, plan.n_envs, seed + 7919 * resumed), recorder, penalty, cost_unit,
                           tuning.alive_bonus)
    if tuning.normalize:  # the recorder below it keeps the raw observations and rewards
        venv = VecNormalize(venv, norm_obs=True, norm_reward=True)
    model = _ppo(venv, plan, seed * 1000 + run + 7919 * resumed, tuning.initial_log_std)
    state: dict[str, Any] = {"saves": 0, "parts": 0, "seconds": 0.0}
    episodes: list[dict[str, np.ndarray]] = []
    if saved is not None:
        try:
            episodes = _restore(saved, model, venv if tuning.normalize else None, penalty)
        except Exception as err:  # a save this code cannot use (its nets or spaces differ)
            venv.close()
            partial.set_aside(err)
            return _train_run(env_id, spec, given_plan, seed, run, policy_path)
        state = saved
    rollout = plan.n_steps * plan.n_envs
    save_every = max(1, round(math.ceil(plan.steps_per_run / rollout) / SAVES_PER_RUN))
    first_timestep = model.num_timesteps
    bar = tqdm(total=plan.steps_per_run, initial=first_timestep, desc=f"{env_id} behaviour run {run}",
               unit="step", leave=False)
    saved_episodes, earlier_seconds = len(episodes), float(state["seconds"])

    def save() -> None:
        nonlocal saved_episodes
        state.update(saves=state["saves"] + 1, timesteps=model.num_timesteps,
                     seconds=earlier_seconds + time.perf_counter() - started,
                     policy=model.policy.state_dict(), optimizer=model.policy.optimizer.state_dict(),
                     penalty=(penalty.integral, penalty.previous_cost, penalty.value))
        if tuning.normalize:
            for name in ("obs_rms", "ret_rms"):
                stats = getattr(venv, name)
                state[name] = {"mean": torch.as_tensor(stats.mean), "var": torch.as_tensor(stats.var),
                               "count": float(stats.count)}
        state["parts"] = partial.save(state, episodes[saved_episodes:])
        saved_episodes = len(episodes)

    class _Lagrange(BaseCallback):
        def _on_step(self) -> bool:
            return True

        def _on_rollout_start(self) -> None:
            # SB3 updates the policy between a rollout's end and the next one's start: a save
            # here holds the update of every rollout it counts
            done = self.model.num_timesteps
            if done > first_timestep and (done // rollout) % save_every == 0:
                save()

        def _on_rollout_end(self) -> None:
            fresh = recorder.take()
            episodes.extend(fresh)
            bar.update(rollout)
            progress = self.num_timesteps / plan.steps_per_run
            if fresh and progress >= tuning.penalty_start:
                penalty.update(float(np.mean([e["costs"].sum() for e in fresh])), limit(progress))

    remaining = plan.steps_per_run - model.num_timesteps
    if remaining > 0:
        model.learn(remaining, callback=_Lagrange(), reset_num_timesteps=saved is None)
    bar.close()
    episodes.extend(recorder.take())
    model.save(policy_path)
    if tuning.normalize:  # the observation statistics the policy needs, as plain arrays
        np.savez(_obs_stats_path(policy_path), mean=venv.obs_rms.mean, var=venv.obs_rms.var,
                 clip=venv.clip_obs, epsilon=venv.epsilon)
    return episodes


def _restore(saved: dict[str, Any], model: PPO, normalizer: VecNormalize | None,
             penalty: PIDLagrangian) -> list[dict[str, np.ndarray]]:
    """Put a behaviour run's save back into a fresh model and its helpers; returns its episodes."""
    model.policy.load_state_dict(saved["policy"])
    model.policy.optimizer.load_state_dict(saved["optimizer"])
    model.num_timesteps = int(saved["timesteps"])
    penalty.integral, penalty.previous_cost, penalty.value = (float(v) for v in saved["penalty"])
    if normalizer is not None:
        for name in ("obs_rms", "ret_rms"):
            stats, kept = getattr(normalizer, name), saved[name]
            if tuple(kept["mean"].shape) != np.shape(stats.mean):
                raise ValueError(f"{name} has shape {tuple(kept['mean'].shape)}, the env {np.shape(stats.mean)}")
            stats.mean = kept["mean"].numpy().astype(np.float64)
            stats.var = kept["var"].numpy().astype(np.float64)
            stats.count = float(kept["count"])
    return saved.pop("episodes")


def _obs_stats_path(policy_path: Path) -> Path:
    return policy_path.with_name(f"{policy_path.stem}_obs.npz")


def _normalizer(policy_path: Path | None) -> Callable[[np.ndarray], np.ndarray]:
    """What a saved policy's observations go through: its VecNormalize statistics, if it had any."""
    path = _obs_stats_path(policy_path) if policy_path is not None else None
    if path is None or not path.is_file():
        return lambda obs: obs
    with np.load(path) as stats:
        mean, var, clip, eps = (stats[k] for k in ("mean", "var", "clip", "epsilon"))
    return lambda obs: np.clip((obs - mean) / np.sqrt(var + eps), -clip, clip).astype(np.float32)


def _saved_policy(policy_path: Path, venv: VecEnv) -> Callable[[np.ndarray, bool], np.ndarray]:
    """A saved behaviour policy as ``act(observations, deterministic)``: a safe task's PPO (``.zip``, with
    its observation statistics) or a locomotion run's SAC actor (``.pt``, weights read without pickles)."""
    if policy_path.suffix == ".pt":
        snapshot = torch.load(policy_path, map_location="cpu", weights_only=True)
        sac = SAC("MlpPolicy", venv, buffer_size=1, device="cpu", policy_kwargs={"net_arch": list(snapshot["net"])})
        sac.actor.load_state_dict(snapshot["actor"])
        return lambda obs, deterministic: sac.predict(obs, deterministic=deterministic)[0]
    model = PPO.load(policy_path, device="cpu")
    normalize = _normalizer(policy_path)
    return lambda obs, deterministic: model.predict(normalize(obs), deterministic=deterministic)[0]


def _rollouts(env_id: str, policy_path: Path | None, noise: float, plan: Plan | LocomotionPlan, seed: int,
              episodes: int | None = None, transitions: int | None = None,
              deterministic: bool = True) -> list[dict[str, np.ndarray]]:
    """Episodes of a saved policy, its mean action plus Gaussian noise of scale ``noise`` (or its
    own sampled actions with ``deterministic=False``); ``policy_path=None``: uniform actions."""
    recorder = EpisodeRecorder(plan.n_envs)
    venv = _wrap_recording(make_vec_env(env_id, plan.n_envs, seed), recorder, None)
    act = _saved_policy(policy_path, venv) if policy_path is not None else None
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)  # a policy's own sampled actions
    obs = venv.reset()
    collected: list[dict[str, np.ndarray]] = []
    steps = 0
    while (episodes is not None and len(collected) < episodes) or (transitions is not None and steps < transitions):
        if act is None:
            actions = rng.uniform(venv.action_space.low, venv.action_space.high, (plan.n_envs, *venv.action_space.shape))
        else:
            actions = act(obs, deterministic)
            actions = actions + noise * rng.standard_normal(actions.shape)
        venv.step_async(actions)
        obs, *_ = venv.step_wait()
        fresh = recorder.take()
        collected.extend(fresh)
        steps += sum(len(e["rewards"]) for e in fresh)
    venv.close()
    return collected[:episodes] if episodes is not None else collected


# ---------------------------------------------------------------------- locomotion: SAC as D4RL's behaviour agents
def _sac(venv: VecEnv, plan: LocomotionPlan, seed: int) -> SAC:
    """D4RL's behaviour learner with rlkit's settings: SAC, learning rates 3e-4, batch 256, tau 0.005,
    discount 0.99, automatic entropy tuning towards -|A|, a 256 x 256 actor and twin critics, one gradient
    step per environment step after ``plan.warmup`` uniformly random steps; the buffer holds the whole run."""
    return SAC("MlpPolicy", venv, learning_rate=3e-4, buffer_size=plan.steps, learning_starts=plan.warmup,
               batch_size=plan.batch, tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1, ent_coef="auto",
               seed=seed, device="cpu", verbose=0, policy_kwargs={"net_arch": list(plan.net)})


def _train_sac(env_id: str, plan: LocomotionPlan, seed: int, policy_path: Path,
               checkpoints: list[tuple[int, float]]) -> list[dict[str, np.ndarray]]:
    """The locomotion behaviour run: SAC for ``plan.steps`` environment steps; returns every episode it
    played (the run's replay buffer, in order). Every ``plan.checkpoint_every`` steps after the warm-up it
    snapshots the actor (``<stem>_<k>.pt``) and appends ``(episodes so far, mean return of the episodes
    finished since the last snapshot)`` to ``checkpoints``. Saves its progress ``SAVES_PER_RUN`` times
    (``<stem>.partial/``: the nets, their optimisers, the entropy coefficient, the checkpoints and the
    episodes) and goes on from the last save: the replay buffer is refilled from the saved episodes."""
    started = time.perf_counter()
    partial = PartialRun(policy_path.with_suffix(".partial"))
    saved = partial.load()
    resumed = 0 if saved is None else int(saved["saves"])  # offsets the seeds of a resumed run
    recorder = EpisodeRecorder(1)
    venv = _wrap_recording(make_vec_env(env_id, 1, seed + 7919 * resumed), recorder, None)
    model = _sac(venv, plan, seed * 1000 + 7919 * resumed)
    state: dict[str, Any] = {"saves": 0, "parts": 0, "seconds": 0.0, "window": []}
    episodes: list[dict[str, np.ndarray]] = []
    checkpoints.clear()
    if saved is not None:
        try:
            episodes = _restore_sac(saved, model, checkpoints)
        except Exception as err:  # a save this code cannot use (its nets or spaces differ)
            venv.close()
            partial.set_aside(err)
            return _train_sac(env_id, plan, seed, policy_path, checkpoints)
        state = saved
    window: list[float] = [float(r) for r in state["window"]]  # returns since the last snapshot
    save_every = max(1, plan.steps // SAVES_PER_RUN)
    first_timestep = model.num_timesteps
    bar = tqdm(total=plan.steps, initial=first_timestep, desc=f"{env_id} behaviour run (SAC)", unit="step",
               leave=False, mininterval=1.0)
    saved_episodes, earlier_seconds = len(episodes), float(state["seconds"])

    def save() -> None:
        nonlocal saved_episodes
        state.update(saves=state["saves"] + 1, timesteps=model.num_timesteps,
                     seconds=earlier_seconds + time.perf_counter() - started,
                     policy=model.policy.state_dict(), actor_optimizer=model.actor.optimizer.state_dict(),
                     critic_optimizer=model.critic.optimizer.state_dict(),
                     log_ent_coef=model.log_ent_coef.detach().clone(),
                     ent_coef_optimizer=model.ent_coef_optimizer.state_dict(),
                     checkpoints=list(checkpoints), window=list(window))
        state["parts"] = partial.save(state, episodes[saved_episodes:])
        saved_episodes = len(episodes)

    def tick(done: int, may_save: bool) -> None:
        fresh = recorder.take()
        episodes.extend(fresh)
        window.extend(float(e["rewards"].sum()) for e in fresh)
        bar.update(done - bar.n)
        if done > plan.warmup and done % plan.checkpoint_every == 0 and window:
            checkpoints.append((len(episodes), float(np.mean(window))))
            window.clear()
            _save_actor(model, plan, policy_path.with_name(f"{policy_path.stem}_{len(checkpoints) - 1}.pt"))
        if may_save and done > first_timestep and done % save_every == 0:
            save()

    class _Progress(BaseCallback):
        def _on_step(self) -> bool:
            return True

        def _on_rollout_start(self) -> None:
            # SB3 makes a step's gradient update between its rollout's end and the next one's start:
            # what happens here sees the policy after every step it counts
            tick(self.model.num_timesteps, may_save=True)

    remaining = plan.steps - model.num_timesteps
    if remaining > 0:
        model.learn(remaining, callback=_Progress(), reset_num_timesteps=saved is None)
    tick(model.num_timesteps, may_save=False)
    bar.close()
    _save_actor(model, plan, policy_path)
    venv.close()
    return episodes


def _save_actor(model: SAC, plan: LocomotionPlan, path: Path) -> None:
    """A policy snapshot: the actor's weights and its layer widths (:func:`_saved_policy` reads it)."""
    save_tensors(path, {"net": list(plan.net), "actor": model.actor.state_dict()})


def _restore_sac(saved: dict[str, Any], model: SAC,
                 checkpoints: list[tuple[int, float]]) -> list[dict[str, np.ndarray]]:
    """Put a SAC run's save back into a fresh model, its replay buffer refilled from the saved
    episodes; returns the episodes."""
    model.policy.load_state_dict(saved["policy"])
    model.actor.optimizer.load_state_dict(saved["actor_optimizer"])
    model.critic.optimizer.load_state_dict(saved["critic_optimizer"])
    with torch.no_grad():
        model.log_ent_coef.copy_(saved["log_ent_coef"])
    model.ent_coef_optimizer.load_state_dict(saved["ent_coef_optimizer"])
    model.num_timesteps = int(saved["timesteps"])
    checkpoints[:] = [(int(n), float(r)) for n, r in saved["checkpoints"]]
    episodes = saved.pop("episodes")
    if episodes:
        arrays = episodes_to_dataset(episodes, {}).arrays
        buffer, n = model.replay_buffer, len(arrays["rewards"])
        if n > buffer.buffer_size:
            raise ValueError(f"the save holds {n} transitions, the buffer {buffer.buffer_size}")
        buffer.observations[:n, 0] = arrays["observations"]
        buffer.next_observations[:n, 0] = arrays["next_observations"]
        buffer.actions[:n, 0] = model.policy.scale_action(arrays["actions"])
        buffer.rewards[:n, 0] = arrays["rewards"]
        buffer.dones[:n, 0] = arrays["terminals"] | arrays["timeouts"]
        buffer.timeouts[:n, 0] = arrays["timeouts"]
        buffer.pos, buffer.full = n % buffer.buffer_size, n == buffer.buffer_size
    return episodes


# ---------------------------------------------------------------------- entry points
def generate(env_id: str, size: str = "small", seed: int = 0, out: Path | None = None,
             force: bool = False, options: dict[str, float] | None = None) -> list[Path]:
    """Make the dataset(s) of ``env_id``; returns the written paths (see the module docstring; a
    stochastic task's, with its ``options``: :mod:`aligngym.envs.stochastic.data`)."""
    from aligngym.envs.stochastic.data import generate_stochastic, stochastic_task

    try:
        stochastic = stochastic_task(env_id)
    except DatasetError:
        stochastic = None
    if stochastic is not None:
        return generate_stochastic(stochastic, size, seed, out, force, **(options or {}))
    if options:
        raise DatasetError(f"{env_id} takes no --option (only the stochastic tasks have options)")
    if size not in PLANS:
        raise DatasetError(f"size must be one of {', '.join(PLANS)}, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise DatasetError(f"seed must be an integer >= 0, got {seed!r}")
    if env_id not in LOCOMOTION and env_id not in SAFE_TASKS:
        try:  # a safe task's short name (BallCircle) or file stem (BallCircle-v0)
            env_id = task_spec(env_id).env_id
        except KeyError:
            pass
    if env_id not in LOCOMOTION and env_id not in SAFE_TASKS:
        known = ", ".join([*SAFE_TASKS, *LOCOMOTION])
        raise DatasetError(f"no dataset recipe for {env_id!r}; known tasks: {known}")
    root = work_folder(env_id, size, seed)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DatasetError(f"cannot create the work folder {root} ({err.strerror or err})") from None
    lock = claim_folder(root, "generated")  # two processes making one dataset would mix their stages
    # one thread: the behaviour nets are tiny (more threads only contend), and results do not
    # depend on the machine's core count
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if env_id in LOCOMOTION:
            return _generate_locomotion(env_id, size, seed, out, force, root)
        return [_generate_safe(SAFE_TASKS[env_id], size, seed, out, force, root)]
    finally:
        torch.set_num_threads(threads)
        lock.unlink(missing_ok=True)


def work_folder(env_id: str, size: str, seed: int) -> Path:
    """Where the stages of ``env_id``'s dataset of ``size`` and ``seed`` are kept, whatever ``--out``
    says (named after the file, two tasks' files of one name would take each other's stages)."""
    return data_dir() / ".work" / dataset_path(env_id, size, seed).stem


def _target(path: Path, force: bool) -> None:
    """Refuse, before any training, an output file that cannot be written; create its folder."""
    if path.exists() and not path.is_dir() and not force:
        raise DatasetError(f"{path} exists; pass --force to make it again")
    check_writable(path, f" (a safe task's --out names the dataset file, e.g. {path / 'data.hdf5'}; a "
                         "locomotion task's the folder of its files)")


def _generate_safe(spec: SafeTaskSpec, size: str, seed: int, out: Path | None, force: bool, root: Path) -> Path:
    plan = PLANS[size]
    path = Path(out) if out is not None else dataset_path(spec.env_id, size, seed)
    _target(path, force)
    started = time.perf_counter()
    behaviour = asdict(spec.behaviour)
    for later in ("alive_bonus", "initial_log_std"):  # added later: recorded only when set, so that
        if not behaviour[later]:                      # stages made before stay valid
            del behaviour[later]
    work = Workspace(root, {"task": spec.env_id, "plan": asdict(plan), "behaviour": behaviour, "seed": seed})
    parts = []
    for run in range(plan.runs):
        policy = work.policy(f"run{run}")
        parts.append(work.stage(f"run{run}", lambda: episodes_to_dataset(
            _train_run(spec.env_id, spec, plan, seed, run, policy), {})))
        for k, noise in enumerate(plan.noise):
            parts.append(work.stage(f"run{run}_noise{k}", lambda: episodes_to_dataset(
                _rollouts(spec.env_id, policy, noise, plan, seed * 1000 + run * 10 + k,
                          episodes=plan.noisy_episodes), {})))
    everything = OfflineDataset.concatenate(parts)
    costs, returns = everything.episode_costs(), everything.episode_returns()
    # DSRL keeps episodes inside a reward window [rmin, rmax]; rmin here is what uniformly random
    # actions earn on average, which drops the early-training episodes that run the wrong way
    random_part = work.stage("random", lambda: episodes_to_dataset(
        _rollouts(spec.env_id, None, 0.0, plan, seed + 7, episodes=plan.noisy_episodes), {}))
    random_return = float(np.mean(random_part.episode_returns()))
    kept = _filter(spec, returns, costs, random_return, plan.episodes, seed)
    data = everything.select_episodes(kept)
    kept_returns, kept_costs = data.episode_returns(), data.episode_costs()
    attrs = {
        "env_id": spec.env_id, "size": size, "seed": seed, "generator": "aligngym data generate",
        "behaviour": "PPO with a PID-Lagrangian cost penalty (stable-baselines3), cost-limit sweep + noisy rollouts",
        "plan": asdict(plan), "cost_limits": list(spec.cost_limits), "max_cost": spec.max_cost,
        "max_episode_reward": float(kept_returns.max()), "min_episode_reward": float(kept_returns.min()),
        "max_episode_cost": float(kept_costs.max()), "min_episode_cost": float(kept_costs.min()),
        "episodes_collected": int(len(returns)), "episodes": int(len(kept)), "random_return": random_return,
        "seconds": work.seconds(started),
    }
    return write_dataset(path, data.arrays, attrs)


def _filter(spec: SafeTaskSpec, returns: np.ndarray, costs: np.ndarray, random_return: float, episodes: int,
            seed: int) -> np.ndarray:
    """Indices of the collected episodes that the dataset keeps (step 3 of the module docstring)."""
    passed = np.flatnonzero((costs <= spec.max_cost) & (returns >= random_return))
    if len(passed) == 0:
        raise DatasetError(f"none of the {len(returns)} collected {spec.name} episodes costs at most "
                           f"{spec.max_cost:g} and earns at least the random return {random_return:.1f}; "
                           "generate a larger size")
    return passed[_fit_grid(returns[passed], costs[passed], episodes, seed)]


def _fit_grid(returns: np.ndarray, costs: np.ndarray, episodes: int, seed: int) -> np.ndarray:
    """DSRL's grid filter with the largest per-bin cap that keeps at most ``episodes`` episodes; when
    even one episode per occupied cell is more, one per cell (BallCircle's full file keeps 1760
    episodes of a plan of 1500)."""
    def keep(cap: int) -> np.ndarray:
        return grid_filter(returns, costs, max_per_bin=cap, rng=np.random.default_rng(seed))

    lo, hi = 1, max(1, len(returns))
    if len(keep(hi)) <= episodes:
        return keep(hi)
    while lo < hi:  # kept count grows with the cap
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if len(keep(mid)) <= episodes else (lo, mid - 1)
    return keep(lo)


def _generate_locomotion(env_id: str, size: str, seed: int, out: Path | None, force: bool,
                         root: Path) -> list[Path]:
    plan = LOCOMOTION_PLANS[size]
    ref_min, ref_max = LOCOMOTION[env_id]
    paths = {kind: (Path(out) / dataset_path(env_id, size, seed, kind).name if out is not None
                    else dataset_path(env_id, size, seed, kind)) for kind in LOCOMOTION_KINDS}
    for path in paths.values():
        _target(path, force)
    started = time.perf_counter()
    work = Workspace(root, {"plan": asdict(plan), "seed": seed, "learner": "SAC"})
    policy = work.root / "run0.pt"
    checkpoints_file = work.root / "checkpoints.json"
    checkpoints: list[tuple[int, float]] = []

    def train() -> OfflineDataset:  # the snapshots and checkpoints.json are on disk before the stage is
        replay = episodes_to_dataset(_train_sac(env_id, plan, seed, policy, checkpoints), {})
        checkpoints_file.write_text(json.dumps(checkpoints))
        return replay

    replay = work.stage("run0", train)
    checkpoints = checkpoints or [tuple(c) for c in json.loads(checkpoints_file.read_text())]
    random = work.stage("random", lambda: episodes_to_dataset(
        _rollouts(env_id, None, 0.0, plan, seed + 1, transitions=plan.transitions), {}))
    random_return = float(np.mean(random.episode_returns()))
    # expert: of the snapshots whose training episodes scored best, the one that scores best on fresh
    # episodes (a window of a few training episodes is noisy, and its maximum over the run flatters);
    # medium: the earlier snapshot whose training episodes came nearest a third of the way from random
    # to that expert (all played with their own sampled actions, as they were scored; their stages are
    # named by snapshot)
    def snapshot(k: int) -> Path:
        return policy.with_name(f"{policy.stem}_{k}.pt")

    candidates = sorted(range(len(checkpoints)), key=lambda k: -checkpoints[k][1])[:EXPERT_CANDIDATES]
    rescored = {k: float(np.mean(work.stage(f"score{k}", lambda k=k: episodes_to_dataset(
        _rollouts(env_id, snapshot(k), 0.0, plan, seed + 4, episodes=SCORING_EPISODES, deterministic=False),
        {})).episode_returns())) for k in candidates}
    expert = max(candidates, key=lambda k: (rescored[k], -k))
    expert_return = rescored[expert]
    if expert_return <= random_return:
        raise DatasetError(f"{env_id}: the behaviour run's best return ({expert_return:.1f}) does not beat "
                           f"uniform random actions ({random_return:.1f}); generate a larger size")
    medium_target = random_return + (expert_return - random_return) / 3
    medium = int(np.argmin([abs(ret - medium_target) for _, ret in checkpoints[:expert + 1]]))
    medium_policy, expert_policy = snapshot(medium), snapshot(expert)
    made: dict[str, OfflineDataset] = {
        "random": random,
        "medium": work.stage(f"medium{medium}", lambda: episodes_to_dataset(
            _rollouts(env_id, medium_policy, 0.0, plan, seed + 2, transitions=plan.transitions,
                      deterministic=False), {})),
        "expert": work.stage(f"expert{expert}", lambda: episodes_to_dataset(
            _rollouts(env_id, expert_policy, 0.0, plan, seed + 3, transitions=plan.transitions,
                      deterministic=False), {})),
        "medium-replay": replay.select_episodes(np.arange(checkpoints[medium][0])),
    }
    made["medium-expert"] = OfflineDataset.concatenate([made["medium"], made["expert"]])
    expert_rows = round(MIXED_EXPERT_SHARE * plan.transitions)
    made["mixed"] = OfflineDataset.concatenate([first_transitions(random, plan.transitions - expert_rows),
                                                first_transitions(made["expert"], expert_rows)])
    mixed = {"mixed_expert_share": MIXED_EXPERT_SHARE, "mixed_random_transitions": plan.transitions - expert_rows,
             "mixed_expert_transitions": expert_rows}
    written = []
    for kind in LOCOMOTION_KINDS:
        ds = made[kind]
        rets = ds.episode_returns()
        attrs = {"env_id": env_id, "kind": kind, "size": size, "seed": seed, "generator": "aligngym data generate",
                 "behaviour": "SAC (stable-baselines3, D4RL's settings); expert = the best of the top-scoring "
                              "snapshots rescored on fresh episodes, medium = the earlier snapshot nearest a third "
                              "of the way from random to expert"
                              + ("; mixed = the first random transitions and a share of the first expert ones"
                                 if kind == "mixed" else ""),
                 "plan": asdict(plan), "ref_min_score": ref_min, "ref_max_score": ref_max,
                 "behaviour_expert_return": expert_return, "behaviour_medium_return": checkpoints[medium][1],
                 "behaviour_random_return": random_return,
                 "behaviour_expert_score": float(d4rl_normalized_score(env_id, expert_return)),
                 "behaviour_medium_score": float(d4rl_normalized_score(env_id, checkpoints[medium][1])),
                 "behaviour_steps": plan.steps, **(mixed if kind == "mixed" else {}),
                 "max_episode_reward": float(rets.max()), "min_episode_reward": float(rets.min()),
                 "seconds": work.seconds(started)}
        written.append(write_dataset(paths[kind], ds.arrays, attrs))
    return written


def first_transitions(ds: OfflineDataset, n: int) -> OfflineDataset:
    """The first ``n`` rows of ``ds`` (all of them if it has fewer): whole episodes, then the start of
    the next one, cut and marked as a timeout (a truncated episode, bootstrapped from as a time limit is)."""
    arrays = {key: value[:n].copy() for key, value in ds.arrays.items()}
    if len(arrays["timeouts"]):
        arrays["timeouts"][-1] |= ~arrays["terminals"][-1]
    return OfflineDataset(arrays=arrays, attrs=dict(ds.attrs))


__all__ = ["PLANS", "Plan", "LOCOMOTION", "LOCOMOTION_KINDS", "MIXED_EXPERT_SHARE", "generate",
           "d4rl_normalized_score", "first_transitions", "make_vec_env", "PIDLagrangian", "EpisodeRecorder"]
