"""The project's own files install and test everything (what CI relies on)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    found = set()
    for folder, name in (("envs", "aligngym.envs"), ("agents", "aligngym.agents"), ("configs", "aligngym.configs")):
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *rel)))
    assert found == listed, f"pyproject packages {sorted(listed)} != folders {sorted(found)}"


def test_torch_is_pinned():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.13.0" in deps, "an unpinned torch pulls a multi-GB CUDA build"
    assert not any(d.startswith("tianshou[") for d in deps), "tianshou extras downgrade mujoco"


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_one():
    first = [line for line in (ROOT / "README.md").read_text().splitlines() if line.strip()][:3]
    assert first[0] == "```bash"
    assert first[1].startswith("make demo") and first[2].startswith("make test")
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_envs_register_in_a_fresh_interpreter():
    code = (
        "import pettingzoo, aligngym.envs\n"
        "env = pettingzoo.make('parallel', 'aligngym/punishment-v0', direct_punishment=True)\n"
        "obs, infos = env.reset(seed=0)\n"
        "print(sorted(obs))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "player_4" in out.stdout


def test_console_script_is_installed():
    exe = Path(sys.executable).with_name("aligngym")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    assert "train" in out.stdout and "eval" in out.stdout and "list" in out.stdout
