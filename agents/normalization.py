"""State normalisation by the dataset's mean and standard deviation, as TD3+BC introduced it.

``s -> (s - mean) / (std + eps)`` with the per-dimension mean and (population) standard deviation
of the training data's observations and ``eps = 1e-3`` (TD3+BC's ``normalize_states``, which A2PR's
official code copies). The constants live in the module's buffers: they go into every checkpoint
with the weights, so a run folder is evaluated without its dataset (``build`` then gets
``dataset=None`` and the checkpoint fills them in). Used by A2PR (:mod:`aligngym.agents.a2pr`) and
TD3+BC (:mod:`aligngym.agents.baselines.td3bc`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


class ObservationNormalizer(nn.Module):
    """``(obs - mean) / std`` for a batch of flat observations (numpy arrays or tensors)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, obs_dim: int) -> None:
        super().__init__()
        # the identity until fitted or loaded from a checkpoint
        self.register_buffer("mean", torch.zeros(obs_dim))
        self.register_buffer("std", torch.ones(obs_dim))

    @classmethod
    def fitted(cls, observations: np.ndarray | None, obs_dim: int, eps: float = 1e-3,
               enabled: bool = True) -> ObservationNormalizer:
        """A normaliser with ``observations``' statistics (the identity when ``enabled`` is false or
        there are no observations: a run evaluated from its checkpoint, which then loads them)."""
        normalizer = cls(obs_dim)
        if enabled and observations is not None:
            normalizer.fit(observations, eps)
        return normalizer

    @torch.no_grad()
    def fit(self, observations: np.ndarray, eps: float = 1e-3) -> None:
        """Set ``mean`` and ``std + eps`` per dimension, computed as TD3+BC does (numpy, in the data's
        float32; ``std`` with ``ddof=0``)."""
        flat = np.asarray(observations, dtype=np.float32).reshape(len(observations), -1)
        if flat.shape[1] != self.mean.shape[0]:
            raise ValueError(f"observations have {flat.shape[1]} dimensions; the normaliser expects "
                             f"{self.mean.shape[0]}")
        self.mean.copy_(torch.from_numpy(flat.mean(0)))
        self.std.copy_(torch.from_numpy(flat.std(0) + np.float32(eps)))

    def forward(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        obs = torch.as_tensor(obs, dtype=torch.float32, device=self.mean.device).flatten(1)
        return (obs - self.mean) / self.std


class Normalized(nn.Module):
    """``module`` reading normalised observations: ``forward(obs, *rest)`` is
    ``module(normalizer(obs), *rest)`` (an actor's ``(obs, state, info)``, a critic's ``(obs, act)``)."""

    def __init__(self, module: nn.Module, normalizer: ObservationNormalizer) -> None:
        super().__init__()
        self.module = module
        self.normalizer = normalizer

    def forward(self, obs: np.ndarray | torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return self.module(self.normalizer(obs), *args, **kwargs)
