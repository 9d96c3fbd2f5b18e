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
