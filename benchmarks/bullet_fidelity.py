"""AlignGym's safe tasks against the original Bullet-Safety-Gym 1.4.0, side by side under fixed policies.

    python benchmarks/bullet_fidelity.py [--tasks CarRun CarCircle ...] [--episodes 20]
        [--venv ~/.cache/aligngym/bullet-safety-gym-1.4.0] [--out benchmarks/bullet_fidelity/table.md]

DSRL's ``Offline{Ball,Car,Drone,Ant}{Run,Circle}-v0`` are Bullet-Safety-Gym's ``Safety<Agent><Task>-v0``;
AlignGym's ``aligngym/<Agent><Task>-v<n>`` model them (the newest version of each is compared: a body
refitted to the original becomes a new version, the car's ``-v1``) (numpy bodies for the ball, car and drone, a MuJoCo
ant). Users compare their agents with DSRL's published numbers, which means something only where the
tasks behave alike. This script plays both under the same protocols and puts the episodes' statistics
side by side:

- ``const <a>``: every step the same action ``a`` (several magnitudes and signs, every sign
  combination of a two-entry action; both envs take the same vector, so a sign convention that differs,
  such as which way positive steering turns, shows as a row that is off);
- ``step <a>``: ``a`` for the first 20 steps, then zeros (the response and how it dies away);
- ``random``: uniform random actions from the action space, seeded per episode.

Each protocol plays ``--episodes`` episodes per env (reset seeds 0 .. N-1: the spawns differ between the
two, as their generators do; the statistics are over spawns) to the task's time limit or a
termination. Per protocol the table gives, original | AlignGym, the mean ± standard deviation over
episodes of the return, the cost, the length, the share of episodes that terminated, the reach (the
farthest the agent got from its spawn: a circling car's diameter, a straight run's length) and the path
(the distance travelled), and a verdict: ``close`` when every mean lies within 10 % of the original's
(of its magnitude), within the original's spread (one standard deviation) or below a small absolute
floor (``FLOOR``: 1 in return, cost and steps, 5 % of the episodes, 5 cm), otherwise the quantities
that are off. (Where an episode ends on a circle depends on its phase: a small difference in speed moves
it far; the reach and the path do not.)

The original does not install beside AlignGym (it pins gymnasium 0.28.1): it runs in its own virtual
environment (Python 3.11), which the script creates at ``--venv`` on first use (``pip install
bullet-safety-gym==1.4.0``) or is pointed at; the original's episodes are played by this same file in
that environment (``--worker``), which prints them as JSON. Neither the original nor its environment
is a dependency of AlignGym.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TASKS = [f"{agent}{task}" for agent in ("Ball", "Car", "Drone", "Ant") for task in ("Run", "Circle")]
ORIGINAL_PACKAGE = "bullet-safety-gym==1.4.0"
DEFAULT_VENV = Path("~/.cache/aligngym/bullet-safety-gym-1.4.0")
STEP_LENGTH = 20  # steps of a step protocol's action before it falls to zero
METRICS = ("return", "cost", "length", "terminated", "reach", "path")
# differences below these count as close whatever the relative rule says (a still agent: 0 against a
# few millimetres of settling): 1 in return, cost and steps, 5 % of the episodes, 5 cm
FLOOR = {"return": 1.0, "cost": 1.0, "length": 1.0, "terminated": 0.05, "reach": 0.05, "path": 0.05}


def protocols(action_dim: int) -> dict[str, tuple[str, np.ndarray | None]]:
    """Name -> (kind, action): constant actions of several magnitudes and signs, two step responses
    and random play. Two-entry actions (ball, car, drone's pairs) get every sign combination."""
    out: dict[str, tuple[str, np.ndarray | None]] = {}
    if action_dim == 2:
        for a in ((1, 1), (1, -1), (-1, 1), (-1, -1), (0.5, 0.5), (0.2, 0.0), (0.0, 0.2), (0, 0)):
            out[f"const ({a[0]:g}, {a[1]:g})"] = ("const", np.array(a, np.float32))
        out["step (1, 1)"] = ("step", np.array((1, 1), np.float32))
        out["step (1, -1)"] = ("step", np.array((1, -1), np.float32))
    else:
        for value in (1.0, -1.0, 0.5, 0.0):
            out[f"const {value:g}"] = ("const", np.full(action_dim, value, np.float32))
        alternating = np.where(np.arange(action_dim) % 2 == 0, 1.0, -1.0).astype(np.float32)
        out["const +-1"] = ("const", alternating)
        out["step 1"] = ("step", np.ones(action_dim, np.float32))
    out["random"] = ("random", None)
    return out


def position(env, info: dict) -> np.ndarray:  # noqa: ANN001
    """The agent's ground position (x, y) in either env (a copy: the envs update their arrays in place)."""
    inner = env.unwrapped
    if hasattr(inner, "agent") and hasattr(inner.agent, "get_position"):  # the original
        return np.array(inner.agent.get_position(), float)[:2]
    if hasattr(inner, "torso_position"):  # AlignGym's MuJoCo ant
        return np.array(inner.torso_position[:2], float)
    return np.array(inner.core.pos[0, :2], float)  # AlignGym's numpy bodies


def play(env_id: str, episodes: int) -> dict[str, list[dict[str, float]]]:
    """Every protocol's episodes on ``env_id``: per episode return, cost, length, terminated, reach, path."""
    import gymnasium as gym

    env = gym.make(env_id)
    out: dict[str, list[dict[str, float]]] = {}
    try:
        dim = int(np.prod(env.action_space.shape))
        for name, (kind, action) in protocols(dim).items():
            rows = []
            for seed in range(episodes):
                _, info = env.reset(seed=seed)
                env.action_space.seed(seed)
                start = last = position(env, info)
                ret = cost = reach = path = 0.0
                steps, terminated = 0, False
                while True:
                    if kind == "random":
                        a = env.action_space.sample()
                    elif kind == "step" and steps >= STEP_LENGTH:
                        a = np.zeros(dim, np.float32)
                    else:
                        a = action
                    _, reward, terminated, truncated, info = env.step(a)
                    ret, cost, steps = ret + float(reward), cost + float(info.get("cost", 0.0)), steps + 1
                    now = position(env, info)
                    reach, path, last = max(reach, float(np.linalg.norm(now - start))), path + float(
                        np.linalg.norm(now - last)), now
                    if terminated or truncated:
                        break
                rows.append({"return": ret, "cost": cost, "length": float(steps), "terminated": float(terminated),
                             "reach": reach, "path": path})
            out[name] = rows
    finally:
        env.close()
    return out


def newest_id(task: str) -> str:
    """AlignGym's newest version of ``task`` (a body refitted to the original is a new version)."""
    import gymnasium as gym

    versions = [int(env_id.rsplit("-v", 1)[1]) for env_id in gym.registry if env_id.startswith(f"aligngym/{task}-v")]
    return f"aligngym/{task}-v{max(versions)}"


def original_python(venv: Path) -> Path:
    """The original's environment's interpreter, made (with the package installed) if missing."""
    venv = venv.expanduser()
    python = venv / "bin" / "python"
    if not python.exists():
        interpreter = sys.executable if sys.version_info[:2] == (3, 11) else "python3.11"
        print(f"making {venv} (Python 3.11, {ORIGINAL_PACKAGE}) ...", flush=True)
        subprocess.run([interpreter, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", ORIGINAL_PACKAGE], check=True)
    check = subprocess.run([str(python), "-c", "import bullet_safety_gym"], capture_output=True, text=True)
    if check.returncode != 0:
        raise SystemExit(f"{venv} has no working bullet_safety_gym ({check.stderr.strip().splitlines()[-1:]}); "
                         f"remove it to have it made again, or point --venv at one")
    return python


def play_original(python: Path, task: str, episodes: int) -> dict[str, list[dict[str, float]]]:
    command = [str(python), __file__, "--worker", task, "--episodes", str(episodes)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode != 0:
        raise SystemExit(f"the original's {task} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def stats(rows: list[dict[str, float]], key: str) -> tuple[float, float]:
    values = np.array([r[key] for r in rows])
    return float(values.mean()), float(values.std())


def verdict(original: list[dict[str, float]], ours: list[dict[str, float]]) -> str:
    """``close`` when every mean is within 10 % of the original's, within its spread or below ``FLOOR``;
    else the quantities that are off."""
    off = []
    for key in METRICS:
        (m0, s0), (m1, _) = stats(original, key), stats(ours, key)
        if abs(m1 - m0) > max(0.1 * abs(m0), s0, FLOOR[key]):
            off.append(key)
    return "close" if not off else "off: " + ", ".join(off)


def table(task: str, env_id: str, original: dict, ours: dict) -> tuple[list[str], list[str]]:
    """The task's markdown table and each protocol's verdict."""
    verdicts = [verdict(original[name], ours[name]) for name in original]
    lines = [f"### {task} (original Safety{task}-v0 | {env_id})", "",
             "| protocol | " + " | ".join(METRICS) + " | verdict |", "|---|" + "---|" * (len(METRICS) + 1)]
    for name, said in zip(original, verdicts):
        cells = []
        for key in METRICS:
            (m0, s0), (m1, s1) = stats(original[name], key), stats(ours[name], key)
            cells.append(f"{m0:.3g} ± {s0:.2g} \\| {m1:.3g} ± {s1:.2g}")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {said} |")
    return lines + [""], verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=TASKS, choices=TASKS, metavar="TASK")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per protocol and env")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="the original's virtual environment")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/bullet_fidelity/table.md"))
    parser.add_argument("--worker", metavar="TASK", help=argparse.SUPPRESS)  # play the original (in its venv)
    args = parser.parse_args()
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    if args.worker:
        import bullet_safety_gym  # noqa: F401  (registers Safety*-v0)

        print(json.dumps(play(f"Safety{args.worker}-v0", args.episodes)))
        return
    import aligngym.envs  # noqa: F401

    python = original_python(args.venv)
    started = time.perf_counter()
    lines = [f"`python benchmarks/bullet_fidelity.py {shlex.join(sys.argv[1:])}`, {time.strftime('%Y-%m-%d')}, "
             f"{platform.node()} ({os.cpu_count()} CPUs), {args.episodes} episodes per protocol and env; each cell "
             "original | AlignGym, mean ± standard deviation over episodes; reach: the farthest from the spawn, "
             "path: the distance travelled (m).", ""]
    verdicts: list[str] = []
    for task in args.tasks:
        original = play_original(python, task, args.episodes)
        env_id = newest_id(task)
        ours = play(env_id, args.episodes)
        block, said = table(task, env_id, original, ours)
        print("\n".join(block), flush=True)
        lines += block
        verdicts += said
    lines.append(f"{verdicts.count('close')} of {len(verdicts)} rows close; {time.perf_counter() - started:.0f} s.")
    print(lines[-1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
