"""Tests of ``PunishmentCore``, the batched numpy rules of the punishment/reputation game.

Scripted decisions with hand-computed outcomes (reference sections 1.2-1.8), the ``coop/*``
episode metrics on a population with known counts, batch consistency (B populations vs B = 1),
bystander draws and state round trips.
"""

from __future__ import annotations

import numpy as np
import pytest

from aligngym.envs.cooperation import GameRules
from aligngym.envs.cooperation.core import COOPERATE, DEFECT, METRIC_NAMES, UNKNOWN, PunishmentCore

C, D = COOPERATE, DEFECT


def make_core(batch_size: int = 1, seed: int = 0, **rules) -> PunishmentCore:
    return PunishmentCore(GameRules(**rules), batch_size=batch_size, seed=seed)


def choice_for(n: int, partners: list[int]) -> list[int]:
    """Select indices (others in id order, self removed) that pick ``partners[i]`` for agent i."""
    return [[j for j in range(n) if j != i].index(p) for i, p in enumerate(partners)]


# ---------------------------------------------------------------------------- partners
def test_choose_partners_maps_index_to_others_in_id_order():
    core = make_core(batch_size=3, n_agents=4)
    choice = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 2]])
    core.choose_partners(choice)
    assert core.partners.tolist() == [[1, 0, 0, 0], [2, 2, 1, 1], [3, 3, 3, 2]]
    assert core.players(2).tolist() == [[2, 0], [2, 1], [2, 3]]


def test_random_partners_never_self():
    core = make_core(batch_size=256, n_agents=5, seed=1)
    core.choose_partners(None)
    assert not np.any(core.partners == np.arange(5)[None, :])
    assert core.partners.min() == 0 and core.partners.max() == 4
    for i in range(5):  # every other agent is drawn for every selector
        assert set(core.partners[:, i].tolist()) == set(range(5)) - {i}


@pytest.mark.parametrize("bad", [np.zeros((1, 4)), np.full((2, 4), 3), np.full((2, 4), -1)])
def test_choose_partners_rejects_bad_choices(bad):
    core = make_core(batch_size=2, n_agents=4)
    with pytest.raises(ValueError, match="partner choices must have shape"):
        core.choose_partners(bad)


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        make_core(batch_size=0)


# ---------------------------------------------------------------------------- payoffs
@pytest.mark.parametrize("payoffs, table", [
    ({}, [[3, 3], [0, 4], [4, 0], [1, 1]]),
    ({"payoffs": {"R": 2.0, "S": -2.0, "T": 6.0, "P": -1.0}}, [[2, 2], [-2, 6], [6, -2], [-1, -1]]),
])
def test_play_payoffs_batched(payoffs, table):
    core = make_core(batch_size=4, n_agents=3, **payoffs)
    core.choose_partners(np.array([choice_for(3, [2, 0, 0])] * 4))
    actions = np.array([[C, C], [C, D], [D, C], [D, D]])
    pay = core.play(0, actions)
    assert pay.tolist() == table
    assert core.per_agent["play_reward"][:, 0].tolist() == [t[0] for t in table]
    assert core.per_agent["play_reward"][:, 2].tolist() == [t[1] for t in table]
    assert np.all(core.per_agent["play_reward"][:, 1] == 0)
    assert core.last_action.tolist() == [[a, UNKNOWN, b] for a, b in actions.tolist()]
    assert core.round_actions.tolist() == actions.tolist()


@pytest.mark.parametrize("bad", [np.array([[0, 2]]), np.array([[0, 1], [0, 1]]), np.array([[-1, 0]])])
def test_play_rejects_bad_actions(bad):
    core = make_core(batch_size=1, n_agents=3)
    with pytest.raises(ValueError, match="play actions must have shape"):
        core.play(0, bad)


# ---------------------------------------------------------------------------- punishment
@pytest.mark.parametrize("costly, just_reward", [(False, 2.0), (True, -3.0)])
def test_direct_punishment_fines_and_rewards(costly, just_reward):
    # population 0: just (the partner punishes the defecting selector)
    # population 1: unjust (the selector punishes the cooperating partner)
    # population 2: both punish each other after (D, C)
    core = make_core(batch_size=3, n_agents=3, direct_punishment=True, costly_punishment=costly)
    core.choose_partners(np.array([choice_for(3, [1, 0, 0])] * 3))
    core.play(0, np.array([[D, C], [D, C], [D, C]]))
    core.punish(direct=np.array([[True, False], [False, True], [True, True]]), third_party=None)
    fine, punisher = core.per_agent["fine"], core.per_agent["punisher_reward"]
    assert fine.tolist() == [[-3, 0, 0], [0, -3, 0], [-3, -3, 0]]
    assert punisher.tolist() == [[0, just_reward, 0], [-10, 0, 0], [-10, just_reward, 0]]
    returns = core.episode_returns()
    assert returns.tolist() == [[1, just_reward, 0], [-6, -3, 0], [-9, just_reward - 3, 0]]


def test_fine_size_is_configurable():
    core = make_core(n_agents=3, direct_punishment=True, fine=5.0, just_punish_reward=1.0,
                     unjust_punish_reward=-7.0)
    core.choose_partners(np.array([choice_for(3, [1, 0, 0])]))
    core.play(0, np.array([[D, C]]))
    core.punish(direct=np.array([[True, True]]), third_party=None)
    assert core.per_agent["fine"][0].tolist() == [-5, -5, 0]
    assert core.per_agent["punisher_reward"][0].tolist() == [-7, 1, 0]


def test_direct_then_third_party_fines_stack():
    core = make_core(n_agents=4, direct_punishment=True, third_party_punishment=True)
    core.choose_partners(np.array([choice_for(4, [1, 0, 0, 0])]))
    core.play(0, np.array([[D, D]]))
    core.punish(direct=np.array([[True, False]]), third_party=np.array([[True, False]]),
                bystanders=np.array([[3, 2]]))
    assert core.per_agent["fine"][0].tolist() == [-6, 0, 0, 0]
    assert core.per_agent["punisher_reward"][0].tolist() == [0, 2, 0, 2]


def test_punish_requires_decisions_of_active_mechanisms():
    core = make_core(n_agents=4, direct_punishment=True, third_party_punishment=True)
    core.play(0, np.array([[C, C]]))
    with pytest.raises(ValueError, match="direct punishment is on"):
        core.punish(direct=None, third_party=np.zeros((1, 2), bool), bystanders=np.array([[2, 3]]))
    with pytest.raises(ValueError, match="third-party punishment is on"):
        core.punish(direct=np.zeros((1, 2), bool), third_party=np.zeros((1, 2), bool))
    with pytest.raises(ValueError, match="direct decisions must have shape"):
        core.punish(direct=np.zeros((1, 3), bool), third_party=np.zeros((1, 2), bool),
                    bystanders=np.array([[2, 3]]))


# ---------------------------------------------------------------------------- bystanders
@pytest.mark.parametrize("n_agents, with_replacement", [(3, True), (5, True), (5, False), (6, False)])
def test_bystanders_are_never_players(n_agents, with_replacement):
    core = make_core(batch_size=512, n_agents=n_agents, seed=3, third_party_punishment=True,
                     third_party_with_replacement=with_replacement)
    core.choose_partners(None)
    repeats = 0
    for g in range(n_agents):
        core.play(g, np.zeros((512, 2), dtype=np.int64))
        pl = core.players(g)
        by = core.draw_bystanders()
        assert by.shape == (512, 2)
        for k in (0, 1):
            assert np.all(by[:, k] != pl[:, 0]) and np.all(by[:, k] != pl[:, 1])
            assert by.min() >= 0 and by.max() < n_agents
        repeats += int(np.sum(by[:, 0] == by[:, 1]))
        # every non-player is drawn somewhere in the batch
        for b in range(3):
            others = set(range(n_agents)) - set(pl[b].tolist())
            rows = np.flatnonzero((pl[:, 0] == pl[b, 0]) & (pl[:, 1] == pl[b, 1]))
            assert set(by[rows].ravel().tolist()) == others
    if n_agents == 3:
        assert repeats == 512 * n_agents  # one possible bystander judges both victims
    elif with_replacement:
        assert repeats > 0
    else:
        assert repeats == 0


# ---------------------------------------------------------------------------- reputation
@pytest.mark.parametrize("source, want", [
    # agent 0 plays C (+1) and justly punishes 1 (+2); agent 1 plays D (-1) and unjustly
    # punishes 0 (-3); bystander 2 justly punishes 1 (+2); bystander 3 unjustly punishes 0 (-3)
    ("play", [1, -1, 0, 0]),
    ("punish", [2, -3, 2, -3]),
    ("both", [3, -4, 2, -3]),
])
def test_reputation_deltas_by_source(source, want):
    core = make_core(batch_size=2, n_agents=4, direct_punishment=True, third_party_punishment=True,
                     reputation=True, reputation_source=source)
    core.choose_partners(np.array([choice_for(4, [1, 0, 0, 0])] * 2))
    core.play(0, np.array([[C, D]] * 2))
    core.punish(direct=np.ones((2, 2), bool), third_party=np.ones((2, 2), bool),
                bystanders=np.array([[3, 2]] * 2))
    for b in range(2):
        for viewer in range(4):  # public: every view is the same
            assert core.reputation[b, viewer].tolist() == want


def test_reputation_off_never_moves():
    core = make_core(n_agents=4, direct_punishment=True)
    core.play(0, np.array([[C, D]]))
    core.punish(direct=np.ones((1, 2), bool), third_party=None)
    assert np.all(core.reputation == 0)


def test_reputation_custom_deltas():
    core = make_core(n_agents=3, direct_punishment=True, reputation=True, rep_cooperate=0.5,
                     rep_defect=-2.0, rep_just_punish=4.0, rep_unjust_punish=-7.0)
    core.choose_partners(np.array([choice_for(3, [1, 0, 0])]))
    core.play(0, np.array([[C, D]]))
    core.punish(direct=np.ones((1, 2), bool), third_party=None)
    assert core.reputation[0, 2].tolist() == [0.5 + 4.0, -2.0 - 7.0, 0.0]


def test_private_reputation_persecutor_and_avenger():
    core = make_core(n_agents=5, direct_punishment=True, third_party_punishment=True,
                     reputation=True, reputation_view="private", reputation_source="punish",
                     reputation_in=("play", "punish"))
    core.choose_partners(np.array([choice_for(5, [1, 0, 0, 0, 0])]))
    core.play(0, np.array([[C, D]]))
    # direct: 0 justly punishes 1 (no avenger: the co-player is the punisher itself);
    # third party: 3 justly punishes 1, 4 unjustly punishes 0
    core.punish(direct=np.array([[False, True]]), third_party=np.array([[True, True]]),
                bystanders=np.array([[4, 3]]))
    want = np.zeros((5, 5))
    want[:, 0] += 2.0  # societal: 0's just punishment
    want[1, 0] += -5.0  # persecutor: victim 1's view of 0
    want[:, 3] += 2.0  # societal: 3's just punishment
    want[1, 3] += -5.0  # persecutor
    want[0, 3] += 5.0  # avenger: co-player 0's view of 3
    want[:, 4] += -3.0  # societal: 4's unjust punishment
    want[0, 4] += -5.0  # persecutor: victim 0's view of 4; unjust, so no avenger
    assert np.array_equal(core.reputation[0], want)
    # features use the deciding agent's own view
    # select features: own score first, then each other agent's in id order (this agent's view)
    expected = [[want[i, i]] + [want[i, j] for j in range(len(want)) if j != i] for i in range(len(want))]
    assert core.select_features()[0].tolist() == expected
    assert core.play_features(0)[0].tolist() == [[D, C, want[0, 1], want[0, 0]],
                                                 [C, D, want[1, 0], want[1, 1]]]
    # punishers: 1 judges victim 0, 4 judges victim 1: [victim, co-player, rep co-player, rep victim]
    assert core.punish_features(np.array([[1, 4]]))[0].tolist() == [
        [C, D, want[1, 1], want[1, 0]], [D, C, want[4, 0], want[4, 1]]]
    assert want[1, 0] == -3.0 and want[4, 0] == 2.0


def test_reputation_scale_in_features():
    core = make_core(n_agents=3, direct_punishment=True, reputation=True,
                     reputation_in=("play", "punish"), reputation_obs_scale=0.1)
    core.choose_partners(np.array([choice_for(3, [1, 2, 0])]))
    core.play(0, np.array([[C, D]]))
    rep = core.reputation[0]
    scaled = [[rep[i, i]] + [rep[i, j] for j in range(len(rep)) if j != i] for i in range(len(rep))]
    assert np.allclose(core.select_features()[0], 0.1 * np.array(scaled))
    assert np.allclose(core.play_features(0)[0], [[1, 0, -0.1, 0.1], [0, 1, 0.1, -0.1]])
    assert np.allclose(core.punish_features(np.array([[1, 0]]))[0],
                       [[0, 1, -0.1, 0.1], [1, 0, 0.1, -0.1]])


# ---------------------------------------------------------------------------- metrics
def scripted_population_core() -> PunishmentCore:
    """Two populations of 4 with hand-counted outcomes (see ``test_episode_metrics``)."""
    core = make_core(batch_size=2, n_agents=4, direct_punishment=True, third_party_punishment=True,
                     reputation=True)
    core.choose_partners(np.array([choice_for(4, [1, 0, 0, 0])] * 2))
    # round 1: population 0 plays (C, D); 0 justly punishes 1; bystander 2 unjustly punishes 0
    #          population 1 plays (C, C); nobody punishes
    core.play(0, np.array([[C, D], [C, C]]))
    core.punish(direct=np.array([[False, True], [False, False]]),
                third_party=np.array([[True, False], [False, False]]),
                bystanders=np.array([[2, 3], [2, 3]]))
    # round 2: population 0 plays (D, D) and the players punish each other (both just)
    #          population 1 plays (C, D); bystander 2 justly punishes 1
    core.play(0, np.array([[D, D], [C, D]]))
    core.punish(direct=np.array([[True, True], [False, False]]),
                third_party=np.array([[False, False], [False, True]]),
                bystanders=np.array([[3, 3], [2, 2]]))
    return core


def test_episode_metrics():
    core = scripted_population_core()
    # population 0: rewards 0: play 0+1, fines -3-3, punisher +2+2 = -1; 1: 4+1-3-3+2 = 1;
    # 2: -10; 3: 0. reputations: 0: +1 +2 -1 +2 = 4; 1: -1 -1 +2 = 0; 2: -3; 3: 0.
    # population 1: rewards 0: 3+0 = 3; 1: 3+4-3 = 4; 2: +2; 3: 0. reputations 2, 0, 2, 0.
    # counts (pop 0 / pop 1): plays 4/4, coops 1/3, direct 3 of 4 / 0 of 4, third party
    # 1 of 4 / 1 of 4, just 3 unjust 1 / just 1 unjust 0.
    assert core.episode_returns().tolist() == [[-1, 1, -10, 0], [3, 4, 2, 0]]
    m = core.episode_metrics()
    assert set(m) == set(METRIC_NAMES)
    assert all(v.shape == (2,) for v in m.values())
    assert m["cooperation_rate"].tolist() == [0.25, 0.75]
    assert m["punishment_rate_direct"].tolist() == [0.75, 0.0]
    assert m["punishment_rate_third_party"].tolist() == [0.25, 0.25]
    assert m["just_punishment_share"].tolist() == [0.75, 1.0]
    assert m["mean_reward"].tolist() == [-2.5, 2.25]
    assert m["mean_reputation"].tolist() == [0.25, 1.0]


def test_metrics_are_zero_at_episode_start_and_after_reset():
    core = make_core(batch_size=2, n_agents=4, direct_punishment=True, third_party_punishment=True)
    for name, m in core.episode_metrics().items():
        # nothing happened yet: rates are 0, and equal (zero) returns mean perfect equality; the
        # partner metrics describe the choices made at reset, not play
        if name in ("in_degree_gini", "partner_cooperator_rate", "partner_punisher_rate", "partner_just_punisher_rate"):
            continue
        assert np.all(m == (1.0 if name == "equality" else 0.0)) and np.all(np.isfinite(m)), name
    core = scripted_population_core()
    core.reset(keep_memory=True)
    m = core.episode_metrics()
    for key in METRIC_NAMES:
        if key == "mean_reputation":
            assert m[key].tolist() == [0.25, 1.0]  # memory kept
        elif key == "equality":
            assert np.all(m[key] == 1.0)
        elif key not in ("in_degree_gini", "partner_cooperator_rate", "partner_punisher_rate",
                             "partner_just_punisher_rate"):
            assert np.all(m[key] == 0), key
    core.reset(keep_memory=False)
    assert np.all(core.episode_metrics()["mean_reputation"] == 0)
    assert np.all(core.last_action == UNKNOWN)


# ---------------------------------------------------------------------------- batch consistency
FULL = dict(n_agents=5, rounds_per_game=3, partner_selection=True, direct_punishment=True,
            third_party_punishment=True, reputation=True, reputation_view="private",
            reputation_in=("play", "punish"))


def random_episode(core: PunishmentCore, decisions: list[np.ndarray]) -> list[np.ndarray]:
    """Drive one episode from pre-drawn decisions; returns every feature array seen."""
    seen = []
    it = iter(decisions)
    n = core.rules.n_agents
    seen.append(core.select_features().copy())
    core.choose_partners(next(it))
    for g in range(n):
        for _ in range(core.rules.rounds_per_game):
            seen.append(core.play_features(g))
            seen.append(core.play(g, next(it)))
            bystanders = next(it)
            seen.append(core.punish_features(bystanders))
            core.punish(next(it), next(it), bystanders)
    return seen


def draw_decisions(rng: np.random.Generator, b: int, rules: dict, partners: np.ndarray | None = None):
    n = rules["n_agents"]
    out = [rng.integers(0, n - 1, size=(b, n))]
    chosen = np.asarray(out[0]) + (out[0] >= np.arange(n)[None, :])
    for g in range(n):
        for _ in range(rules["rounds_per_game"]):
            out.append(rng.integers(0, 2, size=(b, 2)))
            players = np.stack([np.full(b, g), chosen[:, g]], axis=1)
            by = np.empty((b, 2), dtype=np.int64)
            for row in range(b):
                others = [j for j in range(n) if j not in players[row]]
                by[row] = rng.choice(others, size=2)
            out.append(by)
            out.append(rng.random((b, 2)) < 0.5)
            out.append(rng.random((b, 2)) < 0.5)
    return out


def core_state(core: PunishmentCore, row: int) -> dict:
    s = core.state_dict()
    return {
        "reputation": s["reputation"][row], "last_action": s["last_action"][row],
        "partners": s["partners"][row],
        **{f"c_{k}": v[row] for k, v in s["counters"].items()},
        **{f"a_{k}": v[row] for k, v in s["per_agent"].items()},
        **{f"m_{k}": v[row] for k, v in core.episode_metrics().items()},
    }


def test_identical_decisions_give_identical_populations():
    b = 4
    core = PunishmentCore(GameRules(**FULL), batch_size=b, seed=0)
    one = draw_decisions(np.random.default_rng(5), 1, FULL)
    seen = random_episode(core, [np.repeat(d, b, axis=0) for d in one])
    for arr in seen:
        assert np.array_equal(arr, np.repeat(arr[:1], b, axis=0))
    ref = core_state(core, 0)
    assert np.any(ref["reputation"] != 0) and ref["c_plays"] == 2 * 5 * 3
    for row in range(1, b):
        st = core_state(core, row)
        for key in ref:
            assert np.array_equal(st[key], ref[key]), f"population {row} differs in {key}"


def test_batched_population_matches_single_population():
    b = 4
    batched = PunishmentCore(GameRules(**FULL), batch_size=b, seed=0)
    decisions = draw_decisions(np.random.default_rng(8), b, FULL)
    seen_b = random_episode(batched, decisions)
    for row in range(b):
        single = PunishmentCore(GameRules(**FULL), batch_size=1, seed=123)
        seen_1 = random_episode(single, [d[row:row + 1] for d in decisions])
        for arr_b, arr_1 in zip(seen_b, seen_1):
            assert np.array_equal(arr_b[row:row + 1], arr_1)
        ref, st = core_state(single, 0), core_state(batched, row)
        for key in ref:
            assert np.array_equal(st[key], ref[key]), f"population {row} differs in {key}"
    # the populations were given different decisions, so they really differ
    assert not np.array_equal(batched.reputation[0], batched.reputation[1])


# ---------------------------------------------------------------------------- state round trip
def test_state_dict_round_trip_continues_identically():
    rules = GameRules(n_agents=4, third_party_punishment=True, reputation=True)
    core = PunishmentCore(rules, batch_size=3, seed=4)
    core.play(0, np.array([[C, D]] * 3))
    state = core.state_dict()
    clone = PunishmentCore(rules, batch_size=3, seed=999)
    clone.load_state_dict(state)
    for c in (core, clone):
        c.punish(None, np.ones((3, 2), bool), c.draw_bystanders())
        c.choose_partners(None)
    assert np.array_equal(core.reputation, clone.reputation)
    assert np.array_equal(core.partners, clone.partners)
    assert np.array_equal(core.episode_returns(), clone.episode_returns())
    # the snapshot is a copy, not a view of the live arrays
    assert not np.array_equal(state["reputation"], core.reputation)


def test_seeded_cores_draw_identically():
    a = make_core(batch_size=8, n_agents=6, seed=42, third_party_punishment=True)
    b = make_core(batch_size=8, n_agents=6, seed=42, third_party_punishment=True)
    c = make_core(batch_size=8, n_agents=6, seed=43, third_party_punishment=True)
    assert np.array_equal(a.partners, b.partners)
    assert not np.array_equal(a.partners, c.partners)
    for core in (a, b):
        core.play(0, np.zeros((8, 2), dtype=np.int64))
    assert np.array_equal(a.draw_bystanders(), b.draw_bystanders())
