"""The D4RL-style locomotion datasets of ``aligngym data generate`` beside D4RL's own v2 files.

    python benchmarks/locomotion_datasets.py [--size small] [--seed 0] [--robots Hopper-v5 ...]

For every robot and kind whose file is in the data directory: episodes, transitions, mean episode
return and its D4RL score (x 100, D4RL's reference returns), next to the same figures of D4RL's v2
file of that kind; then per robot the behaviour run (SAC steps, the expert and medium snapshots' own
scores) and the compute time of the whole generation (the ``seconds`` the files record: every stage,
including an interrupted call's work). D4RL's robots are mujoco-py's v3 models and AlignGym's are
Gymnasium's v5: a loose comparison.
"""

from __future__ import annotations

import argparse

from aligngym.envs.data.dataset import (D4RL_REFERENCE_RETURNS, LOCOMOTION_KINDS, DatasetError, d4rl_normalized_score,
                                        dataset_path, load_dataset)

# D4RL's v2 files (halfcheetah/hopper/walker2d-<kind>-v2): episodes (TFDS's d4rl_mujoco metadata,
# tensorflow/datasets tensorflow_datasets/testing/metadata/d4rl_mujoco_*/v2-*/1.2.0/dataset_info.json)
# and mean episode return over the complete episodes (computed from the files by
# github.com/YuweiYin/UBC_CPSC_533V, Project/log/get_offline_data/*.log). D4RL's medium-replay
# "episodes" include pieces cut at its 1000-step training iterations.
D4RL_V2: dict[str, dict[str, tuple[int, float]]] = {
    "Hopper-v5": {"random": (45_240, 18.4), "medium": (2_187, 1422.1), "expert": (1_028, 3511.4),
                  "medium-replay": (2_041, 467.3), "medium-expert": (3_214, 2089.9)},
    "HalfCheetah-v5": {"random": (1_000, -288.8), "medium": (1_000, 4770.3), "expert": (1_000, 10656.4),
                       "medium-replay": (202, 3093.3), "medium-expert": (2_000, 7713.4)},
    "Walker2d-v5": {"random": (48_908, 1.9), "medium": (1_191, 2852.1), "expert": (1_001, 4920.5),
                    "medium-replay": (1_093, 682.7), "medium-expert": (2_191, 3796.6)},
}


def rows(robot: str, size: str, seed: int) -> tuple[list[str], str | None]:
    """The table rows of ``robot``'s files and a line on its behaviour run (None: no file found)."""
    out, run = [], None
    for kind in LOCOMOTION_KINDS:
        try:
            ds = load_dataset(dataset_path(robot, size, seed, kind))
        except DatasetError:
            continue
        returns = ds.episode_returns()
        mean = float(returns.mean())
        d4rl = D4RL_V2[robot].get(kind)
        theirs = (f"{d4rl[0]:,} | {d4rl[1]:.1f} | {d4rl_normalized_score(robot, d4rl[1]):.1f}" if d4rl
                  else "- | - | -")
        out.append(f"| {robot} | {kind} | {len(returns):,} | {len(ds):,} | {mean:.1f} | "
                   f"{d4rl_normalized_score(robot, mean):.1f} | {theirs} |")
        attrs = ds.attrs
        if "behaviour_expert_score" in attrs:
            run = (f"{robot}: SAC {int(attrs['behaviour_steps']):,} steps; expert snapshot {attrs['behaviour_expert_return']:.1f}"
                   f" (D4RL score {attrs['behaviour_expert_score']:.1f}), medium snapshot "
                   f"{attrs['behaviour_medium_return']:.1f} ({attrs['behaviour_medium_score']:.1f}), random "
                   f"{attrs['behaviour_random_return']:.1f}; generation {float(attrs['seconds']) / 60:.0f} min of compute")
    return out, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="small", choices=["tiny", "small", "full"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--robots", nargs="+", default=list(D4RL_REFERENCE_RETURNS), choices=list(D4RL_REFERENCE_RETURNS))
    args = parser.parse_args()
    print("| robot | kind | episodes | transitions | mean return | D4RL score | D4RL v2: episodes | mean return "
          "| D4RL score |")
    print("|---|---|---|---|---|---|---|---|---|")
    runs = []
    for robot in args.robots:
        table, run = rows(robot, args.size, args.seed)
        print("\n".join(table) if table else f"| {robot} | (no {args.size} files of seed {args.seed}) |")
        runs += [run] if run else []
    print()
    print("\n".join(f"- {run}" for run in runs))


if __name__ == "__main__":
    main()
