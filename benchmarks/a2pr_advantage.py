"""Whom A2PR's advantage filter picks: on a ``mixed`` dataset, the share of the random part's and of
the expert part's transitions that a trained A2PR counts as positive-advantage (its VAE's targets).

    python benchmarks/a2pr_advantage.py RUN_DIR [RUN_DIR ...]

For each A2PR run folder (any checkpoint: the latest is read), the run's own dataset is scored
with the run's critic and value: ``A(s, a) = Q1(s, a) - V(s)`` over every transition, as the
training step computes it (``positive = Q1(s, a) > V(s)``). A ``mixed`` file's first
``mixed_random_transitions`` rows are its random part and the rest its expert part (envs/data/generate.py);
any other file is reported whole. If the filter separated the data the way A2PR's paper means it to,
the expert part's positive share would be far above the random part's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from aligngym.agents.config import agent_module
from aligngym.agents.offline import setup
from aligngym.agents.train import load_run_checkpoint


def advantages(run_dir: Path) -> tuple[np.ndarray, dict, int]:
    """Every transition's ``Q1(s, a) - V(s)`` under the run's latest checkpoint, the dataset's
    attributes and the checkpoint's step."""
    config, state, _ = load_run_checkpoint(run_dir)
    if config.agent != "a2pr":
        raise SystemExit(f"{run_dir} is a {config.agent} run, not an A2PR one")
    env, dataset, algorithm = setup(agent_module(config.agent), config, state, torch.device("cpu"))
    env.close()
    arrays = dataset.arrays
    out = []
    with torch.no_grad():
        for start in range(0, len(dataset), 8192):
            rows = slice(start, start + 8192)
            obs = algorithm.normalizer(torch.as_tensor(arrays["observations"][rows]))
            act = torch.as_tensor(arrays["actions"][rows])
            out.append((algorithm.critic1(obs, act) - algorithm.value(obs)).squeeze(-1).numpy())
    return np.concatenate(out), dataset.attrs, int(state["step"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    print("| run | step | part | transitions | positive share | mean advantage |")
    print("|---|---|---|---|---|---|")
    for run_dir in args.runs:
        advantage, attrs, step = advantages(run_dir)
        cut = int(attrs.get("mixed_random_transitions", len(advantage)))
        parts = {"random": advantage[:cut], "expert": advantage[cut:]} if cut < len(advantage) else {"all": advantage}
        for name, values in parts.items():
            print(f"| {run_dir.name} | {step:,} | {name} | {len(values):,} | {np.mean(values > 0):.3f} | "
                  f"{values.mean():+.3f} |")


if __name__ == "__main__":
    main()
