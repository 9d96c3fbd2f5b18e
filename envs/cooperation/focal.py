"""``aligngym/PunishmentIPD-v0``: one learner (``player_0``) in the punishment game among scripted partners.

A single-agent Gymnasium view of :mod:`aligngym.envs.cooperation.punishment_v0`. The learner makes
the play and punish decisions of ``player_0``; its partner choice (when ``partner_selection`` is on)
and every decision of the other agents are made by scripted bots
(:mod:`aligngym.envs.cooperation.scripted`).

=================  ============================================================================
Observation        ``Box(4 + F)``, float32: the learner's ``punishment_v0`` observation vector
                   (phase one-hot, then the decision's features)
Action             ``Discrete(2)``: in a play decision 0 = cooperate, 1 = defect; in a punish
                   decision 0 = abstain, 1 = punish
Reward             everything ``player_0`` earned from this decision to its next one: payoffs,
                   fines, punisher rewards (``info["reward_components"]`` splits it)
Termination        never; truncated after the episode's last round (all N games)
info               ``decision`` ("play" / "punish" / None at the end), ``reward_components``
Arguments          ``background``: one bot name for all partners, or a list of N - 1 names
                   (default ``tit_for_tat``); ``render_mode`` ansi / rgb_array; every rule of
                   :class:`~aligngym.envs.cooperation.rules.GameRules` as a keyword
=================  ============================================================================
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from aligngym.envs.cooperation.punishment_v0 import COMPONENTS, PHASES, integer_action, raw_env
from aligngym.envs.cooperation.rules import GameRules
from aligngym.envs.cooperation.scripted import BotTeam, TitForTat

FOCAL = "player_0"


class PunishmentIPDEnv(gym.Env):
    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(self, background: str | list[str] = "tit_for_tat", render_mode: str | None = None,
                 **rule_fields: Any) -> None:
        rules = GameRules(**rule_fields)
        self.game = raw_env(render_mode=render_mode, rules=rules)
        self.render_mode = render_mode
        n = rules.n_agents
        names = ([background] * (n - 1) if isinstance(background, str)
                 else list(background) if isinstance(background, (list, tuple)) else [None])
        if not all(isinstance(name, str) for name in names):
            raise ValueError(f"background must be a bot name or a list of {n - 1} names, got {background!r}")
        if len(names) != n - 1:
            raise ValueError(f"background needs one bot name or {n - 1} names, got {len(names)}")
        self.bots = BotTeam(dict(enumerate(names, start=1)), rules)
        self.focal_selector = TitForTat(0, rules.n_choices("select", 0))  # only its partner choice (highest reputation) is used
        self.observation_space = spaces.Box(-np.inf, np.inf, self.game.observation_space(FOCAL)[
            "observation"].shape, np.float32)
        self.action_space = spaces.Discrete(2)
        self._obs: dict[str, Any] = {}
        self._infos: dict[str, Any] = {}

    def _decision(self, agent: str) -> str | None:
        return self._infos[agent]["decision"]

    def _advance(self, first: dict[str, int] | None) -> np.ndarray:
        """Step the game (bots act) until the learner has a play or punish decision or the game
        ends; ``first`` holds the learner's action for the first step. Returns reward components."""
        earned = np.zeros(len(COMPONENTS))
        actions = first
        while self.game.agents:
            if actions is None:
                if self._decision(FOCAL) in ("play", "punish"):
                    break
                actions = {}
            for i in self.bots:
                name = f"player_{i}"
                if self._decision(name) is not None:
                    actions[name] = self.bots.act(i, self._decision(name), self._features(name))
            if self._decision(FOCAL) == "select":
                actions[FOCAL] = self.focal_selector.act("select", self._features(FOCAL))
            self._obs, _, _, _, self._infos = self.game.step(actions)
            earned += [self._infos[FOCAL]["reward_components"][c] for c in COMPONENTS]
            self.bots.observe(self._infos)
            actions = None
        return earned

    def _features(self, agent: str) -> np.ndarray:
        return self._obs[agent]["observation"][len(PHASES):]

    def _info(self, earned: np.ndarray) -> dict[str, Any]:
        return {"decision": self._decision(FOCAL) if self.game.agents else None,
                "reward_components": dict(zip(COMPONENTS, map(float, earned)))}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._obs, self._infos = self.game.reset(seed=seed, options=options)
        if not (options or {}).get("keep_memory", False):
            self.bots.reset()
        earned = self._advance(None)
        return self._obs[FOCAL]["observation"], self._info(earned)

    def step(self, action: Any):
        if not self.game.agents:
            raise RuntimeError("PunishmentIPD-v0: step() called before reset() or after the episode ended; call reset()")
        if integer_action(action) not in (0, 1):
            raise ValueError(f"PunishmentIPD-v0: action must be 0 or 1 (a {self._decision(FOCAL)} "
                             f"decision), got {action!r}")
        earned = self._advance({FOCAL: integer_action(action)})
        truncated = not self.game.agents
        obs = self._obs[FOCAL]["observation"]
        return obs, float(earned[:3].sum()), False, truncated, self._info(earned)

    def render(self):
        return self.game.render()
