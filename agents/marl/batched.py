"""Many seeds of one IPD population game trained in one process, on the batched numpy core.

``SeedBatch`` steps P populations (one per seed) of the same condition in lockstep on one
:class:`~aligngym.envs.cooperation.core.PunishmentCore` with ``B = P``. Every network of every seed is
a row of one stacked :class:`~aligngym.agents.marl.dqn.IndependentDQN`, every replay buffer a row of
one :class:`~aligngym.agents.marl.collector.PopulationReplay`, and after each step one stacked update
trains every network of every population that just stored a transition.

Each population has its own generators (game, exploration, replay sampling, network initialisation)
seeded as a one-seed run's, and every population takes the same steps in the same order (an IPD
episode has the same phases in every population; a bystander who judges both victims of a round
judges the second in one more step, as in ``punishment_v0``, only in the populations where that
happens). So population p's run is exactly the one-seed run of seed p: the same transitions, the same
updates, the same weights (``tests/agents/test_batched.py``), and the same as the PettingZoo
collector's (:class:`~aligngym.agents.marl.collector.PopulationCollector`), whose transition rules
this module applies to arrays:
a transition of agent i's decision d opens when i makes d and closes at i's next decision of kind d,
with the reward d's stream paid i in between (play: payoffs and fines; punish: punisher rewards;
select: payoffs and fines of the game i chose).

Three transitions of the authors' code are built here only (options of the learner, see
``agents/marl/dqn.py``): ``select_every_round``, ``punish_as_bandit`` and ``play_next_state_in_game``.
The centipede, whose games stop at different moves in different populations, trains through the
collector; this module refuses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from aligngym.agents.config import ConfigError
from aligngym.agents.marl.collector import PopulationReplay
from aligngym.agents.marl.dqn import IndependentDQN
from aligngym.agents.train import changed_keys
from aligngym.envs.cooperation.core import PunishmentCore
from aligngym.envs.cooperation.rules import DECISIONS

if TYPE_CHECKING:
    from aligngym.agents.marl.population import Config, EpisodeResult

_SELECT, _PLAY, _PUNISH = range(3)
# config keys that may differ between the seeds of one batch (they do not change what is learned)
_PER_RUN = ("seed", "run_root", "show_progress", "checkpoint_every", "plot_every", "eval_episodes",
            "keep_checkpoints", "threads", "device")


class SeedBatch:
    """P seeds of one IPD condition: the core, the stacked learner and replay, the open transitions."""

    def __init__(self, configs: list[Config], device: torch.device) -> None:
        base = configs[0]
        for other in configs[1:]:
            changed = changed_keys(base, other, ignore=_PER_RUN)
            if changed:
                raise ConfigError(f"the seeds of one batch must share their condition; seed {other.seed} "
                                  f"differs from seed {base.seed} in {', '.join(changed)}")
        if base.env.game != "ipd":
            raise ConfigError("batched seeds need the IPD (a centipede game stops at different moves in "
                              "different populations); train centipede seeds one at a time")
        self.config, self.rules = base, base.env
        self.n_pops, n = len(configs), base.env.n_agents
        # the streams of a one-seed run: game, learners, replay sampling, evaluation games
        streams = [np.random.SeedSequence(c.seed).generate_state(4) for c in configs]
        self.env_seeds = [int(s[0]) for s in streams]
        self.feature_size = max(self.rules.feature_size(d) for d in DECISIONS)
        self.core = PunishmentCore(self.rules, batch_size=self.n_pops)
        self.core.seed_populations(self.env_seeds)
        lc = base.learner
        self.learner = IndependentDQN(lc, self.rules, self.feature_size, [int(s[1]) for s in streams], device)
        self.replay = PopulationReplay({d: getattr(lc, d).buffer_size for d in self.rules.decisions},
                                       n, self.feature_size, [int(s[2]) for s in streams])
        rows = self.learner.n_rows
        self.is_open = np.zeros(rows, dtype=bool)
        self.open_obs = np.zeros((rows, self.feature_size), dtype=np.float32)
        self.open_act = np.zeros(rows, dtype=np.int64)
        self.open_rew = np.zeros(rows)
        self.open_game = np.zeros(rows, dtype=np.int64)
        per_pop = self.learner.rows_per_population
        # rows[p, d, i]: population p's network of decision d for agent i
        self.rows = (np.arange(self.n_pops)[:, None, None] * per_pop
                     + np.arange(len(DECISIONS))[None, :, None] * n + np.arange(n)[None, None, :])
        self.episode = 0
        self._pops = np.arange(self.n_pops)

    # ------------------------------------------------------------------ one step of every population
    def _decide(self, kind: np.ndarray, agents: np.ndarray, feats: np.ndarray, active: np.ndarray | None,
                game: int, explore: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The decisions of one step: slot j of population p is agent ``agents[p, j]``'s decision of
        kind ``kind[j]`` on ``feats[p, j]`` (where ``active``). Acts, closes and opens transitions;
        returns the actions (P, k), the rows that stored a transition and the rows that acted. Each
        population's decisions go in agent order, as the collector's."""
        pops, k = agents.shape
        active = np.ones(agents.shape, bool) if active is None else active
        order = np.argsort(np.where(active, agents, np.iinfo(np.int64).max), axis=1, kind="stable")
        flat = (self._pops[:, None] * k + order)[np.take_along_axis(active, order, axis=1)]
        p, slot = np.divmod(flat, k)
        rows = self.rows[p, kind[slot], agents.reshape(-1)[flat]]
        x = np.zeros((len(flat), self.feature_size), dtype=np.float32)
        width = feats.shape[2]
        x[:, :width] = feats.reshape(pops * k, width)[flat]
        actions = self.learner.act(rows, x, explore)
        games = self.episode * self.rules.n_agents + game
        was_open = self.is_open[rows]
        closing = rows[was_open]
        if len(closing):
            cut = (self.open_game[closing] != games) & (not self.config.learner.bootstrap_across_games)
            self.replay.add_many(closing, self.open_obs[closing], self.open_act[closing],
                                 self.open_rew[closing], cut, x[was_open])
        self.is_open[rows] = True
        self.open_obs[rows], self.open_act[rows] = x, actions
        self.open_rew[rows], self.open_game[rows] = 0.0, games
        out = np.zeros(pops * k, dtype=np.int64)
        out[flat] = actions
        return out.reshape(pops, k), closing, rows

    def _reward(self, kind: int, values: np.ndarray) -> None:
        """Add (P, N) rewards of one stream to the open transitions of decision ``kind``."""
        rows = self.rows[:, kind, :]
        self.open_rew[rows] += np.where(self.is_open[rows], values, 0.0)

    def _learn(self, rows: np.ndarray, losses: list[dict[str, list[float]]] | None) -> None:
        """One stacked update of every network in ``rows`` whose buffer holds a batch."""
        batch = self.config.learner.batch_size
        ready, sampled = self.replay.sample(rows, batch)
        if not len(ready):
            return
        per_row = self.learner.update(ready, sampled)
        if losses is not None:
            per_pop = self.learner.rows_per_population
            for row, loss in zip(ready.tolist(), per_row.tolist()):
                losses[row // per_pop][self.learner.decisions_of_row(row)].append(loss)

    def _step(self, kind: np.ndarray, agents: np.ndarray, feats: np.ndarray, active: np.ndarray | None,
              game: int, explore: bool, learn: bool, losses: Any, apply: Any, at_once: bool = False) -> None:
        """One step: decide, apply the actions to the game (``apply``), learn. ``at_once``: the
        transitions opened in this step are stored now, their own state as the next state."""
        actions, stored, acted = self._decide(kind, agents, feats, active, game, explore)
        apply(actions)
        if at_once:
            stored = np.concatenate([stored, acted])
            self._close_now(acted, self.open_obs[acted])
        if learn and len(stored):
            self._learn(stored, losses)

    def _close_now(self, rows: np.ndarray, obs_next: np.ndarray) -> None:
        """Store the open transitions of ``rows`` (not terminal) and close them."""
        self.replay.add_many(rows, self.open_obs[rows], self.open_act[rows], self.open_rew[rows],
                             np.zeros(len(rows), bool), obs_next)
        self.is_open[rows] = False

    # ------------------------------------------------------------------ episodes
    def play_episode(self, explore: bool, learn: bool, keep_memory: bool,
                     losses: list[dict[str, list[float]]] | None = None) -> None:
        """One episode of every population (``losses[p][decision]`` collects the update losses)."""
        core, rules, n = self.core, self.rules, self.rules.n_agents
        core.reset(keep_memory=keep_memory)
        if not keep_memory and self.is_open.any():  # a fresh game: open transitions end, terminal
            ended = np.flatnonzero(self.is_open)
            self.replay.add_many(ended, self.open_obs[ended], self.open_act[ended], self.open_rew[ended],
                                 np.ones(len(ended), bool), self.open_obs[ended])
            self.is_open[:] = False
            if learn:
                self._learn(ended, losses)
        everyone = np.broadcast_to(np.arange(n), (self.n_pops, n))
        if rules.partner_selection:
            self._step(np.full(n, _SELECT), everyone, core.select_features(), None, 0, explore, learn,
                       losses, core.choose_partners)
        per_agent = core.per_agent
        for game in range(n):
            for round_ in range(rules.rounds_per_game):
                players = core.players(game)

                def play(actions: np.ndarray, game: int = game, players: np.ndarray = players) -> None:
                    payoffs = core.play(game, actions)
                    stream = np.zeros((self.n_pops, n))
                    stream[self._pops[:, None], players] = payoffs
                    self._reward(_PLAY, stream)
                    selection = np.zeros((self.n_pops, n))
                    selection[:, game] = payoffs[:, 0]
                    self._reward(_SELECT, selection)

                self._step(np.full(2, _PLAY), players, core.play_features(game), None, game, explore, learn,
                           losses, play)
                if rules.punishing:
                    self._punish_phase(game, players, explore, learn, losses, per_agent)
                last = round_ + 1 == rules.rounds_per_game
                if self.config.learner.select_every_round and rules.partner_selection:
                    self._selection_round(game, last, learn, losses)
                if last and self.config.learner.play_next_state_in_game:
                    self._end_of_game(game, players, learn, losses)
        self.episode += 1

    def _end_of_game(self, game: int, players: np.ndarray, learn: bool, losses: Any) -> None:
        """The reference's play transition at a game's end: its next state is the same pair's play
        state after the last round (as if the game went on), not the player's next play decision."""
        rows = self.rows[self._pops[:, None], _PLAY, players].reshape(-1)
        feats = self.core.play_features(game)
        obs_next = np.zeros((len(rows), self.feature_size), dtype=np.float32)
        obs_next[:, :feats.shape[2]] = feats.reshape(len(rows), -1)
        self._close_now(rows, obs_next)
        if learn:
            self._learn(rows, losses)

    def _selection_round(self, game: int, last: bool, learn: bool, losses: Any) -> None:
        """The reference's selection transition: after each round of the selector's game, the
        selector's (state, choice) with that round's payoff and fines, the next state its view of
        the reputations now; the selection stays open for the game's next round (not after its last)."""
        rows = self.rows[:, _SELECT, game]
        obs_next = np.zeros((self.n_pops, self.feature_size), dtype=np.float32)
        feats = self.core.select_features()[:, game]
        obs_next[:, :feats.shape[1]] = feats
        self._close_now(rows, obs_next)
        if not last:  # the same (state, choice) again for the game's next round
            self.is_open[rows] = True
            self.open_rew[rows] = 0.0
        if learn:
            self._learn(rows, losses)

    def _punish_phase(self, game: int, players: np.ndarray, explore: bool, learn: bool, losses: Any,
                      per_agent: dict[str, np.ndarray]) -> None:
        """The judgements of one round: direct (each player by its co-player), then third party (each
        by a bystander); a bystander who judges both victims judges the second in a step of its own."""
        core, rules = self.core, self.rules
        slots: list[tuple[str, int]] = []  # (mechanism, victim) in the order they are applied
        agents, feats = [], []
        bystanders = None
        if rules.direct_punishment:
            slots += [("direct", 0), ("direct", 1)]
            agents += [players[:, 1], players[:, 0]]
            f = core.punish_features(players[:, ::-1])
            feats += [f[:, 0], f[:, 1]]
        if rules.third_party_punishment:
            bystanders = core.draw_bystanders()
            slots += [("third_party", 0), ("third_party", 1)]
            agents += [bystanders[:, 0], bystanders[:, 1]]
            f = core.punish_features(bystanders)
            feats += [f[:, 0], f[:, 1]]
        agents_a, feats_a = np.stack(agents, axis=1), np.stack(feats, axis=1)
        later = np.zeros(agents_a.shape, dtype=bool)
        if bystanders is not None:
            later[:, -1] = bystanders[:, 0] == bystanders[:, 1]
        kind = np.full(len(slots), _PUNISH)

        def judge(active: np.ndarray) -> Any:
            def apply(actions: np.ndarray) -> None:
                fine, reward = per_agent["fine"].copy(), per_agent["punisher_reward"].copy()
                for j, (mechanism, victim) in enumerate(slots):
                    if active[:, j].any():
                        core.punish_one(mechanism, victim, actions[:, j].astype(bool), bystanders, active[:, j])
                fine = per_agent["fine"] - fine
                self._reward(_PLAY, fine)
                self._reward(_PUNISH, per_agent["punisher_reward"] - reward)
                selection = np.zeros_like(fine)
                selection[:, game] = fine[:, game]
                self._reward(_SELECT, selection)
            return apply

        bandit = self.config.learner.punish_as_bandit
        self._step(kind, agents_a, feats_a, ~later, game, explore, learn, losses, judge(~later), bandit)
        if later.any():
            self._step(kind, agents_a, feats_a, later, game, explore, learn, losses, judge(later), bandit)

    def results(self, losses: list[dict[str, list[float]]]) -> list[EpisodeResult]:
        """What each population's episode produced, for the run logs."""
        from aligngym.agents.marl.population import episode_results

        return episode_results(self.core, self.learner, losses)

    # ------------------------------------------------------------------ checkpoints (one per seed)
    def population_state(self, p: int) -> dict[str, Any]:
        rows = self.rows[p].reshape(-1)
        return {"step": self.episode, "learner": self.learner.state_dict(p),
                "env": self.core.population_state(p), "replay": self.replay.state_dict(p),
                "transitions": {"open": self.is_open[rows].copy(), "obs": self.open_obs[rows].copy(),
                                "act": self.open_act[rows].copy(), "rew": self.open_rew[rows].copy(),
                                "game": self.open_game[rows].copy()}}

    def load_population_state(self, p: int, state: dict[str, Any]) -> None:
        rows = self.rows[p].reshape(-1)
        self.learner.load_state_dict(state["learner"], p)
        self.core.load_population_state(p, state["env"])
        self.replay.load_state_dict(state["replay"], p)
        t = state["transitions"]
        for dst, key in ((self.is_open, "open"), (self.open_obs, "obs"), (self.open_act, "act"),
                         (self.open_rew, "rew"), (self.open_game, "game")):
            if np.shape(t[key])[0] != len(rows):
                raise ValueError(f"open transitions: {np.shape(t[key])[0]} rows, expected {len(rows)}")
            dst[rows] = t[key]
        self.episode = int(state["step"])
