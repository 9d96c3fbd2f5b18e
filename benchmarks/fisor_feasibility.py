"""How far a FISOR run's feasibility critic has converged, judged on its own dataset.

    python benchmarks/fisor_feasibility.py RUN_DIR [--episodes 20]

Every state of an episode that never violated the constraint is feasible, so a converged
``V_h`` is <= 0 there (its fixed point on always-safe trajectories is -1). The script prints, for
the dataset's states grouped by their episode's cost, the share the critic deems feasible and the
median ``V_h``; a low share on the cost-0 episodes means the critic is still too pessimistic, and
the actor then imitates the safest actions almost everywhere (safe, little reward).

Then it scores the checkpoint's policy over ``--episodes`` episodes with each candidate-selection
rule (``min_cost``: the official lowest ``Q_h`` of 16; ``first_feasible``: the first with
``Q_h <= 0``) and with a single candidate (the weighted diffusion policy alone).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

import aligngym.agents.fisor as fisor
from aligngym.agents.offline import evaluate_policy, setup
from aligngym.agents.train import load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--episodes", type=int, default=20)
    args = parser.parse_args()
    config, state = load_checkpoint(args.run_dir / "checkpoint.pt")
    _, data, algo = setup(fisor, config, state, torch.device("cpu"))
    starts, ends = data.episode_bounds()
    episode_cost = np.repeat(data.episode_costs(), ends - starts)
    obs = torch.as_tensor(data.arrays["observations"], dtype=torch.float32)
    with torch.no_grad():
        value = torch.cat([algo.cost_v(chunk)[0] for chunk in obs.split(50_000)]).numpy()
    print(f"{args.run_dir.name} at step {int(state['step'])}: feasibility critic V_h on the dataset's states")
    print("| states of episodes with | states | share with V_h <= 0 | median V_h |")
    print("|---|---|---|---|")
    for name, mask in [("cost 0", episode_cost == 0), ("cost 1-10", (episode_cost > 0) & (episode_cost <= 10)),
                       ("cost > 10", episode_cost > 10)]:
        if mask.any():
            print(f"| {name} | {mask.sum():,} | {np.mean(value[mask] <= 0):.2f} | {np.median(value[mask]):.2f} |")
    print("\n| acting rule | normalised return | normalised cost |")
    print("|---|---|---|")
    policy = algo.policy
    for rule, candidates in [("min_cost", config.candidates), ("first_feasible", config.candidates), ("one sample", 1)]:
        policy.selection, policy.candidates = ("min_cost" if rule == "one sample" else rule), candidates
        scores = evaluate_policy(config, policy, args.episodes, seed=20_000)
        print(f"| {rule} ({candidates} candidates) | {scores['eval/normalized_return']:.3f} | "
              f"{scores['eval/normalized_cost']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
