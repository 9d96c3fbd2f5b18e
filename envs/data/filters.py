"""Episode filters for offline datasets.

:func:`grid_filter` is DSRL's density filter (``dsrl/offline_env.py``, ``grid_filter``): it
evens out how densely episodes cover the reward-cost plane so that no single behaviour policy
dominates the data. Deviations from DSRL: points outside the range are clipped into the edge
bins instead of dropped, a point exactly on the upper edge falls into the last bin instead of
an extra one, sparse bins are dropped only when ``min_per_bin > 0``, and the random choice uses
the caller's ``numpy`` generator so a seed reproduces the result.
"""

from __future__ import annotations

import numpy as np


def _check_range(name: str, value: tuple[float, float] | None) -> tuple[float, float] | None:
    if value is None:
        return None
    if len(value) != 2 or not all(np.isfinite(value)) or value[0] > value[1]:
        raise ValueError(f"{name} must be (low, high) with finite low <= high, got {value!r}")
    return float(value[0]), float(value[1])


def _bin_index(values: np.ndarray, value_range: tuple[float, float] | None, bins: int) -> np.ndarray:
    low, high = value_range if value_range is not None else (values.min(), values.max())
    clipped = np.clip(values, low, high)
    if high == low:  # every point identical: one occupied bin
        return np.zeros(len(values), dtype=np.int64)
    index = np.floor((clipped - low) / (high - low) * bins).astype(np.int64)
    return np.minimum(index, bins - 1)


def grid_filter(episode_returns: np.ndarray, episode_costs: np.ndarray, *, cost_bins: int = 60,
                reward_bins: int = 50, max_per_bin: int, min_per_bin: int = 0,
                rng: np.random.Generator, cost_range: tuple[float, float] | None = None,
                reward_range: tuple[float, float] | None = None) -> np.ndarray:
    """Sorted indices of the episodes kept by DSRL's reward-cost grid filter.

    Episodes are binned on a ``cost_bins`` x ``reward_bins`` grid over ``cost_range`` x
    ``reward_range`` (default: the data's own range; values outside are clipped in). A bin
    with more than ``max_per_bin`` episodes keeps ``max_per_bin`` of them chosen at random by
    ``rng``; when ``min_per_bin > 0``, a bin with at most ``min_per_bin`` episodes is dropped.
    """
    returns = np.asarray(episode_returns, dtype=np.float64)
    costs = np.asarray(episode_costs, dtype=np.float64)
    if returns.ndim != 1 or costs.ndim != 1 or len(returns) != len(costs):
        raise ValueError(f"episode_returns and episode_costs must be 1-D of equal length, got "
                         f"shapes {returns.shape} and {costs.shape}")
    if not (np.all(np.isfinite(returns)) and np.all(np.isfinite(costs))):
        raise ValueError("episode_returns and episode_costs must be finite")
    for name, value, low in (("cost_bins", cost_bins, 1), ("reward_bins", reward_bins, 1),
                             ("max_per_bin", max_per_bin, 1), ("min_per_bin", min_per_bin, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    cost_range = _check_range("cost_range", cost_range)
    reward_range = _check_range("reward_range", reward_range)
    if len(returns) == 0:
        return np.zeros(0, dtype=np.int64)

    cell = (_bin_index(costs, cost_range, cost_bins) * reward_bins
            + _bin_index(returns, reward_range, reward_bins))
    order = np.argsort(cell, kind="stable")  # stable: members of a bin in index order
    _, first, counts = np.unique(cell[order], return_index=True, return_counts=True)
    kept: list[np.ndarray] = []
    for start, count in zip(first, counts):  # bins in ascending order, so rng use is fixed
        members = order[start:start + count]
        if min_per_bin > 0 and count <= min_per_bin:
            continue
        if count > max_per_bin:
            members = rng.choice(members, size=max_per_bin, replace=False)
        kept.append(members)
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.int64)
