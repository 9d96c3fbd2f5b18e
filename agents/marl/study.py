"""``aligngym study cooperation``: every condition of the punishment paper, many seeds, one table.

Runs each condition config in ``configs/cooperation/`` for N seeds (as Ray tasks, through
:func:`aligngym.agents.sweep.run_jobs` like ``aligngym sweep``: one task per condition, whose process
trains its seeds together on the batched core (the centipede's one after another), ``workers``
conditions at once on a local Ray, one torch thread each; a condition that fails is reported and the
others go on) into ``OUT/runs/<condition>/s<seed>/``, then reads the logged
curves back and writes ``OUT/study.md``: per condition and metric the mean over seeds of the
run's final value (mean of its last ``tail`` episodes) with a 95% confidence interval (Student t),
the episode at which cooperation stays >= 0.9, the paper's qualitative claims checked against the
numbers, and curve plots (rolling mean over episodes, 95% band across seeds) as PNG files.

A study is resumable: finished runs are reused and interrupted ones continue from their last
checkpoint when the same command is run again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aligngym.agents.config import ConfigError, bundled_configs, load_config
from aligngym.agents.marl.plots import curves, rolling_mean, save, t975
from aligngym.agents.train import changed_keys, newest_run, read_curves
from aligngym.envs.cooperation.core import METRIC_NAMES

# Metrics in the table, with how to read them.
TABLE_METRICS = (
    ("cooperation_rate", "cooperation rate"),
    ("punishment_rate_direct", "direct punishment rate"),
    ("punishment_rate_third_party", "third-party punishment rate"),
    ("just_punishment_share", "share of punishments that hit defectors"),
    ("antisocial_punishment_rate", "P(punish | cooperator)"),
    ("deterrence_rate", "P(punish | defector)"),
    ("partner_cooperator_rate", "chosen partner was a cooperator"),
    ("partner_punisher_rate", "chosen partner was a punisher"),
    ("partner_just_punisher_rate", "chosen partner punished mostly justly last episode"),
    ("mean_reward", "reward per agent (total)"),
    ("mean_play_reward", "reward per agent: play"),
    ("mean_fine", "reward per agent: fines"),
    ("mean_punisher_reward", "reward per agent: punisher"),
    ("efficiency", "efficiency (total reward per round)"),
    ("equality", "equality (1 - Gini)"),
    ("coop_after_partner_c", "P(C | partner's last C)"),
    ("coop_after_partner_d", "P(C | partner's last D)"),
    ("in_degree_gini", "in-degree Gini (ostracism)"),
    ("mean_game_length", "rounds (centipede: moves) per game"),
)
# Settings applied to every condition ("ipd": to its IPD conditions only). ``reference``: the mechanics
# of the authors' code that AlignGym offers as options: their exploration (epsilon decremented after
# every gradient update, so it reaches its floor within a few updates; punish exploration never below
# 0.2), the raw cumulative reputation fed to the networks, and (IPD) their selection transition stored
# after every round, their punish transition as a one-step bandit and their play transition's next
# state at a game's end. Not reproduced (see agents/marl/dqn.py): replay sampled without replacement,
# inputs not padded to one width, the caveman selection among neighbours only, the centipede's play
# reward and transitions.
PRESETS: dict[str, dict[str, tuple[str, ...]]] = {
    "ours": {},
    "reference": {"all": ("learner.reference_epsilon_decay=true", "learner.punish.epsilon_end=0.2",
                          "env.reputation_decay=1.0", "env.reputation_obs_scale=1.0"),
                  "ipd": ("learner.select_every_round=true", "learner.punish_as_bandit=true",
                          "learner.play_next_state_in_game=true")},
}


def preset_settings(preset: str, condition: Path) -> tuple[str, ...]:
    """The ``--set`` overrides that ``preset`` gives the condition config ``condition``."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}'; choose from {', '.join(PRESETS)}")
    parts = PRESETS[preset]
    ipd = load_config(condition).env.game == "ipd"
    return (*parts.get("all", ()), *(parts.get("ipd", ()) if ipd else ()))


CURVE_METRICS = ("cooperation_rate", "punishment_rate_direct", "punishment_rate_third_party",
                 "mean_reward", "antisocial_punishment_rate")


def conditions_dir() -> Path:
    """The condition configs: the bundled ``cooperation/`` configs (``configs/cooperation/``)."""
    return bundled_configs() / "cooperation"


def available_conditions() -> list[str]:
    return sorted(p.stem for p in conditions_dir().glob("*.yaml"))


def mean_ci(values: np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (t distribution; 0 for one value)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float(values.mean()), 0.0
    return float(values.mean()), float(t975(len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))


def convergence_episode(curve: np.ndarray, threshold: float = 0.9, window: int = 20) -> float:
    """First episode from which the rolling mean (``window``) of ``curve`` stays >= ``threshold``
    to the end; NaN if it never does."""
    if len(curve) == 0:
        return float("nan")
    below = np.flatnonzero(rolling_mean(curve, window) < threshold)
    if len(below) == 0:
        return 0.0
    return float(below[-1] + 1) if below[-1] + 1 < len(curve) else float("nan")


def _newest_runs(condition_dir: Path) -> list[Path]:
    """One run per seed folder of a condition: the one with the newest checkpoint (a seed folder may
    also hold older runs, e.g. of a config edited since; counted twice they would narrow the intervals)."""
    return [run for seed_dir in sorted(condition_dir.glob("s*")) if (run := newest_run(seed_dir)) is not None]


def _preset_of(run_dir: Path) -> str:
    """Which preset a run was trained under (by its config's settings)."""
    path = run_dir / "config.yaml"
    config = load_config(path)
    for name in reversed(PRESETS):  # the most specific first: the config holds all its settings already
        if not changed_keys(config, load_config(path, list(preset_settings(name, path)))):
            return name
    return "ours"


def run_study(out: Path, seeds: int, episodes: int | None, conditions: list[str] | None,
              workers: int | None, tail: int = 100, report_only: bool = False, preset: str = "ours") -> Path:
    """Run (or finish) the study and write ``out/study.md`` with its plots; returns the report path.
    ``report_only`` trains nothing: the report covers the runs already in ``out`` (any length).
    ``preset`` (a key of PRESETS) is applied to every condition."""
    known = available_conditions()
    if not known:
        raise ConfigError(f"no condition configs in {conditions_dir()} (the package's bundled configs are "
                          "missing: reinstall aligngym)")
    chosen = list(dict.fromkeys(conditions or known))  # a condition named twice runs once
    unknown = [c for c in chosen if c not in known]
    if unknown:
        raise ConfigError(f"unknown condition(s) {unknown}; available: {', '.join(known)}")
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    if episodes is not None and episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {episodes}")
    if tail < 1:
        raise ConfigError(f"--tail must be >= 1, got {tail}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    settings = {c: preset_settings(preset, conditions_dir() / f"{c}.yaml") for c in chosen}
    for name in chosen:  # validate every config before starting any work
        load_config(conditions_dir() / f"{name}.yaml", list(settings[name]))
    if report_only:
        found = {c: _newest_runs(out / "runs" / c) for c in chosen}
        found = {c: dirs for c, dirs in found.items() if dirs}
        if not found:
            which = f" of {', '.join(conditions)}" if conditions else ""
            raise ConfigError(f"no finished runs{which} under {out / 'runs'} to report on")
        return write_report(out, found, tail)
    from aligngym.agents.sweep import Job, run_jobs

    length = [] if episodes is None else [f"episodes={episodes}"]
    jobs = {Job(str(conditions_dir() / f"{c}.yaml"), (f"seed={s}", *length, *settings[c]),
                out / "runs" / c / f"s{s}",
                f"{c} seed {s}"): c for c in chosen for s in range(seeds)}
    failures = run_jobs(list(jobs), num_cpus=workers, desc="study")
    runs: dict[str, list[Path]] = {}
    for job, condition in jobs.items():
        if job not in failures and (run := newest_run(job.root)) is not None:
            runs.setdefault(condition, []).append(run)
    if not runs:
        raise RuntimeError(f"every run of the study failed; the first: {next(iter(failures.values()))}")
    return write_report(out, runs, tail, failures={job.label: message for job, message in failures.items()})


def write_report(out: Path, runs: dict[str, list[Path]], tail: int, failures: dict[str, str] | None = None) -> Path:
    tags = tuple(f"coop/{m}" for m in METRIC_NAMES)
    finals: dict[str, dict[str, np.ndarray]] = {}
    histories: dict[str, dict[str, np.ndarray]] = {}
    converged: dict[str, np.ndarray] = {}
    episodes_run: dict[str, int] = {}
    for condition, run_dirs in runs.items():
        scalars = [{tag: values for tag, (_, values) in read_curves(d, tags).items()} for d in sorted(run_dirs)]
        length = min(len(s["coop/cooperation_rate"]) for s in scalars)
        episodes_run[condition] = length
        # metrics a run did not log (older runs) are left out of that condition's row
        histories[condition] = {m: np.stack([s[f"coop/{m}"][:length] for s in scalars])
                                for m in METRIC_NAMES
                                if all(len(s[f"coop/{m}"]) >= length for s in scalars)}
        finals[condition] = {m: h[:, -min(tail, length):].mean(axis=1)
                             for m, h in histories[condition].items()}
        converged[condition] = np.array([convergence_episode(c) for c in
                                         histories[condition]["cooperation_rate"]])
    sizes = ", ".join(f"{c}: {len(r)} {'seed' if len(r) == 1 else 'seeds'} x {episodes_run[c]} episodes"
                      for c, r in runs.items())
    presets = sorted({_preset_of(d) for dirs in runs.values() for d in dirs})
    lines = ["# Cooperation study", "",
             f"{len(runs)} conditions; per condition {sizes}. Preset: {', '.join(presets)}.",
             f"Each value: mean over seeds of the run's mean over its last {tail} episodes (all of a "
             "shorter run's), +- the half-width of the 95% confidence interval (t distribution).", ""]
    lines += ["| metric | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    for metric, label in TABLE_METRICS:
        cells = []
        for condition in runs:
            if metric not in finals[condition]:
                cells.append("n/a")
                continue
            values = finals[condition][metric]
            mean, half = mean_ci(values)
            cells.append(f"{mean:.3g} +- {half:.2g}" if len(values) > 1 else f"{mean:.3g} (1 seed: no interval)")
        lines.append(f"| {label.replace('|', '&#124;')} | " + " | ".join(cells) + " |")
    cells = []
    for condition in runs:
        values = converged[condition]
        done = values[np.isfinite(values)]
        cells.append(f"{np.mean(done):.0f} ({len(done)}/{len(values)} seeds)" if len(done) else
                     f"never (0/{len(values)})")
    lines.append("| episodes until cooperation stays >= 0.9 (rolling 20) | " + " | ".join(cells) + " |")
    if failures:
        lines += ["", "## Failed runs", ""] + [f"- {label}: {message}" for label, message in failures.items()]
    lines += ["", "## The paper's claims, checked here", ""]
    lines += check_claims(finals, converged)
    lines += ["", "## Curves", ""]
    for metric in CURVE_METRICS:
        fig = curves({c: histories[c][metric] for c in runs if metric in histories[c]},
                     metric.replace("_", " "), metric,
                     window=max(min(min(episodes_run.values()) // 20, 100), 1),
                     ylim=None if metric == "mean_reward" else (-0.05, 1.05))
        name = f"curve_{metric}.png"
        save(fig, out / name)
        lines.append(f"![{metric}]({name})")
    report = out / "study.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def _compare(finals: dict[str, dict[str, np.ndarray]], metric: str, a: str, b: str) -> str | None:
    if a not in finals or b not in finals:
        return None
    ma, ha = mean_ci(finals[a][metric])
    mb, hb = mean_ci(finals[b][metric])
    verdict = "holds" if ma > mb else "does not hold"
    overlap = " (intervals overlap)" if abs(ma - mb) < ha + hb else ""
    return f"{verdict}: {a} {ma:.3g} vs {b} {mb:.3g}{overlap}"


def check_claims(finals: dict[str, dict[str, np.ndarray]], converged: dict[str, np.ndarray]) -> list[str]:
    """The paper's qualitative claims (reference section 1.13), each with the numbers behind it."""
    out = []
    for claim, args in (
        ("TPP gives higher equilibrium cooperation than DP", ("cooperation_rate", "tpp", "dp")),
        ("DP gives higher total reward than TPP", ("mean_reward", "dp", "tpp")),
    ):
        result = _compare(finals, *args)
        out.append(f"- {claim}: {result or 'not run (needs both conditions)'}")
    # the ranking claims compare the 5-agent IPD conditions only (not other games or networks)
    ipd = {c: f for c, f in finals.items() if not c.startswith(("centipede_", "caveman_"))}
    if "tpdp_s" in ipd and len(ipd) > 1:
        coop = {c: mean_ci(f["cooperation_rate"]) for c, f in ipd.items()}
        best = max(coop, key=lambda c: coop[c][0])
        tied = abs(coop[best][0] - coop["tpdp_s"][0]) <= coop[best][1] + coop["tpdp_s"][1]
        verdict = "holds" if best == "tpdp_s" else ("ties (intervals overlap)" if tied else "does not hold")
        out.append(f"- selection + reputation + DP + TPP (tpdp_s) cooperates most: {verdict} "
                   f"(highest: {best} {coop[best][0]:.3g} +- {coop[best][1]:.2g}; tpdp_s "
                   f"{coop['tpdp_s'][0]:.3g} +- {coop['tpdp_s'][1]:.2g})")
        speed = {c: mean_ci(v[np.isfinite(v)]) if np.isfinite(v).all() else (np.inf, 0.0)
                 for c, v in converged.items() if c in ipd}
        fastest = min(speed, key=lambda c: speed[c][0])
        if not np.isfinite(speed[fastest][0]):
            out.append("- ... and converges fastest: undetermined (no condition's cooperation stayed "
                       ">= 0.9 in every seed)")
        else:
            tied = abs(speed[fastest][0] - speed["tpdp_s"][0]) <= speed[fastest][1] + speed["tpdp_s"][1]
            verdict = ("holds" if fastest == "tpdp_s" else
                       "ties (intervals overlap)" if tied else "does not hold")
            out.append(f"- ... and converges fastest (episodes until cooperation stays >= 0.9, "
                       f"conditions where every seed got there): {verdict} (fastest: {fastest} "
                       f"{speed[fastest][0]:.0f} +- {speed[fastest][1]:.0f}; tpdp_s "
                       f"{speed['tpdp_s'][0]:.0f} +- {speed['tpdp_s'][1]:.0f})")
    costly = [c for c in finals if c.startswith("costly_") and "antisocial_punishment_rate" in finals[c]]
    for c in costly:  # (runs logged before these metrics existed have no line)
        base = c.removeprefix("costly_")
        antisocial = mean_ci(finals[c]["antisocial_punishment_rate"])[0]
        line = f"- {c}: unjust punishment P(punish | cooperator) = {antisocial:.3g}"
        if base in finals and "deterrence_rate" in finals[c] and "deterrence_rate" in finals[base]:
            deter_c = mean_ci(finals[c]["deterrence_rate"])[0]
            deter_b = mean_ci(finals[base]["deterrence_rate"])[0]
            line += (f"; second-order free-riding (defectors punished less when punishing costs): "
                     f"P(punish | defector) {deter_c:.3g} vs {deter_b:.3g} in {base} -> "
                     f"{'appears' if deter_c < deter_b else 'does not appear'}")
        out.append(line)
    return out
