"""How the behaviour runs of ``aligngym data generate`` learned, and what more training would give.

    python benchmarks/behaviour_runs.py curve TASK [--size full] [--seed 0]
    python benchmarks/behaviour_runs.py more TASK RUN STEPS [--size full] [--seed 0]

``curve``: for every finished behaviour run in the task's work folder
(``<data dir>/.work/<Task>-<size>-s<seed>/run<k>.hdf5``), the training episodes by tenth of the run:
mean and top return, mean cost, mean length, share ending in a termination (a fall, a flip).

``more``: loads run ``RUN``'s final policy (and its observation statistics) and trains it for
``STEPS`` more environment steps with PPO, unpenalised (the task's ``alive_bonus`` still applies),
then prints the same table for those steps: what a longer run (``steps_scale``) would reach,
without regenerating the dataset. The run's reward statistics are not kept by ``generate``, so
VecNormalize's reward scale starts afresh.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecNormalize

from aligngym.envs.data import generate as gen
from aligngym.envs.data.dataset import OfflineDataset, load_dataset
from aligngym.envs.safety.specs import task_spec


def by_tenth(ds: OfflineDataset) -> list[str]:
    returns, costs = ds.episode_returns(), ds.episode_costs()
    lengths, ended = ds.episode_lengths(), ds.episode_terminated()
    n = len(returns)
    rows = ["| tenth | mean return | top return | mean cost | mean length | terminated |", "|---|---|---|---|---|---|"]
    for k in range(10):
        part = slice(k * n // 10, max((k + 1) * n // 10, k * n // 10 + 1))
        rows.append(f"| {k} | {returns[part].mean():.1f} | {returns[part].max():.1f} | {costs[part].mean():.1f} | "
                    f"{lengths[part].mean():.0f} | {ended[part].mean():.0%} |")
    return rows


def more(env_id: str, root: Path, run: int, steps: int) -> OfflineDataset:
    spec = task_spec(env_id)
    plan = gen.PLANS["full"]
    recorder = gen.EpisodeRecorder(plan.n_envs)
    venv = gen._wrap_recording(gen.make_vec_env(spec.env_id, plan.n_envs, 123), recorder, gen.PIDLagrangian(),
                               spec.reward_per_step, spec.behaviour.alive_bonus)
    policy = root / f"run{run}.zip"
    stats = gen._obs_stats_path(policy)  # where generate keeps a normalised run's observation statistics
    if stats.is_file():
        venv = VecNormalize(venv, norm_obs=True, norm_reward=True)
        with np.load(stats) as saved:
            venv.obs_rms.mean, venv.obs_rms.var, venv.obs_rms.count = saved["mean"], saved["var"], 1e6
    model = gen._ppo(venv, plan, 5, spec.behaviour.initial_log_std)
    model.set_parameters(str(policy), device="cpu")  # weights only, no pickles
    episodes: list[dict[str, np.ndarray]] = []

    class Collect(BaseCallback):
        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            episodes.extend(recorder.take())

    model.learn(steps, callback=Collect())
    return gen.episodes_to_dataset(episodes, {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["curve", "more"])
    parser.add_argument("task")
    parser.add_argument("run", type=int, nargs="?", default=0)
    parser.add_argument("steps", type=int, nargs="?", default=1_000_000)
    parser.add_argument("--size", default="full")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = task_spec(args.task)
    work = gen.work_folder(spec.env_id, args.size, args.seed)
    if args.mode == "curve":
        for path in sorted(work.glob("run[0-9].hdf5")):
            print(f"\n{path.stem} ({work.name})\n")
            print("\n".join(by_tenth(load_dataset(path))))
    else:
        print(f"\nrun{args.run} ({work.name}) trained {args.steps} more steps, unpenalised\n")
        print("\n".join(by_tenth(more(spec.env_id, work, args.run, args.steps))))


if __name__ == "__main__":
    main()
