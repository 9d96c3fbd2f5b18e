"""Fixtures shared by the agents' tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

SAFE_BULLET_TASKS = [f"aligngym/{a}{t}-v0" for a in ("Ball", "Car", "Drone", "Ant") for t in ("Run", "Circle")]


LOCOMOTION_TASKS = ("Hopper-v5", "HalfCheetah-v5", "Walker2d-v5")


@pytest.fixture(scope="session")
def data_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``ALIGNGYM_DATA`` pointing at one folder for the session, into which :func:`tiny_data` and
    :func:`tiny_locomotion_data` generate (so that a test using both finds both)."""
    root = tmp_path_factory.mktemp("aligngym-data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALIGNGYM_DATA", str(root))
        yield root


@pytest.fixture(scope="session")
def tiny_data(data_folder: Path) -> Path:
    """``ALIGNGYM_DATA`` pointing at a folder with the tiny dataset (seed 0) of each of DSRL's eight
    Bullet tasks, generated once per test session (about 15 s)."""
    from aligngym.envs.data.generate import generate

    for env_id in SAFE_BULLET_TASKS:
        generate(env_id, "tiny", seed=0)
    return data_folder


@pytest.fixture(scope="session")
def tiny_locomotion_data(data_folder: Path) -> Path:
    """``ALIGNGYM_DATA`` pointing at a folder with the tiny datasets (seed 0) of the three D4RL
    locomotion robots, every kind of each (random ... mixed: ``dataset.kind``), generated once per
    test session (about 12 s); the same folder as :func:`tiny_data`'s."""
    from aligngym.envs.data.generate import generate

    for env_id in LOCOMOTION_TASKS:
        generate(env_id, "tiny", seed=0)
    return data_folder


def logged_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """A run folder's TensorBoard scalars: ``{tag: [(step, value), ...]}`` in logged order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.fixture
def scalars():
    """:func:`logged_scalars`, for tests that read a run's curves back."""
    return logged_scalars
