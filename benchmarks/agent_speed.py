"""FISOR's training and acting speed at the paper's sizes, with peak memory.

    python benchmarks/agent_speed.py [--device auto|cpu|cuda] [--updates 20] [--states 20]

1. Gradient updates per second at the paper's batch sizes (2048 sampled; the actor's two updates
   on 1024 each; the critics on 256), on a synthetic BallCircle-shaped buffer of 100k transitions.
2. Actions per second when acting: ``--states`` states at once (an evaluation's parallel
   episodes), each with 16 candidates through 5 denoising steps and the Q_h ensemble; the figure
   counts env actions (states), not candidates.
3. Peak memory: CUDA's max allocated when on a GPU, else the process's peak resident set.

Compare figures from one run on one machine: these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import gymnasium as gym
import numpy as np
import torch
from tianshou.data import Batch, ReplayBuffer
from tianshou.utils.torch_utils import policy_within_training_step

import aligngym.envs  # noqa: F401
from aligngym.agents.fisor import FISOR, Config
from aligngym.agents.train import resolve_device


def synthetic_buffer(n: int, obs_dim: int, act_dim: int) -> ReplayBuffer:
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer.from_data(
        obs=rng.standard_normal((n, obs_dim)).astype(np.float32),
        act=rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        rew=rng.standard_normal(n).astype(np.float32), terminated=np.zeros(n, bool),
        truncated=np.zeros(n, bool), done=np.zeros(n, bool),
        obs_next=rng.standard_normal((n, obs_dim)).astype(np.float32))
    buffer._meta.info = Batch(cost=(rng.random(n) < 0.2).astype(np.float32))
    return buffer


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--states", type=int, default=20)
    args = parser.parse_args()
    device = resolve_device(args.device)
    env = gym.make("aligngym/BallCircle-v0")
    config = Config(agent="fisor", task="aligngym/BallCircle-v0")
    algo = FISOR(config, env.observation_space.shape[0], env.action_space, 1.0, device)
    buffer = algo.process_buffer(synthetic_buffer(100_000, env.observation_space.shape[0], env.action_space.shape[0]))
    actor_params = sum(p.numel() for p in algo.actor.parameters())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"actor parameters {actor_params:,}")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with policy_within_training_step(algo.policy):
        for _ in range(3):  # warm-up
            algo.update(buffer, config.batch_size)
        synchronize(device)
        started = time.perf_counter()
        for _ in range(args.updates):
            algo.update(buffer, config.batch_size)
        synchronize(device)
    updates = args.updates / (time.perf_counter() - started)
    policy = algo.policy.eval()
    obs = torch.randn(args.states, env.observation_space.shape[0], device=device)
    policy.select(obs)
    synchronize(device)
    started = time.perf_counter()
    calls = 0
    while time.perf_counter() - started < 3.0:
        policy.select(obs)
        calls += 1
    synchronize(device)
    actions = calls * args.states / (time.perf_counter() - started)
    if device.type == "cuda":
        peak = f"{torch.cuda.max_memory_allocated(device) / 2**20:,.0f} MiB CUDA allocated"
    else:
        peak = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:,.0f} MiB resident"
    print(f"| device | updates/s (batch {config.batch_size}, critics {config.critic_batch_size}) | "
          f"actions/s ({args.states} states x {config.candidates} candidates) | peak memory |")
    print("|---|---|---|---|")
    print(f"| {name} | {updates:.2f} | {actions:,.0f} | {peak} |")


if __name__ == "__main__":
    main()
