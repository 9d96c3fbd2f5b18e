"""Contract and rule tests for the PettingZoo game ``aligngym/punishment-v0``.

Covers PettingZoo's own API checkers over every valid switch combination, registry creation,
seeded determinism, pickling mid-episode, hand-computed rewards and reputations, the phase
structure, bad-input errors, rendering and ``keep_memory`` resets. Rules are from
``../shared/reference/cooperation-punishment.md`` sections 1.2-1.10.
"""

from __future__ import annotations

import itertools
import pickle
from typing import Any, Callable

import numpy as np
import pettingzoo
import pytest
from pettingzoo.test import api_test, parallel_api_test
from pydantic import ValidationError

import aligngym.envs  # noqa: F401  (registers aligngym/punishment-v0)
from aligngym.envs.cooperation import GameRules
from aligngym.envs.cooperation.punishment_v0 import env as aec_env
from aligngym.envs.cooperation.punishment_v0 import parallel_env, raw_env

ENV_ID = "aligngym/punishment-v0"
PHASE_OFFSET = 4  # observation = one-hot(idle, select, play, punish) + features
ALL_ON = dict(partner_selection=True, direct_punishment=True, third_party_punishment=True,
              reputation=True)


# ---------------------------------------------------------------------------- helpers
def pid(name: str) -> int:
    return int(name.rsplit("_", 1)[1])


def name(i: int) -> str:
    return f"player_{i}"


def episode_bound(rules: GameRules) -> int:
    """An upper bound on the steps of one episode (select + per round: play + up to 2 punish)."""
    return 1 + rules.n_agents * rules.rounds_per_game * 3


def masked_random(obs: dict, agents: list[str], rng: np.random.Generator) -> dict[str, int]:
    return {a: int(rng.choice(np.flatnonzero(obs[a]["action_mask"]))) for a in agents}


Policy = Callable[[raw_env, int, dict[str, Any], np.ndarray], int]


def scripted(env: raw_env, obs: dict, infos: dict, policy: Policy) -> dict[str, int]:
    """Actions for every live agent: 0 for idle agents, ``policy(env, agent_id, info, features)``
    for agents with a decision (features = the decision's part of the observation)."""
    acts = {}
    for a in env.agents:
        info = infos[a]
        if info["decision"] is None:
            acts[a] = 0
        else:
            acts[a] = int(policy(env, pid(a), info, obs[a]["observation"][PHASE_OFFSET:]))
    return acts


def same(a: Any, b: Any) -> bool:
    """Deep equality for nested dicts / tuples of numpy arrays, floats, strings."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return (isinstance(b, (tuple, list)) and len(a) == len(b)
                and all(same(x, y) for x, y in zip(a, b)))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    return a == b


def rollout(env: raw_env, seed: int, action_seed: int) -> list[tuple]:
    """A full episode with masked random actions; returns every step's (obs, rew, term, trunc, info)."""
    rng = np.random.default_rng(action_seed)
    obs, infos = env.reset(seed=seed)
    traj = [(obs, infos)]
    for _ in range(episode_bound(env.rules) + 1):
        if not env.agents:
            break
        out = env.step(masked_random(obs, env.agents, rng))
        obs = out[0]
        traj.append(out)
    assert not env.agents, "episode did not end within its step bound"
    return traj


# ---------------------------------------------------------------------------- 1. API checkers
SWITCHES = ("partner_selection", "direct_punishment", "third_party_punishment", "reputation")
COMBOS = [dict(zip(SWITCHES, bits)) for bits in itertools.product((False, True), repeat=4)]
VALID = [c for c in COMBOS if not (c["partner_selection"] and not c["reputation"])]
INVALID = [c for c in COMBOS if c["partner_selection"] and not c["reputation"]]
EXTRA = [
    dict(ALL_ON, reputation_view="private"),
    dict(ALL_ON, reputation_in=("play", "punish")),
    dict(ALL_ON, costly_punishment=True),
    dict(ALL_ON, reputation_view="private", reputation_in=("play", "punish"),
         costly_punishment=True, reputation_source="punish"),
    dict(ALL_ON, third_party_with_replacement=False),
    dict(ALL_ON, n_agents=3),
    dict(direct_punishment=True, reputation=True, reputation_in=("punish",), costly_punishment=True),
]


def combo_id(c: dict) -> str:
    parts = [k if v is True else f"{k}={v}" for k, v in c.items() if v]
    return "+".join(parts) or "plain"


@pytest.mark.parametrize("options", VALID + EXTRA, ids=combo_id)
def test_parallel_api(options):
    env = parallel_env(rounds_per_game=2, **options)
    parallel_api_test(env, num_cycles=episode_bound(env.rules) + 5)
    assert env.agents == [], "parallel_api_test did not reach the end of an episode"


@pytest.mark.parametrize("options", VALID + EXTRA, ids=combo_id)
def test_aec_api(options):
    env = aec_env(rounds_per_game=2, **options)
    api_test(env, num_cycles=episode_bound(env.unwrapped.rules) + 5)


def test_aec_refuses_a_bad_action_on_the_agents_own_step():
    """parallel_to_aec alone keeps the actions until the last agent's turn and reports there."""
    env = aec_env(n_agents=4, rounds_per_game=2, direct_punishment=True)
    env.reset(seed=0)
    first = env.agent_selection
    for bad in (99, float("nan"), "a", None):
        with pytest.raises(ValueError, match=f"for {first}|{first} must act"):
            env.step(bad)
        assert env.agent_selection == first  # refused without a trace: the agent still has its turn
    env.step(int(np.flatnonzero(env.last()[0]["action_mask"])[0]))
    assert env.agent_selection != first


@pytest.mark.parametrize("options", INVALID, ids=combo_id)
def test_rejected_switch_combinations_raise(options):
    with pytest.raises(ValueError, match="partner_selection needs reputation"):
        GameRules(**options)
    with pytest.raises(ValueError, match="partner_selection needs reputation"):
        parallel_env(**options)


# ---------------------------------------------------------------------------- 2. registry
def test_registry_parallel_and_aec():
    par = pettingzoo.make("parallel", ENV_ID, n_agents=4, rounds_per_game=2, **ALL_ON)
    assert isinstance(par, pettingzoo.ParallelEnv)
    assert par.rules.n_agents == 4 and par.rules.partner_selection
    obs, infos = par.reset(seed=0)
    assert set(obs) == {name(i) for i in range(4)}
    assert all(infos[a]["phase"] == "select" for a in par.agents)

    aec = pettingzoo.make("aec", ENV_ID, n_agents=4, direct_punishment=True)
    assert isinstance(aec, pettingzoo.AECEnv)
    assert aec.unwrapped.rules.direct_punishment and aec.unwrapped.rules.n_agents == 4
    aec.reset(seed=0)
    assert aec.agent_selection in aec.possible_agents
    steps = 0
    for agent in aec.agent_iter(10_000):
        ob, _, term, trunc, _ = aec.last()
        aec.step(None if term or trunc else int(np.flatnonzero(ob["action_mask"])[0]))
        steps += 1
    # 4 agents per parallel step, 4 games x 10 rounds x (play + direct punish)
    assert steps == 4 * 4 * 10 * 2 + 4


# ---------------------------------------------------------------------------- 3. determinism
@pytest.mark.parametrize("options", [
    dict(ALL_ON),
    dict(direct_punishment=True, third_party_punishment=True, reputation=True,
         reputation_view="private", reputation_in=("play", "punish")),
    dict(third_party_punishment=True),
], ids=["all_on", "random_matching_private", "tpp_only"])
def test_same_seed_same_trajectory_different_seed_differs(options):
    e1, e2 = parallel_env(rounds_per_game=3, **options), parallel_env(rounds_per_game=3, **options)
    t1, t2 = rollout(e1, seed=123, action_seed=7), rollout(e2, seed=123, action_seed=7)
    assert len(t1) == len(t2)
    for step, (a, b) in enumerate(zip(t1, t2)):
        assert same(a, b), f"trajectories diverge at step {step}"
    space = e1.observation_space(name(0))
    for out in t1:
        for a, ob in out[0].items():
            assert space.contains(ob), f"observation of {a} outside its space"
    # Same action stream, different env seed: the env's own randomness (matching, bystanders) differs.
    t3 = rollout(parallel_env(rounds_per_game=3, **options), seed=124, action_seed=7)
    assert len(t1) != len(t3) or not all(same(a, b) for a, b in zip(t1, t3))


def test_reset_seed_reproduces_partners_across_resets():
    env = parallel_env()
    env.reset(seed=5)
    first = env.core.partners.copy()
    env.reset(seed=6)
    env.reset(seed=5)
    assert np.array_equal(env.core.partners, first)


# ---------------------------------------------------------------------------- 4. pickle
@pytest.mark.parametrize("options", [dict(ALL_ON), dict(ALL_ON, reputation_view="private")],
                         ids=["public", "private"])
def test_pickle_mid_episode_continues_identically(options):
    env = parallel_env(rounds_per_game=3, **options)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=3)
    for _ in range(17):  # somewhere inside the second game
        obs, *_ = env.step(masked_random(obs, env.agents, rng))
    clone = pickle.loads(pickle.dumps(env))
    assert clone is not env and clone.core is not env.core
    while env.agents:
        acts = masked_random(obs, env.agents, rng)
        out, out_c = env.step(acts), clone.step(dict(acts))
        assert same(out, out_c)
        obs = out[0]
    assert clone.agents == []
    assert np.array_equal(env.core.reputation, clone.core.reputation)
    assert np.array_equal(env.core.episode_returns(), clone.core.episode_returns())


# ---------------------------------------------------------------------------- 5. hand-computed rules
def players_of_game(env: raw_env) -> tuple[int, int]:
    g = env._game
    return g, int(env.core.partners[0, g])


def run_episode(env: raw_env, policy: Policy, seed: int = 0,
                options: dict | None = None) -> list[tuple[dict, dict, dict]]:
    """Run a scripted episode; returns (infos_before, rewards, infos_after) for every step."""
    obs, infos = env.reset(seed=seed, options=options)
    log = []
    while env.agents:
        before = infos
        obs, rew, _, _, infos = env.step(scripted(env, obs, infos, policy))
        log.append((before, rew, infos))
    return log


@pytest.mark.parametrize("payoffs, expected", [
    (None, {(0, 0): (3, 3), (0, 1): (0, 4), (1, 0): (4, 0), (1, 1): (1, 1)}),
    ({"R": 5.0, "S": -1.0, "T": 7.0, "P": 0.5},
     {(0, 0): (5, 5), (0, 1): (-1, 7), (1, 0): (7, -1), (1, 1): (0.5, 0.5)}),
])
def test_prisoners_dilemma_payoffs(payoffs, expected):
    kw = {} if payoffs is None else {"payoffs": payoffs}
    env = parallel_env(n_agents=3, rounds_per_game=4, **kw)
    moves = list(expected)  # round r: selector plays moves[r][0], partner moves[r][1]

    def policy(env, me, info, feats):
        sel, _ = players_of_game(env)
        return moves[env._round][0 if me == sel else 1]

    obs, infos = env.reset(seed=1)
    for game in range(3):
        for r in range(4):
            sel, par = players_of_game(env)
            assert {pid(a) for a in env.agents if infos[a]["decision"] == "play"} == {sel, par}
            obs, rew, _, _, infos = env.step(scripted(env, obs, infos, policy))
            want_sel, want_par = expected[moves[r]]
            other = ({0, 1, 2} - {sel, par}).pop()
            assert rew[name(sel)] == pytest.approx(want_sel)
            assert rew[name(par)] == pytest.approx(want_par)
            assert rew[name(other)] == 0.0
            comps = {pid(a): infos[a]["reward_components"] for a in infos}
            assert comps[sel]["play"] == pytest.approx(want_sel)
            assert comps[par]["play"] == pytest.approx(want_par)
            assert comps[other]["play"] == 0.0
            assert comps[sel]["selection"] == pytest.approx(want_sel)  # selector's own game
            assert comps[par]["selection"] == 0.0
    assert env.agents == []


def direct_policy(sel_move: int, par_move: int, sel_punishes: bool, par_punishes: bool) -> Policy:
    def policy(env, me, info, feats):
        sel, _ = players_of_game(env)
        if info["decision"] == "play":
            return sel_move if me == sel else par_move
        return int(sel_punishes if me == sel else par_punishes)
    return policy


@pytest.mark.parametrize("costly", [False, True])
def test_direct_punishment_rewards(costly):
    kw = dict(n_agents=3, rounds_per_game=1, direct_punishment=True, costly_punishment=costly)
    just = -3.0 if costly else 2.0
    # Selector defects, partner cooperates; the partner punishes the selector (just), the selector
    # punishes the partner (unjust).
    env = parallel_env(**kw)
    log = run_episode(env, direct_policy(1, 0, True, True), seed=2)
    assert len(log) == 3 * 2
    for g in range(3):
        play_infos, play_rew, _ = log[2 * g]
        punish_before, punish_rew, punish_after = log[2 * g + 1]
        sel = g
        par = next(pid(a) for a in play_infos if play_infos[a]["decision"] == "play" and pid(a) != g)
        other = ({0, 1, 2} - {sel, par}).pop()
        assert play_rew[name(sel)] == 4.0 and play_rew[name(par)] == 0.0
        assert punish_before[name(sel)]["mechanism"] == "direct"
        assert punish_before[name(par)]["mechanism"] == "direct"
        assert punish_before[name(other)]["decision"] is None
        c_sel = punish_after[name(sel)]["reward_components"]
        c_par = punish_after[name(par)]["reward_components"]
        assert c_sel == pytest.approx({"play": 0.0, "fine": -3.0, "punisher": -10.0,
                                       "selection": -3.0})
        assert c_par == pytest.approx({"play": 0.0, "fine": -3.0, "punisher": just,
                                       "selection": 0.0})
        assert punish_rew[name(sel)] == pytest.approx(-13.0)
        assert punish_rew[name(par)] == pytest.approx(-3.0 + just)
        assert punish_rew[name(other)] == 0.0
    # Episode returns: every agent was selector once; the core agrees with the summed step rewards.
    totals = {a: sum(rew[a] for _, rew, _ in log) for a in env.possible_agents}
    assert np.allclose(env.core.episode_returns()[0], [totals[name(i)] for i in range(3)])


def test_no_punishment_chosen_costs_nothing():
    env = parallel_env(n_agents=3, rounds_per_game=1, direct_punishment=True)
    log = run_episode(env, direct_policy(1, 1, False, False), seed=0)
    for _, rew, infos in log[1::2]:
        assert all(v == 0.0 for v in rew.values())
        assert all(infos[a]["reward_components"]["fine"] == 0.0 for a in infos)


def test_third_party_punishment_rewards_and_bystanders():
    # Selector defects, partner cooperates; every bystander punishes whoever it judges.
    env = parallel_env(n_agents=5, rounds_per_game=4, third_party_punishment=True)
    obs, infos = env.reset(seed=11)
    seen_same_bystander = seen_two_bystanders = False
    while env.agents:
        sel, par = players_of_game(env)
        phase = infos[name(0)]["phase"]
        if phase == "play":
            acts = {a: 0 for a in env.agents}
            acts[name(sel)] = 1
            obs, rew, _, _, infos = env.step(acts)
            assert rew[name(sel)] == 4.0 and rew[name(par)] == 0.0
            continue
        judges = [pid(a) for a in env.agents if infos[a]["decision"] == "punish"]
        assert all(infos[name(j)]["mechanism"] == "third_party" for j in judges)
        assert not {sel, par} & set(judges), "a bystander was one of the players"
        judged = []
        total = {a: 0.0 for a in env.agents}
        punisher_total = {a: 0.0 for a in env.agents}
        selection_total = 0.0
        while True:  # one or two punish steps
            step_judged = []
            for j in judges:
                feats = obs[name(j)]["observation"][PHASE_OFFSET:PHASE_OFFSET + 2]
                step_judged.append((j, "sel" if feats[0] == 1 else "par"))  # victim's move first
            judged += step_judged
            acts = {a: int(pid(a) in judges) for a in env.agents}
            obs, rew, _, _, infos = env.step(acts)
            # each punish step pays the outcome of its own judgements at once
            for j, victim in step_judged:
                want = 2.0 if victim == "sel" else -10.0
                assert infos[name(j)]["reward_components"]["punisher"] == pytest.approx(want)
            for a in total:
                total[a] += rew[a]
                punisher_total[a] += infos[a]["reward_components"]["punisher"]
            selection_total += infos[name(sel)]["reward_components"]["selection"]
            nxt = [pid(a) for a in env.agents if infos[a]["decision"] == "punish"]
            if not nxt:
                break
            assert nxt == judges and len(judges) == 1, "a second punish step only for a repeat judge"
        if len(judged) == 2 and judged[0][0] == judged[1][0]:
            seen_same_bystander = True
        else:
            seen_two_bystanders = True
        assert sorted(v for _, v in judged) == ["par", "sel"]
        punisher_reward = {j: 0.0 for j, _ in judged}
        for j, victim in judged:
            punisher_reward[j] += 2.0 if victim == "sel" else -10.0
        assert total[name(sel)] == -3.0 and total[name(par)] == -3.0
        for j, want in punisher_reward.items():
            assert punisher_total[name(j)] == pytest.approx(want)
            assert total[name(j)] == pytest.approx(want)
        assert selection_total == -3.0
    assert seen_same_bystander and seen_two_bystanders


@pytest.mark.parametrize("source, sel_rep, par_rep", [
    ("play", -1.0, 1.0),       # selector plays D (-1), partner C (+1)
    ("punish", -3.0, 2.0),     # selector punishes the cooperator (-3), partner the defector (+2)
    ("both", -4.0, 3.0),
])
def test_reputation_deltas_public(source, sel_rep, par_rep):
    env = parallel_env(n_agents=3, rounds_per_game=1, direct_punishment=True, reputation=True,
                       reputation_source=source)
    obs, infos = env.reset(seed=4)
    sel, par = players_of_game(env)
    policy = direct_policy(1, 0, True, True)
    for _ in range(2):  # play + punish of game 0
        obs, _, _, _, infos = env.step(scripted(env, obs, infos, policy))
    rep = env.core.reputation[0]
    other = ({0, 1, 2} - {sel, par}).pop()
    for viewer in range(3):  # public: every view identical
        assert rep[viewer, sel] == sel_rep
        assert rep[viewer, par] == par_rep
        assert rep[viewer, other] == 0.0


def test_reputation_private_persecutor_and_avenger():
    # Only third-party punishment; a bystander justly punishes the defecting selector and
    # unjustly punishes the cooperating partner.
    env = parallel_env(n_agents=4, rounds_per_game=1, third_party_punishment=True, reputation=True,
                       reputation_view="private", reputation_source="punish",
                       third_party_with_replacement=False)
    obs, infos = env.reset(seed=9)
    sel, par = players_of_game(env)
    acts = {a: 0 for a in env.agents}
    acts[name(sel)] = 1
    obs, _, _, _, infos = env.step(acts)
    judges = {pid(a): obs[a]["observation"][PHASE_OFFSET] for a in env.agents
              if infos[a]["decision"] == "punish"}
    assert len(judges) == 2
    just_judge = next(j for j, victim_move in judges.items() if victim_move == 1)
    unjust_judge = next(j for j, victim_move in judges.items() if victim_move == 0)
    # only the just judge punishes
    obs, _, _, _, infos = env.step({a: int(pid(a) == just_judge) for a in env.agents})
    rep = env.core.reputation[0]
    want = np.zeros((4, 4))
    want[:, just_judge] += 2.0  # societal just punishment
    want[sel, just_judge] += -5.0  # persecutor, in the victim's view
    want[par, just_judge] += 5.0  # avenger, in the co-player's view
    assert np.array_equal(rep, want)
    assert unjust_judge not in (sel, par)


def test_reputation_private_direct_has_no_avenger():
    env = parallel_env(n_agents=3, rounds_per_game=1, direct_punishment=True, reputation=True,
                       reputation_view="private", reputation_source="both")
    obs, infos = env.reset(seed=4)
    sel, par = players_of_game(env)
    policy = direct_policy(1, 0, False, True)  # partner justly punishes the defecting selector
    for _ in range(2):
        obs, _, _, _, infos = env.step(scripted(env, obs, infos, policy))
    rep = env.core.reputation[0]
    want = np.zeros((3, 3))
    want[:, sel] += -1.0
    want[:, par] += 1.0 + 2.0
    want[sel, par] += -5.0  # persecutor; the victim's co-player is the punisher: no avenger
    assert np.array_equal(rep, want)


def test_reputation_reaches_observations_when_asked():
    env = parallel_env(n_agents=3, rounds_per_game=2, direct_punishment=True, reputation=True,
                       reputation_in=("play", "punish"), reputation_obs_scale=0.5)
    obs, infos = env.reset(seed=4)
    sel, par = players_of_game(env)
    policy = direct_policy(1, 0, False, False)
    for _ in range(2):
        obs, _, _, _, infos = env.step(scripted(env, obs, infos, policy))
    # round 2 play: [opp last, own last, opp rep, own rep] * scale
    f_sel = obs[name(sel)]["observation"][PHASE_OFFSET:PHASE_OFFSET + 4]
    f_par = obs[name(par)]["observation"][PHASE_OFFSET:PHASE_OFFSET + 4]
    assert list(f_sel) == [0.0, 1.0, 0.5, -0.5]
    assert list(f_par) == [1.0, 0.0, -0.5, 0.5]
    obs, _, _, _, infos = env.step(scripted(env, obs, infos, policy))
    # punish: [victim move, co-player move, co-player rep, victim rep] as the punisher sees them
    f_par = obs[name(par)]["observation"][PHASE_OFFSET:PHASE_OFFSET + 4]  # judges the selector
    assert list(f_par) == [1.0, 0.0, 1.0, -1.0]


# ---------------------------------------------------------------------------- 7. phase structure
def test_phase_structure_all_mechanisms():
    n, rounds = 5, 3
    env = parallel_env(n_agents=n, rounds_per_game=rounds, **ALL_ON)
    rng = np.random.default_rng(0)
    obs, infos = env.reset(seed=0)
    # select: every agent decides, N-1 legal actions
    assert all(infos[a]["phase"] == "select" and infos[a]["decision"] == "select"
               for a in env.agents)
    for a in env.agents:
        assert obs[a]["action_mask"].tolist() == [1] * (n - 1)
        assert obs[a]["observation"][1] == 1.0  # phase one-hot: select
    choice = {a: int(rng.integers(n - 1)) for a in env.agents}
    expected_partner = {pid(a): [j for j in range(n) if j != pid(a)][k] for a, k in choice.items()}
    obs, rew, _, _, infos = env.step(choice)
    steps, expected_steps = 1, 1
    assert all(v == 0.0 for v in rew.values())
    while env.agents:
        phase = infos[name(0)]["phase"]
        deciders = [a for a in env.agents if infos[a]["decision"] is not None]
        for a in env.agents:
            mask = obs[a]["action_mask"].tolist()
            if infos[a]["decision"] is None:
                assert mask == [1] + [0] * (n - 2), f"{a} idle in {phase} but mask {mask}"
                assert obs[a]["observation"][0] == 1.0
            else:
                assert mask == [1, 1] + [0] * (n - 3)
        if phase == "play":
            g = infos[name(0)]["game"]
            assert {pid(a) for a in deciders} == {g, expected_partner[g]}
            expected_steps += 2  # play + first punish step
            players = {g, expected_partner[g]}
        else:
            assert phase == "punish"
            direct = {pid(a) for a in deciders if infos[a]["mechanism"] == "direct"}
            third = [pid(a) for a in deciders if infos[a]["mechanism"] == "third_party"]
            if direct:  # first punish step of the round
                assert direct == players
                assert len(third) in (1, 2) and not set(third) & players
                if len(third) == 1:
                    expected_steps += 1  # the same bystander judges the second victim next step
            else:
                assert len(third) == 1 and not set(third) & players
        obs, _, _, _, infos = env.step(masked_random(obs, env.agents, rng))
        steps += 1
    assert steps == expected_steps
    assert steps >= 1 + n * rounds * 2 and steps <= 1 + n * rounds * 3


@pytest.mark.parametrize("n_agents, with_replacement, per_round", [
    (5, False, 2),  # play + one punish step: the two bystanders always differ
    (3, True, 3),   # one possible bystander judges both victims: play + 2 punish steps
])
def test_episode_length_when_bystanders_are_known(n_agents, with_replacement, per_round):
    env = parallel_env(n_agents=n_agents, rounds_per_game=2, **ALL_ON,
                       third_party_with_replacement=with_replacement)
    traj = rollout(env, seed=1, action_seed=1)
    assert len(traj) - 1 == 1 + n_agents * 2 * per_round


def test_episode_length_without_punishment_or_selection():
    env = parallel_env(n_agents=4, rounds_per_game=3)
    assert len(rollout(env, seed=0, action_seed=0)) - 1 == 4 * 3


def test_random_matching_never_picks_self_and_varies():
    env = parallel_env(n_agents=5)
    seen = set()
    for seed in range(40):
        env.reset(seed=seed)
        partners = env.core.partners[0]
        assert all(partners[i] != i for i in range(5))
        assert all(0 <= p < 5 for p in partners)
        seen.update((i, int(p)) for i, p in enumerate(partners))
    assert seen == {(i, j) for i in range(5) for j in range(5) if i != j}


def test_select_index_maps_to_others_in_id_order():
    n = 4
    for k in range(n - 1):
        env = parallel_env(n_agents=n, rounds_per_game=1, partner_selection=True, reputation=True)
        obs, infos = env.reset(seed=0)
        obs, _, _, _, infos = env.step({a: k for a in env.agents})
        for g in range(n):
            want = [j for j in range(n) if j != g][k]
            assert infos[name(0)]["game"] == g and infos[name(0)]["phase"] == "play"
            assert {pid(a) for a in env.agents if infos[a]["decision"] == "play"} == {g, want}
            obs, _, _, _, infos = env.step(masked_random(obs, env.agents, np.random.default_rng(0)))


# ---------------------------------------------------------------------------- 8. bad input
def first_decider(env: raw_env, infos: dict) -> str:
    return next(a for a in env.agents if infos[a]["decision"] is not None)


def first_idle(env: raw_env, infos: dict) -> str:
    return next(a for a in env.agents if infos[a]["decision"] is None)


def noop_actions(env: raw_env) -> dict[str, int]:
    return {a: 0 for a in env.agents}


def test_illegal_action_for_idle_agent():
    env = parallel_env(n_agents=4)
    _, infos = env.reset(seed=0)
    idle = first_idle(env, infos)
    acts = noop_actions(env)
    acts[idle] = 1
    with pytest.raises(ValueError, match=rf"{idle}.*no decision in phase 'play'.*no-op action 0"):
        env.step(acts)


def test_illegal_action_for_play_decision():
    env = parallel_env(n_agents=5)
    _, infos = env.reset(seed=0)
    actor = first_decider(env, infos)
    acts = noop_actions(env)
    acts[actor] = 3
    with pytest.raises(ValueError, match=rf"illegal action 3 for {actor} in phase 'play'"):
        env.step(acts)


def test_illegal_action_for_select_decision():
    env = parallel_env(n_agents=4, partner_selection=True, reputation=True)
    env.reset(seed=0)
    acts = noop_actions(env)
    acts[name(2)] = 3  # only 0..2 index the 3 others
    with pytest.raises(ValueError, match=r"illegal action 3 for player_2 in phase 'select'"):
        env.step(acts)
    acts[name(2)] = -1
    with pytest.raises(ValueError, match=r"illegal action -1 for player_2 in phase 'select'"):
        env.step(acts)


def test_illegal_action_for_punish_decision():
    env = parallel_env(n_agents=5, direct_punishment=True)
    env.reset(seed=0)
    _, _, _, _, infos = env.step(noop_actions(env))
    actor = first_decider(env, infos)
    acts = noop_actions(env)
    acts[actor] = 2
    with pytest.raises(ValueError, match=rf"illegal action 2 for {actor} in phase 'punish'"):
        env.step(acts)


def test_missing_action_for_acting_agent():
    env = parallel_env(n_agents=4)
    _, infos = env.reset(seed=0)
    actor = first_decider(env, infos)
    acts = noop_actions(env)
    del acts[actor]
    with pytest.raises(ValueError, match=rf"{actor} must act in phase 'play'"):
        env.step(acts)


def test_idle_agents_may_omit_their_action():
    env = parallel_env(n_agents=4)
    _, infos = env.reset(seed=0)
    acts = {a: 0 for a in env.agents if infos[a]["decision"] is not None}
    env.step(acts)  # no error; the two idle agents passed nothing
    assert env.agents


def test_unknown_agent_name():
    env = parallel_env()
    env.reset(seed=0)
    acts = noop_actions(env)
    acts["player_99"] = 0
    with pytest.raises(ValueError, match=r"unknown agent.*player_99"):
        env.step(acts)


@pytest.mark.parametrize("bad", [0.0, 1.5, "0", [0], np.array([0, 1]), True])
def test_non_integer_action(bad):
    env = parallel_env(n_agents=4)
    _, infos = env.reset(seed=0)
    actor = first_decider(env, infos)
    acts = noop_actions(env)
    acts[actor] = bad
    with pytest.raises((ValueError, TypeError), match=rf"action for {actor} in phase 'play' must be an integer"):
        env.step(acts)


def test_non_integer_action_message_names_the_phase():
    # The brief for bad-input errors: the message names the agent and the phase.
    env = parallel_env(n_agents=4)
    _, infos = env.reset(seed=0)
    actor = first_decider(env, infos)
    acts = noop_actions(env)
    acts[actor] = 0.5
    with pytest.raises((ValueError, TypeError)) as err:
        env.step(acts)
    assert actor in str(err.value)
    assert "'play'" in str(err.value) or "phase play" in str(err.value), str(err.value)


def test_rejected_step_leaves_the_episode_unchanged():
    options = dict(n_agents=4, rounds_per_game=2, **ALL_ON)
    ref, env = parallel_env(**options), parallel_env(**options)
    rng_ref, rng = np.random.default_rng(1), np.random.default_rng(1)
    obs_ref, _ = ref.reset(seed=2)
    obs, _ = env.reset(seed=2)
    step = 0
    while ref.agents:
        acts = masked_random(obs_ref, ref.agents, rng_ref)
        assert masked_random(obs, env.agents, rng) == acts
        if step % 3 == 0:  # first a bad call: a legal action for one agent, garbage for the last
            bad = dict(acts)
            deciders = [a for a in env.agents if obs[a]["action_mask"].sum() > 1]
            bad[deciders[0]] = 1 - acts[deciders[0]] if step % 2 else acts[deciders[0]]
            bad[env.agents[-1]] = 7
            with pytest.raises(ValueError):
                env.step(bad)
        out_ref, out = ref.step(acts), env.step(dict(acts))
        assert same(out_ref, out), f"step {step} differs after a rejected call"
        obs_ref, obs = out_ref[0], out[0]
        step += 1
    assert env.agents == []


def test_numpy_integer_actions_are_accepted():
    """np.int64 and 0-d int8 arrays act exactly as the plain ints they hold (ones included)."""
    options = dict(n_agents=4, rounds_per_game=2, **ALL_ON)
    plain, numpy = parallel_env(**options), parallel_env(**options)
    obs, _ = plain.reset(seed=0)
    numpy.reset(seed=0)
    rng, step = np.random.default_rng(0), 0
    while plain.agents:
        acts = masked_random(obs, plain.agents, rng)
        kind = np.int64 if step % 2 else (lambda v: np.array(v, dtype=np.int8))
        out = plain.step(acts)
        assert same(out, numpy.step({a: kind(v) for a, v in acts.items()})), f"step {step}"
        obs, step = out[0], step + 1
    assert step > 10


def test_actions_must_be_a_dict():
    env = parallel_env()
    env.reset(seed=0)
    with pytest.raises(TypeError, match="actions must be a dict"):
        env.step([0, 0, 0, 0, 0])


def test_step_after_episode_end():
    env = parallel_env(n_agents=3, rounds_per_game=1)
    rollout(env, seed=0, action_seed=0)
    with pytest.raises(RuntimeError, match=r"after the episode ended.*reset"):
        env.step({})
    env.reset(seed=0)
    env.step(noop_actions(env))  # usable again after reset


def test_step_before_reset():
    env = parallel_env()
    with pytest.raises(RuntimeError, match="reset"):
        env.step({})


@pytest.mark.parametrize("options, match", [
    (dict(partner_selection=True), "partner_selection needs reputation"),
    (dict(costly_punishment=True), "costly_punishment needs direct_punishment or third_party"),
    (dict(reputation_in=("play",)), r"reputation_in=\['play'\] needs reputation"),
    (dict(reputation=True, reputation_in=("punish",)), "reputation_in contains 'punish'"),
    (dict(reputation=True, reputation_in=("play", "play")), "duplicates"),
    (dict(reputation=True, reputation_source="punish"), "reputation_source='punish'"),
    (dict(n_agents=2), "n_agents"),
    (dict(n_agents=65), "n_agents"),
    (dict(rounds_per_game=0), "rounds_per_game"),
    (dict(fine=-1.0), "fine"),
    (dict(reputation_view="secret"), "reputation_view"),
    (dict(reputation=True, reputation_in=("select",)), "reputation_in"),
    (dict(not_a_rule=1), "not_a_rule"),
    (dict(payoffs={"R": 3.0, "X": 1.0}), "X"),
    # lax values pydantic would convert
    (dict(direct_punishment="yes"), "direct_punishment: expected true or false"),
    (dict(direct_punishment=1), "direct_punishment: expected true or false"),
    (dict(fine=True, direct_punishment=True), "fine: expected a number"),
    (dict(payoffs={"T": True}), "payoffs.T: expected a number"),
    # settings the game would never read
    (dict(fine=5.0), r"fine=5.0 \(used only with direct_punishment or third_party"),
    (dict(just_punish_reward=1.0, direct_punishment=True, costly_punishment=True),
     "just_punish_reward=1.0"),
    (dict(costly_just_punish_reward=-1.0, direct_punishment=True), "costly_just_punish_reward"),
    (dict(third_party_with_replacement=False, direct_punishment=True), "third_party_with_replacement"),
    (dict(reputation_decay=0.9), r"reputation_decay=0.9 \(used only with reputation: true"),
    (dict(reputation=True, reputation_view="private"), "reputation_view='private'"),
    (dict(reputation=True, reputation_source="play", direct_punishment=True, rep_just_punish=1.0),
     "rep_just_punish"),
    (dict(reputation=True, reputation_source="punish", direct_punishment=True, rep_defect=-2.0),
     "rep_defect"),
    (dict(reputation=True, direct_punishment=True, rep_avenger=2.0), "rep_avenger"),
    (dict(caveman_groups=2, n_agents=6), r"caveman_groups=2 \(used only with topology: caveman"),
    (dict(game="centipede", payoffs={"R": 3.5}), "payoffs=.*game: ipd"),
    (dict(centipede_gift=6.0), "centipede_gift"),
])
def test_nonsense_options_raise(options, match):
    with pytest.raises(ValueError, match=match):
        GameRules(**options)
    with pytest.raises(ValueError, match=match):
        parallel_env(**options)
    with pytest.raises(ValueError, match=match):
        pettingzoo.make("parallel", ENV_ID, **options)


def test_settings_at_their_defaults_or_in_use_are_accepted():
    # spelling out a default is not an error, nor is numpy's bool or int
    GameRules(fine=3.0, caveman_groups=5, reputation_view="public", costly_punishment=False)
    GameRules(direct_punishment=np.True_, n_agents=np.int64(6), fine=np.float64(2.0))
    GameRules(reputation=True, third_party_punishment=True, reputation_view="private",
              rep_avenger=2.0, rep_persecutor=-2.0, third_party_with_replacement=False)
    GameRules(game="centipede", centipede_gift=6.0, centipede_cost=0.5)
    GameRules(topology="caveman", n_agents=6, caveman_groups=2)
    GameRules(direct_punishment=True, costly_punishment=True, costly_just_punish_reward=-1.0)


def test_validation_errors_are_value_errors():
    assert issubclass(ValidationError, ValueError)


def test_rules_object_and_fields_together_rejected():
    with pytest.raises(ValueError, match="not both"):
        raw_env(rules=GameRules(), n_agents=4)


def test_rules_object_accepted():
    env = raw_env(rules=GameRules(n_agents=6, direct_punishment=True))
    assert env.possible_agents == [name(i) for i in range(6)]
    assert env.action_space(name(0)).n == 5


# ---------------------------------------------------------------------------- 9. render
def test_render_ansi_mentions_phase():
    env = parallel_env(render_mode="ansi", n_agents=4, **ALL_ON)
    env.reset(seed=0)
    text = env.render()
    assert isinstance(text, str) and "phase select" in text
    for i in range(4):
        assert name(i) in text
    env.step({a: 0 for a in env.agents})
    assert "phase play" in env.render()


def test_render_rgb_array():
    env = parallel_env(render_mode="rgb_array", n_agents=4, **ALL_ON)
    env.reset(seed=0)
    img = env.render()
    assert isinstance(img, np.ndarray) and img.dtype == np.uint8
    assert img.ndim == 3 and img.shape[2] == 3 and img.shape[0] > 0 and img.shape[1] > 0
    traj = rollout(env, seed=0, action_seed=0)
    assert traj
    img2 = env.render()  # after the episode, with moves and reputations to draw
    assert img2.shape == img.shape and img2.dtype == np.uint8
    assert not np.array_equal(img, img2)


def test_render_none_and_invalid_mode():
    env = parallel_env()
    env.reset(seed=0)
    assert env.render() is None
    with pytest.raises(ValueError, match="render_mode must be one of"):
        parallel_env(render_mode="human")
    with pytest.raises(ValueError, match="render_mode"):
        pettingzoo.make("aec", ENV_ID, render_mode="bogus")


# ---------------------------------------------------------------------------- 10. keep_memory
def test_keep_memory_across_episodes():
    env = parallel_env(n_agents=4, rounds_per_game=2, direct_punishment=True, reputation=True,
                       reputation_in=("play",))
    rollout(env, seed=0, action_seed=0)
    rep, last = env.core.reputation.copy(), env.core.last_action.copy()
    assert np.any(rep != 0) and np.all(last != 2)
    obs, infos = env.reset(seed=1, options={"keep_memory": True})
    assert np.array_equal(env.core.reputation, rep)
    assert np.array_equal(env.core.last_action, last)
    # the first play observation shows the remembered moves and reputations
    sel, par = players_of_game(env)
    f = obs[name(sel)]["observation"][PHASE_OFFSET:PHASE_OFFSET + 4]
    assert list(f) == [last[0, par], last[0, sel], rep[0, sel, par], rep[0, sel, sel]]
    # episode counters restart even when memory is kept
    assert np.all(env.core.episode_returns() == 0)

    obs, infos = env.reset(seed=1)
    assert np.all(env.core.reputation == 0)
    assert np.all(env.core.last_action == 2)
    f = obs[name(sel)]["observation"][PHASE_OFFSET:PHASE_OFFSET + 4]
    assert list(f) == [2.0, 2.0, 0.0, 0.0]


def test_unknown_reset_options_are_named_in_a_warning():
    env = parallel_env(n_agents=3, rounds_per_game=1, reputation=True)
    with pytest.warns(UserWarning, match=r"reset ignores unknown option\(s\) \['keepmemory'\]"):  # a typo
        env.reset(options={"keepmemory": True})


def test_aec_refuses_an_action_for_a_done_agent_and_stays_usable():
    """PettingZoo's own check removes the action before it asserts: the env was left broken."""
    env = aec_env(n_agents=3, rounds_per_game=1)
    env.reset(seed=0)
    for agent in env.agent_iter():
        *_, terminated, truncated, _ = env.last()
        if terminated or truncated:
            break
        env.step(int(np.flatnonzero(env.last()[0]["action_mask"])[0]))
    done = env.agent_selection
    with pytest.raises(ValueError, match=f"{done} is done .*step\\(None\\)"):
        env.step(0)
    while env.agents:  # the correct step(None) still works for every finished agent
        env.step(None)
    assert env.agents == []


def test_keep_memory_false_option_clears():
    env = parallel_env(n_agents=3, rounds_per_game=1, reputation=True)
    rollout(env, seed=0, action_seed=0)
    env.reset(options={"keep_memory": False})
    assert np.all(env.core.reputation == 0) and np.all(env.core.last_action == 2)


def test_rules_may_be_a_dict_and_must_be_finite():
    assert parallel_env(rules={"n_agents": 3, "direct_punishment": True}).rules.n_agents == 3
    with pytest.raises(TypeError, match="rules must be a GameRules or a dict"):
        parallel_env(rules=3)
    with pytest.raises(ValueError, match="not both"):
        parallel_env(rules={"n_agents": 3}, n_agents=4)
    for bad in ({"fine": float("nan")}, {"reputation_obs_scale": float("inf")},
                {"centipede_gift": float("inf")}, {"payoffs": {"T": float("inf")}}):
        with pytest.raises(ValidationError, match="finite"):
            GameRules(**bad)


def test_reset_options_are_checked():
    env = parallel_env(n_agents=3)
    env.reset(seed=0, options={"keep_memory": True})
    env.reset(options={"keep_memory": np.bool_(False)})
    with pytest.raises(TypeError, match="keep_memory must be true or false, not 'no'"):
        env.reset(options={"keep_memory": "no"})
    with pytest.raises(TypeError, match="options must be a dict, not list"):
        env.reset(options=[1])
