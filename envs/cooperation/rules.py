"""The rules of the punishment/reputation game, as one validated, typed object.

Defaults are the values of Dasgupta & Musolesi's replication code (see
``../shared/reference/cooperation-punishment.md`` sections 1.2-1.10). With every mechanism off the
game is a plain random-matching iterated Prisoner's Dilemma population.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from aligngym.envs.checks import loose_scalars

DecisionKind = Literal["select", "play", "punish"]
DECISIONS: tuple[DecisionKind, ...] = ("select", "play", "punish")


@lru_cache(maxsize=64)
def _topology(topology: str, n: int, groups: int) -> tuple[np.ndarray, np.ndarray]:
    adj = ~np.eye(n, dtype=bool)
    if topology == "caveman":
        size = n // groups
        group = np.arange(n) // size
        adj &= group[:, None] == group[None, :]
        for start in range(0, n, size):
            adj[start, start + 1] = adj[start + 1, start] = False
            adj[start, (start - 1) % n] = adj[(start - 1) % n, start] = True
    degree = adj.sum(axis=1)
    table = np.full((n, int(degree.max())), -1, dtype=np.int64)
    for i, row in enumerate(adj):
        ids = np.flatnonzero(row)
        table[i, :len(ids)] = ids
    adj.setflags(write=False)
    table.setflags(write=False)
    return adj, table


class _Settings(BaseModel):
    """Frozen, no unknown keys, no inf/NaN, and no ``True`` for a number or 1 for a flag."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_loose_scalars(cls, data: Any) -> Any:
        loose = loose_scalars(cls, data)
        if loose:
            raise ValueError("; ".join(loose))
        return data


class Payoffs(_Settings):
    """Row player's payoff in the Prisoner's Dilemma (T > R > P > S makes it a dilemma)."""

    R: float = 3.0  # reward: both cooperate
    S: float = 0.0  # sucker: I cooperate, the partner defects
    T: float = 4.0  # temptation: I defect, the partner cooperates
    P: float = 1.0  # punishment: both defect


class GameRules(_Settings):
    """Every switch and number of the game. Invalid combinations raise ``ValueError``, and so does
    a setting given a value other than its default where the game never uses it (``fine`` without
    punishment, ``rep_avenger`` without private reputation views, ...)."""

    n_agents: int = Field(5, ge=3, le=64)  # population size (>= 3 so a third party exists)
    game: Literal["ipd", "centipede"] = "ipd"  # the pairwise game
    rounds_per_game: int = Field(10, ge=1)  # rounds per game (centipede: a round is two moves, see moves_per_game)
    payoffs: Payoffs = Payoffs()  # IPD stage-game payoffs
    centipede_cost: float = 1.0  # centipede: what continuing (C) costs the mover
    centipede_gift: float = 5.0  # centipede: what continuing gives the other player
    partner_selection: bool = False  # each agent picks its partner from its reputation view
    direct_punishment: bool = False  # after each round the partner may punish each player
    third_party_punishment: bool = False  # a random bystander may punish each player
    reputation: bool = False  # keep image scores at all
    reputation_view: Literal["public", "private"] = "public"  # one shared score, or per-agent views
    reputation_source: Literal["play", "punish", "both"] = "both"  # which events move the score
    reputation_in: tuple[Literal["play", "punish"], ...] = ()  # decisions that observe reputations
    reputation_obs_scale: float = Field(1.0, gt=0)  # scores are multiplied by this in observations
    reputation_decay: float = Field(1.0, gt=0, le=1)  # every round scores are multiplied by this
    # (1 = the paper's cumulative, unbounded image score; < 1 bounds it and favours recent acts)
    costly_punishment: bool = False  # a just punishment costs the punisher instead of paying it
    fine: float = Field(3.0, ge=0)  # taken from the punished player
    just_punish_reward: float = 2.0  # punisher's reward for punishing a defector
    costly_just_punish_reward: float = -3.0  # ... in the costly variant
    unjust_punish_reward: float = -10.0  # punisher's reward for punishing a cooperator
    rep_cooperate: float = 1.0  # reputation change for playing C
    rep_defect: float = -1.0  # ... for playing D
    rep_just_punish: float = 2.0  # ... for punishing a defector
    rep_unjust_punish: float = -3.0  # ... for punishing a cooperator
    rep_persecutor: float = -5.0  # private views: the victim's view of its punisher
    rep_avenger: float = 5.0  # private views: the co-player's view of a just punisher
    third_party_with_replacement: bool = True  # the two victims' bystanders may be the same agent
    topology: Literal["complete", "caveman"] = "complete"  # who can meet whom
    caveman_groups: int = Field(5, ge=2)  # caveman: communities of n_agents / caveman_groups agents

    @model_validator(mode="after")
    def _check_combination(self) -> GameRules:
        punishing = self.direct_punishment or self.third_party_punishment
        if self.partner_selection and not self.reputation:
            raise ValueError(
                "partner_selection needs reputation: true (partners are chosen from the reputation view)"
            )
        if self.reputation_in and not self.reputation:
            raise ValueError(
                f"reputation_in={list(self.reputation_in)} needs reputation: true"
            )
        if "punish" in self.reputation_in and not punishing:
            raise ValueError(
                "reputation_in contains 'punish' but neither direct_punishment nor "
                "third_party_punishment is on"
            )
        if self.costly_punishment and not punishing:
            raise ValueError(
                "costly_punishment needs direct_punishment or third_party_punishment"
            )
        if self.reputation and self.reputation_source == "punish" and not punishing:
            raise ValueError(
                "reputation_source='punish' without any punishment mechanism: scores would never move"
            )
        if self.topology == "caveman" and (self.n_agents % self.caveman_groups
                                           or self.n_agents // self.caveman_groups < 3):
            raise ValueError(f"topology 'caveman' needs n_agents divisible by caveman_groups into "
                             f"communities of at least 3 (got {self.n_agents} agents, "
                             f"{self.caveman_groups} groups)")
        if len(set(self.reputation_in)) != len(self.reputation_in):
            raise ValueError(f"reputation_in has duplicates: {list(self.reputation_in)}")
        unused = [f"{key}={getattr(self, key)!r} (used only with {needs})"
                  for key, (used, needs) in self._where_used().items()
                  if not used and key in self.model_fields_set
                  and getattr(self, key) != type(self).model_fields[key].default]
        if unused:
            raise ValueError("settings that would change nothing in this game: " + "; ".join(unused))
        return self

    def _where_used(self) -> dict[str, tuple[bool, str]]:
        """Each setting that only some games use: whether this game uses it, and which games do."""
        rep, pun = self.reputation, self.punishing
        from_play = rep and self.reputation_source in ("play", "both")
        from_punish = rep and pun and self.reputation_source in ("punish", "both")
        private = rep and pun and self.reputation_view == "private"
        punishers = "direct_punishment or third_party_punishment"
        return {
            "payoffs": (self.game == "ipd", "game: ipd"),
            "centipede_cost": (self.game == "centipede", "game: centipede"),
            "centipede_gift": (self.game == "centipede", "game: centipede"),
            **{key: (rep, "reputation: true") for key in (
                "reputation_source", "reputation_obs_scale", "reputation_decay")},
            "reputation_view": (rep and pun, f"reputation: true and {punishers}"),
            **{key: (from_play, "reputation: true and reputation_source play or both")
               for key in ("rep_cooperate", "rep_defect")},
            **{key: (from_punish, f"reputation: true, reputation_source punish or both and {punishers}")
               for key in ("rep_just_punish", "rep_unjust_punish")},
            **{key: (private, f"reputation_view: private and {punishers}")
               for key in ("rep_persecutor", "rep_avenger")},
            **{key: (pun, punishers) for key in ("fine", "unjust_punish_reward")},
            "just_punish_reward": (pun and not self.costly_punishment,
                                   f"{punishers}, costly_punishment false"),
            "costly_just_punish_reward": (self.costly_punishment, "costly_punishment: true"),
            "third_party_with_replacement": (self.third_party_punishment, "third_party_punishment: true"),
            "caveman_groups": (self.topology == "caveman", "topology: caveman"),
        }

    @property
    def moves_per_game(self) -> int:
        """Most play moves in one game: both players move together in an IPD round; in a centipede
        round the selector moves, then its partner (the authors' code: 10 rounds, up to 20 moves)."""
        return self.rounds_per_game * (2 if self.game == "centipede" else 1)

    @property
    def punishing(self) -> bool:
        return self.direct_punishment or self.third_party_punishment

    @property
    def just_reward(self) -> float:
        return self.costly_just_punish_reward if self.costly_punishment else self.just_punish_reward

    @property
    def adjacency(self) -> np.ndarray:
        """(N, N) bool, read-only: who may be partners (and bystanders of each other's games).

        complete: everyone else. caveman: networkx's ``connected_caveman_graph(groups, size)``
        (cliques, each with one edge rewired to the previous clique), as in the paper's network
        experiments."""
        return _topology(self.topology, self.n_agents, self.caveman_groups)[0]

    @property
    def neighbours(self) -> np.ndarray:
        """(N, D) read-only: each agent's possible partners in id order, padded with -1 (D = max
        degree)."""
        return _topology(self.topology, self.n_agents, self.caveman_groups)[1]

    def n_choices(self, decision: DecisionKind, agent: int) -> int:
        """How many actions ``agent`` has in ``decision`` (select: its number of possible partners)."""
        return int(self.adjacency[agent].sum()) if decision == "select" else 2

    def feature_size(self, decision: DecisionKind) -> int:
        """Length of the feature vector an agent sees when it makes ``decision``."""
        if decision == "select":  # own reputation, then each possible partner's
            return 1 + self.neighbours.shape[1]
        return 2 + (2 if decision in self.reputation_in else 0)

    @property
    def decisions(self) -> tuple[DecisionKind, ...]:
        """The decisions this game asks of its agents."""
        kinds: list[DecisionKind] = []
        if self.partner_selection:
            kinds.append("select")
        kinds.append("play")
        if self.punishing:
            kinds.append("punish")
        return tuple(kinds)

    def n_actions(self, decision: DecisionKind) -> int:
        """Size of the decision's action set (select: the largest number of possible partners)."""
        return self.neighbours.shape[1] if decision == "select" else 2
