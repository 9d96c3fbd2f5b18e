"""The centipede variant: alternate moves, continue gifts, stop ends the game, punish the mover."""

from __future__ import annotations

import numpy as np
import pytest

from aligngym.envs.cooperation.core import COOPERATE, DEFECT, PunishmentCore
from aligngym.envs.cooperation.punishment_v0 import parallel_env
from aligngym.envs.cooperation.rules import GameRules


def _run(env, play, punish=lambda agent, features: 0, seed=0):
    """Play a whole episode; ``play(agent, features)`` / ``punish(...)`` choose actions."""
    obs, infos = env.reset(seed=seed)
    log = []
    while env.agents:
        actions = {}
        for a in env.agents:
            kind = infos[a]["decision"]
            feats = obs[a]["observation"][4:]
            if kind == "play":
                actions[a] = play(a, feats)
            elif kind == "punish":
                actions[a] = punish(a, feats)
        log.append((infos["player_0"]["phase"], sorted(k for k, v in infos.items() if v["decision"])))
        obs, rew, _, _, infos = env.step(actions)
        log[-1] += (rew,)
    return log


def test_always_continue_plays_every_move_alternately():
    env = parallel_env(game="centipede", n_agents=3, rounds_per_game=2)
    assert env.rules.moves_per_game == 4  # a round: the selector's move, then its partner's (the authors' code)
    log = _run(env, lambda a, f: COOPERATE)
    assert len(log) == 3 * 4  # 3 games x 2 rounds x 2 moves, no punishment phase
    assert all(len(movers) == 1 for _, movers, _ in log)  # one mover per step
    game0 = [movers[0] for _, movers, _ in log[:4]]
    partner = env.core.partners[0, 0]
    assert game0 == ["player_0", f"player_{partner}", "player_0", f"player_{partner}"]
    # each player of game 0 moves twice: 2 x (-1) + 2 x (+5) = 8 each from that game
    first_game = sum(np.array([[r["player_0"], r[f"player_{partner}"]] for _, _, r in log[:4]]))
    assert first_game.tolist() == [8.0, 8.0]
    m = env.core.episode_metrics()
    assert m["mean_game_length"][0] == 4 and m["cooperation_rate"][0] == 1.0


def test_stopping_ends_the_game_at_once():
    env = parallel_env(game="centipede", n_agents=3, rounds_per_game=10, direct_punishment=True)
    # everyone stops at once: each game is one move (the selector's), then its punish step
    log = _run(env, lambda a, f: DEFECT)
    assert [phase for phase, _, _ in log] == ["play", "punish"] * 3
    assert [movers for phase, movers, _ in log if phase == "play"] == [["player_0"], ["player_1"],
                                                                       ["player_2"]]
    assert all(r == 0.0 for _, _, rew in log for r in rew.values())
    m = env.core.episode_metrics()
    assert m["mean_game_length"][0] == 1 and m["cooperation_rate"][0] == 0.0


def test_core_hand_computed_with_inactive_populations():
    core = PunishmentCore(GameRules(game="centipede", n_agents=3, direct_punishment=True), batch_size=2)
    core.choose_partners(np.array([[0, 0, 0], [0, 0, 0]]))  # 0 -> 1, 1 -> 0, 2 -> 0
    pay = core.play_centipede(0, 0, np.array([COOPERATE, DEFECT]))
    assert pay.tolist() == [[-1.0, 5.0], [0.0, 0.0]]
    # population 1 stopped: its next move is inactive and changes nothing
    pay = core.play_centipede(0, 1, np.array([COOPERATE, COOPERATE]), active=np.array([True, False]))
    assert pay.tolist() == [[5.0, -1.0], [0.0, 0.0]]
    assert core.counters["rounds"].tolist() == [2, 1]
    assert core.counters["coops"].tolist() == [2, 0]
    # direct punishment of the mover (player 1 continued: an unjust punishment by player 0)
    core.punish_one("direct", 1, np.array([True, False]))
    assert core.per_agent["fine"][0].tolist() == [0.0, -3.0, 0.0]
    assert core.per_agent["punisher_reward"][0].tolist() == [-10.0, 0.0, 0.0]
    assert core.per_agent["play_reward"].tolist() == [[4.0, 4.0, 0.0], [0.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="centipede move"):
        core.play_centipede(0, 0, np.array([2, 0]))


def test_only_the_mover_is_judged():
    env = parallel_env(game="centipede", n_agents=4, rounds_per_game=3, direct_punishment=True,
                       third_party_punishment=True, third_party_with_replacement=False)
    obs, infos = env.reset(seed=1)
    while env.agents:
        phase = infos["player_0"]["phase"]
        deciders = [a for a in env.agents if infos[a]["decision"]]
        if phase == "punish":
            assert len(deciders) == 2  # the other player (direct) and one bystander
            assert {infos[a]["mechanism"] for a in deciders} == {"direct", "third_party"}
        obs, _, _, _, infos = env.step({a: 0 for a in deciders})


@pytest.mark.parametrize("rules", [{}, {"direct_punishment": True, "third_party_punishment": True,
                                        "partner_selection": True, "reputation": True}])
def test_pettingzoo_api(rules):
    from pettingzoo.test import api_test, parallel_api_test

    from aligngym.envs.cooperation.punishment_v0 import env

    parallel_api_test(parallel_env(game="centipede", **rules), num_cycles=2000)
    api_test(env(game="centipede", **rules), num_cycles=2000)
