"""Offline dataset I/O (aligngym.envs.data.dataset) and DSRL's grid filter (filters)."""

from __future__ import annotations

import types
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest

from aligngym.envs.data import dataset as dataset_module
from aligngym.envs.data.dataset import (
    D4RL_REFERENCE_RETURNS,
    DatasetError,
    OfflineDataset,
    cost_thresholds,
    d4rl_normalized_score,
    data_dir,
    dataset_path,
    generate_command,
    has_costs,
    load_dataset,
    locomotion_task,
    plot_dataset,
    plot_reward_cost,
    summary,
    write_dataset,
)
from aligngym.envs.data.filters import grid_filter

# Three episodes: A rows 0-2 ends terminal, B rows 3-4 ends by timeout, C rows 5-8 unfinished.
N = 9
REWARDS = np.array([1, 2, 3, 10, 10, 0.5, 0.5, 0.5, 0.5], dtype=np.float32)
COSTS = np.array([0, 1, 1, 1, 0, 0, 0, 0, 0], dtype=np.float32)
TERMINALS = np.zeros(N, dtype=bool)
TERMINALS[2] = True
TIMEOUTS = np.zeros(N, dtype=bool)
TIMEOUTS[4] = True


def _arrays(obs_dim: int = 3, with_next: bool = True, with_costs: bool = True) -> dict[str, np.ndarray]:
    # observation i is [i, i, ...] so every row can be identified after reordering.
    obs = np.repeat(np.arange(N, dtype=np.float32)[:, None], obs_dim, axis=1)
    arrays = {"observations": obs, "actions": np.arange(N, dtype=np.float32)[:, None] / 10,
              "rewards": REWARDS.copy(), "terminals": TERMINALS.copy(), "timeouts": TIMEOUTS.copy()}
    if with_next:
        arrays["next_observations"] = obs + 1
    if with_costs:
        arrays["costs"] = COSTS.copy()
    return arrays


def _dataset() -> OfflineDataset:
    return OfflineDataset(arrays=_arrays(), attrs={"env_id": "test"})


def _write_raw(path: Path, arrays: dict[str, np.ndarray], attrs: dict | None = None) -> Path:
    with h5py.File(path, "w") as file:
        for key, value in arrays.items():
            file.create_dataset(key, data=value)
        for key, value in (attrs or {}).items():
            file.attrs[key] = value
    return path


# --- paths and commands -------------------------------------------------------------------------

def test_paths_follow_data_dir_and_naming(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNGYM_DATA", str(tmp_path))
    assert data_dir() == tmp_path
    assert dataset_path("aligngym/BallCircle-v0", "tiny", 3) == tmp_path / "BallCircle-v0-tiny-s3.hdf5"
    assert dataset_path("Hopper-v5", "full", 0, kind="medium") == tmp_path / "Hopper-v5-medium-full-s0.hdf5"
    assert dataset_path("Walker2d-v5", "tiny", 2, kind="mixed") == tmp_path / "Walker2d-v5-mixed-tiny-s2.hdf5"
    assert dataset_path("Hopper-v5", "small", 1, kind="medium-replay").name == "Hopper-v5-medium-replay-small-s1.hdf5"
    with pytest.raises(DatasetError, match="huge"):
        dataset_path("Hopper-v5", "huge", 0)
    monkeypatch.delenv("ALIGNGYM_DATA")
    assert data_dir() == Path.home() / ".cache" / "aligngym" / "datasets"
    assert generate_command("aligngym/BallCircle-v0", "small", 1) == \
        "aligngym data generate aligngym/BallCircle-v0 --size small --seed 1"


# --- loading foreign layouts --------------------------------------------------------------------

def test_d4rl_layout_derives_next_observations(tmp_path):
    arrays = _arrays(with_next=False, with_costs=False)
    arrays["infos/qpos"] = np.arange(N, dtype=np.float64)[:, None] * np.ones((1, 2))
    path = _write_raw(tmp_path / "hopper.hdf5", arrays)
    with h5py.File(path, "a") as file:
        file["metadata/algorithm"] = "SAC"
    ds = load_dataset(path)
    # Kept rows: A's three (terminal keeps a placeholder), B's first, C's first three.
    kept = np.array([0, 1, 2, 3, 5, 6, 7])
    np.testing.assert_array_equal(ds.arrays["observations"][:, 0], kept)
    np.testing.assert_array_equal(ds.arrays["next_observations"][:, 0], [1, 2, 2, 4, 6, 7, 8])
    np.testing.assert_array_equal(ds.arrays["infos/qpos"][:, 0], kept)
    assert ds.attrs["metadata/algorithm"] == "SAC"
    assert "costs" not in ds.arrays
    np.testing.assert_array_equal(ds.episode_lengths(), [3, 1, 3])
    np.testing.assert_allclose(ds.episode_returns(), [6, 10, 1.5])
    np.testing.assert_array_equal(ds.episode_costs(), [0, 0, 0])
    assert ds.arrays["timeouts"].tolist() == [False, False, False, True, False, False, True]


def test_dsrl_layout_with_attributes_loads(tmp_path):
    arrays = _arrays()
    arrays["rewards"] = arrays["rewards"][:, None]  # DSRL keeps some columns as (N, 1)
    arrays["costs"] = arrays["costs"][:, None]
    arrays["terminals"] = arrays["terminals"].astype(np.float32)
    path = _write_raw(tmp_path / "dsrl.hdf5", arrays,
                      {"max_episode_reward": 881.5, "min_episode_cost": 0.0, "env": b"BallCircle"})
    ds = load_dataset(path)
    assert ds.arrays["rewards"].shape == (N,) and ds.arrays["costs"].shape == (N,)
    assert ds.arrays["terminals"].dtype == bool and ds.arrays["terminals"][2]
    assert ds.attrs["max_episode_reward"] == pytest.approx(881.5)
    assert ds.attrs["env"] == "BallCircle"
    np.testing.assert_allclose(ds.episode_costs(), [2, 1, 0])


def test_round_trip_preserves_arrays_and_attrs(tmp_path):
    attrs = {"env_id": "aligngym/BallCircle-v0", "seed": 3, "cost_limits": [10.0, 20.0],
             "config": {"policy": "sac", "steps": [1, 2]}, "noise": 0.1}
    arrays = _arrays()
    arrays["terminals"] = arrays["terminals"].astype(np.int64)  # cast to bool on write
    path = write_dataset(tmp_path / "sub" / "d.hdf5", arrays, attrs)
    ds = load_dataset(path)
    for key, value in _arrays().items():
        np.testing.assert_array_equal(ds.arrays[key], value)
        assert ds.arrays[key].dtype == (bool if key in ("terminals", "timeouts") else np.float32)
    for key, value in attrs.items():
        assert ds.attrs[key] == value
    assert ds.attrs["format"] == "d4rl"
    assert ds.attrs["aligngym_version"] == dataset_module.package_version()
    assert ds.path == path and len(ds) == N


# --- bad input ----------------------------------------------------------------------------------

def test_missing_file_names_generate_command(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNGYM_DATA", str(tmp_path))
    path = dataset_path("aligngym/BallCircle-v0", "tiny", 3)
    with pytest.raises(DatasetError) as info:
        load_dataset(path, env_id="aligngym/BallCircle-v0", size="tiny", seed=3)
    assert "missing" in str(info.value)
    assert generate_command("aligngym/BallCircle-v0", "tiny", 3) in str(info.value)


def test_missing_key_names_key_and_file(tmp_path):
    arrays = _arrays()
    del arrays["actions"]
    path = _write_raw(tmp_path / "noact.hdf5", arrays)
    with pytest.raises(DatasetError, match="'actions'") as info:
        load_dataset(path)
    assert str(path) in str(info.value)


def test_safe_task_requires_costs(tmp_path):
    path = _write_raw(tmp_path / "nocost.hdf5", _arrays(with_costs=False))
    box = gym.spaces.Box(-1, 1, (3,))
    safe_env = types.SimpleNamespace(observation_space=box, action_space=gym.spaces.Box(-1, 1, (1,)),
                                     task=object())
    with pytest.raises(DatasetError, match="'costs'"):
        load_dataset(path, env=safe_env)
    del safe_env.task  # a non-safe env loads the same file
    assert "costs" not in load_dataset(path, env=safe_env).arrays


def test_unequal_lengths_rejected(tmp_path):
    arrays = _arrays()
    arrays["rewards"] = arrays["rewards"][:-1]
    path = _write_raw(tmp_path / "short.hdf5", arrays)
    with pytest.raises(DatasetError, match="unequal lengths"):
        load_dataset(path)
    with pytest.raises(DatasetError, match="unequal lengths"):
        write_dataset(tmp_path / "w.hdf5", arrays, {})


@pytest.mark.parametrize("damage", ["truncate", "random"])
def test_corrupt_files_reported(tmp_path, damage):
    path = write_dataset(tmp_path / "d.hdf5", _arrays(), {})
    if damage == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DatasetError, match="truncated or corrupt") as info:
        load_dataset(path)
    assert str(path) in str(info.value)


def test_float64_beyond_float32_range_is_named_not_called_nan(tmp_path):
    bad = _arrays()
    bad["rewards"] = bad["rewards"].astype(np.float64)
    bad["rewards"][4] = 1e300
    with pytest.raises(DatasetError, match=r"'rewards' holds values beyond float32's range "
                                           r"\(largest magnitude 1e\+300\)"):
        write_dataset(tmp_path / "d.hdf5", bad, {})


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "d.hdf5")


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = write_dataset(tmp_path / "d.hdf5", _arrays(), {"version": "old"})
    bad = _arrays()
    bad["rewards"][4] = np.nan
    with pytest.raises(DatasetError, match="rewards.*NaN"):
        write_dataset(path, bad, {"version": "new"})
    assert load_dataset(path).attrs["version"] == "old"

    calls = {"n": 0}
    real_create = h5py.Group.create_dataset

    def failing_create(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk full")
        return real_create(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing_create)
    new = _arrays()
    new["rewards"] += 100
    with pytest.raises(RuntimeError, match="disk full"):
        write_dataset(path, new, {"version": "new"})
    monkeypatch.undo()
    assert calls["n"] == 3
    old = load_dataset(path)
    assert old.attrs["version"] == "old"
    np.testing.assert_array_equal(old.arrays["rewards"], REWARDS)
    assert _leftovers(tmp_path) == []


def test_env_shape_mismatch_names_both_shapes(tmp_path):
    env = gym.make("Pendulum-v1")
    try:
        wrong = write_dataset(tmp_path / "wrong.hdf5", _arrays(obs_dim=4), {})
        with pytest.raises(DatasetError) as info:
            load_dataset(wrong, env=env)
        assert "(4,)" in str(info.value) and "(3,)" in str(info.value)
        right = write_dataset(tmp_path / "right.hdf5", _arrays(obs_dim=3), {})
        assert len(load_dataset(right, env=env)) == N
    finally:
        env.close()


# --- episodes -----------------------------------------------------------------------------------

def test_episode_bounds_returns_costs():
    ds = _dataset()
    starts, ends = ds.episode_bounds()
    np.testing.assert_array_equal(starts, [0, 3, 5])
    np.testing.assert_array_equal(ends, [3, 5, 9])
    np.testing.assert_array_equal(ds.episode_lengths(), [3, 2, 4])
    np.testing.assert_allclose(ds.episode_returns(), [6, 20, 2])
    np.testing.assert_allclose(ds.episode_costs(), [2, 1, 0])
    trajectories = ds.trajectories()
    assert [len(t["rewards"]) for t in trajectories] == [3, 2, 4]
    np.testing.assert_array_equal(trajectories[1]["observations"][:, 0], [3, 4])


def test_select_and_concatenate_keep_episodes_apart():
    ds = _dataset()
    picked = ds.select_episodes([2, 0])  # C (unfinished) first: must not merge with A
    np.testing.assert_array_equal(picked.episode_lengths(), [4, 3])
    np.testing.assert_allclose(picked.episode_returns(), [2, 6])
    assert picked.attrs == ds.attrs and picked.attrs is not ds.attrs
    both = OfflineDataset.concatenate([ds, ds])
    np.testing.assert_array_equal(both.episode_lengths(), [3, 2, 4, 3, 2, 4])
    np.testing.assert_allclose(both.episode_costs(), [2, 1, 0, 2, 1, 0])
    with pytest.raises(DatasetError):
        ds.select_episodes([3])
    no_costs = OfflineDataset(arrays=_arrays(with_costs=False))
    with pytest.raises(DatasetError, match="keys"):
        OfflineDataset.concatenate([ds, no_costs])


def test_replay_buffer_carries_costs():
    arrays = _arrays()
    arrays["rewards"] = np.arange(N, dtype=np.float32)
    arrays["costs"] = np.arange(N, dtype=np.float32) / 10  # distinct per transition
    ds = OfflineDataset(arrays=arrays)
    buffer = ds.to_replay_buffer()
    assert len(buffer) == N
    np.testing.assert_array_equal(buffer.done, [0, 0, 1, 0, 1, 0, 0, 0, 1])
    np.testing.assert_array_equal(buffer.terminated, TERMINALS)
    batch, indices = buffer.sample(32)
    assert len(indices) == 32
    np.testing.assert_allclose(batch.info.cost, arrays["costs"][indices])
    np.testing.assert_allclose(batch.info.cost, batch.rew / 10)
    np.testing.assert_array_equal(batch.obs_next, arrays["next_observations"][indices])
    np.testing.assert_allclose(buffer[[2, 7]].info.cost, [0.2, 0.7])


# --- sequence segments --------------------------------------------------------------------------

def test_sample_segments_pads_short_episode():
    rewards = np.array([1, 2, 3, 4, 5], dtype=np.float32)
    obs = np.arange(5, dtype=np.float32)[:, None]
    ds = OfflineDataset(arrays={
        "observations": obs, "next_observations": obs + 1, "actions": obs * 0,
        "rewards": rewards, "costs": np.array([1, 0, 1, 0, 0], dtype=np.float32),
        "terminals": np.array([0, 0, 0, 0, 1], bool), "timeouts": np.zeros(5, bool)})
    seg = ds.sample_segments(2, 8, np.random.default_rng(0))
    assert seg["observations"].shape == (2, 8, 1) and seg["actions"].shape == (2, 8, 1)
    np.testing.assert_array_equal(seg["mask"][0], [1, 1, 1, 1, 1, 0, 0, 0])
    np.testing.assert_allclose(seg["returns_to_go"][0], [15, 14, 12, 9, 5, 0, 0, 0])
    np.testing.assert_allclose(seg["costs_to_go"][0], [2, 1, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(seg["timesteps"][0], [0, 1, 2, 3, 4, 0, 0, 0])
    np.testing.assert_allclose(seg["rewards"][0], [1, 2, 3, 4, 5, 0, 0, 0])
    assert seg["timesteps"].dtype.kind == "i" and seg["mask"].dtype == bool


def test_sample_segments_windows_inside_episodes():
    ds = _dataset()
    starts, ends = ds.episode_bounds()
    seg = ds.sample_segments(64, 2, np.random.default_rng(1))
    rows = seg["observations"][..., 0].astype(int)  # observation i sits on row i
    for b in range(64):
        valid = seg["mask"][b]
        assert valid[0]
        episode = np.searchsorted(ends, rows[b, 0], side="right")
        for k in np.flatnonzero(valid):
            row = rows[b, k]
            assert starts[episode] <= row < ends[episode]  # never crosses into the next episode
            assert seg["timesteps"][b, k] == row - starts[episode]
            # suffix sum over the whole episode, not only the window
            assert seg["returns_to_go"][b, k] == pytest.approx(REWARDS[row:ends[episode]].sum())
            assert seg["costs_to_go"][b, k] == pytest.approx(COSTS[row:ends[episode]].sum())
    assert seg["mask"].all()  # every episode here is at least 2 long: no padding
    assert set(seg["timesteps"][:, 0]) > {0}  # windows start at varied places


# --- grid filter --------------------------------------------------------------------------------

def _clusters() -> tuple[np.ndarray, np.ndarray]:
    # 100 episodes in one cell, 3 in another, 1 alone; plus one far outside the range (clipped).
    costs = np.r_[np.full(100, 0.5), np.full(3, 5.5), 9.5, 50.0]
    returns = np.r_[np.full(100, 0.5), np.full(3, 5.5), 9.5, 9.5]
    return returns, costs


def test_grid_filter_caps_dense_and_drops_sparse_bins():
    returns, costs = _clusters()
    kwargs = dict(cost_bins=10, reward_bins=10, cost_range=(0, 10), reward_range=(0, 10))
    kept = grid_filter(returns, costs, max_per_bin=10, min_per_bin=1,
                       rng=np.random.default_rng(0), **kwargs)
    assert np.all(np.diff(kept) > 0)
    assert np.sum(kept < 100) == 10
    assert {100, 101, 102} <= set(kept.tolist())
    # 103 and 104 (clipped into 103's cell) share a bin of 2 > min_per_bin: both kept
    assert {103, 104} <= set(kept.tolist())
    sparse = grid_filter(returns, costs, max_per_bin=10, min_per_bin=3,
                         rng=np.random.default_rng(0), **kwargs)
    assert not set(sparse.tolist()) & {100, 101, 102, 103, 104} and len(sparse) == 10
    again = grid_filter(returns, costs, max_per_bin=10, min_per_bin=1,
                        rng=np.random.default_rng(0), **kwargs)
    np.testing.assert_array_equal(kept, again)
    other = grid_filter(returns, costs, max_per_bin=10, min_per_bin=1,
                        rng=np.random.default_rng(7), **kwargs)
    assert not np.array_equal(kept, other)
    everything = grid_filter(returns, costs, max_per_bin=1000, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(everything, np.arange(len(returns)))


def test_grid_filter_validates_arguments():
    returns, costs = _clusters()
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="max_per_bin"):
        grid_filter(returns, costs, max_per_bin=0, rng=rng)
    with pytest.raises(ValueError, match="equal length"):
        grid_filter(returns, costs[:-1], max_per_bin=5, rng=rng)
    with pytest.raises(ValueError, match="cost_range"):
        grid_filter(returns, costs, max_per_bin=5, rng=rng, cost_range=(5, 1))
    with pytest.raises(ValueError, match="Generator"):
        grid_filter(returns, costs, max_per_bin=5, rng=0)


# --- summary and plot ---------------------------------------------------------------------------

def test_summary_reports_episodes_and_costs():
    text = summary(_dataset())
    assert "episodes: 3" in text and "transitions: 9" in text
    assert "episode cost: min 0.000  mean 1.000  max 2.000" in text
    assert "episode return: min 2.000  mean 9.333  max 20.000" in text
    assert "cost <= 10: 100.0% (33% of them end in a termination)" in text  # episode A
    assert "episodes ending in a termination: 33.3%" in text
    np.testing.assert_array_equal(_dataset().episode_terminated(), [True, False, False])
    limited = _dataset()
    limited.attrs["cost_limits"] = [0.5, 1.0]
    text = summary(limited)
    assert "cost <= 0.5: 33.3% (0% of" in text and "cost <= 1: 66.7% (0% of" in text
    assert "cost <= 10:" not in text


def test_cost_thresholds_come_from_the_file_else_its_task_else_dsrls_bullet_ones(tmp_path):
    limited = _dataset()
    limited.attrs["cost_limits"] = [0.5, 1.0]
    assert cost_thresholds(limited) == (0.5, 1.0)
    assert cost_thresholds(_dataset()) == (10.0, 20.0, 40.0)  # env_id "test": no known task
    dsrl = load_dataset(_write_raw(tmp_path / "SafetyHopperVelocityGymnasium-v1-250-1000.hdf5", _arrays()))
    assert cost_thresholds(dsrl) == (20.0, 40.0, 80.0)  # DSRL's files: no attributes, the task in the name
    assert "cost <= 80: 100.0%" in summary(dsrl) and "cost <= 10:" not in summary(dsrl)
    for name, limits in [("SafetyCarCircle-v0-100-1450.hdf5", (10.0, 20.0, 40.0)),  # DSRL's Bullet CarCircle
                         ("SafetyCarCircle1Gymnasium-v0-100-1000.hdf5", (20.0, 40.0, 80.0)),  # navigation
                         ("SafetyAntRun-v0-150-1598.hdf5", (10.0, 20.0, 40.0))]:
        assert cost_thresholds(load_dataset(_write_raw(tmp_path / name, _arrays()))) == limits, name
    mine = _dataset()
    mine.attrs["env_id"] = "aligngym/SwimmerVelocity-v1"
    assert cost_thresholds(mine) == (20.0, 40.0, 80.0)
    d4rl = OfflineDataset(arrays={k: v for k, v in _arrays().items() if k != "costs"}, attrs={"env_id": "Hopper-v5"})
    assert cost_thresholds(d4rl) == ()  # nothing to judge: no "episodes with cost <= 10: 100%" lines
    assert "no costs in this file" in summary(d4rl) and "episodes with cost <=" not in summary(d4rl)
    generated = OfflineDataset(arrays={**_arrays(), "costs": np.zeros(len(_arrays()["costs"]), np.float32)},
                               attrs={"env_id": "Hopper-v5", "kind": "medium"})  # aligngym's D4RL files
    assert cost_thresholds(generated) == () and "episodes with cost <=" not in summary(generated)


# --- D4RL's locomotion scores ---------------------------------------------------------------------

def test_d4rl_scores_follow_d4rls_reference_returns():
    # d4rl/infos.py: REF_MIN_SCORE / REF_MAX_SCORE of hopper, halfcheetah, walker2d
    assert D4RL_REFERENCE_RETURNS == {"Hopper-v5": (-20.272305, 3234.3), "HalfCheetah-v5": (-280.178953, 12135.0),
                                      "Walker2d-v5": (1.629008, 4592.3)}
    assert d4rl_normalized_score("Hopper-v5", 1607.0138975) == pytest.approx(50.0)  # half way: (min + max) / 2
    assert d4rl_normalized_score("Hopper-v5", 1000.0) == pytest.approx(100 * 1020.272305 / 3254.572305)
    assert d4rl_normalized_score("HalfCheetah-v5", -280.178953) == 0.0
    assert d4rl_normalized_score("HalfCheetah-v5", 5000.0) == pytest.approx(100 * 5280.178953 / 12415.178953)
    assert d4rl_normalized_score("Walker2d-v5", 4592.3) == pytest.approx(100.0)
    scores = d4rl_normalized_score("aligngym.envs:Walker2d-v5", np.array([1.629008, 100.0]))  # a prefix, an array
    np.testing.assert_allclose(scores, [0.0, 100 * 98.370992 / 4590.670992])
    assert isinstance(d4rl_normalized_score("Hopper-v5", 1.0), float)
    with pytest.raises(DatasetError, match="no D4RL reference returns for 'aligngym/BallRun-v0'"):
        d4rl_normalized_score("aligngym/BallRun-v0", 1.0)


def test_the_robot_comes_from_the_env_id_else_a_d4rl_files_name():
    assert locomotion_task("Hopper-v5") == "Hopper-v5" and locomotion_task("gymnasium/HalfCheetah-v5") == "HalfCheetah-v5"
    assert locomotion_task("aligngym/HopperVelocity-v1") is None  # the safe velocity task is not D4RL's
    assert locomotion_task("aligngym/BallRun-v0", "hopper-medium-v2.hdf5") is None  # the env id decides
    for name, robot in [("hopper-medium-v2.hdf5", "Hopper-v5"), ("halfcheetah_medium_replay-v2.hdf5", "HalfCheetah-v5"),
                        ("walker2d-expert-v2.hdf5", "Walker2d-v5"), ("SafetyHopperVelocityGymnasium-v1.hdf5", None),
                        ("hopperish.hdf5", None)]:
        assert locomotion_task(None, name) == robot, name


def _d4rl_layout(obs_dim: int = 11, act_dim: int = 3) -> dict[str, np.ndarray]:
    """D4RL's own keys (hopper-medium-v2.hdf5): no costs, ``infos/*`` per transition."""
    arrays = _arrays(obs_dim=obs_dim, with_costs=False)
    arrays["actions"] = np.repeat(arrays["actions"], act_dim, axis=1)
    arrays["infos/qpos"] = np.zeros((N, 6), np.float32)
    arrays["infos/action_log_probs"] = np.zeros(N, np.float32)
    return arrays


def test_a_d4rl_file_loads_for_its_robot_and_reports_its_d4rl_scores(tmp_path, monkeypatch):
    path = _write_raw(tmp_path / "hopper-medium-v2.hdf5", _d4rl_layout())
    with h5py.File(path, "a") as file:  # D4RL's metadata: the behaviour policy's weights, its algorithm
        file["metadata/algorithm"] = "SAC"
        file["metadata/policy/fc0/weight"] = np.zeros((256, 11), np.float32)
    env = gym.make("Hopper-v5")
    try:
        ds = load_dataset(path, env=env.unwrapped)  # no env_id attribute: only the shapes are checked
    finally:
        env.close()
    assert len(ds) == N and "costs" not in ds.arrays and "metadata/policy/fc0/weight" not in ds.arrays
    assert ds.attrs["metadata/algorithm"] == "SAC" and ds.arrays["infos/qpos"].shape == (N, 6)
    assert not has_costs(ds) and cost_thresholds(ds) == ()
    scores = 100 * (np.array([6.0, 20.0, 2.0]) + 20.272305) / 3254.572305  # episodes A, B, C by hand
    assert (f"D4RL score of the episodes (x100, Hopper-v5's reference returns; v5 robots, compare with D4RL's "
            f"figures loosely): min {scores.min():.1f}  mean {scores.mean():.1f}  max {scores.max():.1f}") in summary(ds)
    assert "D4RL score" not in summary(_dataset())  # a safe-style file: no D4RL score
    drawn = []
    real = dataset_module.return_histogram_figure
    monkeypatch.setattr(dataset_module, "return_histogram_figure",
                        lambda returns, title, task: drawn.append((list(returns), task)) or real(returns, title, task))
    out = plot_dataset(ds, tmp_path / "returns.png")
    assert out.read_bytes().startswith(b"\x89PNG") and drawn == [([6.0, 20.0, 2.0], "Hopper-v5")]


def test_plot_draws_returns_without_costs_and_the_reward_cost_plane_with_them(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(dataset_module, "plot_returns", lambda ds, out, title=None: drawn.append("histogram"))
    monkeypatch.setattr(dataset_module, "plot_reward_cost", lambda ds, out, title=None: drawn.append("reward-cost"))
    locomotion = OfflineDataset(arrays={**_arrays(), "costs": np.zeros(N, np.float32)},
                                attrs={"env_id": "Hopper-v5", "kind": "mixed"})  # aligngym's: costs all 0
    costly_unknown = OfflineDataset(arrays=_arrays(), attrs={})  # costs, no known task
    zero_cost_safe = OfflineDataset(arrays={**_arrays(), "costs": np.zeros(N, np.float32)},
                                    attrs={"env_id": "aligngym/BallRun-v0"})  # a safe task's file
    for ds in (locomotion, OfflineDataset({k: v for k, v in _arrays().items() if k != "costs"}),
               _dataset(), costly_unknown, zero_cost_safe):
        plot_dataset(ds, tmp_path / "p.png")
    assert drawn == ["histogram", "histogram", "reward-cost", "reward-cost", "reward-cost"]


def test_a_histogram_without_a_robot_has_no_d4rl_axis():
    fig = dataset_module.return_histogram_figure([1.0, 2.0, 2.5], "t", None)
    assert fig.axes[0].get_title() == "t" and not fig.axes[0].child_axes
    fig = dataset_module.return_histogram_figure([1000.0, 2000.0], "Hopper-v5 expert", "Hopper-v5")
    assert fig.axes[0].get_title() == f"Hopper-v5 expert: mean D4RL score {100 * 1520.272305 / 3254.572305:.1f}"
    (top,) = fig.axes[0].child_axes  # the D4RL score axis on top
    assert top.get_xlabel() == "D4RL score (x100)"


def test_plot_writes_png(tmp_path):
    out = plot_reward_cost(_dataset(), tmp_path / "plots" / "rc.png", cost_limits=[1.0], title="t")
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 1000
    assert sorted(p.name for p in out.parent.iterdir()) == ["rc.png"]


@pytest.mark.parametrize("damage, message", [
    ("next_shape", r"next_observations have shape \(2,\) per transition but observations have \(3,\)"),
    ("nan_flags", "'terminals' holds values other than 0 and 1"),
    ("flag_values", "'timeouts' holds values other than 0 and 1"),
    ("negative_costs", "'costs' has negative values"),
])
def test_malformed_columns_are_refused_on_load_and_write(tmp_path, damage, message):
    arrays = _arrays()
    if damage == "next_shape":
        arrays["next_observations"] = arrays["next_observations"][:, :2]
    elif damage == "nan_flags":
        arrays["terminals"] = np.full(len(arrays["terminals"]), np.nan)
    elif damage == "flag_values":
        arrays["timeouts"] = arrays["timeouts"].astype(np.float32) * 2
    else:
        arrays["costs"][2] = -5
    with pytest.raises(DatasetError, match=message):
        load_dataset(_write_raw(tmp_path / "bad.hdf5", arrays))
    with pytest.raises(DatasetError, match=message):
        write_dataset(tmp_path / "w.hdf5", arrays, {})


def test_a_home_relative_path_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write_dataset(tmp_path / "d.hdf5", _arrays(), {})
    assert len(load_dataset("~/d.hdf5")) == N


def test_another_tasks_file_is_refused_even_with_matching_shapes(tmp_path):
    """BallRun's and CarRun's data have the same shapes: only the file's env_id tells them apart."""
    env = gym.make("Pendulum-v1")
    try:
        other = write_dataset(tmp_path / "other.hdf5", _arrays(), {"env_id": "aligngym/CarRun-v0"})
        with pytest.raises(DatasetError, match=r"holds aligngym/CarRun-v0 data, not Pendulum-v1's"):
            load_dataset(other, env=env)
        assert len(load_dataset(other)) == N  # without an env nothing is compared
        for same in ("Pendulum-v1", "gymnasium.envs:Pendulum-v1"):  # module-prefix form: the same env
            path = write_dataset(tmp_path / "same.hdf5", _arrays(), {"env_id": same})
            assert len(load_dataset(path, env=env)) == N
    finally:
        env.close()


def test_a_file_without_env_id_is_checked_by_the_task_its_name_names(tmp_path):
    """DSRL's files carry no attributes, only their task's name: BallRun's and CarRun's shapes match,
    so CarRun's data would otherwise train a BallRun agent silently."""
    env = gym.make("aligngym/BallRun-v0")
    try:
        shape, act = env.observation_space.shape[0], env.action_space.shape[0]
        arrays = {**_arrays(obs_dim=shape), "actions": np.zeros((N, act), np.float32)}
        car = write_dataset(tmp_path / "SafetyCarRun-v0-40-1234.hdf5", arrays, {})
        with pytest.raises(DatasetError, match=r"holds aligngym/CarRun-v0 data, not aligngym/BallRun-v0's "
                                               r"\(its file name\)"):
            load_dataset(car, env=env.unwrapped)
        ball = write_dataset(tmp_path / "SafetyBallRun-v0-40-1234.hdf5", arrays, {})
        assert len(load_dataset(ball, env=env.unwrapped)) == N
        assert len(load_dataset(write_dataset(tmp_path / "mine.hdf5", arrays, {}), env=env.unwrapped)) == N
    finally:
        env.close()


@pytest.mark.parametrize(("attrs", "message"), [
    ({"aligngym_json_attrs": "5"}, "attribute 'aligngym_json_attrs' should be a JSON list"),
    ({"aligngym_json_attrs": '{"a": 1}'}, "attribute 'aligngym_json_attrs' should be a JSON list"),
    ({"aligngym_json_attrs": '["plan"]', "plan": "{not json"}, "attribute 'plan' is not valid JSON"),
    ({"aligngym_json_attrs": '["cost_limits"]', "cost_limits": '["a"]'}, "attribute 'cost_limits' should be"),
    ({"aligngym_json_attrs": '["cost_limits"]', "cost_limits": '{"x": 1}'}, "attribute 'cost_limits' should be"),
    ({"aligngym_json_attrs": '["cost_limits"]', "cost_limits": "[[1, 2], [3]]"}, "attribute 'cost_limits' should be"),
    ({"cost_limits": np.array([np.nan])}, "attribute 'cost_limits' should be"),
    ({"cost_limits": np.array([-1.0])}, "attribute 'cost_limits' should be"),
])
def test_malformed_attributes_are_named(tmp_path, attrs, message):
    path = _write_raw(tmp_path / "bad.hdf5", _arrays(), attrs)
    with pytest.raises(DatasetError, match=message) as info:
        load_dataset(path)
    assert str(path) in str(info.value)


def test_aligngym_data_must_be_a_folder(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("ALIGNGYM_DATA", str(blocker))
    with pytest.raises(DatasetError, match=r"ALIGNGYM_DATA=.*file is not a folder"):
        data_dir()
    monkeypatch.setenv("ALIGNGYM_DATA", str(tmp_path / "not-yet"))  # made when first written
    assert data_dir() == tmp_path / "not-yet"


def test_a_quoted_home_in_plot_paths_is_expanded(tmp_path, monkeypatch, capsys):
    """The loader expands ~; the picture beside the file must not go to a folder named ~."""
    from aligngym.agents.cli import main

    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    write_dataset(home / "d.hdf5", _arrays(), {})
    assert main(["data", "plot", "~/d.hdf5"]) == 0
    assert main(["data", "plot", "~/d.hdf5", "--out", "~/p.png"]) == 0
    assert (home / "d.png").is_file() and (home / "p.png").is_file() and not any(work.iterdir())


def test_two_processes_finding_one_stale_lock_cannot_both_take_it(tmp_path, monkeypatch):
    """A claims a folder whose lock a dead process left and is held up between reading the owner and
    taking the lock over; B claims meanwhile. Serialised, B waits and then finds A's live lock;
    unserialised, both would take the stale one (each removing what it read as stale)."""
    import socket
    import subprocess
    import sys
    import threading

    from aligngym.envs.data.dataset import FolderInUseError, _boot_id, claim_folder

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".lock").write_text(f"{gone.stdout.strip()} {socket.gethostname()} {_boot_id()}")
    a_inside, b_done = threading.Event(), threading.Event()
    real_alive = dataset_module._alive

    def slow_first_check(pid: int) -> bool:  # A, the first to check the dead owner, dawdles
        if not a_inside.is_set():
            a_inside.set()
            b_done.wait(timeout=1.0)
        return real_alive(pid)

    monkeypatch.setattr(dataset_module, "_alive", slow_first_check)
    outcomes: dict[str, str] = {}

    def claim(name: str) -> None:
        try:
            claim_folder(tmp_path, "used")
            outcomes[name] = "claimed"
        except FolderInUseError:
            outcomes[name] = "refused"
        if name == "B":
            b_done.set()

    a = threading.Thread(target=claim, args=("A",))
    a.start()
    assert a_inside.wait(timeout=10)
    b = threading.Thread(target=claim, args=("B",))
    b.start()
    a.join()
    b.join()
    assert sorted(outcomes.values()) == ["claimed", "refused"]
    assert outcomes["A"] == "claimed"


def test_actions_far_outside_the_envs_bounds_are_refused(tmp_path):
    """Pendulum's torque is in [-2, 2]: data with actions of 50 are not its actions (another env's, or
    unscaled); a small overshoot (noise before clipping) passes."""
    env = gym.make("Pendulum-v1")
    try:
        far = _arrays()
        far["actions"][3] = 50.0
        with pytest.raises(DatasetError, match=r"actions reach \[0, 50\], far outside Pendulum-v1's bounds \[-2, 2\]"):
            load_dataset(write_dataset(tmp_path / "far.hdf5", far, {}), env=env)
        near = _arrays()
        near["actions"][3] = -2.5
        assert len(load_dataset(write_dataset(tmp_path / "near.hdf5", near, {}), env=env)) == N
        assert len(load_dataset(tmp_path / "far.hdf5")) == N  # without an env nothing is compared
    finally:
        env.close()
