"""Learning test: in the full condition, independent DQN learners come to cooperate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from aligngym.agents.config import load_config
from aligngym.agents.train import train

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"


@pytest.mark.slow
def test_cooperation_rises_in_the_full_condition(tmp_path):
    starts, ends = [], []
    for seed in (0, 1, 2):
        config = load_config(QUICKSTART, [f"seed={seed}", "episodes=80",
                                          "learner.epsilon_decay_episodes=40", "device=cpu",
                                          "show_progress=false", f"run_root={tmp_path}"])
        ea = EventAccumulator(str(train(config)))
        ea.Reload()
        curve = np.array([e.value for e in ea.Scalars("coop/cooperation_rate")])
        assert len(curve) == 80
        starts.append(curve[:10].mean())
        ends.append(curve[-10:].mean())
    assert all(e > s for s, e in zip(starts, ends)), (starts, ends)
    assert np.mean(ends) > np.mean(starts) + 0.2, (starts, ends)
