"""Offline datasets of the stochastic tasks (DoC's data), in the shared HDF5 layout.

==================================  ==========================================  ========================
task                                behaviour policy                            episodes tiny/small/full
==================================  ==========================================  ========================
``aligngym/BernoulliBandit-v0``     arms drawn with ``[1 - p, p]``              200 / 500 / 1000
``aligngym/SlipperyFrozenLake-v0``  epsilon-greedy (0.4) over the optimal       20 / 50 / 100, each up
                                    policy of value iteration                   to 100 steps
==================================  ==========================================  ========================

``full`` holds the paper's episodes (DoC: 1000 pulls; 100 FrozenLake trajectories), ``small`` half as
many (a harder check on less data), ``tiny`` a few hundred transitions (tests). Every size is written
in well under a second.

**Layout.** :func:`aligngym.envs.data.dataset.write_dataset`'s keys; ``actions`` are the discrete
action indices (``int64``, shape ``(N,)``, so ``load_dataset`` checks them against the env's
``Discrete`` space and ``sample_segments`` / ``to_replay_buffer`` pass them on as indices),
``observations`` / ``next_observations`` float32 (the bandit's ``[0.0]``, the lake's one-hot cell),
``costs`` zeros, ``terminals`` the env's termination (every bandit step; a hole or the goal),
``timeouts`` the 100-step limit of the lake. Attributes: ``env_id``, ``size``, ``seed``,
``episodes``, ``options`` (a dict) and each option by name (``p`` / ``success_prob``), ``behaviour``
(in words) with ``behaviour_probs`` (bandit) or ``behaviour_policy`` (the greedy action per state)
and ``behaviour_epsilon`` (lake), ``behaviour_return`` (the behaviour's exact expected return),
``optimal_return`` (the optimal policy's: the better arm's probability; the value-iteration
policy's probability of arriving within 100 steps), for the lake ``best_return`` (the best any policy
achieves within 100 steps, one that sees the time left included) and ``max_episode_reward`` / ``min_episode_reward`` as the other generators write.

**File names** (:func:`stochastic_dataset_path`): the task's options change its dynamics, so a file
made with non-default options carries them as :func:`~aligngym.envs.data.dataset.dataset_path`'s
``kind``: ``BernoulliBandit-v0-p0.3-small-s0.hdf5``, ``SlipperyFrozenLake-v0-q0.5-full-s1.hdf5``
(``p`` / ``q`` as the paper writes them, to 6 significant digits). The default options (p = 0.1,
q = 1/3) keep the plain name, ``BernoulliBandit-v0-small-s0.hdf5``, which is the file the runner's
``dataset_path(task, size, seed)`` finds. The file's attributes hold the exact option values;
:func:`load_stochastic` checks them against the options asked for.

**Determinism.** The env and the behaviour policy draw from two generators spawned from ``seed``
(:class:`numpy.random.SeedSequence`); one seed gives the same arrays on every machine.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from aligngym.envs.data.dataset import (SIZES, DatasetError, OfflineDataset, check_writable, dataset_path,
                                        load_dataset, write_dataset)
from aligngym.envs.stochastic import bandit, frozen_lake

STOCHASTIC_TASKS: tuple[str, ...] = (bandit.ENV_ID, frozen_lake.ENV_ID)
# episodes per dataset size; full: the paper's (1000 bandit pulls, 100 FrozenLake trajectories)
EPISODES: dict[str, dict[str, int]] = {
    bandit.ENV_ID: {"tiny": 200, "small": 500, "full": 1000},
    frozen_lake.ENV_ID: {"tiny": 20, "small": 50, "full": 100},
}
# each task's options and their defaults
DEFAULT_OPTIONS: dict[str, dict[str, float]] = {
    bandit.ENV_ID: {"p": bandit.DEFAULT_P},
    frozen_lake.ENV_ID: {"success_prob": frozen_lake.DEFAULT_SUCCESS_PROB},
}
_OPTION_LETTERS: dict[str, str] = {"p": "p", "success_prob": "q"}  # as the paper (and a file name) writes them
BEHAVIOUR_EPSILON = 0.4  # DoC's FrozenLake data: epsilon = 0.2 (1 - alpha) with alpha = -1
GENERATOR = "aligngym data generate"


def stochastic_task(env_id: str) -> str:
    """The registered id of a stochastic task named by its id, with or without the module prefix
    (``aligngym.envs:aligngym/BernoulliBandit-v0``), its file stem (``BernoulliBandit-v0``) or its
    short name (``BernoulliBandit``); a :class:`DatasetError` listing the tasks otherwise."""
    name = str(env_id).split(":")[-1]
    for task in STOCHASTIC_TASKS:
        stem = task.split("/")[-1]
        if name in (task, stem, stem.rsplit("-v", 1)[0]):
            return task
    raise DatasetError(f"no stochastic task {env_id!r}; known: {', '.join(STOCHASTIC_TASKS)}")


def task_options(env_id: str, **options: Any) -> dict[str, float]:
    """All of a task's options: the defaults, updated by ``options`` (each checked, so that a typo or a
    value outside [0, 1] stops before anything is written)."""
    task = stochastic_task(env_id)
    resolved = dict(DEFAULT_OPTIONS[task])
    unknown = sorted(set(options) - set(resolved))
    if unknown:
        raise DatasetError(f"{task} has no option {', '.join(unknown)}; its options: "
                           + ", ".join(f"{k} (default {v:.6g})" for k, v in resolved.items()))
    for name, value in options.items():
        try:
            resolved[name] = bandit.check_probability(name, value, task)
        except ValueError as err:
            raise DatasetError(str(err)) from None
    return resolved


def options_kind(env_id: str, **options: Any) -> str | None:
    """The part of a file name that tells the options apart: None for the defaults, else the
    non-default options as the paper writes them (``p0.3``, ``q0.5``; several joined by ``-``)."""
    task = stochastic_task(env_id)
    resolved = task_options(task, **options)
    parts = [f"{_OPTION_LETTERS[name]}{value:.6g}" for name, value in resolved.items()
             if value != DEFAULT_OPTIONS[task][name]]
    return "-".join(parts) or None


def stochastic_dataset_path(env_id: str, size: str, seed: int, **options: Any) -> Path:
    """Where the generated dataset of ``env_id`` with ``options`` lives (see the module docstring):
    ``<data_dir>/BernoulliBandit-v0[-p0.3]-<size>-s<seed>.hdf5``."""
    task = stochastic_task(env_id)
    return dataset_path(task, size, seed, options_kind(task, **options))


def stochastic_generate_command(env_id: str, size: str, seed: int, **options: Any) -> str:
    """The shell command that makes :func:`stochastic_dataset_path`'s file (options as ``--option
    NAME=VALUE``)."""
    task = stochastic_task(env_id)
    given = task_options(task, **options)
    flags = "".join(f" --option {name}={value!r}" for name, value in given.items()
                    if value != DEFAULT_OPTIONS[task][name])
    return f"{GENERATOR} {task} --size {size} --seed {seed}{flags}"


def _bandit_episodes(env: gym.Env, options: dict[str, float], episodes: int, env_seed: int,
                     behaviour_rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    p = options["p"]
    probs = bandit.behaviour_probs(p)
    actions = behaviour_rng.choice(2, size=episodes, p=probs)
    rewards = np.empty(episodes, dtype=np.float32)
    observations = np.empty((episodes, 1), dtype=np.float32)
    next_observations = np.empty_like(observations)
    for i, arm in enumerate(actions):
        observations[i], _ = env.reset(seed=env_seed if i == 0 else None)
        next_observations[i], rewards[i], _, _, _ = env.step(arm)  # every pull ends its episode
    arrays = {"observations": observations, "next_observations": next_observations, "actions": actions,
              "rewards": rewards, "terminals": np.ones(episodes, dtype=bool),
              "timeouts": np.zeros(episodes, dtype=bool)}
    attrs = {"behaviour": f"arms drawn with probabilities [1 - p, p] = [{probs[0]:.6g}, {probs[1]:.6g}] (DoC, dice_rl)",
             "behaviour_probs": probs.tolist(), "behaviour_return": float(probs @ bandit.arm_probs(p)),
             "optimal_return": bandit.optimal_return(p)}
    return arrays, attrs


def _lake_episodes(env: gym.Env, options: dict[str, float], episodes: int, env_seed: int,
                   behaviour_rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    q = options["success_prob"]
    greedy, _ = frozen_lake.value_iteration(q)
    probs = frozen_lake.epsilon_greedy_probs(greedy, BEHAVIOUR_EPSILON)
    rows: dict[str, list[Any]] = {key: [] for key in ("observations", "next_observations", "actions", "rewards",
                                                       "terminals", "timeouts")}
    for episode in range(episodes):
        observation, info = env.reset(seed=env_seed if episode == 0 else None)
        while True:
            action = int(behaviour_rng.choice(frozen_lake.N_ACTIONS, p=probs[info["state"]]))
            next_observation, reward, terminated, truncated, info = env.step(action)
            for key, value in (("observations", observation), ("next_observations", next_observation),
                               ("actions", action), ("rewards", reward), ("terminals", terminated),
                               ("timeouts", truncated and not terminated)):
                rows[key].append(value)
            observation = next_observation
            if terminated or truncated:
                break
    arrays = {key: np.asarray(value) for key, value in rows.items()}
    attrs = {"behaviour": f"epsilon-greedy (epsilon {BEHAVIOUR_EPSILON}) over the optimal policy of value iteration "
                          f"(discount 0.99) in place of DoC's DQN",
             "behaviour_policy": greedy.tolist(), "behaviour_epsilon": BEHAVIOUR_EPSILON,
             "behaviour_return": frozen_lake.success_rate(probs, q),
             "optimal_return": frozen_lake.success_rate(greedy, q),
             "best_return": frozen_lake.best_success_rate(q)}
    return arrays, attrs


def generate_stochastic(env_id: str, size: str = "small", seed: int = 0, out: Path | None = None,
                        force: bool = False, **options: Any) -> list[Path]:
    """Write the dataset of a stochastic task (the module docstring says what it holds) and return
    its path in a list, as :func:`aligngym.envs.data.generate.generate` does.

    ``out`` names the file (default :func:`stochastic_dataset_path`); an existing file is replaced only
    with ``force``. ``options`` are the env's (``p=0.3``, ``success_prob=0.5``). Bad input raises
    :class:`DatasetError` before anything is written.
    """
    task = stochastic_task(env_id)
    if size not in SIZES:
        raise DatasetError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise DatasetError(f"seed must be an integer >= 0, got {seed!r}")
    resolved = task_options(task, **options)
    path = Path(out) if out is not None else stochastic_dataset_path(task, size, seed, **resolved)
    if path.exists() and not path.is_dir() and not force:
        raise DatasetError(f"{path} exists; pass --force to make it again")
    check_writable(path, f" (--out names the dataset file, e.g. {path / 'data.hdf5'})")

    # two independent streams: the env's and the behaviour's (one generator for both would correlate
    # the arm drawn with its reward)
    env_seed, behaviour_seed = (int(s) for s in np.random.SeedSequence(int(seed)).generate_state(2))
    behaviour_rng = np.random.default_rng(behaviour_seed)
    episodes = EPISODES[task][size]
    env = gym.make(task, disable_env_checker=True, **resolved)
    try:
        collect = _bandit_episodes if task == bandit.ENV_ID else _lake_episodes
        arrays, behaviour = collect(env, resolved, episodes, env_seed, behaviour_rng)
    finally:
        env.close()
    arrays["costs"] = np.zeros(len(arrays["rewards"]), dtype=np.float32)
    returns = OfflineDataset(arrays=arrays).episode_returns()
    attrs = {"env_id": task, "size": size, "seed": int(seed), "generator": GENERATOR, "episodes": episodes,
             "options": resolved, **resolved, **behaviour,
             "max_episode_reward": float(returns.max()), "min_episode_reward": float(returns.min())}
    return [write_dataset(path, arrays, attrs)]


def load_stochastic(env_id: str, size: str, seed: int, env: gym.Env | None = None,
                    **options: Any) -> OfflineDataset:
    """The generated dataset of ``env_id`` with ``options`` (a missing file names the command that makes
    it), checked like any dataset (:func:`load_dataset`, against ``env`` when given) and refused when its
    attributes record other option values than those asked for."""
    task = stochastic_task(env_id)
    resolved = task_options(task, **options)
    path = stochastic_dataset_path(task, size, seed, **resolved)
    if not path.exists():
        raise DatasetError(f"dataset file {path} is missing; generate it with: "
                           f"{stochastic_generate_command(task, size, seed, **resolved)}")
    ds = load_dataset(path, env=env)
    for name, value in resolved.items():
        recorded = ds.attrs.get(name)
        if not isinstance(recorded, numbers.Real) or not math.isclose(recorded, value, rel_tol=0, abs_tol=1e-12):
            command = stochastic_generate_command(task, size, seed, **resolved)
            raise DatasetError(f"{path} holds {task} data made with {name}={recorded!r}, not {name}={value!r}; "
                               f"generate it again: {command} --force")
    return ds


__all__ = ["STOCHASTIC_TASKS", "EPISODES", "DEFAULT_OPTIONS", "BEHAVIOUR_EPSILON", "stochastic_task",
           "task_options", "options_kind", "stochastic_dataset_path", "stochastic_generate_command",
           "generate_stochastic", "load_stochastic"]
