"""Fixtures shared by the agents' tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from tianshou.data import Batch

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


@pytest.fixture
def cut_offline_run(monkeypatch: pytest.MonkeyPatch):
    """``cut(config, update, stop=False)``: train an offline ``config`` cut short in its ``update``-th
    update, by a KeyboardInterrupt raised there (``stop=False``: the run keeps its last periodic
    checkpoint) or by a stop request as SIGINT makes one (``stop=True``: the run checkpoints at that
    update); returns the run folder (the only one under the config's ``run_root``)."""
    import signal

    from aligngym.agents import offline
    from aligngym.agents import train as runner

    def cut(config, update: int, stop: bool = False) -> Path:
        real, calls = offline.policy_within_training_step, []

        def cut_here(policy):
            calls.append(1)
            if len(calls) == update:
                if not stop:
                    raise KeyboardInterrupt
                runner._stop_request.append(signal.SIGINT)
            return real(policy)

        monkeypatch.setattr(offline, "policy_within_training_step", cut_here)
        try:
            with pytest.raises(KeyboardInterrupt):
                runner.train(config)
        finally:
            monkeypatch.setattr(offline, "policy_within_training_step", real)
            runner._stop_request.clear()
        (run_dir,) = Path(config.run_root).expanduser().iterdir()
        return run_dir

    return cut


class LinearPolicy(torch.nn.Module):
    """A fixed deterministic policy, ``tanh(obs W + b)``: same observation, same action."""

    def __init__(self, obs_dim: int, act_dim: int, seed: int = 0) -> None:
        super().__init__()
        rng = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(obs_dim, act_dim, generator=rng) * 0.3
        self.bias = torch.randn(act_dim, generator=rng)

    def forward(self, batch: Batch, state: object = None) -> Batch:
        obs = torch.as_tensor(np.asarray(batch.obs), dtype=torch.float32)
        return Batch(act=torch.tanh(obs @ self.weight + self.bias), state=state)

    def map_action(self, act: np.ndarray) -> np.ndarray:
        return act


@pytest.fixture
def linear_policy() -> type[LinearPolicy]:
    """:class:`LinearPolicy`, for tests that play episodes with a policy of known actions."""
    return LinearPolicy


def assert_same_state(a: object, b: object, where: str = "") -> None:
    """Every tensor and number of two (nested) state dicts is equal (``where``: the path, for the message)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.fixture
def same_state():
    """:func:`assert_same_state`, for tests that compare checkpoints (exact resume)."""
    return assert_same_state
