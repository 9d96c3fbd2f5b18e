"""Multi-agent rollouts of the cooperation games through the PettingZoo API, and the replay of every
(agent, decision) network.

tianshou's ``PettingZooEnv`` + ``MultiAgentOffPolicyAlgorithm`` store a simultaneous-move game as one
interleaved stream and hand the first agent's rewards to the last agent (see
``../shared/reference/dependency-stack.md`` section 5.6). This collector steps the PettingZoo
``ParallelEnv`` itself and keeps one replay row per (decision, agent) (:class:`PopulationReplay`), so
that every transition carries exactly the reward of the agent and decision it belongs to. It trains the
centipede and plays every evaluation; the IPD trains on the batched core with the same transition rules
(:mod:`aligngym.agents.marl.batched`).

A transition of agent i's decision d opens when i makes d and closes at i's next decision of kind d
(possibly in a later episode when the game's memory carries over), with the reward that d's stream
paid i in between: play = payoffs + fines received, punish = punisher rewards, select = payoffs +
fines of the game i chose (``infos[agent]["reward_components"]``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from aligngym.agents.marl.dqn import blockwise_uniform
from aligngym.envs.cooperation.punishment_v0 import PHASES
from aligngym.envs.cooperation.rules import DECISIONS, DecisionKind

REWARD_STREAMS: dict[str, tuple[str, ...]] = {
    "select": ("selection",), "play": ("play", "fine"), "punish": ("punisher",),
}


class Policy(Protocol):
    """Maps (decision, agent) to a network row and acts for rows; may also define
    ``observe(infos)``, called after every step, and ``reset()``, called when an episode starts a
    fresh game (scripted partners use them)."""

    def row(self, decision: DecisionKind, agent: int) -> int: ...

    def act(self, rows: np.ndarray, features: np.ndarray, explore: bool) -> np.ndarray: ...


@dataclass
class _Open:
    features: np.ndarray
    action: int
    game: int  # episodes * n_agents + game index: unique over the run
    reward: float = 0.0


class PopulationReplay:
    """Replay of every network row of P populations: preallocated ring buffers, one array per
    decision kind with a row per (population, agent), filled and sampled with whole-array
    operations (no per-transition objects).

    Rows are numbered as the learner's (``p * 3N + d * N + i``: population p, decision d, agent i).
    A transition is one record of ``obs, act, rew, terminated, obs_next`` (float32, side by side: a
    sample is one memory access, not five). A decision's storage starts small and doubles up to its
    capacity (a 2000-episode run fills a fraction of the reference's capacities), then wraps,
    overwriting the oldest transition. Sampling is uniform with replacement over a row's stored
    transitions (the reference samples without replacement), from one generator per population: a
    population draws what it would draw alone.
    """

    def __init__(self, capacities: dict[str, int], n_agents: int, feature_size: int,
                 seeds: Sequence[int]) -> None:
        self.n_agents, self.n_pops, self.feature_size = n_agents, len(seeds), feature_size
        self.capacity = {DECISIONS.index(k): int(c) for k, c in capacities.items()}
        self.rngs = [np.random.default_rng(int(s)) for s in seeds]
        local = self.n_pops * n_agents
        self.ptr = {d: np.zeros(local, dtype=np.int64) for d in self.capacity}
        self.size = {d: np.zeros(local, dtype=np.int64) for d in self.capacity}
        f = feature_size  # record layout: obs [0, f), act f, rew f + 1, terminated f + 2, obs_next [f + 3, 2f + 3)
        self._fields = {"obs": slice(0, f), "act": f, "rew": f + 1, "terminated": f + 2,
                        "obs_next": slice(f + 3, 2 * f + 3)}
        self.data = {d: self._allocate(min(c, 256)) for d, c in self.capacity.items()}

    def _allocate(self, length: int) -> np.ndarray:
        return np.zeros((self.n_pops * self.n_agents, length, 2 * self.feature_size + 3), np.float32)

    def _reserve(self, d: int, length: int) -> np.ndarray:
        """Decision ``d``'s records, doubled until they hold ``length`` (<= capacity) slots per row."""
        while self.data[d].shape[1] < length:
            old = self.data[d]
            self.data[d] = self._allocate(min(2 * old.shape[1], self.capacity[d]))
            self.data[d][:, :old.shape[1]] = old
        return self.data[d]

    def _split(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Decision index and local row (``p * N + i``) of each row."""
        n = self.n_agents
        per_pop = len(DECISIONS) * n
        return (rows % per_pop) // n, rows // per_pop * n + rows % n

    def _unpack(self, records: np.ndarray) -> dict[str, np.ndarray]:
        out = {key: records[..., at] for key, at in self._fields.items()}
        out["act"] = out["act"].astype(np.int64)
        out["terminated"] = out["terminated"] > 0.5
        return out

    def add_many(self, rows: np.ndarray, obs: np.ndarray, act: np.ndarray, rew: np.ndarray,
                 terminated: np.ndarray, obs_next: np.ndarray) -> None:
        """Store one transition for each of ``rows`` (distinct rows)."""
        rows = np.asarray(rows, dtype=np.int64)
        kinds, local = self._split(rows)
        records = np.concatenate([obs, np.asarray(act)[:, None], np.asarray(rew)[:, None],
                                  np.asarray(terminated)[:, None], obs_next], axis=1, dtype=np.float32)
        for d in np.unique(kinds):
            pick = kinds == d
            at = local[pick]
            cap, slot = self.capacity[d], self.ptr[d][at]
            self._reserve(d, int(slot.max()) + 1)[at, slot] = records[pick]
            self.ptr[d][at] = (slot + 1) % cap
            self.size[d][at] = np.minimum(self.size[d][at] + 1, cap)

    def sizes(self, rows: np.ndarray) -> np.ndarray:
        kinds, local = self._split(np.asarray(rows, dtype=np.int64))
        out = np.zeros(len(kinds), dtype=np.int64)
        for d in np.unique(kinds):
            out[kinds == d] = self.size[d][local[kinds == d]]
        return out

    def __len__(self) -> int:
        return int(sum(s.sum() for s in self.size.values()))

    def transitions(self, row: int) -> dict[str, np.ndarray]:
        """Row ``row``'s stored transitions, oldest first."""
        (d,), (at,) = self._split(np.array([row]))
        size, ptr = self.size[d][at], self.ptr[d][at]
        order = (np.arange(size) + (ptr if size == self.capacity[d] else 0)) % max(self.capacity[d], 1)
        return self._unpack(self.data[d][at, order])

    def sample(self, rows: list[int] | np.ndarray, batch_size: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(ready, batch)``: the rows of ``rows`` that hold at least ``batch_size`` transitions, and
        arrays shaped (len(ready), batch_size, ...) drawn from each one's transitions (none drawn when
        no row is ready). The draws of a population are one block, in the order its rows come."""
        rows = np.asarray(rows, dtype=np.int64)
        sizes = self.sizes(rows)
        keep = sizes >= batch_size
        rows, sizes = rows[keep], sizes[keep]
        if not len(rows):
            return rows, {}
        kinds, local = self._split(rows)
        pops = rows // (len(DECISIONS) * self.n_agents)
        u = blockwise_uniform(self.rngs, pops, batch_size)
        idx = (u * sizes[:, None]).astype(np.int64)
        records = np.empty((len(rows), batch_size, 2 * self.feature_size + 3), np.float32)
        for d in np.unique(kinds):
            pick = kinds == d
            records[pick] = self.data[d][local[pick, None], idx[pick]]
        return rows, self._unpack(records)

    def state_dict(self, population: int | None = None) -> dict[str, Any]:
        """Everything stored (of one population, as a one-population replay's state, if given)."""
        pops = range(self.n_pops) if population is None else [population]
        at = np.concatenate([np.arange(p * self.n_agents, (p + 1) * self.n_agents) for p in pops])
        out: dict[str, Any] = {"rngs": [self.rngs[p].bit_generator.state for p in pops]}
        for d in self.capacity:
            n = int(self.size[d][at].max(initial=0))
            out[DECISIONS[d]] = {"ptr": self.ptr[d][at].copy(), "size": self.size[d][at].copy(),
                                 "records": self.data[d][at, :n].copy()}
        return out

    def load_state_dict(self, state: dict[str, Any], population: int | None = None) -> None:
        """Restore :meth:`state_dict`'s output (into one population, if given)."""
        pops = range(self.n_pops) if population is None else [population]
        if len(state["rngs"]) != len(pops) or set(state) - {"rngs"} != {DECISIONS[d] for d in self.capacity}:
            raise ValueError("the replay state does not match this game's populations and decisions")
        at = np.concatenate([np.arange(p * self.n_agents, (p + 1) * self.n_agents) for p in pops])
        for d in self.capacity:
            s = state[DECISIONS[d]]
            records = np.asarray(s["records"], dtype=np.float32)
            n = records.shape[1]
            if n > self.capacity[d] or records.shape[::2] != (len(at), 2 * self.feature_size + 3):
                raise ValueError(f"the replay state's {DECISIONS[d]} buffers do not fit this config")
            self._reserve(d, n)[at, :n] = records
            self.ptr[d][at], self.size[d][at] = s["ptr"], s["size"]
        for p, rng_state in zip(pops, state["rngs"]):
            self.rngs[p].bit_generator.state = rng_state


class PopulationCollector:
    """Steps a punishment-game ``ParallelEnv`` with ``policy``; stores transitions in ``replay``."""

    def __init__(self, env: Any, policy: Policy, replay: PopulationReplay,
                 bootstrap_across_games: bool = True) -> None:
        self.env, self.policy, self.replay = env, policy, replay
        self.bootstrap_across_games = bootstrap_across_games
        self.open: dict[int, _Open] = {}
        self.episodes = 0  # episodes played: with the game index it identifies a game across episodes

    def _close(self, row: int, obs_next: np.ndarray, terminated: bool) -> None:
        tr = self.open.pop(row)
        self.replay.add_many(np.array([row]), tr.features[None], np.array([tr.action]), np.array([tr.reward]),
                             np.array([terminated]), obs_next[None])

    def run_episode(self, explore: bool, keep_memory: bool, seed: int | None = None,
                    on_stored: Callable[[list[int]], None] | None = None) -> None:
        """Play one episode. ``on_stored(rows)`` is called after each step with the rows that
        received a transition (the trainer does one update for each)."""
        env = self.env
        obs, infos = env.reset(seed=seed, options={"keep_memory": keep_memory})
        if not keep_memory:  # a fresh game: open transitions end here, scripted partners forget
            if hasattr(self.policy, "reset"):
                self.policy.reset()
            ended = sorted(self.open)
            for row in ended:
                self._close(row, self.open[row].features, terminated=True)
            if on_stored is not None and ended:
                on_stored(ended)
        n_phase = len(PHASES)
        first_game = self.episodes * len(env.possible_agents)
        self.episodes += 1
        observe = getattr(self.policy, "observe", None)
        while env.agents:
            acting = [(i, name, infos[name]["decision"]) for i, name in enumerate(env.possible_agents)
                      if infos[name]["decision"] is not None]
            rows = np.array([self.policy.row(kind, i) for i, _, kind in acting], dtype=np.int64)
            feats = np.stack([obs[name]["observation"][n_phase:] for _, name, _ in acting])
            actions = self.policy.act(rows, feats, explore)
            stored: list[int] = []
            for (i, name, kind), row, f, a in zip(acting, rows, feats, actions):
                game = first_game + infos[name]["game"]
                if row in self.open:
                    crossed = self.open[row].game != game
                    self._close(int(row), f, terminated=crossed and not self.bootstrap_across_games)
                    stored.append(int(row))
                self.open[int(row)] = _Open(f.copy(), int(a), game)
            obs, _, _, _, infos = env.step({name: int(a) for (_, name, _), a in zip(acting, actions)})
            if observe is not None:
                observe(infos)
            for i, name in enumerate(env.possible_agents):
                comps = infos[name]["reward_components"]
                for kind, keys in REWARD_STREAMS.items():
                    tr = self.open.get(self.policy.row(kind, i))
                    if tr is not None:
                        tr.reward += sum(comps[k] for k in keys)
            if on_stored is not None and stored:
                on_stored(stored)

    def state_dict(self) -> dict[str, Any]:
        return {"episodes": self.episodes,
                "open": {row: {"features": t.features, "action": t.action, "game": t.game,
                               "reward": t.reward} for row, t in self.open.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.episodes = int(state["episodes"])
        self.open = {int(row): _Open(np.asarray(t["features"]), int(t["action"]), int(t["game"]),
                                     float(t["reward"])) for row, t in state["open"].items()}
