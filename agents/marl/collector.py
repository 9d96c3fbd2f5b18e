"""Multi-agent rollouts of the cooperation games into per-(agent, decision) tianshou replay buffers.

tianshou's ``PettingZooEnv`` + ``MultiAgentOffPolicyAlgorithm`` store a simultaneous-move game as one
interleaved stream and hand the first agent's rewards to the last agent (see
``../shared/reference/dependency-stack.md`` section 5.6). This collector steps the PettingZoo
``ParallelEnv`` itself and keeps one tianshou ``ReplayBuffer`` per (decision, agent), so that every
transition carries exactly the reward of the agent and decision it belongs to.

A transition of agent i's decision d opens when i makes d and closes at i's next decision of kind d
(possibly in a later episode when the game's memory carries over), with the reward that d's stream
paid i in between: play = payoffs + fines received, punish = punisher rewards, select = payoffs +
fines of the game i chose (``infos[agent]["reward_components"]``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from tianshou.data import Batch, ReplayBuffer

from aligngym.envs.cooperation.punishment_v0 import PHASES
from aligngym.envs.cooperation.rules import DecisionKind

REWARD_STREAMS: dict[str, tuple[str, ...]] = {
    "select": ("selection",), "play": ("play", "fine"), "punish": ("punisher",),
}
_FIELDS = ("obs", "act", "rew", "terminated", "truncated", "done", "obs_next")


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
    """One tianshou ``ReplayBuffer`` per network row, with stacked sampling for batched updates."""

    def __init__(self, sizes: dict[int, int], seed: int) -> None:
        self.buffers = {row: ReplayBuffer(size, random_seed=int(np.random.SeedSequence([seed, row])
                                                                .generate_state(1)[0]))
                        for row, size in sizes.items()}

    def add(self, row: int, obs: np.ndarray, act: int, rew: float, terminated: bool,
            obs_next: np.ndarray) -> None:
        self.buffers[row].add(Batch(obs=obs, act=act, rew=rew, terminated=terminated, truncated=False,
                                    obs_next=obs_next, info={}))

    def __len__(self) -> int:
        return sum(len(b) for b in self.buffers.values())

    def ready(self, rows: list[int], batch_size: int) -> np.ndarray:
        return np.array([r for r in rows if len(self.buffers[r]) >= batch_size], dtype=np.int64)

    def sample(self, rows: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
        """Arrays shaped (len(rows), batch_size, ...) drawn from each row's buffer."""
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "act", "rew", "terminated", "obs_next")}
        for row in rows:
            buf = self.buffers[int(row)]
            idx = buf.sample_indices(batch_size)
            for key in parts:
                parts[key].append(getattr(buf, key)[idx])
        return {k: np.stack(v) for k, v in parts.items()}

    def state_dict(self) -> dict[int, dict[str, Any]]:
        out = {}
        for row, buf in self.buffers.items():
            n = len(buf)
            out[row] = {
                "data": {k: np.asarray(getattr(buf, k)[:n]) if n else np.zeros(0) for k in _FIELDS},
                "insertion_idx": buf._insertion_idx, "size": buf._size,
                "rng": buf._random_state.get_state(legacy=False),
            }
        return out

    def load_state_dict(self, state: dict[int, dict[str, Any]]) -> None:
        for row, s in state.items():
            buf = self.buffers[int(row)]
            buf.reset()
            data = s["data"]
            if len(data["act"]):  # one add allocates the storage; then copy the slots in place
                buf.add(Batch(**{k: data[k][0] for k in _FIELDS}, info={}))
                for k in _FIELDS:
                    getattr(buf._meta, k)[: len(data[k])] = data[k]
            buf._insertion_idx, buf._size = int(s["insertion_idx"]), int(s["size"])
            buf.last_index = np.array([(buf._insertion_idx - 1) % buf.maxsize])
            buf._random_state.set_state(s["rng"])


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
        self.replay.add(row, tr.features, tr.action, tr.reward, terminated, obs_next)

    def run_episode(self, explore: bool, keep_memory: bool, seed: int | None = None,
                    on_stored: Callable[[list[int]], None] | None = None) -> None:
        """Play one episode. ``on_stored(rows)`` is called after each step with the rows that
        received a transition (the trainer does one update for each)."""
        env = self.env
        obs, infos = env.reset(seed=seed, options={"keep_memory": keep_memory})
        if not keep_memory:  # a fresh game: open transitions end here, scripted partners forget
            if hasattr(self.policy, "reset"):
                self.policy.reset()
            ended = list(self.open)
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
