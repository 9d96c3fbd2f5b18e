"""Population games about cooperation: punishment, reputation and partner selection (PettingZoo)."""

from aligngym.envs.cooperation.rules import GameRules, Payoffs

__all__ = ["GameRules", "Payoffs"]
