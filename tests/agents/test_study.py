"""The cooperation study: statistics, claims, the report, resumption."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aligngym.agents.cli import main
from aligngym.agents.config import ConfigError, load_config
from aligngym.agents.marl.study import (available_conditions, check_claims, conditions_dir,
                                        convergence_episode, mean_ci, run_study)

PAPER_CONDITIONS = {"none", "reputation", "dp", "tpp", "tpdp", "dp_s", "tpp_s", "tpdp_s",
                    "costly_dp", "costly_tpp", "costly_tpdp", "costly_dp_s", "costly_tpp_s",
                    "costly_tpdp_s", "caveman_dp_s", "caveman_tpp_s", "caveman_tpdp_s",
                    "centipede_none", "centipede_dp", "centipede_tpp", "centipede_tpdp",
                    "centipede_dp_s", "centipede_tpp_s", "centipede_tpdp_s"}


def test_every_condition_has_a_config():
    assert PAPER_CONDITIONS <= set(available_conditions())


def test_condition_names_match_their_mechanisms():
    """A condition's name says its game, network, punishments, partner choice and cost: a config
    copied from another and not fully edited fails here."""
    for name in available_conditions():
        env = load_config(conditions_dir() / f"{name}.yaml").env
        parts = name.split("_")
        game = "centipede" if parts[0] == "centipede" else "ipd"
        caveman, costly = parts[0] == "caveman", parts[0] == "costly"
        parts = parts[1:] if parts[0] in ("centipede", "caveman", "costly") else parts
        selection = parts[-1] == "s"
        base = parts[0]
        assert env.game == game, name
        assert (env.topology == "caveman", env.n_agents) == (caveman, 25 if caveman else 5), name
        assert env.costly_punishment == costly, name
        assert env.partner_selection == selection, name
        assert env.direct_punishment == (base in ("dp", "tpdp")), name
        assert env.third_party_punishment == (base in ("tpp", "tpdp")), name


# (reputation_source, reputation_in) of each condition as in the authors' simulation file for it
# (Simulations/<mechanism>/<game>/play_*_<source>Rep_repIn<State>_*.py); None: no reputation.
# DP-S and TPP-S have a grid of variants there: these configs take playPunishRep_repInPlayState.
AUTHORS_REPUTATION = {
    "none": None, "centipede_none": None, "reputation": ("play", ("play",)),
    "dp": ("both", ()), "costly_dp": ("both", ()), "costly_dp_s": ("both", ()), "caveman_dp_s": ("both", ()),
    "dp_s": ("both", ("play",)), "tpp": ("both", ("play",)), "tpp_s": ("both", ("play",)),
    "tpdp": ("both", ("play",)), "tpdp_s": ("both", ("play",)), "costly_tpp": ("both", ("play",)),
    "costly_tpp_s": ("both", ("play",)), "costly_tpdp": ("both", ("play",)), "costly_tpdp_s": ("both", ("play",)),
    "caveman_tpp_s": ("both", ("play",)), "caveman_tpdp_s": ("both", ("play",)),
    "centipede_dp": ("punish", ("play",)), "centipede_tpp": ("punish", ("play",)),
    "centipede_tpdp": ("both", ("play",)), "centipede_tpdp_s": ("both", ("play",)),
    "centipede_dp_s": ("both", ("play",)), "centipede_tpp_s": ("both", ("play",)),
}


def test_conditions_take_their_reputation_settings_from_the_authors_files():
    assert set(AUTHORS_REPUTATION) == PAPER_CONDITIONS
    for name, expected in AUTHORS_REPUTATION.items():
        env = load_config(conditions_dir() / f"{name}.yaml").env
        got = (env.reputation_source, tuple(env.reputation_in)) if env.reputation else None
        assert got == expected, name


def test_conditions_set_the_references_terminal_flag():
    """Reference 1.10: the IPD never sets done (play transitions bootstrap across games); the
    centipede sets it at a game's last or stopping move."""
    for name in available_conditions():
        config = load_config(conditions_dir() / f"{name}.yaml")
        assert config.learner.bootstrap_across_games == (config.env.game == "ipd"), name


@pytest.mark.parametrize("condition", sorted(PAPER_CONDITIONS))
def test_every_condition_config_trains_smoke_end_to_end(tmp_path, condition, scalars):
    """DESIGN's smoke tier: each config runs (its game, network and mechanisms through the learners
    and the collector), checkpoints and logs its metrics."""
    from aligngym.agents.train import load_checkpoint, train

    config = load_config(conditions_dir() / f"{condition}.yaml",
                         [f"run_root={tmp_path}", "show_progress=false", "device=cpu"], smoke=True)
    run_dir = train(config)
    assert int(load_checkpoint(run_dir / "checkpoint.pt")[1]["step"]) == config.episodes
    rates = [value for _, value in scalars(run_dir)["coop/cooperation_rate"]]
    assert len(rates) == config.episodes and all(0.0 <= r <= 1.0 for r in rates)
    punished = [value for _, value in scalars(run_dir)["coop/punishment_rate_direct"]]
    assert config.env.direct_punishment or not any(punished)  # no punishment where the rules have none


def test_mean_ci_by_hand():
    mean, half = mean_ci(np.array([1.0, 2.0, 3.0]))
    # sd = 1, n = 3, t(0.975, 2) = 4.303: half-width = 4.303 / sqrt(3)
    assert mean == 2.0 and half == pytest.approx(4.303 / np.sqrt(3))
    assert mean_ci(np.array([5.0])) == (5.0, 0.0)


def test_convergence_episode_by_hand():
    curve = np.array([0.0] * 10 + [1.0] * 30)
    # rolling mean over 4 episodes first reaches >= 0.9 at index 13 (4 ones) and stays
    assert convergence_episode(curve, threshold=0.9, window=4) == 13
    assert np.isnan(convergence_episode(np.array([1.0] * 10 + [0.0]), 0.9, 4))
    assert convergence_episode(np.ones(5), 0.9, 4) == 0
    dip = np.array([1.0] * 10 + [0.0] + [1.0] * 20)  # the dip pulls the rolling mean down for 4 steps
    assert convergence_episode(dip, 0.9, 4) == 14


def test_claims_are_checked_against_the_numbers():
    finals = {
        "dp": {"cooperation_rate": np.array([0.5, 0.6]), "mean_reward": np.array([30.0, 32.0]),
               "deterrence_rate": np.array([0.8, 0.8]), "antisocial_punishment_rate": np.array([0.1, 0.1])},
        "tpp": {"cooperation_rate": np.array([0.9, 0.8]), "mean_reward": np.array([20.0, 21.0]),
                "deterrence_rate": np.array([0.5, 0.5]), "antisocial_punishment_rate": np.array([0.0, 0.0])},
        "costly_dp": {"cooperation_rate": np.array([0.4, 0.4]), "mean_reward": np.array([10.0, 12.0]),
                      "deterrence_rate": np.array([0.2, 0.3]),
                      "antisocial_punishment_rate": np.array([0.05, 0.07])},
    }
    lines = check_claims(finals, {c: np.array([np.nan, np.nan]) for c in finals})
    text = "\n".join(lines)
    assert "TPP gives higher equilibrium cooperation than DP: holds: tpp 0.85 vs dp 0.55" in text
    assert "DP gives higher total reward than TPP: holds: dp 31 vs tpp 20.5" in text
    assert "costly_dp: unjust punishment P(punish | cooperator) = 0.06" in text
    assert "0.25 vs 0.8 in dp -> appears" in text
    finals["tpp"]["cooperation_rate"] = np.array([0.1, 0.2])
    assert "does not hold" in check_claims(finals, {})[0]


def test_study_writes_its_report_and_resumes(tmp_path):
    out = tmp_path / "study"
    report = run_study(out, seeds=2, episodes=3, conditions=["dp", "tpp"], workers=2, tail=2)
    text = report.read_text()
    assert "| cooperation rate |" in text and "| metric | dp | tpp |" in text
    assert "P(punish &#124; cooperator)" in text  # '|' escaped inside a table cell
    assert "TPP gives higher equilibrium cooperation than DP:" in text
    for metric in ("cooperation_rate", "mean_reward"):
        assert (out / f"curve_{metric}.png").stat().st_size > 1000
    runs = sorted(out.glob("runs/*/s*/*"))
    assert len(runs) == 4
    # the same command again reuses every run; more episodes resume them in place
    run_study(out, seeds=2, episodes=3, conditions=["dp", "tpp"], workers=1, tail=2)
    assert sorted(out.glob("runs/*/s*/*")) == runs
    run_study(out, seeds=2, episodes=4, conditions=["dp"], workers=1, tail=2)
    assert sorted(out.glob("runs/*/s*/*")) == runs
    assert "dp: 2 seeds x 4 episodes" in (out / "study.md").read_text()
    # a report of what is there, training nothing
    report = run_study(out, seeds=9, episodes=99, conditions=["dp", "tpp", "none"], workers=1,
                       tail=2, report_only=True)
    assert sorted(out.glob("runs/*/s*/*")) == runs
    assert "| metric | dp | tpp |" in report.read_text()


def test_a_condition_named_twice_runs_once_and_a_report_counts_one_run_per_seed(tmp_path):
    import os
    import shutil

    out = tmp_path / "study"
    run_study(out, seeds=1, episodes=2, conditions=["none", "none"], workers=2, tail=2)
    (run,) = out.glob("runs/none/s0/*")
    older = run.parent / f"{run.name}_before_an_edit"  # another run of the seed, e.g. of an older config
    shutil.copytree(run, older)
    os.utime(older / "checkpoint.pt", (1, 1))
    text = run_study(out, 1, None, ["none"], 1, tail=2, report_only=True).read_text()
    assert "none: 1 seed x 2 episodes" in text


def test_claims_skip_metrics_that_older_runs_did_not_log():
    old = {"costly_dp": {"cooperation_rate": np.array([0.4, 0.4]), "mean_reward": np.array([10.0, 12.0])},
           "dp": {"cooperation_rate": np.array([0.5, 0.6]), "mean_reward": np.array([30.0, 32.0])}}
    assert not any("costly_dp" in line for line in check_claims(old, {}))


def test_the_t_quantile_by_hand():
    from aligngym.agents.marl.plots import t975

    assert t975(1) == 12.706 and t975(4) == 2.776 and t975(30) == 2.042
    for df, exact in [(31, 2.0395), (60, 2.0003), (1000, 1.9623)]:  # beyond the table
        assert t975(df) == pytest.approx(exact, abs=2e-4)


def test_the_ranking_claims_hold_tie_fail_or_stay_undetermined():
    """tpdp_s "cooperates most" and "converges fastest" among the 5-agent IPD conditions only."""
    def finals(**coop):
        return {c: {"cooperation_rate": np.array(v)} for c, v in coop.items()}

    def claims(f, converged):
        return "\n".join(check_claims(f, converged))

    nan = [np.nan, np.nan]
    text = claims(finals(tpdp_s=[0.99, 0.98], tpdp=[0.90, 0.91], none=[0.0, 0.01], centipede_none=[1.0, 1.0]),
                  {"tpdp_s": np.array([90.0, 92.0]), "tpdp": np.array([150.0, 152.0]), "none": np.array(nan),
                   "centipede_none": np.array([10.0, 10.0])})  # the centipede is another game: not ranked
    assert "(tpdp_s) cooperates most: holds (highest: tpdp_s 0.985" in text
    assert "converges fastest (episodes until cooperation stays >= 0.9, conditions where every seed got " \
           "there): holds (fastest: tpdp_s 91" in text
    text = claims(finals(tpdp_s=[0.90, 0.98], tpdp=[0.96, 0.95]),
                  {"tpdp_s": np.array([90.0, 130.0]), "tpdp": np.array([100.0, 101.0])})
    assert "cooperates most: ties (intervals overlap) (highest: tpdp" in text
    assert "converges fastest (episodes until cooperation stays >= 0.9, conditions where every seed got " \
           "there): ties" in text
    text = claims(finals(tpdp_s=[0.50, 0.51], tpdp=[0.96, 0.95]),
                  {"tpdp_s": np.array([200.0, np.nan]), "tpdp": np.array([100.0, 101.0])})
    assert "cooperates most: does not hold" in text and "there): does not hold (fastest: tpdp 100" in text
    text = claims(finals(tpdp_s=[0.50, 0.51], tpdp=[0.6, 0.5]), {"tpdp_s": np.array(nan), "tpdp": np.array(nan)})
    assert "converges fastest: undetermined" in text
    assert "cooperates most" not in claims(finals(tpdp=[0.9, 0.9], dp=[0.5, 0.5]), {})  # no tpdp_s: no claim


def test_one_seed_gives_no_interval(tmp_path):
    text = run_study(tmp_path, seeds=1, episodes=2, conditions=["none"], workers=1, tail=2).read_text()
    assert "(1 seed: no interval)" in text and "+- 0" not in text


def test_study_bad_input(tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown condition"):
        run_study(tmp_path, 1, 2, ["dpp"], 1)
    with pytest.raises(ConfigError, match="--seeds"):
        run_study(tmp_path, 0, 2, ["dp"], 1)
    assert main(["study", "cooperation", "--conditions", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown condition" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="no finished runs of dp under"):
        run_study(tmp_path, 1, None, ["dp"], 1, report_only=True)
    assert not any(Path(tmp_path).iterdir())


def test_a_study_without_its_configs_says_where_it_looked(tmp_path, monkeypatch):
    from aligngym.agents.marl import study

    monkeypatch.setattr(study, "conditions_dir", lambda: tmp_path / "configs" / "cooperation")
    with pytest.raises(ConfigError, match="no condition configs in .*configs/cooperation"):
        run_study(tmp_path / "out", 1, 2, None, 1)


@pytest.mark.parametrize(("flag", "value"), [("--tail", "0"), ("--tail", "-1"), ("--workers", "-1"),
                                             ("--workers", "0"), ("--seeds", "0"), ("--episodes", "0")])
def test_study_counts_below_one_are_refused_before_any_work(tmp_path, capsys, flag, value):
    assert main(["study", "cooperation", flag, value, "--out", str(tmp_path)]) == 2
    assert f"{flag} must be >= 1, got {value}" in capsys.readouterr().err
    assert not any(Path(tmp_path).iterdir())


def test_the_reference_preset_sets_every_condition_and_the_report_names_it(tmp_path, capsys):
    from aligngym.agents.cli import main
    from aligngym.agents.marl.study import PRESETS, preset_settings

    assert main(["study", "cooperation", "--preset", "reference", "--seeds", "1", "--episodes", "2",
                 "--conditions", "none", "tpdp_s", "--workers", "1", "--tail", "1",
                 "--out", str(tmp_path / "ref")]) == 0
    for condition in ("none", "tpdp_s"):
        (run,) = (tmp_path / "ref" / "runs" / condition / "s0").iterdir()
        config = load_config(run / "config.yaml")
        assert config.learner.reference_epsilon_decay and config.learner.punish.epsilon_end == 0.2
        assert config.env.reputation_decay == 1.0 and config.env.reputation_obs_scale == 1.0
        assert config.learner.select_every_round and config.learner.punish_as_bandit
        assert config.learner.play_next_state_in_game
    assert "Preset: reference." in (tmp_path / "ref" / "study.md").read_text()
    centipede = preset_settings("reference", conditions_dir() / "centipede_dp_s.yaml")
    assert "learner.reference_epsilon_decay=true" in centipede and "learner.punish_as_bandit=true" not in centipede
    load_config(conditions_dir() / "centipede_dp_s.yaml", list(centipede))  # valid there
    text = run_study(tmp_path / "ref", 1, None, ["none"], 1, tail=1, report_only=True).read_text()
    assert "Preset: reference." in text  # read from the runs, whatever the command says
    with pytest.raises(ConfigError, match="unknown preset 'theirs'; choose from ours, reference"):
        run_study(tmp_path, 1, 2, ["none"], 1, preset="theirs")
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["study", "cooperation", "--preset", "theirs"])
    assert "choose from 'ours', 'reference'" in capsys.readouterr().err
    assert set(PRESETS) == {"ours", "reference"}  # the CLI's choices
