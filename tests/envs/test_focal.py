"""aligngym/PunishmentIPD-v0 (one learner among scripted partners) and the scripted bots."""

from __future__ import annotations

import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import aligngym.envs  # noqa: F401
from aligngym.envs.cooperation.core import COOPERATE, DEFECT, UNKNOWN
from aligngym.envs.cooperation.focal import PunishmentIPDEnv
from aligngym.envs.cooperation.scripted import BOTS, make_bot


def _play_out(env, policy, seed=0):
    obs, info = env.reset(seed=seed)
    trace, total = [], 0.0
    while True:
        action = policy(info["decision"], obs)
        obs, reward, terminated, truncated, info = env.step(action)
        trace.append((action, reward, obs.tolist()))
        total += reward
        assert not terminated
        if truncated:
            return total, trace, info


@pytest.mark.parametrize("rules", [{}, {"direct_punishment": True, "third_party_punishment": True},
                                   {"n_agents": 3, "partner_selection": True, "reputation": True,
                                    "background": "always_defect"},
                                   {"partner_selection": True, "reputation": True,
                                    "direct_punishment": True}])
def test_check_env(rules):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Box bounds are infinite by design
        check_env(PunishmentIPDEnv(**rules))


def test_gym_make_in_a_fresh_interpreter():
    code = ("import gymnasium as gym\n"
            "env = gym.make('aligngym.envs:aligngym/PunishmentIPD-v0', direct_punishment=True)\n"
            "obs, info = env.reset(seed=0)\n"
            "print(info['decision'], obs.shape)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["play", "(9,)"]


def test_cooperating_with_cooperators_earns_r_every_round():
    env = gym.make("aligngym/PunishmentIPD-v0", background="always_cooperate", rounds_per_game=4)
    total, trace, _ = _play_out(env, lambda d, o: COOPERATE)
    assert total == 3.0 * len(trace)  # no punishment: every decision is a play, each paying R = 3


def test_punishing_a_defector_pays_the_just_reward():
    env = PunishmentIPDEnv(background="always_defect", direct_punishment=True, rounds_per_game=3)
    total, trace, info = _play_out(env, lambda d, o: 1 if d == "punish" else COOPERATE)
    plays = sum(1 for a, r, _ in trace) // 2
    # every round: S = 0 for cooperating, +2 for punishing the defector, never fined (ALLD never punishes)
    assert total == pytest.approx(2.0 * plays)


def test_deterministic_from_seed_and_seed_matters():
    rules = {"third_party_punishment": True, "background": "tit_for_tat"}
    rng_policy = lambda seed: (lambda r=np.random.default_rng(seed): (lambda d, o: int(r.integers(2))))()  # noqa: E731
    a = _play_out(PunishmentIPDEnv(**rules), rng_policy(1), seed=5)
    b = _play_out(PunishmentIPDEnv(**rules), rng_policy(1), seed=5)
    c = _play_out(PunishmentIPDEnv(**rules), rng_policy(1), seed=6)
    assert a[1] == b[1]
    assert a[1] != c[1]


def test_bad_actions_and_arguments():
    env = PunishmentIPDEnv()
    env.reset(seed=0)
    for bad in (2, -1, 0.5, "C", [0]):
        with pytest.raises(ValueError, match="action must be 0 or 1"):
            env.step(bad)
    with pytest.raises(ValueError, match="unknown scripted partner"):
        PunishmentIPDEnv(background="grim_trigger")
    with pytest.raises(ValueError, match="4 names"):
        PunishmentIPDEnv(background=["tit_for_tat"] * 2)
    for bad in (None, 3, [["tit_for_tat"]] + ["tit_for_tat"] * 3):
        with pytest.raises(ValueError, match="background must be a bot name or a list of 4 names"):
            gym.make("aligngym/PunishmentIPD-v0", background=bad)
    with pytest.raises(ValueError, match="partner_selection needs reputation"):
        PunishmentIPDEnv(partner_selection=True)
    env = PunishmentIPDEnv(rounds_per_game=1)
    _play_out(env, lambda d, o: 0)
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step(0)


def test_scripted_bots():
    tft = make_bot("tit_for_tat", 2, 3)
    assert tft.act("play", np.array([UNKNOWN, UNKNOWN])) == COOPERATE
    assert tft.act("play", np.array([DEFECT, COOPERATE])) == DEFECT
    assert tft.act("punish", np.array([DEFECT, COOPERATE])) == 1
    assert tft.act("punish", np.array([COOPERATE, DEFECT])) == 0
    # select: highest reputation among the others, indexed with self removed
    # select features: own reputation, then each possible partner's: the best partner is index 1
    assert tft.act("select", np.array([9.0, 1.0, 5.0, 2.0])) == 1
    # two possible partners, features zero-padded: the padding is never chosen
    assert make_bot("tit_for_tat", 0, 2).act("select", np.array([0.0, -5.0, -2.0, 0.0])) == 1
    reformed = make_bot("reformed_defector", 1, 4)
    assert reformed.act("play", np.array([0, 0])) == DEFECT
    reformed.observe({"play": 4.0, "fine": 0.0, "punisher": 0.0, "selection": 0.0})
    assert reformed.act("play", np.array([0, 0])) == DEFECT
    reformed.observe({"play": 0.0, "fine": -3.0, "punisher": 0.0, "selection": 0.0})
    assert reformed.act("play", np.array([0, 0])) == COOPERATE
    reformed.reset()
    assert reformed.act("play", np.array([0, 0])) == DEFECT
    assert make_bot("always_defect", 0, 4).act("play", np.array([0, 0])) == DEFECT
    assert make_bot("always_cooperate", 0, 4).act("punish", np.array([1, 0])) == 0
    assert set(BOTS) == {"always_cooperate", "always_defect", "tit_for_tat", "reformed_defector"}


def test_reformed_defectors_turn_to_cooperation_when_punished():
    env = PunishmentIPDEnv(background="reformed_defector", direct_punishment=True, rounds_per_game=4)
    _, trace, _ = _play_out(env, lambda d, o: 1 if d == "punish" else COOPERATE)
    # the focal agent's play observations show its opponents' last moves: D at first, C after
    opponent_moves = [obs[4] for _, _, obs in trace if obs[2] == 1.0]
    assert DEFECT in opponent_moves and opponent_moves[-1] == COOPERATE
