"""Iterated Prisoner's Dilemma population with punishment, reputation and partner selection.

After Dasgupta & Musolesi, "Investigating the Impact of Direct Punishment on the Emergence of
Cooperation in Multi-Agent Reinforcement Learning Systems" (rules as in their replication code; see
``../shared/reference/cooperation-punishment.md`` sections 1.2-1.10). The rules live in
:class:`~aligngym.envs.cooperation.core.PunishmentCore`; this module is that core with ``B = 1``
and PettingZoo's turn structure on top.

=====================  =========================================================================
Agents                 ``player_0 .. player_{N-1}`` (N = ``n_agents``, default 5)
Action space           ``Discrete(max(D, 2))`` for every agent (D = most possible partners: N - 1,
                       or the largest degree in the caveman topology), masked by phase:
                       select: index into the agent's possible partners in id order;
                       play: 0 = cooperate, 1 = defect; punish: 0 = abstain, 1 = punish;
                       an agent without a decision this step must pass the no-op 0 (or nothing)
Observation            ``Dict(observation=Box(4 + F), action_mask=Box(int8, A))``: a one-hot of the
                       agent's phase (idle, select, play, punish), then its decision's features
                       zero-padded to F = max(1 + D, 2 + 2 r) (r = 1 if ``reputation_in``
                       names a decision, else 0):
                       select: own reputation, then each possible partner's, as this agent sees
                       them (length 1 + D; the reference feeds all N scores in id order);
                       play: [opponent's last move, own last move] (0 C, 1 D, 2 unknown)
                       (+ [opponent rep, own rep] if "play" in ``reputation_in``);
                       punish: [victim's move, co-player's move] (+ [co-player rep, victim rep]
                       if "punish" in ``reputation_in``)
Phases (one step each) ``select`` (all agents, once per episode, if ``partner_selection``), then
                       for each of the N games (selector g vs its partner) and each round:
                       ``play`` (the two players), ``punish`` (the co-players judging each other
                       and one bystander per victim; if one bystander judges both victims the
                       second judgement takes one more ``punish`` step)
Reward                 per step: stage payoff (R, S, T, P default 3, 0, 4, 1) + fines received
                       (-``fine``, default 3) + punisher rewards (just +2, costly -3,
                       unjust -10). ``infos[agent]["reward_components"]`` splits it into
                       ``play``, ``fine``, ``punisher`` and ``selection`` (the part of play + fine
                       earned in the game this agent chose; a view, not extra reward)
Termination            never; every agent is truncated after the episode's last step
reset options          ``{"keep_memory": True}`` keeps reputations and last moves from the
                       previous episode (the paper's continuing runs); default False; any other
                       key is ignored with a warning
Render modes           ``ansi`` (text), ``rgb_array`` (agents as tiles: colour = last move,
                       bar = reputation, white frame = current players)
Game                   ``ipd`` (default): each round both players move. ``centipede``: the players
                       move alternately (selector first), up to ``rounds_per_game`` rounds of
                       two moves (the selector's, then its partner's: 20 moves by default); C
                       (continue) costs the mover ``centipede_cost`` (1) and gives the other
                       ``centipede_gift`` (5), D stops the game; only the mover can be punished
Topology               ``complete`` (anyone meets anyone) or ``caveman`` (``caveman_groups``
                       cliques joined in a ring, networkx's connected caveman graph): partners and
                       third parties come from the players' neighbourhoods
Reputation             an image score per agent (C +1, D -1, just punishment +2, unjust -3),
                       public (one score) or private (per-agent views; a victim's view of its
                       punisher -5, a co-player's view of a just punisher +5); cumulative by
                       default (``reputation_decay`` < 1 multiplies all scores by it every round);
                       observed times ``reputation_obs_scale``
Invalid options        ``ValueError`` naming the option: unknown keys, out-of-range numbers,
                       combinations that cannot work (``partner_selection`` without
                       ``reputation``), ``True`` for a number or a non-bool for a switch, and a
                       non-default value for a setting this game never reads (``fine`` without
                       punishment, ``rep_avenger`` without private views)
=====================  =========================================================================

Differences from the reference code: the PettingZoo reward is the sum of all components, where the
reference trains its punish networks on the punisher reward alone (``reward_components`` keeps them
apart, and AlignGym's learners use them so); an agent chosen by several selectors plays its games one
after another, as in the reference; the order DP-then-TPP and bystanders drawn with replacement
follow the reference. In the centipede a player's play reward is what it earns from one move to its
next (its move's cost, the co-player's gift, fines); the reference hands its play network the mover's running
cumulative reward of the game instead (a quirk not reproduced).
Additions the reference lacks: the no-mechanism baseline, ``reputation_decay`` and
``reputation_obs_scale`` (the paper feeds the raw cumulative score to its networks).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pettingzoo.utils import wrappers
from pettingzoo.utils.conversions import parallel_to_aec

from aligngym.envs.cooperation.core import PunishmentCore
from aligngym.envs.cooperation.rules import DECISIONS, DecisionKind, GameRules

PHASES = ("idle", *DECISIONS)
COMPONENTS = ("play", "fine", "punisher", "selection")


def integer_action(raw: Any) -> int | None:
    """``raw`` as an int if it is one integer (Python or numpy scalar, 0-d array), else None."""
    arr = np.asarray(raw)
    if arr.shape != () or not np.issubdtype(arr.dtype, np.integer):
        return None
    return int(arr)


@dataclass(frozen=True)
class Decision:
    """One pending decision: who decides, what, and (for punish) which victim by which mechanism."""

    agent: int
    kind: DecisionKind
    features: np.ndarray
    victim: int = -1  # punish: 0 or 1
    mechanism: str = ""  # punish: "direct" or "third_party"


class raw_env(ParallelEnv):  # noqa: N801 (PettingZoo naming)
    """The parallel game. Build it with :func:`parallel_env` or :func:`env`. (In most PettingZoo
    modules ``raw_env`` is the AEC class; here the game is parallel at heart and :func:`env` wraps it
    with ``parallel_to_aec``. Render modes are ``ansi`` and ``rgb_array``: PettingZoo's
    ``render_test``, which asks for ``human``, needs ``render_mode=None`` mapped in its place.)"""

    metadata = {"name": "punishment_v0", "render_modes": ["ansi", "rgb_array"],
                "is_parallelizable": True, "render_fps": 4}

    def __init__(self, render_mode: str | None = None, rules: GameRules | dict | None = None,
                 **rule_fields: Any) -> None:
        if rules is not None and rule_fields:
            raise ValueError("pass either rules=GameRules(...) (or a dict of its fields) or keyword rule "
                             "fields, not both")
        if rules is not None and not isinstance(rules, (GameRules, dict)):
            raise TypeError(f"rules must be a GameRules or a dict of its fields, not {type(rules).__name__}")
        self.rules = GameRules.model_validate(rules if rules is not None else rule_fields)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, "
                             f"got {render_mode!r}")
        self.render_mode = render_mode
        n = self.rules.n_agents
        self.possible_agents = [f"player_{i}" for i in range(n)]
        self.agents: list[str] = []
        self.n_actions = max(self.rules.n_actions(d) for d in DECISIONS)
        self.feature_size = max(self.rules.feature_size(d) for d in DECISIONS)
        self.core = PunishmentCore(self.rules, batch_size=1)
        obs_space = spaces.Dict({
            "observation": spaces.Box(-np.inf, np.inf, (len(PHASES) + self.feature_size,), np.float32),
            "action_mask": spaces.Box(0, 1, (self.n_actions,), np.int8),
        })
        self._observation_spaces = {a: obs_space for a in self.possible_agents}
        self._action_spaces = {a: spaces.Discrete(self.n_actions) for a in self.possible_agents}
        self._queue: list[Decision] = []
        self._current: dict[int, Decision] = {}
        self._answers: list[tuple[Decision, int]] = []
        self._order: list[Decision] = []
        self._phase, self._game, self._round = "idle", 0, 0
        self._stopped = False  # centipede: the current game was stopped
        self._bystanders = np.zeros((1, 2), dtype=np.int64)

    def observation_space(self, agent: str) -> spaces.Space:
        return self._observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self._action_spaces[agent]

    # ------------------------------------------------------------------ phases
    def _start_phase(self, phase: str) -> None:
        self._phase, core = phase, self.core
        if phase == "select":
            feats = core.select_features()[0]
            self._queue = [Decision(i, "select", feats[i]) for i in range(self.rules.n_agents)]
        elif phase == "play":
            pl, feats = core.players(self._game)[0], core.play_features(self._game)[0]
            self._queue = [Decision(int(pl[k]), "play", feats[k]) for k in self._movers()]
        else:
            pl = core.players(self._game)[0]
            victims = self._movers()
            self._queue = []
            if self.rules.direct_punishment:
                punishers = pl[::-1][None]
                feats = core.punish_features(punishers)[0]
                self._queue += [Decision(int(pl[1 - k]), "punish", feats[k], k, "direct") for k in victims]
            if self.rules.third_party_punishment:
                self._bystanders = core.draw_bystanders()
                feats = core.punish_features(self._bystanders)[0]
                self._queue += [Decision(int(self._bystanders[0, k]), "punish", feats[k], k,
                                         "third_party") for k in victims]
        self._answers = []
        self._order = list(self._queue)
        self._take_next_decisions()

    def _movers(self) -> tuple[int, ...]:
        """Who moves now (and may be punished): both players in the IPD; in the centipede the
        selector on even moves, its partner on odd ones (``_round`` counts moves there)."""
        return (0, 1) if self.rules.game == "ipd" else (self._round % 2,)

    def _take_next_decisions(self) -> None:
        """Move the leading decisions of distinct agents from the queue to this step."""
        self._current, rest = {}, []
        for d in self._queue:
            if d.agent in self._current:
                rest.append(d)
            else:
                self._current[d.agent] = d
        self._queue = rest

    def _resolve_phase(self, rewards: np.ndarray) -> None:
        """Apply the collected decisions of the phase; add each agent's reward components."""
        core, g = self.core, self._game
        if self._phase == "select":
            choice = np.zeros((1, self.rules.n_agents), dtype=np.int64)
            for d, a in self._answers:
                choice[0, d.agent] = a
            core.choose_partners(choice)
            return
        pl = core.players(g)[0]
        if self._phase == "play":
            if self.rules.game == "centipede":
                (_, action), = self._answers
                pay = core.play_centipede(g, self._movers()[0], np.array([action]))[0]
                self._stopped = action == 1
            else:
                acts = np.zeros((1, 2), dtype=np.int64)
                for d, a in self._answers:
                    acts[0, 0 if d.agent == pl[0] else 1] = a
                pay = core.play(g, acts)[0]
            rewards[pl, 0] += pay
            rewards[g, 3] += pay[0]

    def _apply_punishments(self, answers: list[tuple[Decision, int]], rewards: np.ndarray) -> None:
        core, g = self.core, self._game
        before = {k: core.per_agent[k][0].copy() for k in ("fine", "punisher_reward")}
        for d, a in answers:
            core.punish_one(d.mechanism, d.victim, np.array([bool(a)]), self._bystanders)
        fine = core.per_agent["fine"][0] - before["fine"]
        rewards[:, 1] += fine
        rewards[:, 2] += core.per_agent["punisher_reward"][0] - before["punisher_reward"]
        rewards[g, 3] += fine[g]

    def _advance(self) -> bool:
        """Go to the next phase; False when the episode is over."""
        if self._phase == "play" and self.rules.punishing:
            self._start_phase("punish")
            return True
        if self._phase in ("play", "punish"):
            self._round += 1
            if self._round == self.rules.moves_per_game or self._stopped:
                self._game, self._round, self._stopped = self._game + 1, 0, False
            if self._game == self.rules.n_agents:
                self._phase, self._current = "idle", {}
                return False
        self._start_phase("play")
        return True

    # ------------------------------------------------------------------ PettingZoo API
    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.core.rng = np.random.default_rng(seed)
        if options is not None and not isinstance(options, dict):
            raise TypeError(f"reset options must be a dict, not {type(options).__name__}")
        unknown = sorted(set(options or {}) - {"keep_memory"})
        if unknown:  # PettingZoo's API test passes options of its own: a warning, not an error
            warnings.warn(f"reset ignores unknown option(s) {unknown}; the only option is keep_memory",
                          stacklevel=2)
        keep = (options or {}).get("keep_memory", False)
        if not isinstance(keep, (bool, np.bool_)):
            raise TypeError(f"reset option keep_memory must be true or false, not {keep!r}")
        self.core.reset(keep_memory=keep)
        self.agents = list(self.possible_agents)
        self._game = self._round = 0
        self._stopped = False
        self._start_phase("select" if self.rules.partner_selection else "play")
        zero = np.zeros((self.rules.n_agents, len(COMPONENTS)))
        return self._observations(), self._infos(zero)

    def step(self, actions: dict[str, Any]):
        if not self.agents:
            raise RuntimeError("punishment_v0: step() called before reset() or after the episode ended; call reset()")
        if not isinstance(actions, dict):
            raise TypeError(f"punishment_v0: actions must be a dict agent -> int, got {type(actions)}")
        unknown = [a for a in actions if a not in self.agents]
        if unknown:
            raise ValueError(f"punishment_v0: unknown agent(s) {unknown}; live agents are {self.agents}")
        answers = [answer for name in self.agents
                   if (answer := self.check_action(name, actions.get(name))) is not None]
        # keep the queue's order (direct before third party, victim 0 before victim 1)
        by_id = {id(d): (d, a) for d, a in answers}
        answers = [by_id[id(d)] for d in self._order if id(d) in by_id]
        self._answers.extend(answers)

        rewards = np.zeros((self.rules.n_agents, len(COMPONENTS)))
        running = True
        if self._phase == "punish":  # each punish step pays its own punisher rewards and fines
            self._apply_punishments(answers, rewards)
        if self._queue:
            self._take_next_decisions()
        else:
            self._resolve_phase(rewards)
            running = self._advance()
        obs = self._observations()
        infos = self._infos(rewards)
        total = rewards[:, :3].sum(axis=1)
        rew = {a: float(total[i]) for i, a in enumerate(self.agents)}
        terms = {a: False for a in self.agents}
        truncs = {a: not running for a in self.agents}
        if not running:
            self.agents = []
        return obs, rew, terms, truncs, infos

    def check_action(self, name: str, raw: Any) -> tuple[Decision, int] | None:
        """``name``'s decision and its action this step (None: no decision, the no-op); a ValueError
        for a missing, non-integer or illegal one."""
        decision = self._current.get(int(name.rsplit("_", 1)[1]))
        if decision is None:
            if raw is not None and self._as_action(name, raw) != 0:
                raise ValueError(f"punishment_v0: {name} has no decision in phase "
                                 f"'{self._phase}'; only the no-op action 0 is allowed, got {raw!r}")
            return None
        if raw is None:
            raise ValueError(f"punishment_v0: {name} must act in phase '{self._phase}' "
                             f"({decision.kind}); allowed actions {self._allowed(decision)}")
        action = self._as_action(name, raw)
        if action not in self._allowed(decision):
            raise ValueError(f"punishment_v0: illegal action {action} for {name} in phase "
                             f"'{self._phase}' ({decision.kind}); allowed actions "
                             f"{self._allowed(decision)}")
        return decision, action

    def _as_action(self, name: str, raw: Any) -> int:
        action = integer_action(raw)
        if action is None:
            raise ValueError(f"punishment_v0: action for {name} in phase '{self._phase}' must be an "
                             f"integer, got {raw!r}")
        return action

    def _allowed(self, decision: Decision) -> list[int]:
        return list(range(self.rules.n_choices(decision.kind, decision.agent)))

    def _observations(self) -> dict[str, dict[str, np.ndarray]]:
        out = {}
        for i, name in enumerate(self.possible_agents):
            vec = np.zeros(len(PHASES) + self.feature_size, dtype=np.float32)
            mask = np.zeros(self.n_actions, dtype=np.int8)
            decision = self._current.get(i)
            if decision is None:
                vec[0], mask[0] = 1.0, 1
            else:
                vec[PHASES.index(decision.kind)] = 1.0
                vec[len(PHASES):len(PHASES) + decision.features.size] = decision.features
                mask[:self.rules.n_choices(decision.kind, i)] = 1
            out[name] = {"observation": vec, "action_mask": mask}
        return out

    def _infos(self, rewards: np.ndarray) -> dict[str, dict[str, Any]]:
        out = {}
        for i, name in enumerate(self.possible_agents):
            d = self._current.get(i)
            out[name] = {
                "phase": self._phase,
                "decision": None if d is None else d.kind,
                "mechanism": None if d is None else (d.mechanism or None),
                "game": self._game,
                "reward_components": dict(zip(COMPONENTS, map(float, rewards[i]))),
            }
        return out

    # ------------------------------------------------------------------ rendering
    def render(self) -> str | np.ndarray | None:
        if self.render_mode is None:
            return None
        if self.render_mode == "ansi":
            return self._render_text()
        return self._render_image()

    def _render_text(self) -> str:
        core = self.core
        moves = "CD?"
        pl = core.players(self._game)[0] if self._phase != "idle" else ()
        lines = [f"punishment_v0  game {self._game} round {self._round} phase {self._phase}"]
        for i, name in enumerate(self.possible_agents):
            mark = "*" if i in pl else " "
            rep = core.reputation[0, :, i].mean()
            lines.append(f"{mark} {name:<10} last={moves[core.last_action[0, i]]} "
                         f"rep={rep:+8.1f} partner=player_{core.partners[0, i]}")
        return "\n".join(lines)

    def _render_image(self) -> np.ndarray:
        core, n, tile = self.core, self.rules.n_agents, 48
        img = np.zeros((tile * 2, tile * n, 3), dtype=np.uint8)
        colours = np.array([[40, 170, 60], [200, 50, 50], [110, 110, 110]], dtype=np.uint8)
        rep = core.reputation[0].mean(axis=0)
        scale = max(np.abs(rep).max(), 1.0)
        pl = core.players(self._game)[0] if self._phase != "idle" else ()
        for i in range(n):
            x = i * tile
            img[4:tile - 4, x + 4:x + tile - 4] = colours[core.last_action[0, i]]
            if i in pl:
                img[0:2, x:x + tile] = img[tile - 2:tile, x:x + tile] = 255
                img[0:tile, x:x + 2] = img[0:tile, x + tile - 2:x + tile] = 255
            height = int(abs(rep[i]) / scale * (tile - 8))
            colour = (80, 140, 230) if rep[i] >= 0 else (230, 150, 40)
            img[2 * tile - 4 - height:2 * tile - 4, x + tile // 3:x + 2 * tile // 3] = colour
        return img

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The core's state between episodes (for exact resumption of training)."""
        return self.core.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.core.load_state_dict(state)


def parallel_env(render_mode: str | None = None, **rule_fields: Any) -> raw_env:
    """The primary form: a PettingZoo ``ParallelEnv``."""
    return raw_env(render_mode=render_mode, **rule_fields)


class _CheckedAEC(wrappers.BaseWrapper):
    """Checks each agent's action on its own AEC step: ``parallel_to_aec`` keeps the actions until the
    last agent's step, so a bad one would be reported on another agent's turn."""

    def step(self, action: Any) -> None:
        name = self.agent_selection
        if not (self.terminations.get(name) or self.truncations.get(name)):
            self.unwrapped.check_action(name, action)  # the parallel env
        elif action is not None:  # refused before PettingZoo's step, which would half-apply it
            raise ValueError(f"{name} is done (terminated or truncated): step(None) removes it")
        super().step(action)


def env(render_mode: str | None = None, **rule_fields: Any):
    """The AEC form (``parallel_to_aec`` of :func:`parallel_env`; each action checked on its step)."""
    return wrappers.OrderEnforcingWrapper(_CheckedAEC(parallel_to_aec(parallel_env(render_mode, **rule_fields))))
