"""The fidelity script against the original Bullet-Safety-Gym (``benchmarks/bullet_fidelity.py``): its
protocols, the verdict rule and AlignGym's side of the play (the original runs in its own environment,
not in the tests)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

import aligngym.envs  # noqa: F401  (registers the aligngym/ ids)

ROOT = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("bullet_fidelity", ROOT / "benchmarks" / "bullet_fidelity.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fidelity = _load_script()


def rows(**columns: list[float]) -> list[dict[str, float]]:
    n = len(next(iter(columns.values())))
    base = {key: [0.0] * n for key in fidelity.METRICS}
    base.update(columns)
    return [{key: base[key][i] for key in fidelity.METRICS} for i in range(n)]


def test_a_row_is_close_within_ten_percent_or_within_the_originals_spread():
    original = rows(**{"return": [100.0, 100.0], "cost": [0.0, 10.0]})  # cost: mean 5, spread 5
    assert fidelity.verdict(original, rows(**{"return": [109.0, 109.0], "cost": [9.0, 11.0]})) == "close"
    assert fidelity.verdict(original, rows(**{"return": [112.0, 112.0], "cost": [11.0, 11.0]})) == "off: return, cost"
    assert fidelity.verdict(original, rows(**{"return": [-100.0, -100.0], "cost": [5.0, 5.0]})) == "off: return"
    still = rows(reach=[0.003, 0.003])  # millimetres of settling against none: below the floor
    assert fidelity.verdict(still, rows(reach=[0.0, 0.0])) == "close"
    assert fidelity.verdict(still, rows(reach=[0.2, 0.2])) == "off: reach"


def test_the_protocols_cover_every_sign_of_a_pair_and_the_ants_torques():
    pair = fidelity.protocols(2)
    constants = {tuple(a) for kind, a in pair.values() if kind == "const"}
    assert {(1, 1), (1, -1), (-1, 1), (-1, -1), (0, 0)} <= constants
    assert {kind for kind, _ in pair.values()} == {"const", "step", "random"}
    ant = fidelity.protocols(8)
    assert all(a is None or a.shape == (8,) for _, a in ant.values())
    assert np.array_equal(ant["const +-1"][1], [1, -1] * 4)


def test_the_newest_version_of_each_task_is_compared():
    assert fidelity.newest_id("CarRun") == "aligngym/CarRun-v1"
    assert fidelity.newest_id("BallRun") == "aligngym/BallRun-v0"


def test_the_ants_position_is_its_torsos():
    import gymnasium as gym

    env = gym.make("aligngym/AntRun-v0")
    _, info = env.reset(seed=0)
    np.testing.assert_array_equal(fidelity.position(env, info), env.unwrapped.torso_position[:2])
    env.close()


def test_aligngyms_episodes_report_where_the_agent_went():
    played = fidelity.play("aligngym/BallRun-v0", episodes=2)
    assert set(played) == set(fidelity.protocols(2))
    still, pushed = played["const (0, 0)"], played["const (1, 1)"]
    assert all(r["length"] == 100 and r["reach"] < 1e-9 and r["path"] < 1e-9 and r["return"] == 0.0 for r in still)
    assert all(r["reach"] > 10 and r["cost"] > 0 for r in pushed)  # full force runs far and fast
    assert all(r["path"] >= r["reach"] - 1e-9 for r in pushed)  # (a straight run: equal, up to rounding)
