"""``aligngym sweep``: the grid and its checks (no Ray), and one sweep on a local Ray of 2 CPUs: every
trial a run folder, a failed trial reported while the others finish, the table's numbers those of the
runs, and a rerun that trains nothing again."""

from __future__ import annotations

import numpy as np
import pytest

from aligngym.agents.cli import main
from aligngym.agents.config import ConfigError
from aligngym.agents.marl.study import mean_ci
from aligngym.agents.sweep import REPORT, Trial, make_trials, parse_grid, point_folder, run_sweep
from aligngym.agents.train import CHECKPOINT, read_curves

TINY = ["episodes=6", "checkpoint_every=3", "eval_episodes=2", "task_options.aux=bad"]  # seconds per run


def test_the_grid_is_the_product_of_its_keys_values_seed_by_seed():
    grid = parse_grid(["actor_lr=1e-3, 1e-4", "reward=primary,naive,potential"])
    assert grid == [("actor_lr", ["1e-3", "1e-4"]), ("reward", ["primary", "naive", "potential"])]
    trials = make_trials(grid, seeds=2)
    assert len(trials) == 12 and [t.seed for t in trials] == [0] * 6 + [1] * 6
    assert len({t.point for t in trials}) == 6
    assert trials[0] == Trial((("actor_lr", "1e-3"), ("reward", "primary")), 0)
    assert trials[0].overrides(["episodes=6"]) == ["episodes=6", "actor_lr=1e-3", "reward=primary", "seed=0"]
    assert make_trials([], seeds=3) == [Trial((), 0), Trial((), 1), Trial((), 2)]
    assert Trial((), 0).label == "(config)" and point_folder(()) == "config"
    assert point_folder((("task", "aligngym/CarRun-v0"),)) == "task=aligngym_CarRun-v0"  # no sub-folders


@pytest.mark.parametrize("items, message", [
    (["actor_lr"], "expected KEY=V1,V2"),
    (["=1,2"], "expected KEY=V1,V2"),
    (["actor_lr=1e-3,,1e-4"], "an empty value"),
    (["actor_lr=1e-3,1e-3"], "a value given twice"),
    (["actor_lr=1", "actor_lr=2"], "given twice"),
    (["seed=1,2"], "seeds come from --seeds"),
])
def test_a_malformed_grid_is_a_config_error(items, message):
    with pytest.raises(ConfigError, match=message):
        parse_grid(items)


def test_every_grid_point_is_checked_before_anything_runs(tmp_path):
    out = tmp_path / "sweep"
    with pytest.raises(ConfigError, match=r"grid point actor_lr=-1: .*actor_lr"):
        run_sweep("reinforce/grid_world", 1, ["actor_lr=1e-3,-1"], TINY, out)
    with pytest.raises(ConfigError, match="seeds must be >= 1"):
        run_sweep("reinforce/grid_world", 0, [], TINY, out)
    with pytest.raises(ConfigError, match="cpus-per-trial"):
        run_sweep("reinforce/grid_world", 1, [], TINY, out, cpus_per_trial=0)
    assert not out.exists()  # nothing started, nothing written


def test_the_cli_answers_a_bad_grid_with_exit_code_2(tmp_path, capsys):
    assert main(["sweep", "reinforce/grid_world", "--grid", "reward", "--out", str(tmp_path / "s")]) == 2
    assert "expected KEY=V1,V2" in capsys.readouterr().err


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_a_sweep_on_local_ray_reports_every_trial_and_a_rerun_trains_nothing(local_ray, tmp_path):
    out = tmp_path / "sweep"
    # the bogus heuristic passes the config's checks and fails in the env of its trials
    grid = ["reward=primary,naive", "task_options.aux=bad,bogus"]
    report = run_sweep("reinforce/grid_world", 2, grid, TINY[:3], out, metrics=["eval/return", "train/primary_return"],
                       tail=2)
    text = report.read_text()
    assert report == out / REPORT
    runs = sorted(out.glob(f"runs/*/s*/*/{CHECKPOINT}"))
    assert len(runs) == 4 and all("aux=bad" in str(p) for p in runs)  # 2 good points x 2 seeds
    assert text.count("seed ") == 4 and "aux=bogus" in text and "Failed trials" in text  # 4 failed, named
    row = next(line for line in text.splitlines() if line.startswith("| train/primary_return |"))
    cells = row.split("|")[2:-1]
    assert [c.strip() for c in cells[1::2]] == ["n/a", "n/a"]  # the failed points
    for cell, reward in zip(cells[::2], ["primary", "naive"]):
        finals = [np.mean(read_curves(p.parent, ("train/primary_return",))["train/primary_return"][1][-2:])
                  for p in runs if f"reward={reward}" in str(p)]
        mean, half = mean_ci(np.array(finals))
        assert cell.strip() == f"{mean:.4g} +- {half:.2g} (2)"
    assert (out / "curves.png").is_file()

    stamps = {p: p.stat().st_mtime_ns for p in runs}
    again = run_sweep("reinforce/grid_world", 2, grid, TINY[:3], out, metrics=["eval/return", "train/primary_return"],
                      tail=2)
    assert sorted(out.glob(f"runs/*/s*/*/{CHECKPOINT}")) == runs  # the same folders ...
    assert {p: p.stat().st_mtime_ns for p in runs} == stamps  # ... not trained again
    assert again.read_text() == text
    with pytest.raises(ConfigError, match=r"--metrics eval/retrun: no run logged it; the runs logged .*eval/return"):
        run_sweep("reinforce/grid_world", 2, grid, TINY[:3], out, metrics=["eval/retrun"], report_only=True)


def test_a_task_whose_worker_dies_is_reported_and_the_others_go_on(local_ray):
    """A worker killed mid-task (out of memory, a signal) fails its call alone, as an error raised in it."""
    import subprocess

    from aligngym.agents.sweep import run_tasks

    returned = []
    failed = run_tasks(subprocess.run, {"killed": (["sh", "-c", "kill -9 $PPID"],), "fine": (["true"],)},
                       on_result=lambda key, value: returned.append(key))
    assert returned == ["fine"]
    assert list(failed) == ["killed"] and failed["killed"].startswith("WorkerCrashedError")


@pytest.mark.parametrize("say", [True, False])
def test_an_interrupted_run_of_tasks_says_so_once(local_ray, monkeypatch, capsys, say):
    """Ctrl-C while tasks run: run_tasks says how to resume, unless its caller (the aligngym command,
    which prints its own hint) asks it not to."""
    from aligngym.agents.sweep import run_tasks

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(local_ray, "wait", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_tasks(parse_grid, {"a": ([],)}, say_interrupted=say)
    assert ("rerun the same command to resume" in capsys.readouterr().out) == say
