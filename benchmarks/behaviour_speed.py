"""How fast the locomotion behaviour learner (SAC, envs/data/generate.py) trains on this machine,
and how much of its time stable-baselines3's machinery takes.

    python benchmarks/behaviour_speed.py [--task Hopper-v5] [--seconds 30] [--rounds 2]

Two units, each timed in a fresh child process on one torch thread (as ``aligngym data generate``
runs) for ``--seconds`` after a warm-up:

- ``sb3``: one environment step plus one gradient step of the SAC that ``generate`` trains
  (``_sac`` with the ``full`` plan: D4RL's settings, batch 256, 256 x 256 nets), through SB3's
  ``learn``: what a behaviour run costs per step.
- ``bare``: the same work written directly in torch: the actor acting on one observation, one
  environment step, and one SAC update (twin critics and their targets, the actor, the entropy
  coefficient; the same layer sizes and batch) from a preallocated numpy buffer. It is the floor a
  lean SAC of our own could reach; SB3's share of a step is ``1 - bare / sb3``.

Both run "quiet" and "busy" (beside one process spinning on a core). It prints wall and CPU-seconds
per step, steps per second and the hours a ``full`` run (1M steps) takes. Units alternate within
each round; compare the ratios measured in one run, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import resource
import subprocess
import sys
import time


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _bare_sac(task: str):  # noqa: ANN202  (a closure doing one step)
    import gymnasium as gym
    import numpy as np
    import torch
    from torch import nn
    from torch.nn import functional as F

    env = gym.make(task)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]

    def mlp(inp: int, out: int) -> nn.Module:
        return nn.Sequential(nn.Linear(inp, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, out))

    actor = mlp(obs_dim, 2 * act_dim)
    critics = nn.ModuleList([mlp(obs_dim + act_dim, 1) for _ in range(2)])
    targets = nn.ModuleList([mlp(obs_dim + act_dim, 1) for _ in range(2)])
    targets.load_state_dict(critics.state_dict())
    log_alpha = torch.zeros(1, requires_grad=True)
    actor_opt, critic_opt = torch.optim.Adam(actor.parameters(), 3e-4), torch.optim.Adam(critics.parameters(), 3e-4)
    alpha_opt = torch.optim.Adam([log_alpha], 3e-4)
    size = 100_000
    rng = np.random.default_rng(0)
    buffer = {"obs": rng.standard_normal((size, obs_dim), dtype=np.float32),
              "act": rng.uniform(-1, 1, (size, act_dim)).astype(np.float32),
              "rew": rng.standard_normal(size, dtype=np.float32),
              "next": rng.standard_normal((size, obs_dim), dtype=np.float32), "done": np.zeros(size, np.float32)}

    def sample(obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = actor(obs).chunk(2, -1)
        log_std = log_std.clamp(-20, 2)
        u = mean + log_std.exp() * torch.randn_like(mean)
        logp = (-0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        return torch.tanh(u), logp - (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)

    def q(nets: nn.ModuleList, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], -1)
        return torch.minimum(nets[0](x), nets[1](x)).squeeze(-1)

    state = {"obs": env.reset(seed=0)[0]}

    def step() -> None:
        with torch.no_grad():
            action = sample(torch.as_tensor(state["obs"], dtype=torch.float32)[None])[0][0].numpy()
        obs, _, terminated, truncated, _ = env.step(action)
        state["obs"] = env.reset()[0] if terminated or truncated else obs
        idx = rng.integers(0, size, 256)
        o, a, r, o2, d = (torch.from_numpy(buffer[k][idx]) for k in ("obs", "act", "rew", "next", "done"))
        alpha = log_alpha.exp().detach()
        with torch.no_grad():
            a2, logp2 = sample(o2)
            y = r + 0.99 * (1 - d) * (q(targets, o2, a2) - alpha * logp2)
        x = torch.cat([o, a], -1)
        critic_loss = sum(F.mse_loss(net(x).squeeze(-1), y) for net in critics)
        critic_opt.zero_grad()
        critic_loss.backward()
        critic_opt.step()
        pa, logp = sample(o)
        critics.requires_grad_(False)
        actor_loss = (alpha * logp - q(critics, o, pa)).mean()
        critics.requires_grad_(True)
        actor_opt.zero_grad()
        actor_loss.backward()
        actor_opt.step()
        alpha_loss = -(log_alpha * (logp.detach() - act_dim)).mean()
        alpha_opt.zero_grad()
        alpha_loss.backward()
        alpha_opt.step()
        with torch.no_grad():
            for p, t in zip(critics.parameters(), targets.parameters()):
                t.lerp_(p, 0.005)

    return step


def child(unit: str, task: str, seconds: float) -> dict[str, float]:
    import torch

    torch.set_num_threads(1)
    if unit == "bare":
        step = _bare_sac(task)
        for _ in range(50):
            step()
        n, wall0, cpu0 = 0, time.perf_counter(), _cpu_seconds()
        while time.perf_counter() - wall0 < seconds:
            step()
            n += 1
        return {"steps": n, "wall": (time.perf_counter() - wall0) / n, "cpu": (_cpu_seconds() - cpu0) / n}
    from dataclasses import replace

    from aligngym.envs.data import generate as gen

    model = gen._sac(gen.make_vec_env(task, 1, 0), replace(gen.LOCOMOTION_PLANS["full"], warmup=300), 0)
    model.learn(350)  # the warm-up, then the first updates
    chunk, n, wall0, cpu0 = 200, 0, time.perf_counter(), _cpu_seconds()
    while time.perf_counter() - wall0 < seconds:
        model.learn(chunk, reset_num_timesteps=False)
        n += chunk
    return {"steps": n, "wall": (time.perf_counter() - wall0) / n, "cpu": (_cpu_seconds() - cpu0) / n}


def _spin() -> None:
    while True:
        pass


def measure(unit: str, task: str, seconds: float) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--child", unit, task, str(seconds)], capture_output=True,
                         text=True, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="Hopper-v5", choices=["Hopper-v5", "HalfCheetah-v5", "Walker2d-v5"])
    parser.add_argument("--seconds", type=float, default=30.0, help="timed seconds per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="measurements per unit (the units alternate)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], float(args.child[2]))))
        return
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
          f"load average before: {os.getloadavg()[0]:.2f}; {args.task}, one torch thread")
    print("| load | unit | wall per step | CPU-s per step | steps/s | hours for 1M steps | bare / sb3 (wall) |")
    print("|---|---|---|---|---|---|---|")
    for load in ("quiet", "busy"):
        spinner = multiprocessing.Process(target=_spin, daemon=True) if load == "busy" else None
        if spinner is not None:
            spinner.start()
        try:
            got: dict[str, list[dict[str, float]]] = {"sb3": [], "bare": []}
            for r in range(args.rounds):
                for unit in (("sb3", "bare") if r % 2 == 0 else ("bare", "sb3")):
                    got[unit].append(measure(unit, args.task, args.seconds))
        finally:
            if spinner is not None:
                spinner.terminate()
        mean = {u: {k: sum(m[k] for m in ms) / len(ms) for k in ("wall", "cpu")} for u, ms in got.items()}
        for unit in ("sb3", "bare"):
            wall, cpu = mean[unit]["wall"], mean[unit]["cpu"]
            ratio = f"{mean['bare']['wall'] / mean['sb3']['wall']:.2f}" if unit == "bare" else ""
            print(f"| {load} | {unit} | {wall * 1e3:.1f} ms | {cpu * 1e3:.1f} ms | {1 / wall:.0f} | "
                  f"{1e6 * wall / 3600:.1f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
