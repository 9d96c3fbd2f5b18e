"""``aligngym eval RUN_DIR``: rebuild an agent from its run folder alone and score it."""

from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter

from aligngym.agents.config import AlignGymWarning, ConfigError, agent_module, load_config
from aligngym.agents.train import (CHECKPOINT, EVALUATION, RESUMABLE_KEYS, apply_threads, changed_keys,
                                   load_run_checkpoint)
from aligngym.envs.data.dataset import atomic_write, check_writable


def evaluate(run_dir: Path, episodes: int | None = None, device: str | None = None,
             score_range: str | None = None, **options: Any) -> dict[str, Any]:
    """Score the run's last checkpoint; writes and returns ``eval.json``'s content. ``options``
    (e.g. ``background`` and ``focal`` for the cooperation games) go to the agent's evaluate; the
    result then goes to ``eval_<option values>.json`` and is not logged to TensorBoard, as with
    ``score_range`` (an offline agent's safe-task returns normalised over ``own`` or ``dsrl``'s range,
    in place of the run's own setting). ``run_dir`` may also name the run's checkpoint file."""
    run_dir = Path(run_dir)
    if run_dir.is_file() and run_dir.name == CHECKPOINT:  # the checkpoint itself: its folder is meant
        run_dir = run_dir.parent
    config, state, _ = load_run_checkpoint(run_dir)  # a damaged latest: the one before, with a warning
    if device is not None:
        config = config.model_copy(update={"device": device})
    n = episodes if episodes is not None else getattr(config, "eval_episodes", 10)
    if n < 1:
        raise ConfigError(f"--episodes must be >= 1, got {n}")
    options = {k: v for k, v in options.items() if v is not None}
    if score_range is not None:
        if "score_range" not in type(config).model_fields:
            raise ConfigError(f"--score-range does not apply to {config.agent} runs")
        from aligngym.envs.safety.offline import SCORE_RANGES
        from aligngym.envs.safety.specs import task_spec

        if score_range not in SCORE_RANGES:
            raise ConfigError(f"--score-range must be {' or '.join(SCORE_RANGES)}, got {score_range!r}")
        try:
            task_spec(config.task)
        except KeyError:
            raise ConfigError(f"--score-range applies to the safe tasks, not {config.task}") from None
        config = config.model_copy(update={"score_range": score_range})
    agent_evaluate = agent_module(config.agent).evaluate
    unknown = sorted(set(options) - set(inspect.signature(agent_evaluate).parameters))
    if unknown:
        flags = ", ".join(f"--{k}" for k in unknown)
        raise ConfigError(f"{flags} does not apply to {config.agent} runs")
    _warn_if_edited(run_dir, config)
    named = {**options, **({"score_range": score_range} if score_range is not None else {})}
    name = result_name(named)
    check_writable(run_dir / name)  # before the episodes are played
    before = apply_threads(config)
    try:
        result = agent_evaluate(config, state, n, **options)
    finally:
        torch.set_num_threads(before)
    step = int(state.get("step", 0))
    result["checkpoint_step"] = step
    text = json.dumps(result, indent=2, sort_keys=True)
    atomic_write(run_dir / name, lambda tmp: Path(tmp).write_text(text))  # never a half-written file
    result["written_to"] = str(run_dir / name)
    if not named:
        with SummaryWriter(str(run_dir)) as writer:  # beside the training curves, at its step
            for key, value in result.items():
                if key.startswith("eval/"):
                    writer.add_scalar(key, value, global_step=step)
    return result


def _warn_if_edited(run_dir: Path, config: Any) -> None:
    """The run is rebuilt from its checkpoint's config: say so when the folder's config.yaml was edited
    beyond what a resumed run may change (an edit there does not change what is evaluated)."""
    try:
        edited = changed_keys(load_config(run_dir / "config.yaml"), config, ignore=RESUMABLE_KEYS)
    except ConfigError:  # missing or unreadable: the checkpoint is all eval needs
        return
    if edited:
        warnings.warn(f"{run_dir / 'config.yaml'} differs from the checkpoint in {', '.join(edited)}; "
                      "the evaluation uses the checkpoint's values (what the run was trained with)",
                      AlignGymWarning, stacklevel=3)


def result_name(options: dict[str, Any]) -> str:
    """The file an evaluation with ``options`` writes in the run folder (``eval.json`` without)."""
    if not options:
        return EVALUATION
    return "_".join(["eval", *(f"{k}-{v}" for k, v in sorted(options.items()))]) + ".json"
