"""The results-table script of the safe offline agents (``benchmarks/safe_offline_table.py``): where
its runs go, how its results file is shared between invocations, and what its table shows."""

from __future__ import annotations

import importlib.util
import multiprocessing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("safe_offline_table", ROOT / "benchmarks" / "safe_offline_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


table = _load_script()


def test_each_variant_and_set_of_overrides_has_its_own_runs(tmp_path):
    roots = {table.run_root(tmp_path, "bc_all", "ball_run", 0, variant, extra)
             for variant, extra in [("cpu", []), ("paper", []), ("cpu", ["steps=5"]), ("cpu", ["steps=6"]),
                                    ("paper", ["steps=5"])]}
    assert len(roots) == 5
    # the cpu runs recorded before variants had folders of their own stay where they are
    assert table.run_root(tmp_path, "bc_all", "ball_run", 0, "cpu", []) == tmp_path / "runs/bc_all/ball_run/s0"


def _append(out: Path, tag: int) -> None:
    for k in range(25):
        with table.locked_results(out) as results:
            results.append({"tag": tag, "k": k})


def test_two_invocations_updating_the_results_at_once_lose_nothing(tmp_path):
    workers = [multiprocessing.get_context("fork").Process(target=_append, args=(tmp_path, tag)) for tag in (0, 1)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    with table.locked_results(tmp_path) as results:
        assert sorted((r["tag"], r["k"]) for r in results) == [(t, k) for t in (0, 1) for k in range(25)]


def test_a_failure_inside_the_lock_leaves_the_results_file_as_it_was(tmp_path):
    with table.locked_results(tmp_path) as results:
        results.append({"kept": True})
    with pytest.raises(RuntimeError), table.locked_results(tmp_path) as results:
        results.clear()
        raise RuntimeError
    with table.locked_results(tmp_path) as results:
        assert results == [{"kept": True}]


def _row(agent, task, seed, reward, cost, **setting):
    return {"agent": agent, "task": task, "seed": seed, "reward": reward, "cost": cost, "run": "gone", **setting}


def test_the_table_averages_seeds_of_one_setting_and_marks_unsafe_and_best(tmp_path):
    rows = [_row("bc_safe", "ball_run", 0, 0.2, 0.0), _row("bc_safe", "ball_run", 1, 0.4, 0.5),
            _row("bc_all", "ball_run", 0, 0.9, 3.0), _row("bc_all", "ball_run", 1, 0.7, 2.0),
            _row("bcq_lag", "ball_run", 0, 0.1, 0.0, episodes=20),
            _row("bc_safe", "car_run", 0, 0.5, 0.1, episodes=100),  # another evaluation: not this table's
            _row("bc_safe", "ball_run", 2, 0.0, 9.0, variant="paper")]  # another variant: not this table's
    text = table.write_table(tmp_path, rows, "cpu", [], 20).read_text()
    ball = next(line for line in text.splitlines() if line.startswith("| ball_run"))
    assert ball == ('| ball_run | <span style="color:gray">*0.80 / 2.50*</span> | **0.30 / 0.25** | '
                    '0.10 / 0.00 (1) |')
    assert "car_run" not in text and "mean over 2 seeds" in text and "20 evaluation episodes" in text
    assert "| safe on | 0/1 | 1/1 | 1/1 |" in text
    assert (tmp_path / "table.png").is_file()
