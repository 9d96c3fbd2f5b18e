"""Steps per second of every safe task, measured in one run.

    python benchmarks/safety_speed.py [--steps 20000] [--batch 1024] [--repeats 3]

1. Each numpy task (Ball/Car/Drone x Run/Circle) as a single Gymnasium env from ``gym.make``
   (default wrappers, pre-sampled random actions, auto-reset, reset time included: the method of
   the reference measurement in ``shared/reference/bullet-safety-gym.md``).
2. The same task's batched core with ``--batch`` environments stepped at once (env steps per
   second = batch x calls), finished environments reset as they end.
3. The same batch through Gymnasium's API: ``gym.make_vec(id, num_envs=batch,
   vectorization_mode="vector_entry_point")`` (the core behind a ``VectorEnv``: float32 actions
   checked, NEXT_STEP autoreset with per-sub-env generators, the info arrays built each step).
4. The MuJoCo tasks (AntRun/AntCircle and the five velocity tasks), single env, same method.

With ``--random-play`` it prints instead, for each numpy task, what uniform random actions earn and
cost per episode (3 x 5,000 steps, seeds 0-2, the reference's method) beside the reference's figures:
the task rules are the reference's, so a difference comes from the body models.

Each figure is the median of ``--repeats`` runs. Besides the absolute figures it prints
ratios: single env against the reference Bullet task (figures measured on a 2-core EPYC like
this machine's; a ratio across machines and times is indicative only), and, measured here in one
run, the batched core per env step against single and the ``make_vec`` vector env against the core
(what Gymnasium's API costs on top of it).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import gymnasium as gym
import numpy as np

import aligngym.envs  # noqa: F401
from aligngym.envs.safety.bullet import BulletCore

NUMPY_TASKS = [(a, t) for a in ("Ball", "Car", "Drone") for t in ("Run", "Circle")]
MUJOCO_TASKS = ["AntRun-v0", "AntCircle-v0", "AntVelocity-v1", "HalfCheetahVelocity-v1", "HopperVelocity-v1",
                "Walker2dVelocity-v1", "SwimmerVelocity-v1"]
# Bullet-Safety-Gym 1.4.0 single env, steps/s (mean of the reference's two passes)
REFERENCE = {"BallRun": 7392, "BallCircle": 6262, "CarRun": 1790, "CarCircle": 1209, "DroneRun": 3730,
             "DroneCircle": 2946, "AntRun": 1852, "AntCircle": 1341}

# Bullet-Safety-Gym 1.4.0, uniform random actions: (return, cost) per episode (the reference's section 7)
REFERENCE_RANDOM = {"BallRun": (-41.6, 9.49), "BallCircle": (0.8, 70.96), "CarRun": (-16.6, 0.0),
                    "CarCircle": (-0.4, 3.46), "DroneRun": (188.7, 55.61), "DroneCircle": (2.2, 14.60)}


def random_play(env_id: str, steps: int = 5000, seeds: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Returns and costs of the episodes uniform random actions finish in ``steps`` steps per seed."""
    returns, costs = [], []
    for seed in range(seeds):
        env = gym.make(env_id)
        env.action_space.seed(seed)
        env.reset(seed=seed)
        ret = cost = 0.0
        for _ in range(steps):
            _, reward, terminated, truncated, info = env.step(env.action_space.sample())
            ret, cost = ret + reward, cost + info["cost"]
            if terminated or truncated:
                returns.append(ret)
                costs.append(cost)
                ret = cost = 0.0
                env.reset()
    return np.array(returns), np.array(costs)


def single_env(env_id: str, steps: int) -> float:
    env = gym.make(env_id)
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(steps)]
    env.reset(seed=0)
    started = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - started)


def batched(agent: str, task: str, batch: int, steps: int) -> float:
    core = BulletCore(agent, task, num_envs=batch, seed=0)
    core.reset()
    rng = np.random.default_rng(0)
    calls = max(1, steps // batch) * 4
    actions = rng.uniform(-1, 1, size=(16, batch, core.act_dim))
    started = time.perf_counter()
    for i in range(calls):
        *_, terminated, truncated = core.step(actions[i % 16])
        done = terminated | truncated
        if done.any():
            core.reset(np.flatnonzero(done))
    return calls * batch / (time.perf_counter() - started)


def vector_entry_point(env_id: str, batch: int, steps: int) -> float:
    """Env steps per second of ``gym.make_vec(..., vectorization_mode="vector_entry_point")``, the
    method of :func:`batched` (its autoreset does the resets)."""
    env = gym.make_vec(env_id, num_envs=batch, vectorization_mode="vector_entry_point")
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    calls = max(1, steps // batch) * 4
    actions = rng.uniform(-1, 1, size=(16, *env.action_space.shape)).astype(np.float32)
    started = time.perf_counter()
    for i in range(calls):
        env.step(actions[i % 16])
    return calls * batch / (time.perf_counter() - started)


def median(fn, repeats: int) -> float:  # noqa: ANN001
    return float(np.median([fn() for _ in range(repeats)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--random-play", action="store_true",
                        help="print random-action returns and costs per episode against the reference's")
    args = parser.parse_args()
    if args.random_play:
        print("| task | episodes | return (random) | reference | cost per episode (random) | reference |")
        print("|---|---|---|---|---|---|")
        for agent, task in NUMPY_TASKS:
            name = f"{agent}{task}"
            returns, costs = random_play(f"aligngym/{name}-v0")
            ref_return, ref_cost = REFERENCE_RANDOM[name]
            print(f"| {name} | {len(returns)} | {returns.mean():.1f} +- {returns.std():.1f} | {ref_return} | "
                  f"{costs.mean():.2f} +- {costs.std():.2f} | {ref_cost} |", flush=True)
        return
    for agent, task in NUMPY_TASKS:  # compile the kernels before timing
        batched(agent, task, 2, 2)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, numpy {np.__version__}")
    print(f"| task | single env steps/s | vs reference Bullet | batched core (B = {args.batch}) env steps/s | "
          f"batched / single | make_vec (B = {args.batch}) env steps/s | make_vec / single | make_vec / core |")
    print("|---|---|---|---|---|---|---|---|")
    for agent, task in NUMPY_TASKS:
        name = f"{agent}{task}"
        one = median(lambda: single_env(f"aligngym/{name}-v0", args.steps), args.repeats)
        many = median(lambda: batched(agent, task, args.batch, args.steps * 10), args.repeats)
        vec = median(lambda: vector_entry_point(f"aligngym/{name}-v0", args.batch, args.steps * 10), args.repeats)
        print(f"| {name} | {one:,.0f} | {one / REFERENCE[name]:.1f}x | {many:,.0f} | {many / one:.0f}x | "
              f"{vec:,.0f} | {vec / one:.0f}x | {vec / many:.2f} |", flush=True)
    print()
    print("| MuJoCo task | single env steps/s | vs reference |")
    print("|---|---|---|")
    for env_id in MUJOCO_TASKS:
        one = median(lambda: single_env(f"aligngym/{env_id}", args.steps // 4), args.repeats)
        name = env_id.split("-")[0]
        ref = f"{one / REFERENCE[name]:.1f}x Bullet" if name in REFERENCE else "-"
        print(f"| {env_id} | {one:,.0f} | {ref} |", flush=True)


if __name__ == "__main__":
    main()
