"""The offline agents' results-table script (``benchmarks/offline_table.py``), both suites (FISOR's
safe tasks, A2PR's locomotion datasets): where its runs go, which configs they use, how its results
file is shared between invocations, what its tables and pictures show."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("offline_table", ROOT / "benchmarks" / "offline_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its worker processes find run_one by the module's name
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


def test_the_recorded_safe_results_still_give_the_recorded_table(tmp_path):
    # results.json rows from before variants, overrides and episodes were recorded read as cpu, none, 20
    recorded = ROOT / "benchmarks" / "safe_offline"
    rows = json.loads((recorded / "results.json").read_text())
    text = table.write_table(tmp_path, rows, "cpu", [], 20).read_text()
    assert text.splitlines()[1:] == (recorded / "table.md").read_text().splitlines()[1:]


def test_a_row_selects_its_task_and_dataset():
    assert table.selection("ball_circle") == ["task=aligngym/BallCircle-v0"]
    assert table.selection("walker2d-medium-replay") == ["task=Walker2d-v5", "dataset.kind=medium-replay"]
    assert len(table.SUITES["locomotion"].tasks) == 15


def test_a2pr_takes_its_per_dataset_settings_on_top_of_any_preset():
    from aligngym.agents.config import load_config

    name, overrides = table.dataset_settings("a2pr", table.selection("hopper-medium"))
    assert name == "a2pr/hopper_medium" and sorted(overrides) == ["discount=0.995", "mask=0.4"]
    cpu = load_config("a2pr/cpu", [*table.selection("hopper-medium"), *overrides])
    assert (cpu.steps, cpu.mask, cpu.discount) == (20_000, 0.4, 0.995)
    paper = load_config("a2pr/paper", [*table.selection("hopper-medium"), *overrides])
    assert paper.model_dump() == load_config("a2pr/hopper_medium").model_dump()
    # a dataset without a file of its own, an agent without any, a safe task: the preset alone
    assert table.dataset_settings("a2pr", table.selection("hopper-medium-replay")) == (None, [])
    assert table.dataset_settings("td3bc", table.selection("hopper-medium")) == (None, [])
    assert table.dataset_settings("fisor", table.selection("ball_run")) == (None, [])


def _score(agent, task, seed, score, steps=20_000, curve=None, **setting):
    return {"agent": agent, "task": task, "seed": seed, "score": score, "steps": steps, "run": "gone",
            "curve": curve if curve is not None else [[10_000, score / 2], [20_000, score]], **setting}


def test_the_locomotion_table_shows_d4rl_scores_steps_and_curves(tmp_path):
    rows = [_score("a2pr", "hopper-medium", 0, 60.0, settings="a2pr/hopper_medium"),
            _score("a2pr", "hopper-medium", 1, 64.0, settings="a2pr/hopper_medium"),
            _score("td3bc", "hopper-medium", 0, 55.0), _score("td3bc", "hopper-medium", 1, 57.0),
            _score("bc_all", "hopper-medium", 0, 50.0, curve=[]),  # no curve: in the table, not the picture
            _score("a2pr", "walker2d-mixed", 0, 30.0), _score("td3bc", "walker2d-mixed", 0, 10.0),
            _score("bc_all", "walker2d-mixed", 0, 12.0), _score("bc_all", "walker2d-mixed", 1, 14.0),
            _score("a2pr", "hopper-random", 0, 99.0, variant="paper", steps=1_000_000),  # not this table's
            _row("bc_safe", "ball_run", 0, 0.2, 0.0)]  # the other suite's: not this table's
    text = table.write_table(tmp_path, rows, "cpu", [], 20, suite="locomotion").read_text()
    lines = text.splitlines()
    assert lines[2] == "| dataset | a2pr | td3bc | bc_all |"
    assert [line for line in lines if line.startswith("| ")][1:] == [
        "| hopper-medium | **62.0 ± 2.0†** | 56.0 ± 1.0 | 50.0 (1) |",
        "| walker2d-mixed | **30.0 (1)** | 10.0 (1) | 13.0 ± 1.0 |",
        "| total (2 datasets) | **92.0** | 66.0 | 63.0 |"]
    assert "20,000 gradient steps per run for every agent" in text and "mean ± standard deviation over 2 seeds" in text
    assert "`a2pr/hopper_medium`" in text and "`full` datasets" in text and "hopper-random" not in text
    assert "--suite locomotion --variant cpu --seeds 2`" in text
    assert (tmp_path / "curves.png").is_file() and not (tmp_path / "table.png").exists()


def test_the_locomotion_table_says_when_the_agents_steps_differ(tmp_path):
    rows = [_score("a2pr", "hopper-medium", 0, 60.0, steps=1_000_000, variant="paper", extra=["dataset.size=small"]),
            _score("bc_all", "hopper-medium", 0, 50.0, steps=100_000, variant="paper", extra=["dataset.size=small"])]
    text = table.write_table(tmp_path, rows, "paper", ["dataset.size=small"], 20, suite="locomotion").read_text()
    assert "NOT equal across agents: a2pr 1,000,000, bc_all 100,000" in text
    assert "`small` datasets" in text and "--variant paper --seeds 1 --size small`" in text
    assert text.splitlines()[-1] == "| total (1 dataset) | **60.0** | 50.0 |"


def test_the_curves_average_seeds_at_each_step():
    steps, mean, std = table.mean_curve([[[0, 1.0], [10, 3.0]], [[0, 3.0], [10, 5.0], [20, 7.0]]])
    assert steps.tolist() == [0, 10, 20] and mean.tolist() == [2.0, 4.0, 7.0] and std.tolist() == [1.0, 1.0, 0.0]


def test_a_curve_is_read_from_the_events_with_a_rescored_last_step_replaced(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path)) as writer:  # training's evaluations
        for step, value in ((5, 1.0), (10, 2.0)):
            writer.add_scalar("eval/d4rl_score", value, global_step=step)
    with SummaryWriter(str(tmp_path)) as writer:  # aligngym eval of the last checkpoint, in a file of its own
        writer.add_scalar("eval/d4rl_score", 2.5, global_step=10)
    assert table.learning_curve(tmp_path, "eval/d4rl_score") == [[5, 1.0], [10, 2.5]]
    assert table.learning_curve(tmp_path, "eval/return") == []


def test_report_only_rewrites_the_locomotion_table_from_the_results_file(tmp_path, capsys):
    (tmp_path / "results.json").write_text(json.dumps([_score("iql", "halfcheetah-medium-expert", 0, 80.0)]))
    table.main(["--suite", "locomotion", "--report-only", "--out", str(tmp_path)])
    assert "| halfcheetah-medium-expert | 80.0 |" in capsys.readouterr().out
    assert (tmp_path / "curves.png").is_file()
    with pytest.raises(SystemExit):  # a safe task is not a row of the locomotion suite
        table.main(["--suite", "locomotion", "--tasks", "ball_run", "--report-only", "--out", str(tmp_path)])


def test_a_locomotion_run_trains_with_its_dataset_settings_and_records_its_curve(tmp_path, monkeypatch, capsys):
    from aligngym.envs.data.generate import generate

    monkeypatch.setenv("ALIGNGYM_DATA", str(tmp_path / "data"))
    generate("Hopper-v5", "tiny", seed=0)  # every kind of the robot
    out = tmp_path / "out"
    argv = ["--suite", "locomotion", "--agents", "a2pr", "--tasks", "hopper-medium", "--seeds", "1", "--size", "tiny",
            "--workers", "1", "--episodes", "2", "--out", str(out), "--set", "steps=4", "--set", "eval_every=2",
            "--set", "checkpoint_every=2", "--set", "batch_size=64", "--set", "eval_episodes=2"]
    table.main(argv)
    [row] = json.loads((out / "results.json").read_text())
    assert (row["agent"], row["task"], row["steps"]) == ("a2pr", "hopper-medium", 4)
    assert row["settings"] == "a2pr/hopper_medium"
    assert row["extra"][0] == "dataset.size=tiny" and [step for step, _ in row["curve"]] == [2, 4]
    assert row["curve"][-1][1] == pytest.approx(row["score"])  # the last point is the final evaluation's
    config = (Path(row["run"]) / "config.yaml").read_text()
    assert "mask: 0.4" in config and "discount: 0.995" in config and "size: tiny" in config
    table.main(argv)  # a second invocation reuses the finished run and replaces its row
    assert json.loads((out / "results.json").read_text()) == [row]
    assert "4 gradient steps per run for every agent" in capsys.readouterr().out
    assert (out / "curves.png").is_file()
