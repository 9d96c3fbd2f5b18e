"""What every offline agent shares: its config fields, its dataset, its training loop, its scores.

An offline agent module (``agents/fisor.py``, ``agents/baselines/*.py``) defines ``Config``
(a subclass of :class:`OfflineConfig`) and ``build(config, env, dataset, device)`` returning a
tianshou :class:`~tianshou.algorithm.algorithm_base.OfflineAlgorithm` whose policy maps a
``Batch(obs=...)`` to actions; then ``train = offline_train`` and ``evaluate = offline_evaluate``
from here. ``build`` gets ``dataset=None`` when a run is evaluated: a run folder is scored
without its dataset, so whatever an agent derives from the data belongs in its checkpoint. An
optional ``select_data(config, dataset) -> OfflineDataset`` picks the part of the dataset the agent
is built from and trains on (BC-Safe's cost filter). Before a run folder exists, ``preflight`` reads
and checks the dataset and makes that selection (BC-Safe: no episode within the cost limit stops
the run; the data read there are the ones trained on), and a Config may override ``check_env(env)``
to refuse the env (FISOR: actions in [-1, 1]). The loop is tianshou's offline step
(``algorithm.update(buffer, batch_size)``) with the runner's logging, checkpoints and exact resume
around it:

- the dataset comes from ``env.unwrapped.get_dataset`` conventions: the generated file of
  ``dataset.size`` / ``dataset.seed`` (and, for a locomotion robot, ``dataset.kind``: ``Hopper-v5``'s
  ``medium`` file ...), or ``dataset.path`` (any D4RL/DSRL HDF5 file: D4RL's own
  ``hopper-medium-v2.hdf5`` trains ``task: Hopper-v5``);
- ``task_options`` go to ``gym.make`` for every env the run makes (training's, evaluation's), and a
  stochastic task's generated dataset is the file made with the same options
  (:func:`~aligngym.envs.stochastic.data.load_stochastic`: ``task_options: {p: 0.3}`` trains on
  ``BernoulliBandit-v0-p0.3-full-s0.hdf5``, whose recorded ``p`` is checked); an unknown option or a
  bad value stops the run before its folder exists;
- every ``log_every`` steps the mean of each loss goes to ``loss/*`` (a statistic ``loss_actor`` as
  ``loss/actor``), the learning rates (``train/lr_actor``, ...: each optimiser named after the
  algorithm's attribute holding it, ``actor_optim``), the step rate and the agent's other statistics
  (FISOR: ``feasible_share``, ``mean_weight``) to ``train/*``;
- every ``eval_every`` steps (default: a tenth of the run) and at the end, ``eval_episodes`` episodes
  are played through tianshou's ``Collector`` over a ``DummyVectorEnv`` (:func:`play_episodes`: a policy
  that acts on the episode's history keeps it in its ``state``, which the Collector carries between
  calls and clears when an episode ends, and reads each step's reward from ``info["step_reward"]``; the
  training bar counts them meanwhile) and ``eval/return``, ``eval/cost``, ``eval/normalized_return``,
  ``eval/normalized_cost``, ``eval/length``, ``eval/unsafe_episodes`` (share of episodes above
  ``cost_limit``) logged (DSRL's normalisation at ``cost_limit``; a locomotion robot has no cost
  scores and D4RL's instead: ``eval/normalized_return``, 0 for uniform random actions and 1 for D4RL's
  expert, and ``eval/d4rl_score``, the same x 100 as D4RL's tables report it, :func:`normalized_scores`),
  with the image ``eval/reward_cost`` (tasks with costs):
  the episodes on the reward-cost plane and the cost limit; ``aligngym eval``'s ``eval.json`` lists
  each episode's return and cost too; an agent module's optional ``exact_scores(config, algorithm)``
  adds scores computed from the policy itself rather than played (the tabular agents' expected return
  on the bandit, ``eval/expected_return``: a sampled return over few episodes is noisy);
- a checkpoint (weights, optimiser states, step, the random states of the buffer's sampler,
  numpy, torch and CUDA, the losses gathered since the last log, and a checksum of the training
  data) every ``checkpoint_every`` steps and at the end; ``aligngym train --resume`` continues bit
  for bit on CPU (on a GPU the random streams resume too, but some CUDA kernels are not
  deterministic), with the curves logged up to the checkpoint kept, and refuses data that differ
  from the run's (a dataset file rewritten since);
- non-finite weights (a diverged run) stop training with :class:`TrainingDiverged` before they are
  evaluated or saved: the last checkpoint stays the last good one;
- evaluations draw from forks of the random streams, so ``eval_every`` and ``eval_episodes`` (which
  a resume may change) do not change what is trained (runs recorded before this draw other numbers).
"""

from __future__ import annotations

import difflib
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import pettingzoo
import torch
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator
from tianshou.algorithm.algorithm_base import Algorithm
from tianshou.data import Batch, Collector, CollectStats, VectorReplayBuffer
from tianshou.env import DummyVectorEnv
from tianshou.utils.torch_utils import policy_within_training_step
from tqdm import tqdm

from aligngym.agents.config import ConfigError, RunConfig, agent_module
from aligngym.agents.train import (CheckpointError, Run, TrainingDiverged, checkpoint_errors, resolve_device,
                                   to_numpy)
from aligngym.envs.data.dataset import (D4RL_REFERENCE_RETURNS, LOCOMOTION_KINDS, DatasetError, OfflineDataset,
                                        d4rl_normalized_score, dataset_path, load_dataset, locomotion_task,
                                        reward_cost_figure)
from aligngym.envs.safety.offline import ScoreRange
from aligngym.envs.stochastic.data import STOCHASTIC_TASKS, load_stochastic
from aligngym.envs.stochastic.data import task_options as stochastic_options

# envs/data/dataset.py's LOCOMOTION_KINDS, spelt out for the config schema (a test keeps them equal)
STEP_REWARD_KEY = "step_reward"  # the evaluation envs' info entry with the reward of the step just taken

LocomotionKind = Literal["random", "medium", "expert", "medium-replay", "medium-expert", "mixed"]


class DatasetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    size: Literal["tiny", "small", "full"] = "full"  # which generated dataset (aligngym data generate)
    seed: int = Field(0, ge=0)  # ... and its seed
    kind: LocomotionKind | None = None  # locomotion robots: which of their files (medium ...); None for other tasks
    path: str | None = Field(None, min_length=1)  # a D4RL/DSRL HDF5 file to use instead of the generated one

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: str | None) -> str | None:
        # the run's config.yaml must name the same file from wherever the run is resumed or evaluated
        return None if path is None else str(Path(path).expanduser().absolute())


class OfflineConfig(RunConfig):
    """Fields every offline agent has."""

    hparam_metrics: ClassVar[tuple[str, ...]] = ("eval/normalized_return", "eval/normalized_cost", "eval/d4rl_score")
    length_key: ClassVar[str] = "steps"
    logs_checkpoint_step: ClassVar[bool] = True

    # keyword options of the task's env (gym.make's): the Bernoulli bandit's p; a stochastic task's
    # generated dataset is then the file made with the same options (aligngym data generate --option)
    task_options: dict[str, float | int | bool | str] = Field(default_factory=dict)
    dataset: DatasetConfig = DatasetConfig()
    cost_limit: float = Field(10.0, ge=0)  # threshold L: normalised cost, BC-Safe's filter, Lagrangian target
    # a safe task's returns normalised with AlignGym's own range (its generated full dataset's lowest and
    # highest episode return) or with DSRL's published per-task range, to put scores beside DSRL's tables
    score_range: ScoreRange = "own"
    steps: int = Field(1_000_000, ge=1)  # gradient steps
    batch_size: int = Field(256, ge=1)  # transitions sampled per step
    eval_every: int | None = Field(None, ge=1)  # evaluate every this many steps and at the end (None: steps // 10)
    eval_episodes: int = Field(20, ge=1)  # episodes per evaluation
    log_every: int = Field(1_000, ge=1)  # mean losses logged every this many steps
    checkpoint_every: int = Field(10_000, ge=1)  # checkpoint every this many steps (and at the end)
    show_progress: bool = True  # progress bar on the terminal
    # torch.compile the agent's networks (each child module of its algorithm); off by default: on a CPU
    # it gained nothing measured (benchmarks/RESULTS.md, offline agents' speed); a GPU may differ
    compile: bool = False
    _checked_data: OfflineDataset | None = PrivateAttr(None)  # read by preflight, taken by setup

    def preflight(self) -> None:
        # an unknown task, a missing, unreadable or mismatched dataset file (a generated file's
        # error names the command that makes it) or an empty selection (BC-Safe) stops the run
        # before its folder exists; the data read here are the ones the run then trains on
        env = make_env(self)
        try:
            self.check_env(env)
            self._checked_data = training_data(self, env)
        finally:
            env.close()

    @property
    def eval_interval(self) -> int:
        """Steps between evaluations: ``eval_every``, else a tenth of the run (at least 1)."""
        return self.eval_every if self.eval_every is not None else max(1, self.steps // 10)

    def check_env(self, env: gym.Env) -> None:
        """Raise a ConfigError if the run cannot start on ``env`` (called by ``preflight``, with the
        env it made, before it reads the dataset): every offline agent needs actions in [-a, a]."""
        action_bound(self, env)

    def smoke(self) -> OfflineConfig:
        return self.model_copy(update={
            "steps": min(self.steps, 4), "batch_size": min(self.batch_size, 64), "eval_every": 2,
            "eval_episodes": 1, "log_every": 2, "checkpoint_every": 2,
            "dataset": self.dataset.model_copy(update={"size": "tiny"}) if self.dataset.path is None
            else self.dataset})


def make_env(config: OfflineConfig) -> gym.Env:
    """The task's env (an unknown id is a ConfigError naming the nearest one), its target cost set
    to ``cost_limit``."""
    import aligngym.envs  # noqa: F401  (registers the ids)

    if config.task not in gym.registry:
        if config.task in pettingzoo.parallel_registry:
            raise ConfigError(f"task '{config.task}' is a PettingZoo game (several agents), not a single-agent "
                              f"task {config.agent} can train on; the population learners play it "
                              f"(agent: independent_dqn, e.g. aligngym train quickstart)")
        hint = difflib.get_close_matches(config.task, list(gym.registry), n=1)
        raise ConfigError(f"task '{config.task}' is not a registered environment"
                          + (f" (did you mean '{hint[0]}'?)" if hint else "")
                          + "; aligngym's ids: " + ", ".join(sorted(k for k in gym.registry if k.startswith("aligngym/"))))
    env = make_with_options(config) if config.task_options else gym.make(config.task)
    if hasattr(env.unwrapped, "set_target_cost"):
        env.unwrapped.set_target_cost(config.cost_limit)
    return env


def load_data(config: OfflineConfig, env: gym.Env) -> OfflineDataset:
    """The run's dataset: ``dataset.path``, else the generated file of the task, size and seed (and
    kind, for a locomotion robot; a missing file raises an error naming the command that makes it)."""
    ds = config.dataset
    check_kind(config)
    if ds.path is not None:  # the user's own file: no generate command makes it
        return load_dataset(ds.path, env=env.unwrapped)
    if config.task in STOCHASTIC_TASKS:  # one file per set of options (BernoulliBandit-v0-p0.3-full-s0.hdf5)
        return load_stochastic(config.task, ds.size, ds.seed, env=env.unwrapped, **config.task_options)
    if config.task_options:
        raise ConfigError(f"task_options: {config.task}'s generated datasets are made with the env's defaults, "
                          f"not with {', '.join(config.task_options)}; train on data of your own made with "
                          f"them (dataset.path), or drop task_options")
    return load_dataset(dataset_path(config.task, ds.size, ds.seed, ds.kind), env=env.unwrapped, env_id=config.task,
                        size=ds.size, seed=ds.seed)


def make_with_options(config: OfflineConfig) -> gym.Env:
    """``gym.make(task, **task_options)``, an unknown option or a bad value a ConfigError naming it (a
    stochastic task's options are checked against its list first, the others by the env itself)."""
    options = config.task_options
    if config.task in STOCHASTIC_TASKS:
        try:
            stochastic_options(config.task, **options)
        except DatasetError as err:
            raise ConfigError(f"task_options: {err}") from None
    try:
        return gym.make(config.task, **options)
    except TypeError as err:  # a keyword the env's constructor does not take
        raise ConfigError(f"task_options: {config.task} does not take the options {', '.join(options)} "
                          f"({err})") from None
    except ValueError as err:  # the env's own check of a value
        raise ConfigError(f"task_options: {err}") from None


def check_kind(config: OfflineConfig) -> None:
    """A ConfigError unless ``dataset.kind`` fits the task: a locomotion robot's generated data come
    in kinds (one must be named, unless ``dataset.path`` names the file: then it only labels the run),
    every other task's in one file per size and seed (no kind)."""
    kind, robot = config.dataset.kind, locomotion_task(config.task)
    kinds = ", ".join(LOCOMOTION_KINDS)
    if kind is not None and robot is None:
        raise ConfigError(f"dataset.kind: {config.task}'s datasets have no kinds (one file per size and seed); "
                          f"remove dataset.kind ({kinds} are the files of the locomotion tasks "
                          f"{', '.join(D4RL_REFERENCE_RETURNS)})")
    if kind is None and robot is not None and config.dataset.path is None:
        raise ConfigError(f"dataset.kind: {config.task}'s generated data come in kinds; name one of {kinds} "
                          f"(e.g. --set dataset.kind=medium), or give a file with dataset.path")


def training_data(config: OfflineConfig, env: gym.Env) -> OfflineDataset:
    """The data the agent trains on: the run's dataset, cut by the agent module's ``select_data``
    when it has one (BC-Safe)."""
    dataset = load_data(config, env)
    select = getattr(agent_module(config.agent), "select_data", None)
    return dataset if select is None else select(config, dataset)


def action_bound(config: OfflineConfig, env: gym.Env) -> float:
    """``a`` of a Box action space ``[-a, a]^n`` (OSRL scales its tanh outputs by ``high[0]``)."""
    space = env.action_space
    if not isinstance(space, gym.spaces.Box):
        raise ConfigError(f"{config.agent} needs a continuous (Box) action space; {config.task} has {space}")
    high, low = np.asarray(space.high, dtype=np.float64), np.asarray(space.low, dtype=np.float64)
    if not (np.all(np.isfinite(high)) and np.allclose(high, high.flat[0]) and np.allclose(low, -high)):
        raise ConfigError(f"{config.agent} needs actions bounded in [-a, a] with one a for every dimension; "
                          f"{config.task} has low={low.tolist()}, high={high.tolist()}")
    return float(high.flat[0])


def observation_dim(env: gym.Env) -> int:
    return int(np.prod(env.observation_space.shape))


EVAL_CHUNK = 100  # episodes played side by side (one env each); more are played in chunks of this
EVAL_ROOM = 1_000  # steps recorded per episode for a task without a time limit (a longer episode is an error)

Progress = Callable[[int, int], None]
"""Called while episodes play: ``(episodes finished, steps into the episodes now playing)``."""


@dataclass
class Episodes:
    """What each played episode yielded, in episode order (episode ``i`` from reset seed ``seed + i``)."""

    returns: np.ndarray  # sum of the step rewards
    lengths: np.ndarray  # steps
    info: dict[str, np.ndarray]  # each numeric ``info`` entry of the steps (not of the reset), summed
    records: list[Batch] = field(default_factory=list, repr=False)  # each episode's steps (obs, act, rew, info ...)

    @property
    def costs(self) -> np.ndarray:
        """``info["cost"]`` summed over each episode (0 for a task without costs)."""
        return self.info.get("cost", np.zeros_like(self.returns))


def play_episodes(config: OfflineConfig, policy: torch.nn.Module, episodes: int, seed: int,
                  progress: Progress | None = None) -> Episodes:
    """Play ``episodes`` episodes of ``config``'s task with ``policy`` as it acts outside training
    (no exploration noise, its eval mode; tianshou's ``map_action`` to the env's actions) through
    tianshou's :class:`~tianshou.data.Collector` over a ``DummyVectorEnv``: ``EVAL_CHUNK`` side by
    side, one env each, episode ``i`` from reset seed ``seed + i``. ``records`` holds each episode's
    steps (BARFI plays its training episodes here too: ``config`` may be any run config with ``task``
    and ``task_options``)."""
    parts = []
    for start in range(0, episodes, EVAL_CHUNK):
        report = None if progress is None else (lambda done, t, start=start: progress(start + done, t))
        parts.append(_play(config, policy, min(EVAL_CHUNK, episodes - start), seed + start, report))
    keys = set.intersection(*(set(part.info) for part in parts))
    return Episodes(returns=np.concatenate([part.returns for part in parts]),
                    lengths=np.concatenate([part.lengths for part in parts]),
                    info={key: np.concatenate([part.info[key] for part in parts]) for key in sorted(keys)},
                    records=[record for part in parts for record in part.records])


def evaluate_policy(config: OfflineConfig, policy: torch.nn.Module, episodes: int, seed: int,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Play ``episodes`` episodes (:func:`play_episodes`) and score them the DSRL way; besides the
    means, ``eval/unsafe_episodes`` is the share of episodes whose cost exceeds ``cost_limit`` (a
    policy can be safe on average and still break the limit in some episodes), and
    ``episode_returns`` / ``episode_costs`` list each episode's raw figures."""
    played = play_episodes(config, policy, episodes, seed, progress)
    returns, costs, lengths = played.returns, played.costs, played.lengths
    result = {"eval/return": float(returns.mean()), "eval/cost": float(costs.mean()),
              "eval/length": float(lengths.mean()), "eval/return_std": float(returns.std()),
              "eval/cost_std": float(costs.std()),
              "eval/unsafe_episodes": float(np.mean(costs > config.cost_limit)),
              "episode_returns": returns.tolist(), "episode_costs": costs.tolist()}
    result.update(normalized_scores(config, returns, costs))
    return result


def normalized_scores(config: OfflineConfig, returns: np.ndarray, costs: np.ndarray) -> dict[str, Any]:
    """The task's normalised scores of episodes, means over them. A task whose env has DSRL's
    ``get_normalized_score(return, cost)`` (the safe tasks; returns over the config's ``score_range``,
    AlignGym's own or DSRL's): ``eval/normalized_return``,
    ``eval/normalized_cost`` and ``safe`` (normalised cost <= 1). A locomotion robot
    (:data:`~aligngym.envs.data.dataset.D4RL_REFERENCE_RETURNS`): D4RL's score, as ``d4rl``'s
    ``get_normalized_score`` in ``eval/normalized_return`` ((R - random) / (expert - random), the
    project's scale) and x 100 in ``eval/d4rl_score`` (the figure D4RL's tables and papers report);
    no cost scores. These robots are Gymnasium's v5 models, not D4RL's: the D4RL scores compare with
    published figures only loosely. Other tasks: none."""
    scorer = make_env(config)
    try:
        if hasattr(scorer.unwrapped, "get_normalized_score"):
            norm_return, norm_cost = scorer.unwrapped.get_normalized_score(returns, costs, config.score_range)
            scores = {"eval/normalized_return": float(np.mean(norm_return)),
                      "eval/normalized_cost": float(np.mean(norm_cost))}
            return {**scores, "safe": bool(scores["eval/normalized_cost"] <= 1.0)}
    finally:
        scorer.close()
    if locomotion_task(config.task) is not None:
        score = float(np.mean(d4rl_normalized_score(config.task, returns)))
        return {"eval/normalized_return": score / 100.0, "eval/d4rl_score": score}
    return {}


class _SeededReset(gym.Wrapper):
    """Its first reset without a seed uses ``seed`` (the collector resets all envs alike; each
    evaluation episode has its own seed); later resets continue that env's stream. Its ``info``
    carries the reward of the step just taken as ``info["step_reward"]`` (0 after a reset): a policy
    that acts on the episode's history (the sequence forms of DoC and DT, whose history the Collector
    carries in the policy's ``state``) reads the rewards it has earned there; the episodes' summed
    ``info`` entries leave it out."""

    def __init__(self, env: gym.Env, seed: int) -> None:
        super().__init__(env)
        self._first_seed: int | None = seed

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        if seed is None:
            seed, self._first_seed = self._first_seed, None
        obs, info = super().reset(seed=seed, options=options)
        return obs, {**info, STEP_REWARD_KEY: 0.0}

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated, truncated, {**info, STEP_REWARD_KEY: float(reward)}


class _EpisodeBuffers(VectorReplayBuffer):
    """tianshou's vector buffer without its warm-up compilation (numba, seconds in each new process)
    of the ``prev`` / ``next`` index helpers, which recording and reading whole episodes never
    calls (the observations that follow are stored, not looked up); a first call still compiles them."""

    def _compile(self) -> None:
        pass


def _play(config: OfflineConfig, policy: torch.nn.Module, episodes: int, seed: int,
          progress: Progress | None) -> Episodes:
    """One episode in each of ``episodes`` envs, recorded in one replay buffer per env."""
    envs = [make_env(config) for _ in range(episodes)]
    limit = envs[0].spec.max_episode_steps if envs[0].spec is not None else None
    room = limit or EVAL_ROOM
    # a collection of n episodes over n envs plays one in each: an env whose episode ended is reset
    # (that reset is never recorded) and set aside, so sub-buffer i holds env i's episode, last step included
    buffer = _EpisodeBuffers(episodes * room, episodes)
    counts = {"finished": 0, "steps": 0}

    def on_step(*_: Any) -> None:
        counts["steps"] += 1
        if progress is not None:
            progress(counts["finished"], counts["steps"])

    def on_episode_done(_: Any) -> None:
        counts["finished"] += 1
        if progress is not None:
            progress(counts["finished"], counts["steps"])

    vector_env = DummyVectorEnv([partial(_SeededReset, env, seed + i) for i, env in enumerate(envs)])
    try:
        collector = Collector[CollectStats](policy, vector_env, buffer, exploration_noise=False,
                                            on_episode_done_hook=on_episode_done, on_step_hook=on_step)
        with torch.no_grad():
            stats = collector.collect(n_episode=episodes, reset_before_collect=True)
    finally:
        vector_env.close()
    records = [sub[sub.sample_indices(0)] for sub in buffer.buffers]
    if sum(len(r) for r in records) != stats.n_collected_steps:  # a sub-buffer wrapped around
        raise RuntimeError(f"an evaluation episode of {config.task} ran past {room} steps, the most recorded "
                           f"for a task without a time limit (register it with max_episode_steps)")
    info = {key: np.array([_total(r.info[key]) for r in records]) for key in records[0].info.keys()
            if key != STEP_REWARD_KEY and all(key in r.info for r in records) and _numeric(records[0].info[key])}
    return Episodes(returns=np.array([_total(r.rew) for r in records]),
                    lengths=np.array([len(r) for r in records], dtype=np.float64), info=info, records=records)


def _numeric(values: Any) -> bool:
    return isinstance(values, np.ndarray) and values.ndim == 1 and np.issubdtype(values.dtype, np.number)


def _total(values: np.ndarray) -> float:
    """The sum in step order (a running sum, as an episode's return accumulates; numpy's ``sum``
    pairs terms differently)."""
    return float(np.cumsum(np.asarray(values, dtype=np.float64))[-1]) if len(values) else 0.0


def _set_random_state(rs: np.random.RandomState, state: dict[str, Any]) -> None:
    """``rs.set_state`` of numpy's dict layout (``get_state(legacy=False)``, as the collector saves it)."""
    if "keys" in state:  # the layout of checkpoints written by earlier versions: {keys, pos, gauss: [has, cached]}
        state = {"bit_generator": "MT19937", "state": {"key": state["keys"], "pos": int(state["pos"])},
                 "has_gauss": int(state["gauss"][0]), "gauss": float(state["gauss"][1])}
    rs.set_state(state)


def torch_random_state() -> dict[str, Any]:
    """torch's CPU generator and, on a GPU machine, each CUDA device's (FISOR draws its diffusion noise
    and BARFI its actions on the device)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"torch": torch.get_rng_state(), "cuda": list(cuda)}


def set_torch_random_state(state: dict[str, Any]) -> None:
    """Restore :func:`torch_random_state`'s streams (CUDA's when this machine has the same devices)."""
    torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8))
    cuda = state.get("cuda") or []  # absent in checkpoints written before it was saved
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([torch.as_tensor(s, dtype=torch.uint8) for s in cuda])


def _rng_state(buffer: Any) -> dict[str, Any]:
    """Every random stream training draws from: the buffer's sampler, numpy's and torch's
    (:func:`torch_random_state`)."""
    return {"buffer": buffer._random_state.get_state(legacy=False), "numpy": np.random.get_state(legacy=False),
            **torch_random_state()}


def _set_rng_state(buffer: Any, state: dict[str, Any]) -> None:
    _set_random_state(buffer._random_state, state["buffer"])
    _set_random_state(np.random.mtrand._rand, state["numpy"])
    set_torch_random_state(state)


@contextmanager
def _own_random_streams(buffer: Any) -> Iterator[None]:
    """Draws inside (an evaluation's action sampling) leave every stream training draws from as it
    was: how often and how long a run evaluates does not change what it trains."""
    state = _rng_state(buffer)
    try:
        yield
    finally:
        _set_rng_state(buffer, state)


def setup(module: Any, config: OfflineConfig, state: dict[str, Any] | None, device: torch.device,
          data: bool = True) -> tuple[gym.Env, OfflineDataset | None, Any]:
    """Env, dataset (None with ``data=False``) and the agent's algorithm, restored from ``state`` when given."""
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    env = make_env(config)
    dataset, config._checked_data = config._checked_data, None  # a new run's: read once, by preflight
    if not data:
        dataset = None
    elif dataset is None:
        dataset = training_data(config, env)
    algorithm = module.build(config, env, dataset, device)
    if state is not None:
        with checkpoint_errors():
            algorithm.load_state_dict(to_torch_state(state["algorithm"], device))
    if config.compile:
        compile_networks(algorithm)
    return env, dataset, algorithm


def compile_networks(algorithm: Any) -> None:
    """``torch.compile`` each network of ``algorithm`` in place: the modules with parameters directly
    under the algorithm and under its policy (state dicts keep their keys: checkpoints are the same)."""
    policy = getattr(algorithm, "policy", None)
    for parent in (algorithm, policy):
        for child in parent.children() if parent is not None else ():
            if child is not policy and any(True for _ in child.parameters()):
                child.compile()


def to_torch_state(state: Any, device: torch.device) -> Any:
    """A loaded state dict with its tensors on ``device`` (optimiser steps stay on the CPU)."""
    if isinstance(state, dict):
        return {k: (v if k == "step" else to_torch_state(v, device)) for k, v in state.items()}
    if isinstance(state, list):
        return [to_torch_state(v, device) for v in state]
    if isinstance(state, torch.Tensor):
        return state.to(device)
    return state


def offline_train(module: Any, config: OfflineConfig, run: Run, state: dict[str, Any] | None) -> None:
    """The offline loop (see the module docstring) for the agent ``module``."""
    device = resolve_device(config.device)
    env, dataset, algorithm = setup(module, config, state, device)
    buffer = algorithm.process_buffer(dataset.to_replay_buffer())
    # tianshou's buffer samples with its own generator, seeded 42 unless told otherwise
    buffer._random_state = np.random.RandomState(np.random.SeedSequence(config.seed).generate_state(1)[0])
    step = 0
    losses: dict[str, list[float]] = defaultdict(list)  # since the last log
    data = data_fingerprint(dataset)
    if state is not None:
        with checkpoint_errors():
            step = int(state["step"])
            _set_rng_state(buffer, to_numpy(state["rng"]))
            for name, values in to_numpy(state.get("losses", {})).items():  # absent in older checkpoints
                losses[name] = [float(v) for v in np.atleast_1d(values)]
        trained_on = state.get("data")  # absent in older checkpoints
        if trained_on is not None and dict(trained_on) != data:
            source = dataset.path or "the dataset"
            raise CheckpointError(f"{source} is not the data this run was trained on ({trained_on['transitions']} "
                                  f"training transitions, CRC-32 {trained_on['crc32']:08x}; now {data['transitions']}, "
                                  f"{data['crc32']:08x}): restore that file or train a new run")
    bar = tqdm(total=config.steps, initial=step, desc=run.dir.name, unit="step", disable=not config.show_progress,
               dynamic_ncols=True)
    started, started_step = time.perf_counter(), step

    def save() -> None:
        run.save({"step": step, "algorithm": algorithm.state_dict(), "rng": _rng_state(buffer), "data": data,
                  "losses": {name: np.asarray(values, dtype=np.float64) for name, values in losses.items()}})

    try:
        while step < config.steps:
            with policy_within_training_step(algorithm.policy):
                stats = algorithm.update(buffer, config.batch_size)
            step += 1
            bar.update(1)
            for name, value in stats.get_loss_stats_dict().items():
                if not np.isnan(value):  # NaN: not computed this step (FISOR's actor during its warm-up)
                    losses[name].append(float(value))
            if step % config.log_every == 0 or step == config.steps:
                means = {k: float(np.mean(v)) for k, v in losses.items()}
                # losses to loss/* (loss_actor as loss/actor); an agent's other statistics (weights,
                # shares) to train/*
                run.log("loss", step, {k.removeprefix("loss_"): v for k, v in means.items() if k.startswith("loss")})
                rate = (step - started_step) / max(time.perf_counter() - started, 1e-9)
                run.log("train", step, {"steps_per_second": rate, **algorithm_rates(algorithm),
                                        **{k: v for k, v in means.items() if not k.startswith("loss")}})
                losses.clear()
                check_finite(algorithm, step)
            if step % config.eval_interval == 0 or step == config.steps:
                check_finite(algorithm, step)
                with _own_random_streams(buffer):  # training continues as if it had not evaluated
                    scores = evaluate_policy(config, algorithm.policy, config.eval_episodes, seed=10_000 + step,
                                             progress=_progress_on(bar, config.eval_episodes))
                    scores.update(exact_scores(module, config, algorithm))
                run.log("eval", step, {k.split("/", 1)[1]: v for k, v in scores.items() if k.startswith("eval/")})
                if "eval/normalized_cost" in scores:  # a task with costs (not a locomotion robot)
                    run.figure("eval/reward_cost", reward_cost_figure(
                        scores["episode_costs"], scores["episode_returns"], [config.cost_limit],
                        f"{config.task}, step {step}: {config.eval_episodes} episodes"), step)
                bar.set_postfix(ret=f"{scores.get('eval/normalized_return', scores['eval/return']):.2f}",
                                cost=f"{scores.get('eval/normalized_cost', scores['eval/cost']):.2f}")
            # SIGINT / SIGTERM (run.stopping()): a checkpoint now, keeping every finished update
            if step % config.checkpoint_every == 0 or step == config.steps or run.stopping():
                check_finite(algorithm, step)
                save()
            if run.stopping() and step < config.steps:
                raise run.interrupted(step)
    finally:
        bar.close()
        env.close()


def data_fingerprint(dataset: OfflineDataset) -> dict[str, int]:
    """Number of transitions and a CRC-32 of every array the agent trains on."""
    crc = 0
    for key in sorted(dataset.arrays):
        crc = zlib.crc32(memoryview(np.ascontiguousarray(dataset.arrays[key])).cast("B"), crc)
    return {"transitions": len(dataset), "crc32": crc}


def check_finite(algorithm: torch.nn.Module, step: int) -> None:
    """Raise :class:`TrainingDiverged` if any weight is NaN or infinite."""
    bad = [name for name, p in algorithm.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise TrainingDiverged(f"training diverged by step {step}: {len(bad)} weight tensors hold NaN or "
                               f"inf ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); the run's "
                               f"checkpoint is the last one from before (lower the learning rates or "
                               f"check the data's scale)")


def _progress_on(bar: tqdm, episodes: int | None = None) -> Progress:
    """An evaluation's progress on ``bar``, redrawn at most every ``bar.mininterval`` seconds: with
    ``episodes`` (the training bar, which then says what it waits for) in its postfix; without, the
    bar counts the finished episodes and its postfix the step of those still playing."""
    drawn = [0.0]

    def show(finished: int, step: int) -> None:
        if bar.disable:
            return
        if episodes is None:
            bar.n = finished
            bar.set_postfix_str(f"step {step}", refresh=False)
        else:
            bar.set_postfix_str(f"evaluating {episodes} episode{'s' * (episodes != 1)}: {finished} done, "
                                f"step {step}", refresh=False)
        now = time.monotonic()
        if now - drawn[0] >= bar.mininterval or finished == (episodes or bar.total):
            drawn[0] = now
            bar.refresh()

    return show


def optimizer_names(algorithm: Algorithm) -> list[str]:
    """What each of ``algorithm``'s optimisers trains, in their order: the name of the attribute
    holding it without its ``_optim`` suffix (``actor_optim``: ``actor``), else the name of the
    module it steps (``policy``), else its position."""
    holders = {id(value): name.removesuffix("_optim") for name, value in vars(algorithm).items()
               if name.endswith("_optim") and isinstance(value, Algorithm.Optimizer)}
    modules = {id(module): name.replace(".", "_") for name, module in algorithm.named_modules() if name}
    names: list[str] = []
    for i, optim in enumerate(algorithm._optimizers):
        name = holders.get(id(optim)) or modules.get(id(optim._module)) or str(i)
        names.append(name if name not in names else f"{name}_{i}")
    return names


def algorithm_rates(algorithm: Algorithm) -> dict[str, float]:
    """Current learning rate of each optimiser, named by what it trains (``train/lr_actor``, ...:
    :func:`optimizer_names`)."""
    return {f"lr_{name}": float(optim._optim.param_groups[0]["lr"])
            for name, optim in zip(optimizer_names(algorithm), algorithm._optimizers)}


def exact_scores(module: Any, config: OfflineConfig, algorithm: Algorithm) -> dict[str, float]:
    """The scores the agent ``module`` computes exactly instead of from played episodes (its optional
    ``exact_scores(config, algorithm)``: the tabular agents' ``eval/expected_return`` on the bandit);
    none for the others."""
    score = getattr(module, "exact_scores", None)
    if score is None:
        return {}
    with torch.no_grad():
        return dict(score(config, algorithm))


def offline_evaluate(module: Any, config: OfflineConfig, state: dict[str, Any], episodes: int) -> dict[str, Any]:
    """``aligngym eval RUN_DIR``: the checkpoint's policy over ``episodes`` episodes."""
    device = resolve_device(config.device)
    env, _, algorithm = setup(module, config, state, device, data=False)
    env.close()
    # on stderr while it is a terminal (and the run's show_progress allows bars)
    with tqdm(total=episodes, desc=f"evaluating {config.agent} on {config.task}", unit="episode",
              disable=None if config.show_progress else True, dynamic_ncols=True) as bar:
        result: dict[str, Any] = evaluate_policy(config, algorithm.policy, episodes, seed=20_000,
                                                 progress=_progress_on(bar))
    result.update(exact_scores(module, config, algorithm))
    result["cost_limit"] = config.cost_limit
    result["episodes"] = episodes
    return result
