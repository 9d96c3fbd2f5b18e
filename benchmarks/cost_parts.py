"""Which part of a safe task's cost an offline run's policy incurs.

    python benchmarks/cost_parts.py RUN_DIR [RUN_DIR ...] [--episodes 10]

For each run folder (any offline agent: FISOR, BC-All, BC-Safe, BCQ-Lag), plays ``--episodes``
episodes (seeds 1000, 1001, ...) with the policy of its last checkpoint, as its evaluations play them
(:func:`~aligngym.agents.offline.play_episodes`), and prints, per episode on average, the cost and
each of its parts the task reports in ``info`` (``cost_outside_bounds``, ``cost_velocity_violation``),
and the episode length.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from aligngym.agents.config import agent_module
from aligngym.agents.offline import play_episodes, setup
from aligngym.agents.train import CHECKPOINT, load_checkpoint


def cost_parts(run_dir: Path, episodes: int) -> dict[str, float]:
    config, state = load_checkpoint(run_dir / CHECKPOINT)
    env, _, algorithm = setup(agent_module(config.agent), config, state, torch.device("cpu"), data=False)
    env.close()
    played = play_episodes(config, algorithm.policy, episodes, seed=1000)
    parts = {key: float(values.mean()) for key, values in played.info.items() if key.startswith("cost")}
    return {**parts, "length": float(played.lengths.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--episodes", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for run_dir in args.runs:
        parts = cost_parts(run_dir, args.episodes)
        print(f"{run_dir}: " + ", ".join(f"{key} {value:.1f}" for key, value in sorted(parts.items())), flush=True)


if __name__ == "__main__":
    main()
