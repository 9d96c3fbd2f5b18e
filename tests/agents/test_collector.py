"""Each agent's transitions carry exactly its own rewards (tianshou's PettingZoo wrapper does not)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from aligngym.agents.marl.collector import PopulationCollector, PopulationReplay
from aligngym.envs.cooperation import punishment_v0
from aligngym.envs.cooperation.rules import DECISIONS

N = 3


class Scripted:
    """Agent 1 always defects, the others always cooperate; everyone always punishes; every
    selector picks the first other agent in id order (0 -> 1, 1 -> 0, 2 -> 0)."""

    def row(self, decision, agent):
        return DECISIONS.index(decision) * N + agent

    def act(self, rows, features, explore):
        out = []
        for row in rows:
            kind, agent = DECISIONS[row // N], row % N
            out.append({"select": 0, "play": int(agent == 1), "punish": 1}[kind])
        return np.array(out)


def _rewards(replay, kind, agent):
    return list(replay.transitions(DECISIONS.index(kind) * N + agent)["rew"])


@pytest.fixture
def collected():
    env = punishment_v0.parallel_env(n_agents=N, rounds_per_game=2, partner_selection=True,
                                     reputation=True, direct_punishment=True)
    policy = Scripted()
    replay = PopulationReplay({d: 100 for d in ("select", "play", "punish")}, N, env.feature_size, [0])
    collector = PopulationCollector(env, policy, replay)
    stored = []
    collector.run_episode(explore=False, keep_memory=False, seed=0, on_stored=stored.extend)
    first_open = {row: tr.reward for row, tr in collector.open.items()}
    collector.run_episode(explore=False, keep_memory=True, on_stored=stored.extend)
    return replay, collector, first_open, stored


def test_play_transitions_carry_own_payoff_and_fine(collected):
    replay, _, first_open, _ = collected
    # agent 0 (C): games 0 and 1 against the defector (payoff 0, fined -3 as an unjust victim),
    # game 2 against agent 2 (payoff 3, fined -3): each transition closes at the next play decision.
    assert _rewards(replay, "play", 0)[:6] == [-3, -3, -3, -3, 0, 0]
    # agent 1 (D): 4 rounds against a cooperator, payoff 4, fined -3 (just punishment) each round
    assert _rewards(replay, "play", 1)[:4] == [1, 1, 1, 1]
    # agent 2 (C): its own game against agent 0, payoff 3, fined -3 (unjustly) each round
    assert _rewards(replay, "play", 2)[:2] == [0, 0]
    assert first_open[DECISIONS.index("play") * N + 1] == 1


def test_punish_transitions_carry_own_punisher_reward(collected):
    replay, _, _, _ = collected
    # agent 0 punishes the defector (just, +2) four times, then agent 2 (unjust, -10) twice
    assert _rewards(replay, "punish", 0)[:6] == [2, 2, 2, 2, -10, -10]
    # agent 1 always punishes a cooperator: -10 each time
    assert _rewards(replay, "punish", 1)[:4] == [-10, -10, -10, -10]
    assert _rewards(replay, "punish", 2)[:2] == [-10, -10]


def test_selection_transition_gets_the_chosen_games_reward(collected):
    replay, _, _, _ = collected
    # own game only: agent 0 vs 1: 2 x (0 - 3); agent 1 vs 0: 2 x (4 - 3); agent 2 vs 0: 2 x (3 - 3)
    assert _rewards(replay, "select", 0) == [-6]
    assert _rewards(replay, "select", 1) == [2]
    assert _rewards(replay, "select", 2) == [0]


def test_streams_add_up_to_the_env_rewards():
    """Over an episode with random actions, every agent's closed + open transition rewards per
    stream equal what the env paid it."""
    env = punishment_v0.parallel_env(partner_selection=True, reputation=True, direct_punishment=True,
                                     third_party_punishment=True)

    class Random(Scripted):
        rng = np.random.default_rng(0)

        def row(self, decision, agent):
            return DECISIONS.index(decision) * 5 + agent

        def act(self, rows, features, explore):
            return np.array([self.rng.integers(0, 4 if r < 5 else 2) for r in rows])

    policy = Random()
    replay = PopulationReplay({d: 1000 for d in ("select", "play", "punish")}, 5, env.feature_size, [0])
    collector = PopulationCollector(env, policy, replay)
    collector.run_episode(explore=False, keep_memory=False, seed=3)
    core = env.core
    for i in range(5):
        def total(kind):
            row = policy.row(kind, i)
            pending = collector.open[row].reward if row in collector.open else 0.0
            return float(replay.transitions(row)["rew"].sum()) + pending

        assert total("play") == pytest.approx(core.per_agent["play_reward"][0, i] + core.per_agent["fine"][0, i])
        assert total("punish") == pytest.approx(core.per_agent["punisher_reward"][0, i])


def test_transitions_are_stored_once_each_and_reported(collected):
    replay, _, _, stored = collected
    assert len(stored) == len(replay)
    # each row is reported once per transition it received
    sizes = {row: len(replay.transitions(row)["act"]) for row in range(3 * N)}
    assert Counter(stored) == {row: n for row, n in sizes.items() if n}


def _cut_bootstrapping_collector(rounds_per_game):
    env = punishment_v0.parallel_env(n_agents=N, rounds_per_game=rounds_per_game,
                                     partner_selection=True, reputation=True)
    policy = Scripted()
    replay = PopulationReplay({d: 100 for d in ("select", "play")}, N, env.feature_size, [0])
    return policy, replay, PopulationCollector(env, policy, replay, bootstrap_across_games=False)


def test_cut_bootstrapping_at_game_boundaries():
    policy, replay, collector = _cut_bootstrapping_collector(rounds_per_game=2)
    collector.run_episode(explore=False, keep_memory=False, seed=1)
    done = list(replay.transitions(policy.row("play", 0))["terminated"])
    # agent 0 plays games 0, 1 and 2, two rounds each: the transitions opened in a game's second
    # round close in the next game and are terminal; the others bootstrap
    assert [bool(d) for d in done] == [False, True, False, True, False]


def test_each_punish_transition_carries_its_own_judgements_outcome():
    """Also when one bystander judges both victims (two punish steps in one round)."""
    env = punishment_v0.parallel_env(direct_punishment=True, third_party_punishment=True)

    class Random(Scripted):
        rng = np.random.default_rng(1)

        def row(self, decision, agent):
            return DECISIONS.index(decision) * 5 + agent

        def act(self, rows, features, explore):
            return self.rng.integers(0, 2, size=len(rows))

    policy = Random()
    replay = PopulationReplay({d: 5000 for d in ("play", "punish")}, 5, env.feature_size, [0])
    collector = PopulationCollector(env, policy, replay)
    for episode in range(3):
        collector.run_episode(explore=False, keep_memory=episode > 0, seed=2 if episode == 0 else None)
    checked = 0
    for i in range(5):
        buf = replay.transitions(policy.row("punish", i))
        n = len(buf["act"])
        victim_defected = buf["obs"][:, 0] == 1
        expected = np.where(buf["act"] == 1, np.where(victim_defected, 2.0, -10.0), 0.0)
        np.testing.assert_array_equal(buf["rew"], expected)
        checked += n
    assert checked > 300


def test_cut_bootstrapping_also_across_episodes():
    # agent 2 is never chosen: it plays only its own game (game 2) in every episode, so its play
    # transition closes in the next episode's game 2: another game, hence terminal
    policy, replay, collector = _cut_bootstrapping_collector(rounds_per_game=1)
    for episode in range(3):
        collector.run_episode(explore=False, keep_memory=episode > 0, seed=0 if episode == 0 else None)
    assert [bool(d) for d in replay.transitions(policy.row("play", 2))["terminated"]] == [True, True]
    # a selection (once per episode) is a one-step choice: each closes in the next episode, terminal
    assert [bool(d) for d in replay.transitions(policy.row("select", 2))["terminated"]] == [True, True]


def test_a_fresh_game_resets_scripted_partners():
    """A policy's ``reset()`` runs when an episode starts a fresh game, not when memory carries over:
    a reformed defector (D until fined) defects again after a fresh start."""
    from aligngym.envs.cooperation.scripted import make_bot

    class WithBot(Scripted):  # agent 1 is a reformed defector; everyone else cooperates and punishes
        bot = make_bot("reformed_defector", 1, N - 1)

        def act(self, rows, features, explore):
            out = super().act(rows, features, explore)
            for k, row in enumerate(rows):
                if DECISIONS[row // N] == "play" and row % N == 1:
                    out[k] = self.bot.act("play", features[k])
            return out

        def observe(self, infos):
            self.bot.observe(infos["player_1"]["reward_components"])

        def reset(self):
            self.bot.reset()

    env = punishment_v0.parallel_env(n_agents=N, rounds_per_game=2, direct_punishment=True)
    policy = WithBot()
    replay = PopulationReplay({d: 100 for d in ("play", "punish")}, N, env.feature_size, [0])
    collector = PopulationCollector(env, policy, replay)
    defections = []
    for keep in (False, True, False):
        collector.run_episode(explore=False, keep_memory=keep, seed=0)
        counts = env.core.agent_counts
        defections.append(int(counts["agent_plays"][0, 1] - counts["agent_coops"][0, 1]))
    assert defections[0] >= 1  # defects until its first fine
    assert defections[1] == 0  # memory carried: still reformed
    assert defections[2] == defections[0]  # a fresh game: it forgot, and defects again
