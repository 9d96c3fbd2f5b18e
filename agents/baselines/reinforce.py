"""REINFORCE with a fixed reward: the baselines BARFI is compared with (``agent: reinforce``).

The official code's ``REINFORCE`` and ``REINFORCEPotential`` (``Dhawgupta/gupta2023behavior``,
``src/algorithms``), on the same linear policy, features, episodes and objective as BARFI's inner
learner (:mod:`aligngym.agents.barfi`): after every ``delta`` episodes, one REINFORCE step (the mean over
the horizon of ``mask log pi(a_t|s_t) G_t`` plus ``entropy x`` the policy's entropy) on the returns-to-go
G_t (discount ``gamma``) of the reward ``reward`` names:

- ``primary``: the primary reward alone (the task's ``reward``);
- ``naive``: the naive blend ``r_primary + r_aux`` (the heuristic's reward in ``info["aux_reward"]``);
- ``potential``: potential-based shaping with the heuristic as the potential, Phi(s_t) = r_aux of the
  step (as the official ``REINFORCEPotential``): the shaped return telescopes to ``G_t - Phi(s_t)``.

Deviations from the official code:

- Its step uses only the last of each ``delta`` episodes (its ``sample_last(0)``); here all ``delta`` of
  them, each played by the same policy.
- The baselines share BARFI's inner settings per task (``configs/reinforce/<task>.yaml``: the same
  features, optimiser and actor learning rate as ``configs/barfi/<task>.yaml``), where the official
  sweeps chose theirs separately (CartPole's REINFORCE: actor lr 1e-3 against BARFI's 4e-3 here;
  HalfCheetah's: one step after every episode, ``delta`` 1, with a running-mean return baseline, not
  implemented).
"""

from __future__ import annotations

from typing import Any, Literal

from aligngym.agents.barfi import Learner, PolicyGradientConfig, discounted_returns, evaluate_state, train_loop
from aligngym.agents.train import Run


class Config(PolicyGradientConfig):
    """REINFORCE on a fixed reward (``agent: reinforce``)."""

    agent: Literal["reinforce"] = "reinforce"
    reward: Literal["primary", "naive", "potential"] = "naive"  # what the returns are made of (see the docstring)


class ReinforceLearner(Learner):
    def update(self) -> dict[str, float]:
        config = self.config
        assert isinstance(config, Config)
        last = self.batch(self.buffer.last(config.delta))
        mask = last["mask"]
        primary = last["rew"] + last["aux"] if config.reward == "naive" else last["rew"]
        returns = discounted_returns(primary * mask, config.gamma)
        if config.reward == "potential":
            returns = returns - last["aux"]
        return {"objective": self.policy_step(last, returns)}


def train(config: Config, run: Run, state: dict[str, Any] | None) -> None:
    train_loop(config, run, state, "reinforce", ReinforceLearner)


def evaluate(config: Config, state: dict[str, Any], episodes: int) -> dict[str, Any]:
    return evaluate_state(config, state, episodes)
