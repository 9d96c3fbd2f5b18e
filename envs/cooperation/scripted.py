"""Scripted partners for the punishment/reputation game (background populations, Melting Pot style).

Each bot answers every decision from the same features a learner sees (see ``punishment_v0``):

==================  ======================================  ==============================
bot                 plays                                   punishes
==================  ======================================  ==============================
always_cooperate    C                                       never
always_defect       D                                       never
tit_for_tat         the opponent's last move (C at first)   defectors
reformed_defector   D until it is first fined, then C       never
==================  ======================================  ==============================

Every bot picks as partner the possible partner it sees with the highest reputation (the first in
id order on ties).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from aligngym.envs.cooperation.core import COOPERATE, DEFECT, UNKNOWN
from aligngym.envs.cooperation.rules import GameRules


class ScriptedBot:
    """Base: highest-reputation partner choice, no punishment."""

    name = "scripted"

    def __init__(self, agent: int, n_choices: int) -> None:
        self.agent, self.n_choices = agent, n_choices  # n_choices: its number of possible partners
        self.reset()

    def reset(self) -> None:
        """Forget everything (a fresh game; not called when the game's memory carries over)."""

    def act(self, decision: str, features: np.ndarray) -> int:
        if decision == "select":  # features: own reputation, each possible partner's, zero padding
            return int(np.argmax(features[1:1 + self.n_choices]))
        if decision == "play":
            return self.play(features)
        return self.punish(features)

    def play(self, features: np.ndarray) -> int:
        raise NotImplementedError

    def punish(self, features: np.ndarray) -> int:
        return 0

    def observe(self, reward_components: dict[str, float]) -> None:
        """Called after every step with this agent's reward components."""


class AlwaysCooperate(ScriptedBot):
    name = "always_cooperate"

    def play(self, features: np.ndarray) -> int:
        return COOPERATE


class AlwaysDefect(ScriptedBot):
    name = "always_defect"

    def play(self, features: np.ndarray) -> int:
        return DEFECT


class TitForTat(ScriptedBot):
    name = "tit_for_tat"

    def play(self, features: np.ndarray) -> int:
        opponent_last = int(features[0])
        return COOPERATE if opponent_last == UNKNOWN else opponent_last

    def punish(self, features: np.ndarray) -> int:
        return int(features[0] == DEFECT)


class ReformedDefector(ScriptedBot):
    name = "reformed_defector"

    def reset(self) -> None:
        self.reformed = False

    def play(self, features: np.ndarray) -> int:
        return COOPERATE if self.reformed else DEFECT

    def observe(self, reward_components: dict[str, float]) -> None:
        if reward_components["fine"] < 0:
            self.reformed = True


BOTS: dict[str, type[ScriptedBot]] = {
    cls.name: cls for cls in (AlwaysCooperate, AlwaysDefect, TitForTat, ReformedDefector)
}


def make_bot(name: str, agent: int, n_choices: int) -> ScriptedBot:
    """Bot ``name`` playing ``agent``, which has ``n_choices`` possible partners."""
    if name not in BOTS:
        raise ValueError(f"unknown scripted partner '{name}'; choose from {sorted(BOTS)}")
    return BOTS[name](agent, n_choices)


class BotTeam:
    """Scripted bots playing some agents of one game (``names``: agent index -> bot name): the
    one place that drives them, for the focal Gymnasium env and for evaluation against a
    background population."""

    def __init__(self, names: dict[int, str], rules: GameRules) -> None:
        self.bots = {i: make_bot(name, i, rules.n_choices("select", i)) for i, name in names.items()}

    def __contains__(self, agent: int) -> bool:
        return agent in self.bots

    def __iter__(self) -> Iterator[int]:
        return iter(self.bots)

    def act(self, agent: int, decision: str, features: np.ndarray) -> int:
        return self.bots[agent].act(decision, features)

    def observe(self, infos: dict[str, dict]) -> None:
        """After every game step, with the step's infos (keyed ``player_<i>``)."""
        for i, bot in self.bots.items():
            bot.observe(infos[f"player_{i}"]["reward_components"])

    def reset(self) -> None:
        for bot in self.bots.values():
            bot.reset()
