"""Hand-computed checks of the ``coop/*`` episode metrics and of the caveman topology.

Every metric of ``core.METRIC_NAMES`` that ``test_punishment_core.py`` does not already check by
hand is checked here on scripted populations whose outcomes are counted in the comments (two
populations with different scripts share one core, so rows that mixed would show). The second
half checks the caveman topology: the graph itself (against networkx), invalid configurations,
that partners and bystanders only come from neighbourhoods, and the PettingZoo env's select
phase (masks, actions, features) and API contract on a caveman population.
"""

from __future__ import annotations


import networkx as nx
import numpy as np
import pytest
from pettingzoo.test import parallel_api_test

from aligngym.envs.cooperation import GameRules
from aligngym.envs.cooperation.core import COOPERATE, DEFECT, METRIC_NAMES, PunishmentCore, gini
from aligngym.envs.cooperation.punishment_v0 import parallel_env

C, D = COOPERATE, DEFECT
T, F = True, False
PHASE_OFFSET = 4  # observation = one-hot(idle, select, play, punish) + features


def make_core(batch_size: int = 1, seed: int = 0, **rules) -> PunishmentCore:
    return PunishmentCore(GameRules(**rules), batch_size=batch_size, seed=seed)


def choice_for(n: int, partners: list[int]) -> list[int]:
    """Select indices (others in id order, self removed) that pick ``partners[i]`` for agent i."""
    return [[j for j in range(n) if j != i].index(p) for i, p in enumerate(partners)]


def choose(core: PunishmentCore, *partners_per_population: list[int]) -> None:
    """Complete topology: population b's agent i picks ``partners_per_population[b][i]``."""
    n = core.rules.n_agents
    core.choose_partners(np.array([choice_for(n, p) for p in partners_per_population]))


def rnd(core: PunishmentCore, game: int, actions, direct=None, third=None, bystanders=None) -> None:
    """One round of ``game`` in every population: plays, then the punish decisions (B, 2)."""
    core.play(game, np.array(actions))
    if core.rules.punishing:
        core.punish(None if direct is None else np.array(direct),
                    None if third is None else np.array(third),
                    None if bystanders is None else np.array(bystanders))


# ============================================================================ metrics
def punishing_populations() -> PunishmentCore:
    """Two populations of 4 (direct + third-party punishment, default payoffs and fines).

    Partners (both): 0->1, 1->2, 2->3, 3->0, so game 0 is 0 vs 1 and game 2 is 2 vs 3.
    Judgement order in each round: direct on victim 0 (by victim 1), direct on victim 1 (by
    victim 0), third party on victim 0, third party on victim 1.
    """
    core = make_core(batch_size=2, n_agents=4, direct_punishment=True, third_party_punishment=True)
    choose(core, [1, 2, 3, 0], [1, 2, 3, 0])
    # round 1, game 0 (players 0, 1)
    #   pop 0: (C, D); 1 punishes cooperator 0 (unjust), 0 punishes defector 1 (just);
    #          bystander 2 spares 0, bystander 3 punishes defector 1 (just)
    #   pop 1: (C, C); nobody punishes
    rnd(core, 0, [[C, D], [C, C]],
        direct=[[T, T], [F, F]], third=[[F, T], [F, F]], bystanders=[[2, 3], [2, 3]])
    # round 2, game 0
    #   pop 0: (D, D); 1 punishes defector 0 (just), 0 spares 1; bystander 3 spares both
    #   pop 1: (C, D); players spare each other; bystander 2 spares 0, punishes defector 1 (just)
    rnd(core, 0, [[D, D], [C, D]],
        direct=[[T, F], [F, F]], third=[[F, F], [F, T]], bystanders=[[3, 3], [2, 2]])
    # round 3, game 2 (players 2, 3)
    #   pop 0: (C, C); players spare each other; bystander 0 punishes cooperator 2 (unjust),
    #          bystander 1 spares 3
    #   pop 1: (D, C); nobody punishes (bystanders 1, 0)
    rnd(core, 2, [[C, C], [D, C]],
        direct=[[F, F], [F, F]], third=[[T, F], [F, F]], bystanders=[[0, 1], [1, 0]])
    return core


def test_antisocial_and_deterrence_rates():
    m = punishing_populations().episode_metrics()
    # pop 0: judged cooperators: r1 victim 0 twice, r3 both victims twice = 6; punished: r1 by 1,
    #        r3 by 0 = 2 -> antisocial 2/6. judged defectors: r1 victim 1 twice, r2 both victims
    #        twice = 6; punished: r1 by 0 and by 3, r2 by 1 = 3 -> deterrence 3/6.
    # pop 1: judged cooperators: r1 4, r2 victim 0 twice, r3 victim 1 twice = 8, none punished
    #        -> 0. judged defectors: r2 victim 1 twice, r3 victim 0 twice = 4; punished: r2 by 2
    #        -> 1/4.
    assert m["antisocial_punishment_rate"] == pytest.approx([2 / 6, 0.0])
    assert m["deterrence_rate"] == pytest.approx([3 / 6, 1 / 4])


def test_punishments_matrix_counts_punisher_victim_pairs():
    core = punishing_populations()
    want = np.zeros((2, 4, 4), dtype=np.int64)
    # pop 0: 1 punished 0 in r1 and r2; 0 punished 1 (r1) and 2 (r3); 3 punished 1 (r1)
    want[0, 1, 0] = 2
    want[0, 0, 1] = 1
    want[0, 0, 2] = 1
    want[0, 3, 1] = 1
    # pop 1: 2 punished 1 (r2)
    want[1, 2, 1] = 1
    assert core.punishments.tolist() == want.tolist()
    # the matrix is per episode
    core.reset(keep_memory=True)
    assert not core.punishments.any()


def test_reward_components_efficiency_and_equality():
    core = punishing_populations()
    # pop 0 play: r1 (C,D) 0:+0 1:+4; r2 (D,D) 0:+1 1:+1; r3 (C,C) 2:+3 3:+3 -> [1, 5, 3, 3]
    #       fines (3 each): 0 twice, 1 twice (by 0 and 3), 2 once -> [-6, -6, -3, 0]
    #       punisher: 0: just +2, unjust -10; 1: unjust -10, just +2; 3: just +2 -> [-8, -8, 0, 2]
    #       returns [1-6-8, 5-6-8, 3-3, 3+2] = [-13, -9, 0, 5], total -17 over 3 rounds
    # pop 1 play: r1 (C,C) 0:+3 1:+3; r2 (C,D) 0:+0 1:+4; r3 (D,C) 2:+4 3:+0 -> [3, 7, 4, 0]
    #       fines [0, -3, 0, 0]; punisher [0, 0, 2, 0]; returns [3, 4, 6, 0], total 13
    assert core.per_agent["play_reward"].tolist() == [[1, 5, 3, 3], [3, 7, 4, 0]]
    assert core.episode_returns().tolist() == [[-13, -9, 0, 5], [3, 4, 6, 0]]
    m = core.episode_metrics()
    assert m["mean_play_reward"] == pytest.approx([12 / 4, 14 / 4])
    assert m["mean_fine"] == pytest.approx([-15 / 4, -3 / 4])
    assert m["mean_punisher_reward"] == pytest.approx([-14 / 4, 2 / 4])
    assert m["mean_reward"] == pytest.approx(m["mean_play_reward"] + m["mean_fine"]
                                             + m["mean_punisher_reward"])
    assert m["efficiency"] == pytest.approx([-17 / 3, 13 / 3])
    # equality = 1 - sum_ij |x_i - x_j| / (2 n sum_i |x_i|)
    # pop 0 (mixed signs): unordered |diffs| 4+13+18+9+14+5 = 63 -> 126 / (2*4*27) = 7/12
    # pop 1: unordered |diffs| 1+3+3+2+4+6 = 19 -> 38 / (2*4*13) = 19/52
    assert m["equality"] == pytest.approx([1 - 7 / 12, 1 - 19 / 52])


def test_equality_with_all_negative_returns():
    core = make_core(batch_size=2, n_agents=3, direct_punishment=True, third_party_punishment=True,
                     costly_punishment=True)
    choose(core, [1, 0, 0], [1, 0, 0])
    # pop 0: (D, C); 1 punishes defector 0 (just, costly -3), 0 punishes cooperator 1 (unjust
    #        -10), bystander 2 punishes 0 (just, -3) and spares 1.
    #        returns: 0: 4 - 3 - 3 - 10 = -12; 1: 0 - 3 - 3 = -6; 2: -3 -> all negative
    # pop 1: (C, C), nobody punishes -> returns [3, 3, 0]
    rnd(core, 0, [[D, C], [C, C]], direct=[[T, T], [F, F]], third=[[T, F], [F, F]],
        bystanders=[[2, 2], [2, 2]])
    assert core.episode_returns().tolist() == [[-12, -6, -3], [3, 3, 0]]
    m = core.episode_metrics()
    # pop 0: unordered |diffs| 6+9+3 = 18 -> 36 / (2*3*21) = 2/7
    # pop 1: unordered |diffs| 0+3+3 = 6 -> 12 / (2*3*6) = 1/3
    assert m["equality"] == pytest.approx([5 / 7, 2 / 3])
    assert m["efficiency"] == pytest.approx([-21.0, 6.0])  # one round each
    assert m["mean_fine"] == pytest.approx([-9 / 3, 0.0])
    assert m["mean_punisher_reward"] == pytest.approx([-16 / 3, 0.0])
    assert m["deterrence_rate"] == pytest.approx([1.0, 0.0])  # 0 judged twice, punished twice
    assert m["antisocial_punishment_rate"] == pytest.approx([0.5, 0.0])  # 1 judged twice, once


def textbook_gini(x: np.ndarray) -> float:
    """Gini of non-negative values from the sorted (Lorenz) form: 2 sum_i i x_(i) / (n sum x) - (n+1)/n."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    n = len(x)
    return 2 * np.sum(np.arange(1, n + 1) * x) / (n * x.sum()) - (n + 1) / n


def test_gini_hand_values():
    assert gini(np.array([0, 0, 0, 1])) == pytest.approx(0.75)  # 6 / (2*4*1)
    assert gini(np.array([1, 1, 1, 1])) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0])) == pytest.approx(0.0)  # all zero: perfectly equal
    assert gini(np.array([1, 3])) == pytest.approx(0.25)  # 4 / (2*2*4)
    # negative values: normalised by the mean absolute value
    assert gini(np.array([-2, -2, -2])) == pytest.approx(0.0)
    assert gini(np.array([-1, -3])) == pytest.approx(0.25)  # 4 / (2*2*4)
    assert gini(np.array([-3, 3])) == pytest.approx(0.5)  # 12 / (2*2*6)
    assert gini(np.array([-1, 0, 1])) == pytest.approx(2 / 3)  # 8 / (2*3*2)
    # batched along the last axis
    assert gini(np.array([[0, 0, 0, 1], [2, 2, 2, 2], [-1, 0, 0, 1]])) == pytest.approx(
        [0.75, 0.0, 0.75])  # row 3: unordered |diffs| 1+1+2+0+1+1 = 6 -> 12 / (2*4*2)


def test_gini_matches_textbook_for_non_negative_values_and_is_bounded():
    rng = np.random.default_rng(0)
    for _ in range(50):
        x = rng.exponential(size=int(rng.integers(2, 12)))
        assert gini(x) == pytest.approx(textbook_gini(x))
        mixed = rng.normal(size=int(rng.integers(2, 12)))
        assert 0.0 <= gini(mixed) <= 1.0
    # one holder of everything among n: (n - 1) / n
    for n in (2, 5, 10):
        x = np.zeros(n)
        x[3 % n] = 7.0
        assert gini(x) == pytest.approx((n - 1) / n)


def test_coop_after_partner_move_tit_for_tat():
    core = make_core(batch_size=2, n_agents=3)
    # partners: 0->1, 1->0, 2->0; game 0 is 0 vs 1, game 2 is 2 vs 0
    choose(core, [1, 0, 0], [1, 0, 0])
    # pop 0: agent 0 plays tit-for-tat, agent 1 plays D, C, D, D
    #   r1: (C, D)  both see an unknown last move: not counted
    #   r2: (D, C)  0 saw D -> D (after-D, no C); 1 saw C -> C (after-C, C)
    #   r3: (C, D)  0 saw C -> C (after-C, C);     1 saw D -> D (after-D, no C)
    #   r4: (D, D)  0 saw D -> D (after-D, no C);  1 saw C -> D (after-C, no C)
    #   game 2 r1: (C, C)  2 (no history) sees 0's last D and cooperates (after-D, C);
    #                      0 sees 2's unknown: not counted
    #   after C: 3 plays, 2 C -> 2/3; after D: 4 plays, 1 C -> 1/4
    # pop 1: everyone always cooperates: r2-r4 six plays after C; game 2: 2 sees 0's C (after-C)
    #   -> after C 7/7; after D never happens -> 0 (undefined rates are 0)
    for acts in ([[C, D], [C, C]], [[D, C], [C, C]], [[C, D], [C, C]], [[D, D], [C, C]]):
        rnd(core, 0, acts)
    rnd(core, 2, [[C, C], [C, C]])
    m = core.episode_metrics()
    assert m["coop_after_partner_c"] == pytest.approx([2 / 3, 1.0])
    assert m["coop_after_partner_d"] == pytest.approx([1 / 4, 0.0])
    assert core.plays_after.tolist() == [[3, 4, 3], [7, 0, 3]]  # C, D, unknown
    # with memory kept, the first moves of the next episode see last episode's moves
    # (last moves: pop 0: 0 C, 1 D, 2 C; pop 1: all C)
    core.reset(keep_memory=True)
    choose(core, [1, 0, 0], [1, 0, 0])
    # pop 0: (D, D): 0 saw 1's D (after-D, no C), 1 saw 0's C (after-C, no C)
    # pop 1: (C, D): 0 saw C (after-C, C), 1 saw C (after-C, no C)
    rnd(core, 0, [[D, D], [C, D]])
    m = core.episode_metrics()
    assert m["coop_after_partner_c"] == pytest.approx([0.0, 0.5])
    assert m["coop_after_partner_d"] == pytest.approx([0.0, 0.0])
    assert core.plays_after.tolist() == [[1, 1, 0], [2, 0, 0]]


def test_partner_cooperator_rate_uses_last_episode():
    core = make_core(batch_size=2, n_agents=4)
    # episode 1 partners: pop 0: 0->1, 1->0, 2->3, 3->2; pop 1: 0->1, 1->0, 2->0, 3->0
    choose(core, [1, 0, 3, 2], [1, 0, 0, 0])
    # game 0 (0 vs 1 in both): pop 0 (C, C), (C, D); pop 1 (D, C), (D, C)
    rnd(core, 0, [[C, C], [D, C]])
    rnd(core, 0, [[C, D], [D, C]])
    # game 2: pop 0 2 vs 3: (C, D), (C, D), (D, D); pop 1 2 vs 0: (C, D), (C, D), (D, D)
    for _ in range(2):
        rnd(core, 2, [[C, D], [C, D]])
    rnd(core, 2, [[D, D], [D, D]])
    # cooperation fractions in episode 1:
    #   pop 0: 0: 2/2, 1: 1/2 (a tie counts, as the authors' coops >= defects), 2: 2/3, 3: 0/3
    #   pop 1: 0: 0/5, 1: 2/2, 2: 2/3, 3: never played
    core.reset(keep_memory=True)
    # episode 2 partners: pop 0: 0->2 (2/3 yes), 1->0 (1 yes), 2->1 (1/2 yes), 3->0 (yes) -> 4/4
    #                     pop 1: 0->3 (no plays: no), 1->2 (yes), 2->1 (yes), 3->0 (0 no) -> 2/4
    choose(core, [2, 0, 1, 0], [3, 2, 1, 0])
    assert core.episode_metrics()["partner_cooperator_rate"] == pytest.approx([1.0, 0.5])
    # it describes the partners as they were when chosen: play in episode 2 does not move it
    rnd(core, 0, [[D, D], [D, D]])
    rnd(core, 1, [[D, D], [D, D]])
    assert core.episode_metrics()["partner_cooperator_rate"] == pytest.approx([1.0, 0.5])
    # an episode later it is episode 2's cooperation that counts: in pop 0 agents 0, 2 (game 0)
    # and 1 (game 1) defected throughout and 3 did not play; in pop 1 0, 3, 1, 2 all defected
    # -> nobody is a cooperator
    core.reset(keep_memory=True)
    choose(core, [2, 0, 1, 0], [3, 2, 1, 0])
    assert core.episode_metrics()["partner_cooperator_rate"] == pytest.approx([0.0, 0.0])
    # without memory the past is forgotten
    core.reset(keep_memory=False)
    choose(core, [1, 0, 3, 2], [1, 0, 0, 0])
    assert core.episode_metrics()["partner_cooperator_rate"] == pytest.approx([0.0, 0.0])


def test_partner_punisher_rate_uses_last_judgement_before_episode():
    core = make_core(batch_size=2, n_agents=4, direct_punishment=True, third_party_punishment=True)
    choose(core, [1, 0, 0, 0], [1, 0, 0, 0])  # game 0 is 0 vs 1
    # order of judgements: direct on 0 (by 1), direct on 1 (by 0), third party on 0, on 1
    # r1 pop 0: (D, D); 1 punishes, 0 punishes; bystander 2 punishes 0, bystander 3 spares 1
    #    pop 1: (D, D); players spare; bystander 3 punishes 0, bystander 2 punishes 1
    rnd(core, 0, [[D, D], [D, D]], direct=[[T, T], [F, F]], third=[[T, F], [T, T]],
        bystanders=[[2, 3], [3, 2]])
    # r2 pop 0: (D, D); 1 spares, 0 punishes; bystander 2 spares 0 then punishes 1
    #    pop 1: (C, C); 1 punishes 0, 0 spares; bystander 3 punishes 0 then spares 1
    rnd(core, 0, [[D, D], [C, C]], direct=[[F, T], [T, F]], third=[[F, T], [T, F]],
        bystanders=[[2, 2], [3, 3]])
    # last judgements: pop 0: 0 punish, 1 spare, 2 punish, 3 spare
    #                  pop 1: 0 spare, 1 punish, 2 punish, 3 spare
    assert core.last_punish.tolist() == [[1, 0, 1, 0], [0, 1, 1, 0]]
    core.reset(keep_memory=True)
    # pop 0 partners 0->2 (yes), 1->0 (yes), 2->1 (no), 3->2 (yes) -> 3/4
    # pop 1 partners 0->3 (no), 1->0 (no), 2->1 (yes), 3->0 (no) -> 1/4
    choose(core, [2, 0, 1, 2], [3, 0, 1, 0])
    assert core.episode_metrics()["partner_punisher_rate"] == pytest.approx([0.75, 0.25])
    # just punishers of episode 1 (just >= unjust, at least one punishment; both mechanisms summed):
    #   pop 0: 0 (2 just), 1 (1 just), 2 (2 just): yes; 3 never punished: no
    #   pop 1: 1 (1 unjust): no; 2 (1 just): yes; 3 (1 just, 1 unjust: a tie): yes; 0 never: no
    # pop 0 partners 2, 0, 1, 2 -> 4/4; pop 1 partners 3 (yes), 0, 1, 0 -> 1/4
    assert core.episode_metrics()["partner_just_punisher_rate"] == pytest.approx([1.0, 0.25])
    # judgements during this episode do not move it (game 0: pop 0 0 vs 2, pop 1 0 vs 3):
    # everyone who judges now spares, everyone who judges punishes in pop 1
    rnd(core, 0, [[C, C], [C, C]], direct=[[F, F], [T, T]], third=[[F, F], [T, T]],
        bystanders=[[1, 3], [1, 2]])
    assert core.last_punish.tolist() == [[0, 0, 0, 0], [1, 1, 1, 1]]
    assert core.episode_metrics()["partner_punisher_rate"] == pytest.approx([0.75, 0.25])
    # ...until the next episode
    core.reset(keep_memory=True)
    choose(core, [2, 0, 1, 2], [3, 0, 1, 0])
    assert core.episode_metrics()["partner_punisher_rate"] == pytest.approx([0.0, 1.0])
    # episode 2: pop 0 nobody punished; pop 1 every punishment hit a cooperator
    assert core.episode_metrics()["partner_just_punisher_rate"] == pytest.approx([0.0, 0.0])
    # an agent that never judged (last judgement -1) is not a punisher; no memory: none judged
    core.reset(keep_memory=False)
    choose(core, [2, 0, 1, 2], [3, 0, 1, 0])
    assert core.episode_metrics()["partner_punisher_rate"] == pytest.approx([0.0, 0.0])


def test_in_degree_gini_and_selections():
    core = make_core(batch_size=2, n_agents=4)
    # pop 0: everyone picks 0, 0 picks 1 -> in-degrees [3, 1, 0, 0]
    #   unordered |diffs| 2+3+3+1+1+0 = 10 -> 20 / (2*4*4) = 0.625
    # pop 1: a permutation (0->1->2->3->0) -> in-degrees [1, 1, 1, 1] -> 0
    choose(core, [1, 0, 0, 0], [1, 2, 3, 0])
    m = core.episode_metrics()
    assert m["in_degree_gini"] == pytest.approx([0.625, 0.0])
    assert core.selections().tolist() == [
        [[0, 1, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]],
        [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0]],
    ]
    # five agents all picking 0 (0 picks 4): in-degrees [4, 0, 0, 0, 1]
    #   unordered |diffs| 4*3 + 3 + 1*3 = 18 -> 36 / (2*5*5) = 0.72
    core5 = make_core(batch_size=1, n_agents=5)
    choose(core5, [4, 0, 0, 0, 0])
    assert core5.episode_metrics()["in_degree_gini"] == pytest.approx([0.72])
    assert core5.selections()[0].sum(axis=0).tolist() == [4, 0, 0, 0, 1]


def test_every_metric_has_a_hand_check():
    """Guard: a metric added to METRIC_NAMES needs a hand-computed test (here or in the core tests)."""
    covered_here = {"antisocial_punishment_rate", "deterrence_rate", "partner_cooperator_rate",
                    "partner_punisher_rate", "partner_just_punisher_rate", "mean_play_reward", "mean_fine",
                    "mean_punisher_reward",
                    "efficiency", "equality", "coop_after_partner_c", "coop_after_partner_d",
                    "in_degree_gini"}
    covered_in_core_tests = {"cooperation_rate", "punishment_rate_direct",
                             "punishment_rate_third_party", "just_punishment_share", "mean_reward",
                             "mean_reputation"}
    covered_in_centipede_tests = {"mean_game_length"}
    assert set(METRIC_NAMES) == covered_here | covered_in_core_tests | covered_in_centipede_tests


# ============================================================================ caveman topology
CAVEMAN = dict(n_agents=25, topology="caveman")


def caveman_matrix(groups: int, size: int) -> np.ndarray:
    graph = nx.connected_caveman_graph(groups, size)
    return nx.to_numpy_array(graph, nodelist=range(groups * size), dtype=int).astype(bool)


@pytest.mark.parametrize("groups, size", [(5, 5), (2, 3), (3, 4), (4, 6), (8, 8)])
def test_caveman_adjacency_matches_networkx(groups, size):
    rules = GameRules(n_agents=groups * size, topology="caveman", caveman_groups=groups)
    assert np.array_equal(rules.adjacency, caveman_matrix(groups, size))
    # the neighbour table lists each agent's neighbours in id order, padded with -1
    adj = rules.adjacency
    degree = adj.sum(axis=1)
    assert rules.neighbours.shape == (groups * size, degree.max())
    for i in range(groups * size):
        row = rules.neighbours[i]
        assert row[:degree[i]].tolist() == np.flatnonzero(adj[i]).tolist()
        assert np.all(row[degree[i]:] == -1)
        assert rules.n_choices("select", i) == degree[i]
        assert rules.n_choices("play", i) == 2 and rules.n_choices("punish", i) == 2


def test_caveman_25_by_hand():
    rules = GameRules(**CAVEMAN)
    nb = rules.neighbours
    # clique {0..4} loses edge (0, 1) and gains (0, 24) (to the previous clique); clique {5..9}
    # loses (5, 6) and gains (5, 4)
    assert nb[0].tolist() == [2, 3, 4, 24, -1]
    assert nb[1].tolist() == [2, 3, 4, -1, -1]
    assert nb[4].tolist() == [0, 1, 2, 3, 5]
    assert nb[5].tolist() == [4, 7, 8, 9, -1]
    assert nb[24].tolist() == [0, 20, 21, 22, 23]
    assert rules.adjacency.sum() == 2 * 5 * 10  # 5 cliques of 10 edges, rewiring keeps the count
    assert not rules.adjacency.diagonal().any()
    assert np.array_equal(rules.adjacency, rules.adjacency.T)
    assert rules.n_actions("select") == 5 and rules.feature_size("select") == 6


@pytest.mark.parametrize("n_agents, groups", [(24, 5), (10, 5), (8, 4), (7, 2), (6, 3)])
def test_invalid_caveman_configs_raise(n_agents, groups):
    # not divisible (24/5, 7/2) or communities smaller than 3 (10/5, 8/4, 6/3)
    with pytest.raises(ValueError, match="caveman"):
        GameRules(n_agents=n_agents, topology="caveman", caveman_groups=groups)
    with pytest.raises(ValueError):
        parallel_env(n_agents=n_agents, topology="caveman", caveman_groups=groups)
    # the same population is fine in the complete topology
    assert GameRules(n_agents=n_agents).adjacency.sum() == n_agents * (n_agents - 1)


def test_caveman_needs_at_least_two_groups():
    with pytest.raises(ValueError):
        GameRules(n_agents=6, topology="caveman", caveman_groups=1)


def test_caveman_random_matching_picks_only_neighbours():
    rules = GameRules(**CAVEMAN)
    core = PunishmentCore(rules, batch_size=4000, seed=11)
    core.choose_partners(None)
    adj = rules.adjacency
    p = core.partners
    assert adj[np.arange(25)[None, :], p].all()  # every partner is a neighbour (never self)
    for i in range(25):
        nbrs = rules.neighbours[i][rules.neighbours[i] >= 0]
        counts = np.array([(p[:, i] == j).sum() for j in nbrs])
        assert counts.sum() == 4000  # nothing outside the neighbourhood
        expected = 4000 / len(nbrs)  # uniform among the neighbours
        assert np.all(np.abs(counts - expected) < 0.2 * expected), (i, counts)


def caveman_choice(rules: GameRules, partners: dict[int, int]) -> list[int]:
    """Select indices picking ``partners[i]`` (first neighbour for agents not listed)."""
    out = []
    for i in range(rules.n_agents):
        row = rules.neighbours[i].tolist()
        out.append(row.index(partners[i]) if i in partners else 0)
    return out


@pytest.mark.parametrize("with_replacement", [True, False])
def test_caveman_bystanders_come_from_both_neighbourhoods(with_replacement):
    rules = GameRules(**CAVEMAN, third_party_punishment=True,
                      third_party_with_replacement=with_replacement)
    b = 3000
    core = PunishmentCore(rules, batch_size=b, seed=5)
    core.choose_partners(np.array([caveman_choice(rules, {0: 24, 2: 3, 4: 5})] * b))
    # hand-computed candidates (union of both neighbourhoods, minus the players):
    #   0 vs 24: {2, 3, 4, 24} | {0, 20, 21, 22, 23} -> {2, 3, 4, 20, 21, 22, 23}
    #   2 vs 3:  {0, 1, 3, 4} | {0, 1, 2, 4}         -> {0, 1, 4}
    #   4 vs 5:  {0, 1, 2, 3, 5} | {4, 7, 8, 9}      -> {0, 1, 2, 3, 7, 8, 9}
    want = {0: {2, 3, 4, 20, 21, 22, 23}, 2: {0, 1, 4}, 4: {0, 1, 2, 3, 7, 8, 9}}
    for game, candidates in want.items():
        core.play(game, np.zeros((b, 2), dtype=np.int64))
        by = core.draw_bystanders()
        for k in (0, 1):
            drawn, counts = np.unique(by[:, k], return_counts=True)
            assert set(drawn.tolist()) == candidates, (game, k)
            expected = b / len(candidates)
            assert np.all(np.abs(counts - expected) < 0.2 * expected), (game, k, counts)
        if with_replacement:
            assert np.any(by[:, 0] == by[:, 1])
        else:
            assert np.all(by[:, 0] != by[:, 1])


@pytest.mark.parametrize("with_replacement", [True, False])
def test_caveman_random_games_bystanders_never_players_or_strangers(with_replacement):
    rules = GameRules(**CAVEMAN, third_party_punishment=True,
                      third_party_with_replacement=with_replacement)
    b = 512
    core = PunishmentCore(rules, batch_size=b, seed=9)
    adj = rules.adjacency
    rows = np.arange(b)
    for _ in range(2):
        core.choose_partners(None)
        for g in range(25):
            core.play(g, np.zeros((b, 2), dtype=np.int64))
            pl = core.players(g)
            assert adj[pl[:, 0], pl[:, 1]].all()
            by = core.draw_bystanders()
            for k in (0, 1):
                assert np.all(by[:, k] != pl[:, 0]) and np.all(by[:, k] != pl[:, 1])
                assert np.all(adj[pl[:, 0], by[:, k]] | adj[pl[:, 1], by[:, k]])
            if not with_replacement:
                assert np.all(by[:, 0] != by[:, 1])
            before = core.punishments.copy()
            core.punish(None, np.ones((b, 2), bool), by)
            # each bystander punished exactly the victim it judged: [punisher, victim] += 1
            want = before.copy()
            for k in (0, 1):
                np.add.at(want, (rows, by[:, k], pl[:, k]), 1)
            assert np.array_equal(core.punishments, want)


def caveman_env(**extra):
    return parallel_env(**CAVEMAN, partner_selection=True, reputation=True, **extra)


def test_caveman_env_select_masks_are_each_agents_degree():
    env = caveman_env()
    rules = env.rules
    obs, infos = env.reset(seed=0)
    assert env.action_space("player_0").n == 5  # the largest degree
    degree = rules.adjacency.sum(axis=1)
    for i in range(25):
        a = f"player_{i}"
        assert infos[a]["decision"] == "select"
        assert obs[a]["action_mask"].tolist() == [1] * degree[i] + [0] * (5 - degree[i])
    # agent 1 has degree 3: action 3 is masked and refused
    acts = {f"player_{i}": 0 for i in range(25)}
    acts["player_1"] = 3
    with pytest.raises(ValueError, match="illegal action 3"):
        env.step(acts)


def test_caveman_env_select_action_indexes_neighbours():
    env = caveman_env()
    rules = env.rules
    env.reset(seed=0)
    degree = rules.adjacency.sum(axis=1)
    # agents 0..24 pick: the last neighbour for even agents, (i // 2) mod degree for odd ones
    ks = [int(degree[i] - 1) if i % 2 == 0 else (i // 2) % int(degree[i]) for i in range(25)]
    obs, *_ = env.step({f"player_{i}": ks[i] for i in range(25)})
    partners = env.core.partners[0].tolist()
    assert partners == [int(rules.neighbours[i][ks[i]]) for i in range(25)]
    # by hand: 0 picks its 4th neighbour 24, 1 (k=0) picks 2, 4 picks 5, 24 picks 23
    assert partners[0] == 24 and partners[1] == 2 and partners[4] == 5 and partners[24] == 23
    # the first game is then played by 0 and 24
    playing = [a for a in env.agents if obs[a]["observation"][2] == 1.0]
    assert playing == ["player_0", "player_24"]


def test_caveman_select_features_own_then_neighbours_then_padding():
    env = caveman_env(reputation_obs_scale=0.5)
    env.reset(seed=0)
    # distinct per-viewer scores: viewer v sees target t as 100 v + t (like private views)
    rep = 100.0 * np.arange(25)[:, None] + np.arange(25)[None, :]
    env.core.reputation[0] = rep
    feats = env.core.select_features()[0]
    assert feats.shape == (25, 6)
    nb = env.rules.neighbours
    for i in range(25):
        nbrs = nb[i][nb[i] >= 0]
        want = [rep[i, i]] + [rep[i, j] for j in nbrs] + [0.0] * (5 - len(nbrs))
        assert feats[i].tolist() == pytest.approx([0.5 * w for w in want]), i
    # by hand for agent 1 (neighbours 2, 3, 4; two padding slots): own 101, then 102, 103, 104
    assert feats[1].tolist() == pytest.approx([50.5, 51.0, 51.5, 52.0, 0.0, 0.0])
    # the env shows the same vector in the select phase (reputations survive a keep_memory reset)
    obs, _ = env.reset(options={"keep_memory": True})
    for i in (0, 1, 5, 24):
        vec = obs[f"player_{i}"]["observation"]
        assert vec[:PHASE_OFFSET].tolist() == [0, 1, 0, 0]  # the select phase
        assert vec[PHASE_OFFSET:].tolist() == pytest.approx(feats[i].tolist())


def test_caveman_env_episode_keeps_games_and_judges_local():
    env = caveman_env(direct_punishment=True, third_party_punishment=True, rounds_per_game=1)
    adj = env.rules.adjacency
    rng = np.random.default_rng(3)
    obs, infos = env.reset(seed=4)
    seen_third_party = 0
    for _ in range(1 + 25 * 3 + 1):
        if not env.agents:
            break
        game = infos["player_0"]["game"]
        p0, p1 = env.core.players(game)[0].tolist()
        for a in env.agents:
            i = int(a.rsplit("_", 1)[1])
            if infos[a]["decision"] == "play":
                assert i in (p0, p1) and adj[p0, p1]
            if infos[a]["mechanism"] == "third_party":
                assert i not in (p0, p1) and (adj[p0, i] or adj[p1, i]), (game, i)
                seen_third_party += 1
        acts = {a: int(rng.choice(np.flatnonzero(obs[a]["action_mask"]))) for a in env.agents}
        obs, _, _, _, infos = env.step(acts)
    assert not env.agents
    assert seen_third_party >= 25  # at least one third-party judge per game


def test_caveman_parallel_api():
    env = caveman_env(direct_punishment=True, third_party_punishment=True, rounds_per_game=1)
    # one episode: select + 25 games x 1 round x (play + up to 2 punish steps)
    parallel_api_test(env, num_cycles=1 + 25 * 3 + 5)
    assert env.agents == [], "parallel_api_test did not reach the end of an episode"
