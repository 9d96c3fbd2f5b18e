"""Seeds trained together on the batched core learn exactly what each learns alone, and what the
PettingZoo collector's trainer learns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from aligngym.agents.config import ConfigError, load_config
from aligngym.agents.marl.batched import SeedBatch
from aligngym.agents.marl.population import Population

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"
CPU = torch.device("cpu")
# small buffers and batches, so that every decision learns within a few episodes
SMALL = ["device=cpu", "show_progress=false", "env.rounds_per_game=4", "learner.batch_size=3",
         "learner.epsilon_decay_episodes=4"]


def _configs(seeds, *extra):
    return [load_config(QUICKSTART, [*SMALL, f"seed={s}", *extra]) for s in seeds]


def _weights(learner, p=0):
    return learner.state_dict(p)["online"]


def _run_batch(configs, episodes, keep=True):
    batch = SeedBatch(configs, CPU)
    metrics = []
    for episode in range(episodes):
        batch.learner.set_episode(episode)
        losses = [{d: [] for d in batch.learner.decisions} for _ in configs]
        batch.play_episode(explore=True, learn=True, keep_memory=keep and episode > 0, losses=losses)
        metrics.append([r.metrics for r in batch.results(losses)])
    return batch, metrics


def _assert_same_learner(a, pa, b, pb):
    sa, sb = a.state_dict(pa), b.state_dict(pb)
    for name in sa["online"]:
        torch.testing.assert_close(sa["online"][name], sb["online"][name], rtol=0, atol=0)
        torch.testing.assert_close(sa["target"][name], sb["target"][name], rtol=0, atol=0)
    np.testing.assert_array_equal(sa["updates"], sb["updates"])
    np.testing.assert_array_equal(sa["epsilon"], sb["epsilon"])


@pytest.mark.parametrize("extra", [
    (),  # the full condition: selection, reputation in play, direct and third-party punishment
    ("env.third_party_with_replacement=false", "env.direct_punishment=false", "carry_memory=false",
     "learner.bootstrap_across_games=false", "learner.reference_epsilon_decay=true"),
])
def test_one_seed_of_the_batch_is_the_collector_run(extra):
    """The batched trainer applies the collector's transition rules: same transitions, updates, weights."""
    (config,) = _configs([3], *extra)
    episodes = 6
    pop = Population(config, CPU)
    for episode in range(episodes):
        pop.learner.set_episode(episode)
        pop.play_episode(explore=True, learn=True, keep_memory=config.carry_memory and episode > 0)
    batch, _ = _run_batch([config], episodes, keep=config.carry_memory)
    assert pop.learner.updates.sum() > 100  # every decision learned, many times
    assert (pop.learner.updates.reshape(3, -1) > 0).all()
    _assert_same_learner(pop.learner, 0, batch.learner, 0)
    np.testing.assert_array_equal(pop.env.core.reputation[0], batch.core.reputation[0])
    assert len(pop.replay) == len(batch.replay)
    for row in range(batch.learner.n_rows):
        mine, theirs = pop.replay.transitions(row), batch.replay.transitions(row)
        for key in mine:
            np.testing.assert_array_equal(mine[key], theirs[key])


def test_seeds_together_learn_what_each_learns_alone():
    seeds = [0, 7, 11]
    together, metrics = _run_batch(_configs(seeds), episodes=3)
    assert together.learner.updates.sum() > 300
    for p, seed in enumerate(seeds):
        alone, own = _run_batch(_configs([seed]), episodes=3)
        _assert_same_learner(together.learner, p, alone.learner, 0)
        assert [m[p] for m in metrics] == [m[0] for m in own]
    # different seeds really differ
    assert not torch.equal(_weights(together.learner, 0)["w1"], _weights(together.learner, 1)["w1"])


def test_a_batch_resumes_exactly_from_its_seeds_checkpoints():
    configs = _configs([1, 2])
    straight, _ = _run_batch(configs, episodes=4)
    first, _ = _run_batch(configs, episodes=2)
    states = [first.population_state(p) for p in range(2)]
    resumed = SeedBatch(configs[::-1], CPU)  # the seeds in another order: each finds its own state
    for p, state in enumerate(states[::-1]):
        resumed.load_population_state(p, state)
    for episode in range(2, 4):
        resumed.learner.set_episode(episode)
        resumed.play_episode(explore=True, learn=True, keep_memory=True)
    for p in range(2):
        _assert_same_learner(straight.learner, p, resumed.learner, 1 - p)


def test_a_batch_needs_one_ipd_condition():
    with pytest.raises(ConfigError, match="differs from seed 0 in env.fine"):
        SeedBatch(_configs([0]) + _configs([1], "env.fine=2"), CPU)
    (centipede,) = [load_config(QUICKSTART.parent / "cooperation" / "centipede_dp.yaml", SMALL[:2])]
    with pytest.raises(ConfigError, match="need the IPD"):
        SeedBatch([centipede], CPU)


def test_finish_seeds_trains_the_unfinished_seeds_together_and_reuses_the_rest(tmp_path, monkeypatch):
    from aligngym.agents.marl import batched
    from aligngym.agents.train import finish, finish_seeds, load_checkpoint

    def configs(root, seeds):
        return [load_config(QUICKSTART, [*SMALL, f"seed={s}", "episodes=3", f"run_root={root / f's{s}'}"])
                for s in seeds]

    alone = finish(configs(tmp_path / "alone", [1])[0])
    done = finish(configs(tmp_path / "study", [0])[0])
    built = []
    real = batched.SeedBatch.__init__
    monkeypatch.setattr(batched.SeedBatch, "__init__",
                        lambda self, cs, device: built.append([c.seed for c in cs]) or real(self, cs, device))
    dirs = finish_seeds(configs(tmp_path / "study", [0, 1, 2]))
    assert dirs[0] == done and built == [[1, 2]]  # the finished seed is reused, the others train in one batch
    _, mine = load_checkpoint(dirs[1] / "checkpoint.pt")
    _, theirs = load_checkpoint(alone / "checkpoint.pt")
    assert mine["step"] == 3
    for name, tensor in theirs["learner"]["online"].items():
        assert torch.equal(tensor, mine["learner"]["online"][name]), name
    assert finish_seeds(configs(tmp_path / "study", [0, 1, 2])) == dirs and built == [[1, 2]]


def _played(extra, episodes):
    """A one-seed batch after ``episodes`` episodes without learning (the same game whatever the options)."""
    (config,) = _configs([5], *extra)
    batch = SeedBatch([config], CPU)
    for episode in range(episodes):
        batch.play_episode(explore=True, learn=False, keep_memory=episode > 0)
    return batch


def test_select_every_round_stores_the_references_selection_transitions():
    rounds = 4
    per_round, per_episode = _played(["learner.select_every_round=true"], 2), _played([], 2)
    for agent in range(5):
        row = per_round.rows[0, 0, agent]
        mine, theirs = per_round.replay.transitions(row), per_episode.replay.transitions(row)
        assert len(mine["act"]) == 2 * rounds and len(theirs["act"]) == 1  # (the second still open)
        first = slice(0, rounds)
        assert (mine["act"][first] == theirs["act"][0]).all() and (mine["obs"][first] == theirs["obs"][0]).all()
        # the rounds' rewards add up to what the episode's one transition earned in the agent's game
        assert mine["rew"][first].sum() == pytest.approx(theirs["rew"][0])
        assert not mine["terminated"].any()
    # the next state is the selector's view of the reputations after the round: it moves
    assert len({tuple(t) for t in per_round.replay.transitions(per_round.rows[0, 0, 0])["obs_next"]}) > 1
    assert not per_round.is_open[per_round.rows[0, 0]].any()  # nothing left to close at the next selection


def test_punish_as_bandit_stores_each_judgement_at_once_with_its_own_reward():
    batch = _played(["learner.punish_as_bandit=true"], 1)
    core, stored = batch.core, 0
    for agent in range(5):
        t = batch.replay.transitions(batch.rows[0, 2, agent])
        np.testing.assert_array_equal(t["obs_next"], t["obs"])
        victim_defected = t["obs"][:, 0] == 1
        np.testing.assert_array_equal(t["rew"], np.where(t["act"] == 1, np.where(victim_defected, 2.0, -10.0), 0.0))
        stored += len(t["act"])
    assert stored == core.counters["direct_decisions"][0] + core.counters["third_party_decisions"][0]
    assert not batch.is_open[batch.rows[0, 2]].any()


def test_the_references_transitions_are_refused_for_the_centipede():
    with pytest.raises(ConfigError, match="offered for the IPD only"):
        load_config(QUICKSTART.parent / "cooperation" / "centipede_dp_s.yaml", ["learner.punish_as_bandit=true"])


def test_play_next_state_in_game_ends_a_games_play_transitions_in_that_game():
    rounds = 4
    ours, theirs = _played([], 1), _played(["learner.play_next_state_in_game=true"], 1)
    for agent in range(5):
        row = ours.rows[0, 1, agent]
        mine, other = theirs.replay.transitions(row), ours.replay.transitions(row)
        # one more transition: each game the agent played in ends with its own, none crosses games
        games = len(mine["act"]) // rounds
        assert len(mine["act"]) == games * rounds and len(other["act"]) == games * rounds - 1
        assert not theirs.is_open[row]
        # within a game the next state is the next round's state, as ours
        np.testing.assert_array_equal(mine["obs_next"][:rounds - 1], other["obs_next"][:rounds - 1])
        # at the game's end: the last moves just played (own move second, the opponent's first)
        last = mine["obs_next"][rounds - 1]
        assert last[1] == mine["act"][rounds - 1]
