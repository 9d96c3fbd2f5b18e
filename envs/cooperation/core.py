"""Batched numpy core of the punishment/reputation game: the one source of truth for its rules.

``PunishmentCore`` steps ``B`` independent populations at once. It is decision-based: the caller
hands it arrays of decisions (partner choices, plays, punish / no-punish per victim) and it applies
payoffs, fines, punisher rewards and reputation changes, keeping per-episode counters from which the
``coop/*`` metrics are computed. ``punishment_v0.parallel_env`` is this core with ``B = 1`` plus the
PettingZoo turn structure; ``benchmarks/cooperation_speed.py`` drives it with ``B = 1024``.

Episode structure (reference section 1.3): optional partner selection, then ``n_agents`` games
played in order (game ``g`` is agent ``g``, the selector, against its partner), each of
``rounds_per_game`` rounds. In each round both players move (0 = C, 1 = D); then, for each of the
two players (the *victims* 0 and 1), the co-player may punish it (direct punishment) and a random
bystander may punish it (third-party punishment), applied in that order so fines stack.
Reputations and last moves persist across episodes unless ``reset(keep_memory=False)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from aligngym.envs.cooperation.rules import GameRules

COOPERATE, DEFECT, UNKNOWN = 0, 1, 2

# Per-episode metrics (``coop/<name>`` in TensorBoard); see ``episode_metrics`` for definitions.
METRIC_NAMES = (
    "cooperation_rate",
    "punishment_rate_direct",
    "punishment_rate_third_party",
    "just_punishment_share",
    "antisocial_punishment_rate",
    "deterrence_rate",
    "partner_cooperator_rate",
    "partner_punisher_rate",
    "partner_just_punisher_rate",
    "mean_reward",
    "mean_play_reward",
    "mean_fine",
    "mean_punisher_reward",
    "efficiency",
    "equality",
    "coop_after_partner_c",
    "coop_after_partner_d",
    "in_degree_gini",
    "mean_reputation",
    "mean_game_length",
)

_COUNTERS = ("rounds", "plays", "coops", "direct_decisions", "direct_punishments", "third_party_decisions",
             "third_party_punishments", "just", "unjust", "judged_cooperators", "judged_defectors")
_PER_AGENT = ("play_reward", "fine", "punisher_reward")
_PER_AGENT_COUNTS = ("agent_plays", "agent_coops", "agent_just", "agent_unjust")  # just/unjust: as punisher
_TRACKED = ("plays_after", "coops_after", "punishments", "last_punish", "previous_coop_fraction",
            "previous_last_punish", "previous_just_punisher")


def gini(values: np.ndarray) -> np.ndarray:
    """Gini coefficient along the last axis, in the mean-absolute-difference form normalised by
    the mean *absolute* value, so that negative values (fines) are handled: equal to the usual Gini
    for non-negative values, in [0, 1] always, 0 when all values are equal (or all zero)."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[-1]
    diff = np.abs(values[..., :, None] - values[..., None, :]).sum(axis=(-2, -1))
    denom = 2 * n * np.abs(values).sum(axis=-1)
    return np.where(denom > 0, diff / np.where(denom > 0, denom, 1), 0.0)


def _map_arrays(tree: dict[str, Any], fn: Any) -> dict[str, Any]:
    return {k: _map_arrays(v, fn) if isinstance(v, dict) else fn(v) if isinstance(v, np.ndarray) else v
            for k, v in tree.items()}


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.where(den > 0, num / np.maximum(den, 1), 0.0)


class PunishmentCore:
    """``B`` populations of the game, stepped in lockstep with numpy."""

    def __init__(self, rules: GameRules, batch_size: int = 1, seed: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.rules = rules
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        # one generator per population instead (``seed_populations``): population b then draws
        # exactly what a B = 1 core seeded like it draws, whatever the other populations do
        self.rngs: list[np.random.Generator] | None = None
        n, b = rules.n_agents, batch_size
        self._rows = np.arange(b)
        pay = rules.payoffs
        # payoff[my_action, other_action]
        self._payoff = np.array([[pay.R, pay.S], [pay.T, pay.P]], dtype=np.float64)
        self.reputation = np.zeros((b, n, n))  # reputation[b, viewer, target]
        self.last_action = np.full((b, n), UNKNOWN, dtype=np.int64)
        self.partners = np.zeros((b, n), dtype=np.int64)
        self.round_actions = np.zeros((b, 2), dtype=np.int64)
        self._current_players = np.zeros((b, 2), dtype=np.int64)
        self.counters = {name: np.zeros(b, dtype=np.int64) for name in _COUNTERS}
        self.per_agent = {name: np.zeros((b, n)) for name in _PER_AGENT}
        self.agent_counts = {name: np.zeros((b, n), dtype=np.int64) for name in _PER_AGENT_COUNTS}
        # plays / cooperations by the opponent's last move (C, D, unknown) at the time of play
        self.plays_after = np.zeros((b, 3), dtype=np.int64)
        self.coops_after = np.zeros((b, 3), dtype=np.int64)
        self.punishments = np.zeros((b, n, n), dtype=np.int64)  # [b, punisher, victim], this episode
        self.last_punish = np.full((b, n), -1, dtype=np.int64)  # each agent's last judgement
        # what partners looked like when they were chosen: last episode's cooperation, last judgement
        self.previous_coop_fraction = np.full((b, n), np.nan)
        self.previous_last_punish = np.full((b, n), -1, dtype=np.int64)
        # last episode's punishing: 1 at least as many just as unjust punishments, 0 more unjust, -1 none
        self.previous_just_punisher = np.full((b, n), -1, dtype=np.int64)
        self._adjacency = rules.adjacency
        self._neighbours = rules.neighbours
        self._choices = rules.adjacency.sum(axis=1)
        self.reset(keep_memory=False)

    def seed_populations(self, seeds: list[int]) -> None:
        """Give each population its own generator, seeded with ``seeds[b]``."""
        if len(seeds) != self.batch_size:
            raise ValueError(f"need one seed per population ({self.batch_size}), got {len(seeds)}")
        self.rngs = [np.random.default_rng(int(s)) for s in seeds]

    def _random(self, shape: tuple[int, ...]) -> np.ndarray:
        """Uniform draws shaped (B, *shape): from the shared generator, or one per population."""
        if self.rngs is None:
            return self.rng.random((self.batch_size, *shape))
        return np.stack([g.random(shape) for g in self.rngs])

    # ------------------------------------------------------------------ episode bookkeeping
    def reset(self, keep_memory: bool = False) -> None:
        """Start a new episode. ``keep_memory`` keeps reputations and last moves (the paper's runs)."""
        played = self.agent_counts["agent_plays"]
        self.previous_coop_fraction = np.where(
            played > 0, self.agent_counts["agent_coops"] / np.maximum(played, 1), np.nan)
        self.previous_last_punish = self.last_punish.copy()
        just, unjust = self.agent_counts["agent_just"], self.agent_counts["agent_unjust"]
        self.previous_just_punisher = np.where(just + unjust == 0, -1, (just >= unjust).astype(np.int64))
        if not keep_memory:
            self.reputation[:] = 0.0
            self.last_action[:] = UNKNOWN
            self.last_punish[:] = -1
            self.previous_coop_fraction[:] = np.nan
            self.previous_last_punish[:] = -1
            self.previous_just_punisher[:] = -1
        for arr in (*self.counters.values(), *self.per_agent.values(), *self.agent_counts.values(),
                    self.plays_after, self.coops_after, self.punishments):
            arr[:] = 0
        self.choose_partners(None)

    def choose_partners(self, choice: np.ndarray | None) -> None:
        """Set each selector's partner. ``choice[b, i]`` indexes agent i's possible partners in id
        order (everyone else, or its neighbours in the caveman topology); ``None`` draws partners
        uniformly among them (random matching)."""
        n = self.rules.n_agents
        if choice is None:
            choice = (self._random((n,)) * self._choices).astype(np.int64)
        choice = np.asarray(choice, dtype=np.int64)
        if choice.shape != (self.batch_size, n) or (choice < 0).any() or (choice >= self._choices).any():
            raise ValueError(f"partner choices must have shape {(self.batch_size, n)} with agent i's "
                             f"value in [0, {list(self._choices - 1)}[i]], got {choice!r}")
        self.partners[:] = self._neighbours[np.arange(n)[None, :], choice]

    def players(self, game: int) -> np.ndarray:
        """(B, 2): the selector ``game`` and its partner."""
        return np.stack([np.full(self.batch_size, game), self.partners[:, game]], axis=1)

    # ------------------------------------------------------------------ observations
    def _scaled(self, viewer: np.ndarray, target: np.ndarray) -> np.ndarray:
        return self.reputation[self._rows, viewer, target] * self.rules.reputation_obs_scale

    def select_features(self) -> np.ndarray:
        """(B, N, 1 + D): each agent's view of its own reputation, then of each possible partner's
        in choice order (zero-padded to D, the largest number of possible partners)."""
        n = self.rules.n_agents
        agents = np.arange(n)
        own = self.reputation[:, agents, agents][..., None]
        table = np.where(self._neighbours >= 0, self._neighbours, 0)
        partners = self.reputation[:, agents[:, None], table] * (self._neighbours >= 0)
        return np.concatenate([own, partners], axis=2) * self.rules.reputation_obs_scale

    def play_features(self, game: int) -> np.ndarray:
        """(B, 2, F): ``[opponent's last move, own last move (, opponent rep, own rep)]`` per player."""
        pl = self.players(game)
        feats = []
        for me, opp in ((pl[:, 0], pl[:, 1]), (pl[:, 1], pl[:, 0])):
            f = [self.last_action[self._rows, opp], self.last_action[self._rows, me]]
            if "play" in self.rules.reputation_in:
                f += [self._scaled(me, opp), self._scaled(me, me)]
            feats.append(np.stack(f, axis=1).astype(np.float64))
        return np.stack(feats, axis=1)

    def punish_features(self, punishers: np.ndarray) -> np.ndarray:
        """(B, 2, F) for victims 0 and 1: ``[victim's move, co-player's move (, rep of co-player,
        rep of victim as the punisher sees them)]``. ``punishers`` is (B, 2), one per victim."""
        feats = []
        for victim in (0, 1):
            f = [self.round_actions[:, victim], self.round_actions[:, 1 - victim]]
            if "punish" in self.rules.reputation_in:
                pl = self._current_players
                f += [self._scaled(punishers[:, victim], pl[:, 1 - victim]),
                      self._scaled(punishers[:, victim], pl[:, victim])]
            feats.append(np.stack(f, axis=1).astype(np.float64))
        return np.stack(feats, axis=1)

    # ------------------------------------------------------------------ the rules
    def _add_reputation(self, actor: np.ndarray, delta: np.ndarray) -> None:
        # Societal update: every viewer's score of the actor moves (public views stay identical rows).
        self.reputation[self._rows, :, actor] += delta[:, None]

    def _begin_round(self, game: int) -> np.ndarray:
        pl = self.players(game)
        self._current_players = pl
        if self.rules.reputation and self.rules.reputation_decay < 1.0:
            self.reputation *= self.rules.reputation_decay
        return pl

    def _record_move(self, player: np.ndarray, opponent: np.ndarray, action: np.ndarray,
                     active: np.ndarray) -> None:
        """Counters and reputation for one move per population (``active`` populations only)."""
        r, rows = self.rules, self._rows
        coop = (action == COOPERATE) & active
        opponent_last = self.last_action[rows, opponent]
        np.add.at(self.plays_after, (rows, opponent_last), active)
        np.add.at(self.coops_after, (rows, opponent_last), coop)
        self.agent_counts["agent_plays"][rows, player] += active
        self.agent_counts["agent_coops"][rows, player] += coop
        self.counters["plays"] += active
        self.counters["coops"] += coop
        if r.reputation and r.reputation_source in ("play", "both"):
            self._add_reputation(player, np.where(action == COOPERATE, r.rep_cooperate, r.rep_defect)
                                 * active)

    def play(self, game: int, actions: np.ndarray) -> np.ndarray:
        """IPD: both players of ``game`` move; returns their payoffs (B, 2)."""
        actions = np.asarray(actions, dtype=np.int64)
        if actions.shape != (self.batch_size, 2) or not np.isin(actions, (COOPERATE, DEFECT)).all():
            raise ValueError(f"play actions must have shape {(self.batch_size, 2)} with values 0 (C) "
                             f"or 1 (D), got {actions!r}")
        pl = self._begin_round(game)
        payoffs = np.stack([self._payoff[actions[:, 0], actions[:, 1]],
                            self._payoff[actions[:, 1], actions[:, 0]]], axis=1)
        everyone = np.ones(self.batch_size, dtype=bool)
        for k in (0, 1):
            self._record_move(pl[:, k], pl[:, 1 - k], actions[:, k], everyone)
            self.per_agent["play_reward"][self._rows, pl[:, k]] += payoffs[:, k]
        for k in (0, 1):  # after both moves: each saw the other's previous move
            self.last_action[self._rows, pl[:, k]] = actions[:, k]
        self.round_actions[:] = actions
        self.counters["rounds"] += 1
        return payoffs

    def play_centipede(self, game: int, mover: int, action: np.ndarray,
                       active: np.ndarray | None = None) -> np.ndarray:
        """Centipede: player ``mover`` (0 or 1) of ``game`` continues (C: it pays
        ``centipede_cost``, the other gets ``centipede_gift``) or stops (D: the game ends, no
        payoff). Populations whose game already stopped pass ``active`` False. Returns (B, 2)."""
        action = np.asarray(action, dtype=np.int64)
        active = np.ones(self.batch_size, bool) if active is None else np.asarray(active, bool)
        if action.shape != (self.batch_size,) or not np.isin(action, (COOPERATE, DEFECT)).all():
            raise ValueError(f"a centipede move must have shape {(self.batch_size,)} with values 0 (C) "
                             f"or 1 (D), got {action!r}")
        pl = self._begin_round(game)
        moved = pl[:, mover]
        cont = ((action == COOPERATE) & active).astype(np.float64)
        payoffs = np.zeros((self.batch_size, 2))
        payoffs[:, mover] = -self.rules.centipede_cost * cont
        payoffs[:, 1 - mover] = self.rules.centipede_gift * cont
        self._record_move(moved, pl[:, 1 - mover], action, active)
        for k in (0, 1):
            self.per_agent["play_reward"][self._rows, pl[:, k]] += payoffs[:, k]
        self.last_action[self._rows, moved] = np.where(active, action, self.last_action[self._rows, moved])
        self.round_actions[:, mover] = action
        self.round_actions[:, 1 - mover] = self.last_action[self._rows, pl[:, 1 - mover]]
        self.counters["rounds"] += active
        return payoffs

    def draw_bystanders(self) -> np.ndarray:
        """(B, 2): a random third party for each victim of the current round, drawn from the
        players' neighbourhoods (everyone else in the complete topology), never a player."""
        pl = self._current_players
        candidates = self._adjacency[pl[:, 0]] | self._adjacency[pl[:, 1]]
        candidates[self._rows, pl[:, 0]] = candidates[self._rows, pl[:, 1]] = False
        keys = np.where(candidates, self._random(candidates.shape[1:]), -1.0)
        first = keys.argmax(axis=1)
        if self.rules.third_party_with_replacement:
            keys = np.where(candidates, self._random(candidates.shape[1:]), -1.0)
            second = keys.argmax(axis=1)
        else:  # the second-highest key; the same agent only when it is the sole candidate
            keys[self._rows, first] = -0.5
            second = np.where(candidates.sum(axis=1) > 1, keys.argmax(axis=1), first)
        return np.stack([first, second], axis=1)

    def punish(self, direct: np.ndarray | None, third_party: np.ndarray | None,
               bystanders: np.ndarray | None = None) -> None:
        """Apply this round's punish decisions, (B, 2) booleans per victim: direct (by the victim's
        co-player) first, then third party (by ``bystanders[:, victim]``)."""
        r = self.rules
        if r.direct_punishment and direct is None:
            raise ValueError("direct punishment is on: pass the (B, 2) direct decisions")
        if r.third_party_punishment and (third_party is None or bystanders is None):
            raise ValueError("third-party punishment is on: pass the decisions and the bystanders")
        for mechanism, decisions in (("direct", direct), ("third_party", third_party)):
            if not getattr(r, f"{mechanism}_punishment"):
                continue
            decisions = np.asarray(decisions, dtype=bool)
            if decisions.shape != (self.batch_size, 2):
                raise ValueError(f"{mechanism} decisions must have shape {(self.batch_size, 2)}")
            for victim in (0, 1):
                self.punish_one(mechanism, victim, decisions[:, victim], bystanders)

    def punish_one(self, mechanism: str, victim: int, decision: np.ndarray,
                   bystanders: np.ndarray | None = None, active: np.ndarray | None = None) -> None:
        """Apply one punish decision (B,) about player ``victim`` (0 or 1) of the current round:
        ``mechanism`` "direct" (the co-player judges) or "third_party" (``bystanders[:, victim]``).
        Populations whose ``active`` is False are left as they are (their judgement comes later)."""
        pl = self._current_players
        punisher = pl[:, 1 - victim] if mechanism == "direct" else bystanders[:, victim]
        active = np.ones(self.batch_size, bool) if active is None else np.asarray(active, bool)
        decision = np.asarray(decision, dtype=bool) & active
        self.counters[f"{mechanism}_decisions"] += active
        self.counters[f"{mechanism}_punishments"] += decision
        self._apply_punishment(decision, punisher, pl[:, victim], pl[:, 1 - victim],
                               self.round_actions[:, victim] == DEFECT, active)

    def _apply_punishment(self, act: np.ndarray, punisher: np.ndarray, victim: np.ndarray,
                          coplayer: np.ndarray, just: np.ndarray, active: np.ndarray) -> None:
        r = self.rules
        rows = self._rows
        done = act.astype(np.float64)
        self.per_agent["fine"][rows, victim] -= r.fine * done
        self.per_agent["punisher_reward"][rows, punisher] += np.where(
            just, r.just_reward, r.unjust_punish_reward) * done
        self.counters["just"] += act & just
        self.counters["unjust"] += act & ~just
        np.add.at(self.agent_counts["agent_just"], (rows, punisher), act & just)
        np.add.at(self.agent_counts["agent_unjust"], (rows, punisher), act & ~just)
        self.counters["judged_defectors"] += just & active
        self.counters["judged_cooperators"] += ~just & active
        self.last_punish[rows, punisher] = np.where(active, act, self.last_punish[rows, punisher])
        np.add.at(self.punishments, (rows, punisher, victim), act)
        if not r.reputation:
            return
        if r.reputation_source in ("punish", "both"):
            self._add_reputation(punisher, np.where(just, r.rep_just_punish, r.rep_unjust_punish) * done)
        if r.reputation_view == "private":
            self.reputation[rows, victim, punisher] += r.rep_persecutor * done
            avenged = done * just * (coplayer != punisher)
            self.reputation[rows, coplayer, punisher] += r.rep_avenger * avenged

    # ------------------------------------------------------------------ metrics and state
    def episode_returns(self) -> np.ndarray:
        """(B, N): each agent's total reward so far this episode (payoffs + fines + punisher rewards)."""
        return sum(self.per_agent.values())

    def selections(self) -> np.ndarray:
        """(B, N, N): ``[b, chooser, chosen]`` = 1 for this episode's partner choices."""
        out = np.zeros((self.batch_size, self.rules.n_agents, self.rules.n_agents), dtype=np.int64)
        out[self._rows[:, None], np.arange(self.rules.n_agents)[None, :], self.partners] = 1
        return out

    def episode_metrics(self) -> dict[str, np.ndarray]:
        """The metrics of the episode so far, each of shape (B,); rates are 0 when undefined.

        cooperation_rate: C / plays. punishment_rate_direct / _third_party: punishments / decisions
        of that mechanism. just_punishment_share: punishments of defectors / all punishments.
        antisocial_punishment_rate: P(punish | the judged player cooperated). deterrence_rate:
        P(punish | the judged player defected). partner_cooperator_rate: share of partner choices
        whose partner cooperated in at least half of its plays last episode (the authors' ``coops >=
        defects``); partner_punisher_rate: share whose partner punished at its last judgement before
        this episode; partner_just_punisher_rate: share whose partner punished last episode, at
        least as often justly as unjustly (the authors' ``find_just_punish_select_per_ep``, over all
        choices; with both mechanisms their counts are summed). mean_reward (total) and
        its components mean_play_reward, mean_fine, mean_punisher_reward, per agent. efficiency:
        total reward of all agents per round. equality: 1 - gini(returns). coop_after_partner_c /
        _d: P(C | the opponent's last move was C / D). in_degree_gini: gini of how often each agent
        was chosen (ostracism). mean_reputation: mean score over all views. mean_game_length:
        rounds (centipede: moves) per game."""
        c = self.counters
        returns = self.episode_returns()
        n = self.rules.n_agents
        cooperator = np.take_along_axis(self.previous_coop_fraction, self.partners, axis=1) >= 0.5
        punisher = np.take_along_axis(self.previous_last_punish, self.partners, axis=1) == 1
        just_punisher = np.take_along_axis(self.previous_just_punisher, self.partners, axis=1) == 1
        return {
            "cooperation_rate": _ratio(c["coops"], c["plays"]),
            "punishment_rate_direct": _ratio(c["direct_punishments"], c["direct_decisions"]),
            "punishment_rate_third_party": _ratio(c["third_party_punishments"],
                                                  c["third_party_decisions"]),
            "just_punishment_share": _ratio(c["just"], c["just"] + c["unjust"]),
            "antisocial_punishment_rate": _ratio(c["unjust"], c["judged_cooperators"]),
            "deterrence_rate": _ratio(c["just"], c["judged_defectors"]),
            "partner_cooperator_rate": cooperator.mean(axis=1),
            "partner_punisher_rate": punisher.mean(axis=1),
            "partner_just_punisher_rate": just_punisher.mean(axis=1),
            "mean_reward": returns.mean(axis=1),
            "mean_play_reward": self.per_agent["play_reward"].mean(axis=1),
            "mean_fine": self.per_agent["fine"].mean(axis=1),
            "mean_punisher_reward": self.per_agent["punisher_reward"].mean(axis=1),
            "efficiency": _ratio(returns.sum(axis=1), c["rounds"]),
            "equality": 1.0 - gini(returns),
            "coop_after_partner_c": _ratio(self.coops_after[:, COOPERATE], self.plays_after[:, COOPERATE]),
            "coop_after_partner_d": _ratio(self.coops_after[:, DEFECT], self.plays_after[:, DEFECT]),
            "in_degree_gini": gini(np.stack([(self.partners == j).sum(axis=1) for j in range(n)], axis=1)),
            "mean_reputation": self.reputation.mean(axis=(1, 2)),
            "mean_game_length": c["rounds"] / n,
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (numpy arrays and the RNG state)."""
        return {
            "reputation": self.reputation.copy(), "last_action": self.last_action.copy(),
            "partners": self.partners.copy(), "round_actions": self.round_actions.copy(),
            "current_players": self._current_players.copy(),
            "counters": {k: v.copy() for k, v in self.counters.items()},
            "per_agent": {k: v.copy() for k, v in self.per_agent.items()},
            "agent_counts": {k: v.copy() for k, v in self.agent_counts.items()},
            **{k: getattr(self, k).copy() for k in _TRACKED},
            "rng": self.rng.bit_generator.state,
            **({} if self.rngs is None else {"rngs": [g.bit_generator.state for g in self.rngs]}),
        }

    def population_state(self, b: int) -> dict[str, Any]:
        """Population ``b``'s state, as a one-population core's :meth:`state_dict`."""
        full = self.state_dict()
        full.pop("rngs", None)
        out = _map_arrays(full, lambda a: a[b:b + 1].copy())
        out["rng"] = (self.rng if self.rngs is None else self.rngs[b]).bit_generator.state
        return out

    def load_population_state(self, b: int, state: dict[str, Any]) -> None:
        """Put a one-population state (:meth:`population_state`) into population ``b``."""
        full = self.state_dict()

        def put(dst: dict[str, Any], src: dict[str, Any]) -> None:
            for key, value in dst.items():
                if isinstance(value, dict):
                    put(value, src[key])
                elif isinstance(value, np.ndarray):
                    value[b] = np.asarray(src[key])[0]
        put({k: v for k, v in full.items() if k not in ("rng", "rngs")}, state)
        if self.rngs is None:
            full["rng"] = state["rng"]
        else:
            full["rngs"][b] = state["rng"]
        self.load_state_dict(full)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("reputation", "last_action", "partners", "round_actions"):
            getattr(self, key)[:] = state[key]
        self._current_players[:] = state["current_players"]
        for key, value in state["counters"].items():
            self.counters[key][:] = value
        for key, value in state["per_agent"].items():
            self.per_agent[key][:] = value
        for key, value in state["agent_counts"].items():
            self.agent_counts[key][:] = value
        for key in _TRACKED:
            if key not in state:  # a checkpoint from before the key existed: it starts unset
                continue
            setattr(self, key, np.array(state[key], dtype=getattr(self, key).dtype))
        self.rng.bit_generator.state = state["rng"]
        if "rngs" in state:
            self.rngs = [np.random.default_rng() for _ in state["rngs"]]
            for g, s in zip(self.rngs, state["rngs"]):
                g.bit_generator.state = s
