"""``aligngym eval RUN_DIR``: rebuild an agent from its run folder alone and score it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from aligngym.agents.config import ConfigError, agent_module
from aligngym.agents.train import CHECKPOINT, load_checkpoint


def evaluate(run_dir: Path, episodes: int | None = None, device: str | None = None) -> dict[str, Any]:
    """Score the run's last checkpoint; writes and returns ``eval.json``'s content."""
    run_dir = Path(run_dir)
    config, state = load_checkpoint(run_dir / CHECKPOINT)
    if device is not None:
        config = config.model_copy(update={"device": device})
    n = episodes if episodes is not None else getattr(config, "eval_episodes", 10)
    if n < 1:
        raise ConfigError(f"--episodes must be >= 1, got {n}")
    result = agent_module(config.agent).evaluate(config, state, n)
    step = int(state.get("step", 0))
    result["checkpoint_step"] = step
    (run_dir / "eval.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    with SummaryWriter(str(run_dir)) as writer:  # beside the training curves, at the checkpoint's step
        for key, value in result.items():
            if key.startswith("eval/"):
                writer.add_scalar(key, value, global_step=step)
    return result
