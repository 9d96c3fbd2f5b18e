"""Configs: validated before anything runs, with errors that name the file, the key and the fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from aligngym.agents.cli import main
from aligngym.agents.config import AGENTS, ConfigError, config_names, dump_config, load_config, parse_override

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def _quick() -> dict:
    return yaml.safe_load(QUICKSTART.read_text())


def test_quickstart_is_valid_and_round_trips():
    config = load_config(QUICKSTART)
    assert config.env.partner_selection and config.env.direct_punishment
    assert load_config(QUICKSTART, smoke=True).episodes <= 3
    again = yaml.safe_load(dump_config(config))
    assert again == config.model_dump(mode="json")


@pytest.mark.parametrize(("path", "key", "suggestion"), [
    (("episods",), "episods", "did you mean 'episodes'"),
    (("learner", "play", "lrr"), "learner.play.lrr", "did you mean 'learner.play.lr'"),
    (("env", "direct_punishmnet"), "env.direct_punishmnet", "did you mean 'env.direct_punishment'"),
])
def test_unknown_key_names_file_key_and_nearest_valid_key(tmp_path, path, key, suggestion):
    data = _quick()
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = 1
    cfg = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    msg = str(err.value)
    assert str(cfg) in msg and f"unknown key '{key}'" in msg and suggestion in msg


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("episodes", "many", "valid integer"),
    ("episodes", 0, "greater than or equal to 1"),
    ("device", "tpu", "'auto', 'cpu' or 'cuda'"),
    ("seed", -1, "greater than or equal to 0"),
    ("seed", 2**32, "less than or equal to 4294967295"),  # numpy's seeds stop there
])
def test_wrong_type_or_range_names_key_and_expectation(tmp_path, key, value, expected):
    data = _quick()
    data[key] = value
    with pytest.raises(ConfigError, match=expected) as err:
        load_config(_write(tmp_path, data))
    assert f"{key}:" in str(err.value)


@pytest.mark.parametrize("override", ["seed=true", "env.n_agents=false", "learner.batch_size=true",
                                      "learner.play.lr=true", "episodes=[1, true]"])
def test_a_boolean_where_a_number_belongs_is_refused(override):
    """pydantic alone reads true as 1 (seed: true would be seed 1)."""
    key, value = override.split("=")
    with pytest.raises(ConfigError, match=rf"quickstart.yaml with --set {re.escape(override)}: {key}: expected a number, got"):
        load_config(QUICKSTART, [override])
    assert load_config(QUICKSTART, ["env.partner_selection=true"]).env.partner_selection  # a flag takes it


@pytest.mark.parametrize("override", ["env.direct_punishment=1", "env.direct_punishment='no'",
                                      "learner.huber=0"])
def test_a_flag_takes_only_true_or_false(override):
    """pydantic alone reads 1 as true and the text 'no' as false."""
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}: expected true or false, got"):
        load_config(QUICKSTART, [override])


def test_set_refuses_to_replace_a_whole_section():
    """--set env={} would otherwise drop every key of the file's env section without a word."""
    for value in ("{}", "{n_agents: 6}"):
        with pytest.raises(ConfigError, match=r"--set env: 'env' is a section; set its keys one at a time"):
            load_config(QUICKSTART, [f"env={value}"])
    with pytest.raises(ConfigError, match=r"'learner' is a section"):
        load_config("cooperation/centipede_dp", ["learner={hidden_size: 64}"])
    # a section the file leaves out may be given whole
    assert load_config(QUICKSTART, ["learner.play={lr: 0.1}"]).learner.play.lr == 0.1
    assert load_config(QUICKSTART, ["env.n_agents=6"]).env.n_agents == 6


@pytest.mark.parametrize(("config", "override"), [
    (QUICKSTART, "learner.play.lr=.inf"), (QUICKSTART, "env.fine=.nan"),
    (QUICKSTART.parent / "bc_all" / "cpu.yaml", "cost_limit=.inf"),
])
def test_infinite_or_nan_numbers_are_refused(config, override):
    with pytest.raises(ConfigError, match=r"Input should be a finite number"):
        load_config(config, [override])


def test_an_unparseable_override_value_and_a_key_with_no_near_match(tmp_path):
    with pytest.raises(ConfigError, match=r"--set episodes: cannot parse value '\[1'"):
        load_config(QUICKSTART, ["episodes=[1"])
    data = _quick()
    data["env"]["zzzz"] = 1  # nothing like it: the valid keys are listed instead of a guess
    with pytest.raises(ConfigError, match=r"unknown key 'env.zzzz'; valid keys here: n_agents, game, "):
        load_config(_write(tmp_path, data))


def test_nested_range_error(tmp_path):
    with pytest.raises(ConfigError, match=r"learner\.batch_size: Input should be greater than or equal to 1"):
        load_config(QUICKSTART, ["learner.batch_size=0"])


def test_nonsense_game_is_rejected_before_running(tmp_path):
    with pytest.raises(ConfigError, match="partner_selection needs reputation"):
        load_config(QUICKSTART, ["env.reputation=false", "env.reputation_in=[]"])


def test_unknown_agent_suggests(tmp_path):
    data = _quick()
    data["agent"] = "independant_dqn"
    with pytest.raises(ConfigError, match="did you mean 'independent_dqn'"):
        load_config(_write(tmp_path, data))


@pytest.mark.parametrize(("text", "expected"), [
    ("agent: [unclosed", "not valid YAML"),
    ("", "empty"),
    ("- a\n- b\n", "mapping"),
    ("task: x\n", "missing required key 'agent'"),
])
def test_bad_files(tmp_path, text, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(_write(tmp_path, text))


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("no/such/file.yaml")
    with pytest.raises(ConfigError, match="is a folder; give one of its config files"):
        load_config(QUICKSTART.parent)


def test_a_binary_or_unreadable_config_is_a_config_error(tmp_path, capsys, monkeypatch):
    binary = tmp_path / "data.hdf5"
    binary.write_bytes(b"\x89HDF\r\n\x1a\n\xff\xfe")
    assert main(["train", str(binary)]) == 2
    err = capsys.readouterr().err
    assert "not a text file" in err and "Traceback" not in err
    path = _write(tmp_path, "agent: x\n")

    def unreadable(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_text", unreadable)
    with pytest.raises(ConfigError, match="cannot read .*c.yaml: Permission denied"):
        load_config(path)


def test_a_run_root_that_cannot_hold_folders_is_a_config_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = main(["train", str(QUICKSTART), "--smoke", "--set", f"run_root={blocker}", "--set", "show_progress=false"])
    err = capsys.readouterr().err
    assert code == 2 and f"run_root {blocker}" in err and "Traceback" not in err


def test_overrides_are_typed_and_nested():
    config = load_config(QUICKSTART, ["learner.play.lr=0.05", "env.reputation_in=[play, punish]",
                                      "seed=7", "device=cpu"])
    assert config.learner.play.lr == 0.05 and config.learner.play.buffer_size == 131072
    assert config.env.reputation_in == ("play", "punish") and config.seed == 7
    assert parse_override("a.b=true") == ("a.b", True)
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override("noequals")
    with pytest.raises(ConfigError, match="is a value, not a section"):
        load_config(QUICKSTART, ["episodes.x=1"])


def test_cli_reports_config_errors_with_exit_code_2(tmp_path, capsys):
    data = _quick()
    data["episods"] = 3
    code = main(["train", str(_write(tmp_path, data)), "--set", f"run_root={tmp_path}/runs"])
    err = capsys.readouterr().err
    assert code == 2 and "did you mean 'episodes'" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists(), "nothing may be created for an invalid config"


def test_agent_must_be_a_name(tmp_path):
    data = _quick()
    data["agent"] = ["independent_dqn"]
    with pytest.raises(ConfigError, match="unknown agent"):
        load_config(_write(tmp_path, data))


# ---------------------------------------------------------------------- bundled configs, extends, duplicates
def test_bundled_configs_load_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here
    names = config_names()
    assert {"quickstart", "fisor/paper", "fisor/cpu", "bc_all/cpu", "bcq_lag/paper", "cooperation/dp"} <= set(names)
    for name in names:
        config = load_config(name)
        assert config.agent in AGENTS
    assert load_config("fisor/cpu.yaml").steps == load_config("fisor/cpu").steps == 70_000
    assert load_config("configs/quickstart.yaml").episodes == load_config("quickstart").episodes
    with pytest.raises(ConfigError, match=r"config file not found: fisor/cpuu: .*did you mean fisor/cpu"):
        load_config("fisor/cpuu")


def test_every_offline_agent_takes_its_task_from_set():
    for name in ("fisor/cpu", "bc_all/paper", "bc_safe/cpu", "bcq_lag/cpu"):
        assert load_config(name, ["task=aligngym/CarRun-v0"]).task == "aligngym/CarRun-v0"


def test_the_installed_package_trains_a_bundled_config_from_another_folder(tmp_path):
    """The console script, run where there is no configs/ folder, finds the config inside the package."""
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("aligngym")
    out = subprocess.run([str(exe), "train", "quickstart", "--smoke", "--set", "run_root=runs",
                          "--set", "show_progress=false"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert len(list((tmp_path / "runs").glob("*/checkpoint.pt"))) == 1
    listed = subprocess.run([str(exe), "list"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert "  fisor/cpu\n" in listed and "  quickstart\n" in listed


def test_the_wheel_ships_the_configs(tmp_path):
    """A plain (non-editable) install gets every YAML file of configs/ as aligngym/configs/..."""
    import subprocess
    import sys
    import zipfile

    root = QUICKSTART.parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(root)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("aligngym-*.whl")
    shipped = {n.removeprefix("aligngym/configs/") for n in zipfile.ZipFile(wheel).namelist()
               if n.startswith("aligngym/configs/") and n.endswith(".yaml")}
    source = {p.relative_to(root / "configs").as_posix() for p in (root / "configs").rglob("*.yaml")}
    assert shipped == source and "fisor/cpu.yaml" in shipped


def test_extends_builds_on_a_file_relative_to_it(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "a.yaml").write_text(QUICKSTART.read_text())
    (tmp_path / "b.yaml").write_text("extends: base/a.yaml\nepisodes: 7\nenv: {n_agents: 6}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.yaml").write_text("extends: ../b.yaml\nseed: 3\n")
    config = load_config(tmp_path / "sub" / "c.yaml")
    base = load_config(QUICKSTART)
    assert (config.episodes, config.seed, config.env.n_agents) == (7, 3, 6)
    # a section merges key by key: the rest of env comes from the base file
    assert config.env.direct_punishment == base.env.direct_punishment and config.learner == base.learner
    assert load_config(tmp_path / "sub" / "c.yaml", ["episodes=9"]).episodes == 9  # --set wins over all


def test_extends_errors_name_the_file(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nagent: independent_dqn\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match=r"b.yaml: extends a.yaml: a cycle \(.*a.yaml -> .*b.yaml -> .*a.yaml\)"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: c.yaml\n")
    with pytest.raises(ConfigError, match="a cycle"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("extends: nowhere/e.yaml\nagent: independent_dqn\n")
    with pytest.raises(ConfigError, match=r"d.yaml: extends nowhere/e.yaml: no such file .*nowhere/e.yaml"):
        load_config(tmp_path / "d.yaml")
    (tmp_path / "f.yaml").write_text("extends: [a.yaml]\n")
    with pytest.raises(ConfigError, match=r"f.yaml: extends: expected the path of a config file"):
        load_config(tmp_path / "f.yaml")
    with pytest.raises(ConfigError, match="extends is read from the file only"):
        load_config(QUICKSTART, ["extends=x.yaml"])


def test_an_error_in_an_inherited_value_names_the_chain(tmp_path):
    (tmp_path / "a.yaml").write_text(QUICKSTART.read_text() + "episods: 3\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match=r"b.yaml \(extending a.yaml\): unknown key 'episods'"):
        load_config(tmp_path / "b.yaml")


@pytest.mark.parametrize(("text", "key", "lines"), [
    ("agent: independent_dqn\nepisodes: 3\nseed: 1\nepisodes: 4\n", "episodes", (2, 4)),
    ("agent: independent_dqn\nenv:\n  n_agents: 4\n  fine: 1\n  n_agents: 5\n", "n_agents", (3, 5)),
    ("agent: independent_dqn\nenv: {n_agents: 4, n_agents: 5}\n", "n_agents", (2, 2)),
])
def test_a_key_given_twice_is_an_error_naming_it_and_both_lines(tmp_path, text, key, lines):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"c.yaml: key '{key}' is given twice \(lines {lines[0]} and {lines[1]}\)"):
        load_config(path)
