"""Fixtures shared by the offline agents' tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

SAFE_BULLET_TASKS = [f"aligngym/{a}{t}-v0" for a in ("Ball", "Car", "Drone", "Ant") for t in ("Run", "Circle")]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``ALIGNGYM_DATA`` pointing at a folder with the tiny dataset (seed 0) of each of DSRL's eight
    Bullet tasks, generated once per test session (about 15 s)."""
    from aligngym.envs.data.generate import generate

    root = tmp_path_factory.mktemp("aligngym-data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALIGNGYM_DATA", str(root))
        for env_id in SAFE_BULLET_TASKS:
            generate(env_id, "tiny", seed=0)
        yield root
