"""IQL's value learning, written once for the agents that use it: IQL and FISOR's reward critics.

Kostrikov, Nair and Levine, "Offline Reinforcement Learning with Implicit Q-Learning", ICLR 2022;
official code ``ikostrikov/implicit_q_learning`` (``critic.py``, ``actor.py``, ``learner.py``).
FISOR's reward critics are IQL's (its official code, ``jaxrl5/agents/fisor``, builds them the same
way), so both agents learn their reward values through the functions here:

- :func:`update_value`: ``V(s)`` regresses on an *expectile* of ``min_k Q_k'(s, a)`` over the target
  Q ensemble (:func:`pessimistic_q`, :func:`expectile_loss`); with ``tau > 0.5`` it approaches the best
  value the data's actions reach without ever querying an action outside the data;
- :func:`update_q`: every member of the Q ensemble regresses on ``r + gamma mask V(s')``
  (:func:`reward_target`);
- :func:`polyak`: the target Q nets follow the live ones;
- :func:`advantage_weights`: ``clip(exp(beta A), 0, max)`` with ``A = min_k Q_k'(s, a) - V(s)``, the
  per-sample weights of advantage-weighted regression (IQL's actor; FISOR's feasible-region weights);
- :func:`apply_cosine_decay`: the actor's cosine learning-rate decay of both official codes
  (``optax.cosine_decay_schedule``);
- :class:`EnsembleMLP`: ``n`` MLPs of one shape in one batched matmul per layer (the twin Q nets and
  the V net of both agents, and FISOR's feasibility critics).

FISOR's feasibility critics reuse :class:`EnsembleMLP`, :func:`expectile_loss` and :func:`polyak`
with their own reductions and backup (agents/fisor.py).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from tianshou.algorithm.algorithm_base import Algorithm
from torch import nn


class EnsembleMLP(nn.Module):
    """``n`` ReLU MLPs with the same shape evaluated in one batched matmul per layer: ``(B, in) -> (n, B, out)``
    (the last axis dropped when ``out`` is 1). Kernels are initialised as flax does in the official
    codes: Xavier-uniform (``"xavier"``, jaxrl5's default: FISOR) or orthogonal with gain ``sqrt(2)``
    (``"orthogonal"``, IQL's ``default_init``); biases are zero."""

    def __init__(self, n: int, inputs: int, hidden: tuple[int, ...], outputs: int = 1,
                 init: Literal["xavier", "orthogonal"] = "xavier") -> None:
        super().__init__()
        sizes = [inputs, *hidden, outputs]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            weight = torch.empty(n, fan_in, fan_out)
            for w in weight:
                if init == "xavier":
                    nn.init.xavier_uniform_(w.T)
                else:
                    nn.init.orthogonal_(w.T, gain=math.sqrt(2))
            self.weights.append(nn.Parameter(weight))
            self.biases.append(nn.Parameter(torch.zeros(n, 1, fan_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(0).expand(self.weights[0].shape[0], *x.shape)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(b, x, w)
            if i < len(self.weights) - 1:
                x = F.relu(x)
        return x.squeeze(-1)


def expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """``mean(|tau - 1[diff < 0]| diff^2)``: tau > 0.5 fits an upper expectile of the target, tau < 0.5
    a lower one (FISOR's V_h uses ``1 - cost_expectile``: weight 0.9 where ``Q_h - V_h < 0``)."""
    return (torch.abs(tau - (diff < 0).float()) * diff**2).mean()


def reward_target(reward: torch.Tensor, next_value: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """IQL's ``r + gamma mask V(s')`` (mask 0 where the agent does not bootstrap)."""
    return reward + gamma * mask * next_value


@torch.no_grad()
def pessimistic_q(target_q: nn.Module, obs_act: torch.Tensor) -> torch.Tensor:
    """``min_k Q_k'(s, a)`` over the members of a target ensemble (no gradient)."""
    return target_q(obs_act).min(dim=0).values


def update_value(value: nn.Module, value_optim: Algorithm.Optimizer, obs: torch.Tensor, q: torch.Tensor,
                 tau: float) -> float:
    """One step of ``V`` (a one-member :class:`EnsembleMLP`) towards the ``tau`` expectile of ``q``
    (:func:`pessimistic_q` of the batch's state-action pairs); returns the loss."""
    loss = expectile_loss(q - value(obs)[0], tau)
    value_optim.step(loss)
    return loss.item()


def update_q(q: nn.Module, q_optim: Algorithm.Optimizer, obs_act: torch.Tensor, reward: torch.Tensor,
             obs_next: torch.Tensor, mask: torch.Tensor, value: nn.Module, gamma: float,
             members: Literal["mean", "sum"] = "mean") -> float:
    """One step of every member of the ensemble ``q`` towards :func:`reward_target` with ``V(s')``;
    returns the loss: the squared error averaged over members and batch (``"mean"``: jaxrl5, FISOR)
    or summed over members of their batch means (``"sum"``: IQL's ``(q1 - y)^2 + (q2 - y)^2``)."""
    with torch.no_grad():
        target = reward_target(reward, value(obs_next)[0], mask, gamma)
    squared = (q(obs_act) - target) ** 2
    loss = squared.mean() if members == "mean" else squared.mean(dim=1).sum()
    q_optim.step(loss)
    return loss.item()


def advantage_weights(advantage: torch.Tensor, temperature: float, max_weight: float) -> torch.Tensor:
    """``clip(exp(temperature A), 0, max_weight)``: advantage-weighted regression's per-sample weights."""
    return torch.exp(advantage * temperature).clamp(0, max_weight)


@torch.no_grad()
def polyak(target: nn.Module, source: nn.Module, tau: float) -> None:
    """``target <- (1 - tau) target + tau source``, parameter by parameter."""
    for t, s in zip(target.parameters(), source.parameters()):
        t.lerp_(s, tau)


def apply_cosine_decay(optim: Algorithm.Optimizer, base_lr: float, step: int, decay_steps: int) -> float:
    """Set ``optim``'s learning rate to optax's ``cosine_decay_schedule(base_lr, decay_steps)`` at ``step``
    (``base_lr (1 + cos(pi min(step, decay_steps) / decay_steps)) / 2``: the full rate at step 0, zero
    from ``decay_steps`` on) and return it."""
    progress = min(step, decay_steps) / decay_steps
    lr = base_lr * 0.5 * (1 + math.cos(math.pi * progress))
    for group in optim._optim.param_groups:
        group["lr"] = lr
    return lr
