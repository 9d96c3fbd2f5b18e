"""The runner end to end: run folders, TensorBoard, checkpoints, determinism, resume, eval, list."""

from __future__ import annotations

import json
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from aligngym.agents.cli import main
from aligngym.agents.config import AlignGymWarning, ConfigError, load_config
from aligngym.agents.evaluate import evaluate
from aligngym.agents.marl.batched import SeedBatch
from aligngym.agents.marl.population import Population
from aligngym.agents.train import (CheckpointError, Run, RunInUseError, finish, load_checkpoint, resolve_device,
                                   resume, save_checkpoint, train)

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"
METRICS = ("coop/cooperation_rate", "coop/punishment_rate_direct", "coop/punishment_rate_third_party",
           "coop/just_punishment_share", "coop/mean_reward", "coop/mean_reputation")


def _config(tmp_path: Path, *extra: str, smoke: bool = True):
    return load_config(QUICKSTART, [f"run_root={tmp_path}", "show_progress=false", "device=cpu",
                                    *extra], smoke=smoke)


SMALL = ("env.rounds_per_game=3", "learner.batch_size=8", "episodes=4", "checkpoint_every=2")


def test_cli_train_writes_a_complete_run_folder(tmp_path, capsys, scalars):
    code = main(["train", str(QUICKSTART), "--smoke", "--set", f"run_root={tmp_path}",
                 "--set", "show_progress=false"])
    out = capsys.readouterr().out
    assert code == 0
    (run_dir,) = list(tmp_path.iterdir())
    assert run_dir.name.startswith("punishment-v0__independent_dqn__s0__")
    assert f"run folder: {run_dir}" in out and f"tensorboard --logdir {tmp_path}" in out
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved == load_config(QUICKSTART, [f"run_root={tmp_path}", "show_progress=false"],
                                smoke=True).model_dump(mode="json")
    logged = scalars(run_dir)
    for tag in METRICS:
        assert [s for s, _ in logged[tag]] == [0, 1, 2], tag
    assert logged["train/gradient_updates"][-1][1] > 0, "the smoke run must reach real updates"
    assert not [tag for tag in logged if tag.endswith("/step")], "TensorBoard's own axis is the step"
    ea = EventAccumulator(str(run_dir))
    ea.Reload()
    hparams = ea.PluginTagToContent("hparams")
    assert b"learner.play.lr" in hparams["_hparams_/session_start_info"], "hparams table missing"
    assert b"coop/cooperation_rate" in hparams["_hparams_/experiment"]
    config, state = load_checkpoint(run_dir / "checkpoint.pt")
    assert config.model_dump(mode="json") == saved and int(state["step"]) == 3


def test_same_seed_same_metrics_different_seed_different(tmp_path, scalars):
    runs = [train(_config(tmp_path / name, f"seed={seed}")) for name, seed in
            (("a", 3), ("b", 3), ("c", 4))]
    a, b, c = (scalars(r) for r in runs)
    for tag in (*METRICS, "loss/play", "loss/punish"):
        assert a[tag] == b[tag], tag
    assert any(a[t] != c[t] for t in METRICS)


def test_interrupted_training_resumes_exactly(tmp_path, monkeypatch, scalars):
    reference = train(_config(tmp_path / "ref", *SMALL, smoke=False))
    real = SeedBatch.play_episode
    calls = {"n": 0}

    def interrupt_in_fourth_episode(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SeedBatch, "play_episode", interrupt_in_fourth_episode)
    config = _config(tmp_path / "cut", *SMALL, smoke=False)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    monkeypatch.setattr(SeedBatch, "play_episode", real)
    (run_dir,) = list((tmp_path / "cut").iterdir())
    assert int(load_checkpoint(run_dir / "checkpoint.pt")[1]["step"]) == 2
    resume(run_dir)
    _, ref_state = load_checkpoint(reference / "checkpoint.pt")
    _, state = load_checkpoint(run_dir / "checkpoint.pt")
    assert int(state["step"]) == 4
    for key, tensor in ref_state["learner"]["online"].items():
        assert torch.equal(tensor, state["learner"]["online"][key]), key
    ref, got = scalars(reference), scalars(run_dir)
    for tag in METRICS:
        assert ref[tag] == got[tag], tag


def test_eval_rebuilds_from_the_run_folder(tmp_path, capsys, scalars):
    run_dir = train(_config(tmp_path))
    assert main(["eval", str(run_dir), "--episodes", "2"]) == 0
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["episodes"] == 2 and 0.0 <= result["eval/cooperation_rate"] <= 1.0
    assert result["checkpoint_step"] == 3 and "eval/return" in result
    assert scalars(run_dir)["eval/cooperation_rate"] == [(3, pytest.approx(result["eval/cooperation_rate"]))]
    assert main(["eval", str(tmp_path / "nothing")]) == 2
    assert f"run folder not found: {tmp_path / 'nothing'}" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["eval", str(tmp_path / "empty")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err
    assert main(["eval", str(run_dir / "checkpoint.pt"), "--episodes", "1"]) == 0  # the file: its folder
    assert json.loads((run_dir / "eval.json").read_text())["episodes"] == 1


def test_eval_says_when_config_yaml_was_edited_and_checks_its_output_first(tmp_path, capsys, monkeypatch):
    from aligngym.agents.config import dump_config

    run_dir = train(_config(tmp_path))
    saved = (run_dir / "config.yaml").read_text()
    (run_dir / "config.yaml").write_text(dump_config(load_config(run_dir / "config.yaml", ["episodes=9"])))
    with warnings.catch_warnings():
        warnings.simplefilter("error", AlignGymWarning)
        assert main(["eval", str(run_dir), "--episodes", "1"]) == 0  # a longer run: what resume allows
    (run_dir / "config.yaml").write_text(dump_config(load_config(run_dir / "config.yaml", ["env.fine=1"])))
    with pytest.warns(AlignGymWarning, match=r"differs from the checkpoint in env\.fine; .* uses the checkpoint's"):
        assert main(["eval", str(run_dir), "--episodes", "1"]) == 0
    shown = warnings.formatwarning("x differs", AlignGymWarning, "evaluate.py", 1)  # main's format
    assert shown == "aligngym: warning: x differs\n"
    assert "UserWarning" in warnings.formatwarning("other", UserWarning, "f.py", 1)  # others' as Python's
    (run_dir / "config.yaml").write_text(saved)
    (run_dir / "eval.json").unlink()
    (run_dir / "eval.json").mkdir()
    monkeypatch.setattr(Population, "play_episode", lambda *a, **k: pytest.fail("played before the check"))
    assert main(["eval", str(run_dir), "--episodes", "1"]) == 2
    assert "eval.json: it is a folder" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "target", "kept"), [
    (["study", "cooperation"], "aligngym.agents.marl.study.run_study", "Finished runs are kept"),
    (["data", "generate", "BallRun"], "aligngym.envs.data.generate.generate", "Finished stages are kept"),
    (["eval", "RUN"], "aligngym.agents.evaluate.evaluate", "Nothing was written"),
])
def test_ctrl_c_in_any_command_ends_with_one_line_saying_what_is_kept(capsys, monkeypatch, argv, target, kept):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(target, interrupted)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "aligngym: interrupted." in err and kept in err and "Traceback" not in err


def test_a_resumed_run_keeps_the_scores_aligngym_eval_logged_at_its_checkpoint(tmp_path, scalars, caplog):
    run_dir = train(_config(tmp_path))  # 3 episodes
    score = evaluate(run_dir, episodes=1)["eval/cooperation_rate"]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    saved["episodes"] = 5
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    stale = run_dir / ".checkpoint.pt.k3x9.tmp"  # what a crash during a checkpoint write leaves
    stale.write_bytes(b"half")
    with caplog.at_level("WARNING"):
        resume(run_dir)  # purges the events from step 3 on (an interrupted process's)
    assert "out of order" not in caplog.text, "reading the curves back must not warn about the purge"
    assert not stale.exists(), "a resumed run removes what a crashed checkpoint write left"
    assert (3, pytest.approx(score)) in scalars(run_dir)["eval/cooperation_rate"]
    assert [s for s, _ in scalars(run_dir)["coop/cooperation_rate"]] == [0, 1, 2, 3, 4]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoints_never_execute_pickled_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "checkpoint.pt"
    torch.save({"format": "aligngym-checkpoint-1", "config": {}, "state": Evil()}, path)
    with pytest.raises(CheckpointError, match="corrupt or not an AlignGym checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_truncated_checkpoint_is_reported_and_atomic_write_keeps_the_old_one(tmp_path, monkeypatch):
    run_dir = train(_config(tmp_path))
    ckpt = run_dir / "checkpoint.pt"
    good = ckpt.read_bytes()
    config, state = load_checkpoint(ckpt)

    def broken_save(obj, fh):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(ckpt, config, state)
    assert ckpt.read_bytes() == good, "a failed write must leave the previous checkpoint intact"
    assert not list(run_dir.glob("*.tmp")), "a failed write must not leave its temporary file"
    monkeypatch.undo()
    ckpt.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(ckpt)


def test_a_flipped_byte_in_a_checkpoints_weights_is_refused(tmp_path):
    """torch.load reads a damaged tensor without complaint (it skips the zip checksums)."""
    ckpt = train(_config(tmp_path)) / "checkpoint.pt"
    good = bytearray(ckpt.read_bytes())
    with zipfile.ZipFile(ckpt) as archive:
        part = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    local_header = good[part.header_offset: part.header_offset + 30]
    start = part.header_offset + 30 + int.from_bytes(local_header[26:28], "little") \
        + int.from_bytes(local_header[28:30], "little")
    damaged = bytearray(good)
    damaged[start + part.file_size // 2] ^= 0xFF
    ckpt.write_bytes(bytes(damaged))
    assert torch.load(ckpt, weights_only=True)["format"] == "aligngym-checkpoint-1"  # torch alone: no error
    with pytest.raises(CheckpointError, match=f"damaged: its part {part.filename} fails its checksum"):
        load_checkpoint(ckpt)
    ckpt.write_bytes(bytes(good))
    load_checkpoint(ckpt)


def test_an_unreadable_checkpoint_is_a_checkpoint_error(tmp_path, monkeypatch):
    ckpt = tmp_path / "checkpoint.pt"
    ckpt.write_bytes(b"x")

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)  # root reads any file, so chmod cannot stage this
    with pytest.raises(CheckpointError, match="cannot read .*checkpoint.pt: Permission denied"):
        load_checkpoint(ckpt)


def test_resume_errors(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    run_dir = train(_config(tmp_path))
    for path in run_dir.glob("checkpoint*.pt"):
        path.unlink()
    assert main(["train", "--resume", str(run_dir)]) == 2
    assert "no checkpoint yet" in capsys.readouterr().err
    assert main(["train", str(QUICKSTART), "--resume", str(run_dir)]) == 2
    assert "--resume takes the run folder (and --set for what a resumed run may change" in capsys.readouterr().err
    assert main(["train"]) == 2
    assert "train needs a CONFIG file or name (or --resume RUN_DIR)" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "gone")]) == 2
    assert f"run folder not found: {tmp_path / 'gone'}" in capsys.readouterr().err


def test_a_run_folder_is_trained_by_one_process_at_a_time(tmp_path, capsys):
    import socket
    import subprocess
    import sys

    from aligngym.agents.config import dump_config
    from aligngym.envs.data.dataset import _boot_id

    run_dir = train(_config(tmp_path, *SMALL, smoke=False))
    assert not (run_dir / ".lock").exists()  # released when training ends
    (run_dir / "config.yaml").write_text(dump_config(load_config(run_dir / "config.yaml", ["episodes=6"])))
    checkpoint = (run_dir / "checkpoint.pt").read_bytes()
    here = f"{socket.gethostname()} {_boot_id()}"
    (run_dir / ".lock").write_text(f"{os.getpid()} {here}")  # a live trainer (this process)
    with pytest.raises(RunInUseError, match=f"process {os.getpid()}"):
        resume(run_dir)
    assert main(["train", "--resume", str(run_dir)]) == 2 and "being trained" in capsys.readouterr().err
    assert (run_dir / "checkpoint.pt").read_bytes() == checkpoint  # nothing was touched
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run_dir / ".lock").write_text(f"{gone.stdout.strip()} {here}")  # a trainer that died
    resume(run_dir)  # takes the stale lock over
    assert int(load_checkpoint(run_dir / "checkpoint.pt")[1]["step"]) == 6 and not (run_dir / ".lock").exists()
    (run_dir / ".lock").write_text(f"{os.getpid()} {socket.gethostname()} an-earlier-boot")  # pid reused since
    (run_dir / "config.yaml").write_text(dump_config(load_config(run_dir / "config.yaml", ["episodes=8"])))
    resume(run_dir)
    assert int(load_checkpoint(run_dir / "checkpoint.pt")[1]["step"]) == 8 and not (run_dir / ".lock").exists()


def test_resume_before_the_first_checkpoint_names_the_live_trainer(tmp_path, capsys):
    """A run still training towards its first checkpoint is not 'to be started again' (that would
    make a second run of it); a dead one is, and its folder is left unlocked."""
    live = Run.create(_config(tmp_path, *SMALL, smoke=False))
    with pytest.raises(RunInUseError, match="being trained"):
        resume(live.dir)
    assert main(["train", "--resume", str(live.dir)]) == 2 and "being trained" in capsys.readouterr().err
    live.close()
    assert main(["train", "--resume", str(live.dir)]) == 2 and "no checkpoint yet" in capsys.readouterr().err
    assert not (live.dir / ".lock").exists()


def test_resuming_a_finished_run_says_there_is_nothing_to_train(tmp_path):
    run_dir = train(_config(tmp_path))
    before = (run_dir / "checkpoint.pt").read_bytes()
    with pytest.warns(AlignGymWarning, match=r"at episode \d+ of \d+: nothing to train \(raise episodes"):
        resume(run_dir)
    assert (run_dir / "checkpoint.pt").read_bytes() == before


def test_finish_replaces_a_run_cut_short_before_its_first_checkpoint(tmp_path):
    """A study or table rerun trains afresh a run killed before its first checkpoint, in place of its
    folder (nothing there can be resumed), and leaves other configs' folders and live runs alone."""
    import socket

    from aligngym.envs.data.dataset import _boot_id

    config = _config(tmp_path, *SMALL, smoke=False)
    Run.create(config).close()  # killed before its first checkpoint
    other = Run.create(_config(tmp_path, *SMALL, "seed=1", smoke=False))
    other.close()
    live = Run.create(config)  # a live process that has not checkpointed yet
    with pytest.raises(RunInUseError):
        finish(config)
    live.close()
    run_dir = finish(config)
    assert int(load_checkpoint(run_dir / "checkpoint.pt")[1]["step"]) == 4
    assert sorted(tmp_path.iterdir()) == sorted([run_dir, other.dir])
    assert finish(config) == run_dir  # finished: reused
    (other.dir / ".lock").write_text(f"{os.getpid()} {socket.gethostname()} {_boot_id()}")
    assert finish(config) == run_dir  # another config's folder is not looked into


def test_finish_leaves_a_run_another_process_trains_untouched(tmp_path):
    import socket

    from aligngym.envs.data.dataset import _boot_id

    config = _config(tmp_path, *SMALL, smoke=False)
    run_dir = finish(config)
    before = (run_dir / "config.yaml").read_text()
    (run_dir / ".lock").write_text(f"{os.getpid()} {socket.gethostname()} {_boot_id()}")  # a live trainer
    with pytest.raises(RunInUseError):
        finish(config.model_copy(update={"episodes": config.episodes + 2}))
    assert (run_dir / "config.yaml").read_text() == before  # its length is not this caller's to change
    (run_dir / ".lock").unlink()  # its trainer is gone: now the longer config continues it, in place
    assert finish(config.model_copy(update={"episodes": config.episodes + 2})) == run_dir
    assert int(load_checkpoint(run_dir / "checkpoint.pt")[1]["step"]) == config.episodes + 2
    assert not (run_dir / ".lock").exists()


def test_a_home_relative_run_root_is_expanded(tmp_path, monkeypatch):
    """run_root: ~/runs must not make a folder named ~ in the working directory."""
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    config = _config(tmp_path, *SMALL, "run_root=~/runs", smoke=False)
    run_dir = finish(config)
    assert run_dir.parent == home / "runs" and not any(work.iterdir())
    assert finish(config) == run_dir  # found again under the same root


def test_list_shows_envs_agents_and_configs(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "aligngym/punishment-v0" in out and "independent_dqn" in out and "  quickstart\n" in out


def test_help_for_every_command(capsys):
    for argv in (["--help"], ["train", "--help"], ["eval", "--help"], ["list", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 0
    assert "--resume" in capsys.readouterr().out


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")



def test_resume_refuses_a_changed_game_but_accepts_more_episodes(tmp_path, capsys):
    run_dir = train(_config(tmp_path))
    cfg_path = run_dir / "config.yaml"
    original = cfg_path.read_text()
    data = yaml.safe_load(original)
    data["env"]["n_agents"] = 6
    data["learner"]["hidden_size"] = 64
    cfg_path.write_text(yaml.safe_dump(data))
    assert main(["train", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "env.n_agents" in err and "learner.hidden_size" in err and "Traceback" not in err
    cfg_path.write_text("agent: [unclosed")
    assert main(["train", "--resume", str(run_dir)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    data = yaml.safe_load(original)
    data["episodes"] = 5
    cfg_path.write_text(yaml.safe_dump(data))
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert int(load_checkpoint(run_dir / "checkpoint.pt")[1]["step"]) == 5


@pytest.mark.parametrize("episodes_played", [0, 2])
def test_interrupt_says_how_to_resume_this_run(tmp_path, capsys, monkeypatch, episodes_played):
    play, calls = SeedBatch.play_episode, []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > episodes_played:
            raise KeyboardInterrupt
        return play(self, *args, **kwargs)

    monkeypatch.setattr(SeedBatch, "play_episode", interrupted)
    code = main(["train", str(QUICKSTART), "--smoke", "--set", f"run_root={tmp_path}",
                 "--set", "show_progress=false"])
    (run_dir,) = list(tmp_path.iterdir())
    assert code == 130
    err = capsys.readouterr().err
    if episodes_played:  # smoke checkpoints every episode
        assert f"aligngym train --resume {run_dir}" in err
        monkeypatch.undo()
        assert main(["train", "--resume", str(run_dir)]) == 0
    else:  # --resume would only answer "no checkpoint yet"
        assert f"{run_dir} holds no checkpoint yet: start the run again" in err and "--resume" not in err


def test_resume_of_a_missing_folder_announces_no_run_folder(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "run folder:" not in capsys.readouterr().out


def test_incomplete_or_mismatched_checkpoints_are_reported(tmp_path, capsys):
    run_dir = train(_config(tmp_path))
    ckpt = run_dir / "checkpoint.pt"
    config, state = load_checkpoint(ckpt)
    del state["learner"]
    save_checkpoint(ckpt, config, state)
    assert main(["eval", str(run_dir)]) == 2
    assert "does not fit this config or is incomplete" in capsys.readouterr().err
    torch.save({"format": "aligngym-checkpoint-1"}, ckpt)
    with pytest.raises(CheckpointError, match="lacks its config or its state"):
        load_checkpoint(ckpt)
    torch.save({"weights": torch.zeros(2)}, ckpt)  # a torch file, not AlignGym's
    with pytest.raises(CheckpointError, match="not an AlignGym checkpoint \\(no 'format' marker\\)"):
        load_checkpoint(ckpt)


def test_eval_device_override(tmp_path, capsys):
    """A run trained on a GPU is scored on a machine without one with --device cpu."""
    run_dir = train(_config(tmp_path))
    config, state = load_checkpoint(run_dir / "checkpoint.pt")
    save_checkpoint(run_dir / "checkpoint.pt", config.model_copy(update={"device": "cuda"}), state)
    if not torch.cuda.is_available():
        assert main(["eval", str(run_dir), "--episodes", "1"]) == 2
        assert "no CUDA device" in capsys.readouterr().err
    assert main(["eval", str(run_dir), "--episodes", "1", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--episodes", "0"]) == 2
    assert "--episodes must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval", str(run_dir), "--device", "tpu"])


def test_eval_against_scripted_background(tmp_path, capsys):
    run_dir = train(_config(tmp_path))
    assert main(["eval", str(run_dir), "--episodes", "2", "--background", "always_defect",
                 "--focal", "2"]) == 0
    result = json.loads((run_dir / "eval_background-always_defect_focal-2.json").read_text())
    assert result["focal"] == 2 and 0.0 <= result["eval/focal_cooperation_rate"] <= 1.0
    assert {"eval/focal_return", "eval/background_return"} <= set(result)
    assert main(["eval", str(run_dir), "--episodes", "2", "--background", "always_cooperate", "--focal", "2"]) == 0
    kind = json.loads((run_dir / "eval_background-always_cooperate_focal-2.json").read_text())
    # the three bots make about 6 of every 10 moves (3 of the 5 games as selectors, and most focal
    # agents' games as partners): who they are shows in the population's cooperation, whatever the
    # two focal agents do (a difference of 0.6 - 0.4 at the least)
    assert kind["eval/cooperation_rate"] > result["eval/cooperation_rate"] + 0.2
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--background", "always_defect", "--focal", "5"]) == 2
    assert "--focal must be between 1 and 4" in capsys.readouterr().err
    assert main(["eval", str(run_dir), "--focal", "2"]) == 2
    assert "--focal needs --background" in capsys.readouterr().err
    assert main(["eval", str(run_dir), "--background", "grim"]) == 2
    assert "unknown --background 'grim'; choose from" in capsys.readouterr().err


@pytest.mark.parametrize(("carry", "kept"), [(True, [False, True, True, True]), (False, [False] * 4)])
def test_carry_memory_decides_whether_reputations_outlive_an_episode(tmp_path, monkeypatch, carry, kept):
    """The paper's continuing runs keep reputations and last moves from one episode to the next
    (the first starts afresh); carry_memory: false resets them every episode."""
    from aligngym.envs.cooperation.core import PunishmentCore

    asked = []
    real = PunishmentCore.reset
    monkeypatch.setattr(PunishmentCore, "reset",
                        lambda self, keep_memory=False: asked.append(keep_memory) or real(self, keep_memory))
    config = _config(tmp_path, *SMALL, f"carry_memory={str(carry).lower()}", smoke=False)
    train(config)
    assert asked[1:] == kept  # (the first: the core's construction)


def test_background_bots_forget_when_reset():
    from aligngym.agents.marl.population import BackgroundPolicy
    from aligngym.envs.cooperation import GameRules

    policy = BackgroundPolicy(None, GameRules(n_agents=3), 1, "reformed_defector")
    for bot in policy.bots.bots.values():
        bot.reformed = True
    policy.reset()
    assert not any(bot.reformed for bot in policy.bots.bots.values())


def test_aligngym_eval_of_a_population_shows_a_bar_over_the_episodes(tmp_path, capsys, monkeypatch):
    from tqdm.auto import tqdm

    from aligngym.agents.marl import population

    run_dir = train(_config(tmp_path))
    capsys.readouterr()
    # tqdm draws on stderr while it is a terminal; pytest's capture is not one
    monkeypatch.setattr(population, "tqdm", lambda *args, **kwargs: tqdm(*args, **{**kwargs, "disable": False}))
    assert main(["eval", str(run_dir), "--episodes", "3"]) == 0
    err = capsys.readouterr().err
    assert "evaluating independent_dqn on aligngym/punishment-v0" in err and "3/3" in err
