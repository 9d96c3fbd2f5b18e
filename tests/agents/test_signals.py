"""Runs that survive signals and damage: SIGTERM and Ctrl-C stop at a checkpoint that resumes
exactly, older checkpoints are kept and taken when the latest is damaged, and the CLI answers
bad folders and closed pipes without a Traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from aligngym.agents.cli import main
from aligngym.agents.config import AlignGymWarning, load_config
from aligngym.agents.marl.batched import SeedBatch
from aligngym.agents.train import Interrupted, checkpoint_files, load_checkpoint, resume, train

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"
SMALL = ("env.rounds_per_game=3", "learner.batch_size=8", "episodes=6", "checkpoint_every=100")


def _config(root: Path, *extra: str):
    return load_config(QUICKSTART, [f"run_root={root}", "show_progress=false", "device=cpu", *SMALL, *extra])


def _same_learners(a: Path, b: Path) -> None:
    (_, sa), (_, sb) = load_checkpoint(a / "checkpoint.pt"), load_checkpoint(b / "checkpoint.pt")
    assert int(sa["step"]) == int(sb["step"])
    for key, tensor in sa["learner"]["online"].items():
        assert torch.equal(tensor, sb["learner"]["online"][key]), key


def _signal_in_episode(monkeypatch, episode: int, *signums: int) -> None:
    """Deliver ``signums`` to this process while the population plays episode ``episode`` (1-based)."""
    real, calls = SeedBatch.play_episode, {"n": 0}

    def play(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == episode:
            for signum in signums:
                os.kill(os.getpid(), signum)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SeedBatch, "play_episode", play)


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_at_a_checkpoint_that_resumes_exactly(tmp_path, monkeypatch, capsys, scalars, signum, status):
    reference = train(_config(tmp_path / "ref"))
    _signal_in_episode(monkeypatch, 3, signum)
    code = main(["train", str(QUICKSTART), *(f"--set={o}" for o in (
        f"run_root={tmp_path / 'cut'}", "show_progress=false", "device=cpu", *SMALL))])
    monkeypatch.undo()
    (run_dir,) = (tmp_path / "cut").iterdir()
    err = capsys.readouterr().err
    assert code == status and f"aligngym train --resume {run_dir}" in err and "Traceback" not in err
    # the episode under way when the signal came is finished and kept (no periodic checkpoint was due)
    assert int(load_checkpoint(run_dir / "checkpoint.pt")[1]["step"]) == 3
    assert not (run_dir / ".lock").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are the process's own again
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    resume(run_dir)
    _same_learners(reference, run_dir)
    ref, got = scalars(reference), scalars(run_dir)
    for tag in ("coop/cooperation_rate", "coop/mean_reward", "loss/play"):
        assert ref[tag] == got[tag], tag


def test_a_second_signal_stops_at_once_without_a_checkpoint(tmp_path, monkeypatch):
    _signal_in_episode(monkeypatch, 3, signal.SIGTERM, signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt) as stop:
        train(_config(tmp_path))
    assert not isinstance(stop.value, Interrupted)
    (run_dir,) = tmp_path.iterdir()
    assert checkpoint_files(run_dir) == [] and not (run_dir / ".lock").exists()


def test_sigterm_from_outside_stops_the_cli_with_status_143(tmp_path):
    """What `timeout` or a job scheduler does: the command exits 143 with a checkpoint and the resume line."""
    exe = Path(sys.executable).with_name("aligngym")
    proc = subprocess.Popen([str(exe), "train", "quickstart", "--set", f"run_root={tmp_path}", "--set",
                             "show_progress=false", "--set", "device=cpu", "--set", "episodes=100000",
                             "--set", "checkpoint_every=100000", "--set", "learner.batch_size=8"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("run folder: ")
        deadline = time.monotonic() + 600  # (a guard against a hang, not a timing assertion)
        while not list(tmp_path.glob("*/events.out.tfevents.*")) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # into the training loop
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    (run_dir,) = tmp_path.iterdir()
    assert f"aligngym train --resume {run_dir}" in err and "Traceback" not in err
    assert int(load_checkpoint(run_dir / "checkpoint.pt")[1]["step"]) >= 1


def test_an_offline_run_stops_at_the_update_the_signal_came_in_and_resumes_exactly(tiny_data, tmp_path, monkeypatch,
                                                                                    capsys, scalars):
    from tianshou.algorithm.imitation.imitation_base import OfflineImitationLearning

    overrides = ["show_progress=false", "device=cpu", "steps=8", "batch_size=32", "checkpoint_every=100",
                 "eval_every=100", "log_every=2", "actor_hidden=[16]", "dataset.size=tiny"]
    reference = train(load_config("bc_all/cpu", [f"run_root={tmp_path / 'ref'}", *overrides]))
    real, calls = OfflineImitationLearning.update, {"n": 0}

    def update(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(OfflineImitationLearning, "update", update)
    code = main(["train", "bc_all/cpu", *(f"--set={o}" for o in (f"run_root={tmp_path / 'cut'}", *overrides))])
    monkeypatch.undo()
    (run_dir,) = (tmp_path / "cut").iterdir()
    assert code == 143 and f"aligngym train --resume {run_dir}" in capsys.readouterr().err
    _, state = load_checkpoint(run_dir / "checkpoint.pt")
    assert int(state["step"]) == 5  # no periodic checkpoint was due: the one the signal asked for
    resume(run_dir)
    (_, a), (_, b) = load_checkpoint(reference / "checkpoint.pt"), load_checkpoint(run_dir / "checkpoint.pt")
    assert int(a["step"]) == int(b["step"]) == 8
    for key, tensor in a["algorithm"].items():
        if isinstance(tensor, torch.Tensor):
            assert torch.equal(tensor, b["algorithm"][key]), key
    assert scalars(reference)["loss/actor"] == scalars(run_dir)["loss/actor"]


def test_a_pettingzoo_game_in_a_single_agent_config_says_so_and_names_the_file(tmp_path, capsys):
    code = main(["train", "fisor/cpu", "--set", "task=aligngym/punishment-v0", "--set", f"run_root={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "fisor/cpu.yaml (extending paper.yaml) with --set task=aligngym/punishment-v0" in err
    assert "task 'aligngym/punishment-v0' is a PettingZoo game" in err and "independent_dqn" in err
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------- kept checkpoints
def test_the_checkpoints_before_the_latest_are_kept(tmp_path):
    run_dir = train(_config(tmp_path, "checkpoint_every=2"))
    files = checkpoint_files(run_dir)
    assert [f.name for f in files] == ["checkpoint.pt", "checkpoint.1.pt"]
    assert [int(load_checkpoint(f)[1]["step"]) for f in files] == [6, 4]
    resume(run_dir, overrides=["episodes=10", "keep_checkpoints=3"])
    assert [int(load_checkpoint(f)[1]["step"]) for f in checkpoint_files(run_dir)] == [10, 8, 6]
    resume(run_dir, overrides=["episodes=12", "keep_checkpoints=1"])
    assert [f.name for f in checkpoint_files(run_dir)] == ["checkpoint.pt"]


def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(tmp_path):
    reference = train(_config(tmp_path / "ref", "checkpoint_every=2", "episodes=8"))
    run_dir = train(_config(tmp_path / "cut", "checkpoint_every=2"))
    latest = run_dir / "checkpoint.pt"
    data = bytearray(latest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped bit
    latest.write_bytes(bytes(data))
    with pytest.warns(AlignGymWarning, match=r"checkpoint.pt cannot be used \(.*\); using checkpoint.1.pt "
                                             r"instead, the checkpoint before it \(step 4\)"):
        resume(run_dir, overrides=["episodes=8"])
    assert (run_dir / "checkpoint.pt.damaged").is_file()  # kept aside, not lost
    _same_learners(reference, run_dir)


def test_eval_falls_back_from_a_damaged_latest_checkpoint(tmp_path):
    from aligngym.agents.evaluate import evaluate

    run_dir = train(_config(tmp_path, "checkpoint_every=2"))
    (run_dir / "checkpoint.pt").write_bytes(b"PK\x03\x04 cut short")
    with pytest.warns(AlignGymWarning, match=r"checkpoint.pt cannot be used .*using checkpoint.1.pt"):
        result = evaluate(run_dir, episodes=1)
    assert result["checkpoint_step"] == 4


def test_resume_set_changes_only_what_a_resume_may(tmp_path, capsys):
    run_dir = train(_config(tmp_path))
    assert main(["train", "--resume", str(run_dir), "--set", "seed=3"]) == 2
    err = capsys.readouterr().err
    assert "--resume --set seed=3: a resumed run may only change episodes, steps" in err
    assert main(["train", "--resume", str(run_dir), "--set", "episodes=8", "--set", "checkpoint_every=4"]) == 0
    assert int(load_checkpoint(run_dir / "checkpoint.pt")[1]["step"]) == 8
    saved = load_config(run_dir / "config.yaml")
    assert (saved.episodes, saved.checkpoint_every) == (8, 4)  # written into the run's config.yaml


def test_a_run_trains_on_its_agents_thread_count_or_the_configs(tmp_path, monkeypatch):
    real, seen = SeedBatch.play_episode, []

    def play(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SeedBatch, "play_episode", play)
    original = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train(_config(tmp_path / "a", "episodes=2"))
        assert set(seen) == {1}  # the measured default (benchmarks/threads.py)
        assert torch.get_num_threads() == 2  # the caller's own setting is back
        seen.clear()
        train(_config(tmp_path / "b", "episodes=2", "threads=2"))
        assert set(seen) == {2}
    finally:
        torch.set_num_threads(original)


# ---------------------------------------------------------------------- bad folders, closed pipes
def test_resume_in_a_folder_that_cannot_be_written_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from aligngym.agents import train as runner

    run_dir = train(_config(tmp_path))
    before = (run_dir / "checkpoint.pt").read_bytes()

    def read_only(directory, doing):  # what a read-only folder answers (root ignores chmod)
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(runner, "claim_folder", read_only)
    assert main(["train", "--resume", str(run_dir), "--set", "episodes=8"]) == 2
    err = capsys.readouterr().err
    assert f"cannot write in the run folder {run_dir} (Read-only file system)" in err and "Traceback" not in err
    assert (run_dir / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize("args", [["list"], ["--help"], ["train", "--help"]])
def test_a_closed_pipe_prints_no_traceback(args):
    exe = Path(sys.executable).with_name("aligngym")
    proc = subprocess.Popen([str(exe), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is written (as `| head` after its lines)
    err = proc.stderr.read().decode()
    proc.wait()
    assert "Traceback" not in err and "Exception ignored" not in err, err


def test_help_and_list_import_neither_torch_nor_the_agents():
    code = ("import sys\nfrom aligngym.agents.cli import main\nmain(['list'])\n"
            "print(sorted(m for m in ('torch', 'tianshou', 'h5py', 'aligngym.agents.train', 'aligngym.agents.fisor')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]"


def test_help_answers_far_faster_than_importing_torch():
    """The CLI's start-up as a ratio to torch's import, measured side by side (no wall-clock limit)."""
    def best_of_three(code: str) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
            times.append(time.perf_counter() - start)
        return min(times)

    cli = best_of_three("from aligngym.agents.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass")
    heavy = best_of_three("import torch, tianshou")
    assert cli < 0.5 * heavy, (cli, heavy)
