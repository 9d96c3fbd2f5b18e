"""How far a FISOR run's feasibility critic has converged, judged on its own dataset.

    python benchmarks/fisor_feasibility.py RUN_DIR [--episodes 20] [--critic-steps N]

Every state of an episode that never violated the constraint is feasible, so a converged
``V_h`` is <= 0 there (its fixed point on always-safe trajectories is -1). The script prints, for
the dataset's states grouped by their episode's cost, the share the critic deems feasible and the
median ``V_h``; a low share on the cost-0 episodes means the critic is still too pessimistic, and
the actor then imitates the safest actions almost everywhere (safe, little reward).

Then it scores the checkpoint's policy over ``--episodes`` episodes with each candidate-selection
rule (``min_cost``: the official lowest ``Q_h`` of 16; ``first_feasible``: the first with
``Q_h <= 0``) and with a single candidate (the weighted diffusion policy alone), with the mean
episode length (an episode cut short by a termination, a flip or a fall, also stops its cost),
and reports how much ``Q_h`` differs between the feasible candidates of a state (``Q_h`` of every
feasible action has the fixed point -1, so a spread is approximation error, which ``min_cost``
ranks by).

``--critic-steps N`` first trains the critics alone for N more steps (the actor untouched) and then
measures again: does the choice among candidates change when ``Q_h`` is closer to convergence?
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import aligngym.agents.fisor as fisor
from aligngym.agents.offline import evaluate_policy, setup
from aligngym.agents.train import load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--critic-steps", type=int, default=0)
    args = parser.parse_args()
    config, state = load_checkpoint(args.run_dir / "checkpoint.pt")
    _, data, algo = setup(fisor, config, state, torch.device("cpu"))
    report(args, config, state, data, algo)
    if args.critic_steps:
        train_critics(config, data, algo, args.critic_steps)
        print(f"\n## after {args.critic_steps:,} more critic steps (actor unchanged)\n")
        report(args, config, state, data, algo)


def train_critics(config: fisor.Config, data: object, algo: fisor.FISOR, steps: int) -> None:
    """``steps`` more updates of the reward and feasibility critics (and their targets) only."""
    algo.process_buffer(data.to_replay_buffer())
    rng = np.random.default_rng(config.seed)
    size = len(algo.data["obs"])
    for _ in tqdm(range(steps), desc="critics", unit="step"):
        idx = torch.as_tensor(rng.integers(0, size, config.critic_batch_size))
        b = {k: v[idx] for k, v in algo.data.items()}
        algo.update_critics(b, torch.cat([b["obs"], b["act"]], dim=-1))


def report(args: argparse.Namespace, config: fisor.Config, state: dict, data: object, algo: fisor.FISOR) -> None:
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
    policy = algo.policy
    spread(config, obs, policy)
    print("\n| acting rule | normalised return | normalised cost | mean episode length |")
    print("|---|---|---|---|")
    for rule, candidates in [("min_cost", config.candidates), ("first_feasible", config.candidates), ("one sample", 1)]:
        policy.selection, policy.candidates = ("min_cost" if rule == "one sample" else rule), candidates
        scores = evaluate_policy(config, policy, args.episodes, seed=20_000)
        print(f"| {rule} ({candidates} candidates) | {scores['eval/normalized_return']:.3f} | "
              f"{scores['eval/normalized_cost']:.2f} | {scores['eval/length']:.0f} |", flush=True)


@torch.no_grad()
def spread(config: fisor.Config, obs: torch.Tensor, policy: fisor.FISORPolicy, states: int = 2000) -> None:
    """How far apart the Q_h of a state's feasible candidates are, over a sample of dataset states."""
    pick = obs[torch.as_tensor(np.random.default_rng(0).choice(len(obs), min(states, len(obs)), replace=False))]
    tiled = pick.repeat_interleave(config.candidates, dim=0)
    actions = policy.sample(tiled)
    q = policy.target_cost_q(torch.cat([tiled, actions], dim=-1)).max(dim=0).values.view(len(pick), -1)
    feasible = q <= 0
    rows = feasible.sum(dim=1) >= 2
    big = torch.where(feasible, q, torch.full_like(q, -np.inf)).max(dim=1).values
    small = torch.where(feasible, q, torch.full_like(q, np.inf)).min(dim=1).values
    gap = (big - small)[rows]
    print(f"\nQ_h of the feasible candidates ({config.candidates} per state, {len(pick)} dataset states, "
          f"{rows.float().mean():.0%} with >= 2 feasible): median max-min spread {gap.median():.3f}, "
          f"median lowest Q_h {small[rows].median():.3f}")


if __name__ == "__main__":
    main()
