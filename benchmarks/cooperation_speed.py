"""Speed of the punishment/reputation game and its learners, measured in one run.

    python benchmarks/cooperation_speed.py [--seconds 3] [--batch 1024] [--episodes 30] [--seeds 20]

Prints rounds per second (one round = both players move, then every punish decision) of the full
condition (selection + reputation + direct + third-party punishment, 5 agents) through
1. the PettingZoo parallel API, with random legal actions drawn from the action masks, and
2. the batched numpy core with B populations at once, with random decisions,
and their ratio; then independent-DQN gradient updates per second (batch 100, hidden 128): one
stacked update of the networks that learn after a typical step (2 play or 4 punish networks) and of
all 15 networks at once, against the same 15 networks updated one at a time (the ratio is the
learner's batching gain); then the full condition end to end (the quickstart config, ``--episodes``
episodes each, CPU time): one seed on the batched core (the IPD's trainer), the same with its networks
updated one at a time, and through the PettingZoo collector; finally ``--seeds`` seeds trained
together in one process (:class:`~aligngym.agents.marl.batched.SeedBatch`) against the same seeds
trained one after another. One torch thread unless ``--threads`` says otherwise.
Compare ratios, not absolute times: these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from aligngym.agents.marl.dqn import IndependentDQN, IndependentDQNConfig
from aligngym.envs.cooperation import punishment_v0
from aligngym.envs.cooperation.core import PunishmentCore
from aligngym.envs.cooperation.rules import GameRules

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
FULL = GameRules(partner_selection=True, reputation=True, direct_punishment=True,
                 third_party_punishment=True, reputation_in=("play",))


def pettingzoo_rounds_per_second(seconds: float) -> float:
    env = punishment_v0.parallel_env(rules=FULL)
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    rounds, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        actions = {}
        for agent in env.agents:
            mask = obs[agent]["action_mask"]
            actions[agent] = int(rng.choice(np.flatnonzero(mask)))
        obs, _, _, trunc, infos = env.step(actions)
        if infos["player_0"]["phase"] == "play" and env.agents:
            rounds += 1
        if not env.agents:
            obs, _ = env.reset()
    return rounds / (time.perf_counter() - start)


def core_rounds_per_second(seconds: float, batch: int) -> float:
    core = PunishmentCore(FULL, batch_size=batch, seed=0)
    rng = np.random.default_rng(0)
    n = FULL.n_agents
    rounds, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        core.reset(keep_memory=True)
        core.choose_partners(rng.integers(0, n - 1, size=(batch, n)))
        for game in range(n):
            for _ in range(FULL.rounds_per_game):
                core.play(game, rng.integers(0, 2, size=(batch, 2)))
                bystanders = core.draw_bystanders()
                core.punish(rng.random((batch, 2)) < 0.5, rng.random((batch, 2)) < 0.5, bystanders)
                rounds += batch
    return rounds / (time.perf_counter() - start)


def one_at_a_time(update):
    """An ``IndependentDQN.update`` that updates the networks one after another (no batching)."""
    def unbatched(self, rows, batch):
        return np.concatenate([update(self, rows[k:k + 1], {key: v[k:k + 1] for key, v in batch.items()})
                               for k in range(len(rows))])
    return unbatched


def dqn_updates_per_second(seconds: float, n_rows: int, batched: bool = True) -> float:
    """Network-updates per second when ``n_rows`` networks learn at a step."""
    learner = IndependentDQN(IndependentDQNConfig(), FULL, feature_size=5, seed=0,
                             device=torch.device("cpu"))
    update = IndependentDQN.update if batched else one_at_a_time(IndependentDQN.update)
    rng = np.random.default_rng(0)
    # rows: 0-4 select, 5-9 play, 10-14 punish networks
    rows = {2: np.arange(5, 7), 4: np.arange(10, 14), 15: np.arange(15)}[n_rows]
    batch = {"obs": rng.normal(size=(n_rows, 100, 5)), "obs_next": rng.normal(size=(n_rows, 100, 5)),
             "act": rng.integers(0, 2, size=(n_rows, 100)), "rew": rng.normal(size=(n_rows, 100)),
             "terminated": np.zeros((n_rows, 100))}
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        update(learner, rows, batch)
        steps += 1
    return steps * n_rows / (time.perf_counter() - start)


def _quickstart(seed: int):
    from aligngym.agents.config import load_config

    return load_config(QUICKSTART, ["device=cpu", f"seed={seed}"])


def cpu_ms_per_episode(seeds: list[int], episodes: int, collector: bool = False,
                       batched_updates: bool = True) -> float:
    """CPU milliseconds per episode of all ``seeds`` together (the quickstart config, learning
    included): on one :class:`SeedBatch`, or (``collector``, one seed) through the PettingZoo
    collector, or with the networks of each step updated one at a time."""
    from aligngym.agents.marl.batched import SeedBatch
    from aligngym.agents.marl.population import Population

    configs = [_quickstart(s) for s in seeds]
    original = IndependentDQN.update
    if not batched_updates:
        IndependentDQN.update = one_at_a_time(original)
    try:
        trainer = Population(configs[0], torch.device("cpu")) if collector else SeedBatch(configs, torch.device("cpu"))
        start = time.process_time()
        for episode in range(episodes):
            trainer.learner.set_episode(episode)
            trainer.play_episode(explore=True, learn=True, keep_memory=episode > 0)
        return (time.process_time() - start) / episodes * 1000
    finally:
        IndependentDQN.update = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    parser.add_argument("--batch", type=int, default=1024, help="populations in the batched core")
    parser.add_argument("--episodes", type=int, default=30,
                        help="episodes of each end-to-end measurement")
    parser.add_argument("--seeds", type=int, default=20, help="seeds trained together (and apart)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, torch threads "
          f"{torch.get_num_threads()}, python {platform.python_version()}")
    pz = pettingzoo_rounds_per_second(args.seconds)
    core = core_rounds_per_second(args.seconds, args.batch)
    print(f"PettingZoo parallel API (B=1):   {pz:12,.0f} rounds/s")
    print(f"batched core (B={args.batch}):        {core:12,.0f} rounds/s")
    print(f"ratio batched / PettingZoo:      {core / pz:12.1f} x")
    for n_rows in (2, 4, 15):
        rate = dqn_updates_per_second(args.seconds, n_rows)
        print(f"DQN network-updates/s, {n_rows:2d} networks per stacked step: {rate:10,.0f}")
    single = dqn_updates_per_second(args.seconds, 15, batched=False)
    stacked = dqn_updates_per_second(args.seconds, 15)
    print(f"DQN network-updates/s, 15 networks one at a time:     {single:10,.0f}")
    print(f"ratio stacked / one at a time (15 networks):        {stacked / single:10.1f} x")
    one = cpu_ms_per_episode([0], args.episodes)
    unstacked = cpu_ms_per_episode([0], args.episodes, batched_updates=False)
    pettingzoo = cpu_ms_per_episode([0], args.episodes, collector=True)
    print(f"one seed end to end (quickstart), CPU ms/episode: batched core {one:8.1f}, its networks "
          f"updated one at a time {unstacked:8.1f}, PettingZoo collector {pettingzoo:8.1f}")
    seeds = list(range(args.seeds))
    together = cpu_ms_per_episode(seeds, args.episodes)
    apart = sum(cpu_ms_per_episode([s], args.episodes) for s in seeds)
    print(f"{args.seeds} seeds in one process:   {together:10.1f} CPU ms per episode of all seeds "
          f"({together * 2000 / 3.6e6:.2f} CPU h per 2000 episodes)")
    print(f"{args.seeds} seeds one after another: {apart:10.1f} CPU ms ({apart * 2000 / 3.6e6:.2f} CPU h)")
    print(f"ratio apart / together:           {apart / together:10.1f} x   "
          f"(PettingZoo collector x {args.seeds} / together: {pettingzoo * args.seeds / together:.1f} x)")


if __name__ == "__main__":
    main()
