"""Independent DQN learners for the cooperation games, all updated in one stacked pass.

Every agent has one Q-network per decision it makes (select, play, punish), as in Dasgupta &
Musolesi's replication code: an MLP ``Linear(in, 128) -> ReLU -> Linear(128, out)``, a target
network, Adam, the Huber loss, one gradient update per stored transition once the network's buffer
holds a batch. No parameters are shared. The networks are stored stacked (``QEnsemble``: one weight
tensor per layer with a leading network axis), so the networks that learn at a step do so in one
batched forward and backward pass (``torch.baddbmm``/``bmm``; the gradients written by hand, checked
against autograd's in the tests), and ``RowAdam`` is Adam with per-network learning rates and step
counts that only moves the networks that learned. The networks of several populations (seeds) of one
game can share the stacks (``seed`` a list; :mod:`aligngym.agents.marl.batched`).

Defaults are the reference's (hidden 128, gamma 0.9, batch 100, target sync every 200 updates of
that network; learning rates select 0.01, play 0.1, punish 0.001; buffers 131072 / 131072 / 524288;
epsilon from 0.8889; of the two versions of the authors' ``DQN/Network.py`` in public history one
has 64 hidden units, and which came last is not known). Deviations and options:

- Exploration: by default epsilon decays linearly per episode from ``epsilon_start`` to each
  decision's ``epsilon_end`` over ``epsilon_decay_episodes``. The reference decrements epsilon by
  ``(start - end) * epsilon_decay_per_update`` after every gradient update, which reaches the
  minimum after 2-4 updates (a bug); ``reference_epsilon_decay: true`` reproduces it. The reference
  keeps punish epsilon at 0.2 for ever (a floor of random, often unjust, punishment); the default
  here is 0.01, and ``punish.epsilon_end: 0.2`` restores it.
- Transitions follow each agent's own timeline per decision: a transition (features, action) is
  closed at the agent's next decision of the same kind, with the reward of that decision's stream
  earned in between (play: payoffs and fines; punish: punisher rewards; select: payoffs and fines
  of the game the agent chose). The reference instead builds next states by hand per decision.
  So a select network stores one transition per episode and starts learning at episode
  ``batch_size`` (100), when the default schedule has just finished exploring; the reference's,
  storing ten, starts at episode 10, four updates before its own schedule ends. In both the
  selection network explores before it learns and learns greedily afterwards. Three of the
  reference's transitions are options (the IPD's trainer only): ``select_every_round: true`` stores a
  selection transition after every round of the selector's game (that round's payoff and fines, the
  next state the reputations after it; the chosen partner stores none), ``punish_as_bandit: true``
  stores each punish decision at once with its own punisher reward and its own state as the next
  state, and ``play_next_state_in_game: true`` ends a play transition at its game's last round with
  the same pair's play state after it (as if the game went on) as the next state.
- ``bootstrap_across_games`` (default true, as the reference's IPD, which never sets done): a
  transition whose next decision of its kind is in another game still bootstraps. False cuts every
  transition (select, play, punish) at game boundaries: the reference's centipede, which marks its
  transitions terminal at a game's last or stopping move (the centipede conditions' configs set it;
  a selection, once per episode, then is a one-step choice, as the reference's).
- The replay buffers (``collector.PopulationReplay``) sample with replacement; the reference samples
  without replacement.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from aligngym.envs.cooperation.rules import DECISIONS, DecisionKind, GameRules


def blockwise_uniform(rngs: list[np.random.Generator], groups: np.ndarray, width: int) -> np.ndarray:
    """Uniform draws (len(groups), width): the rows of group g, in their order, take ``width`` draws
    each from ``rngs[g]`` as one block, column by column (the first column of all its rows, then the
    second, ...), so a group's draws do not depend on the other groups."""
    out = np.empty((len(groups), width))
    order = np.argsort(groups, kind="stable")
    ordered = groups[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    for start, end in zip(starts, [*starts[1:], len(order)]):
        out[order[start:end]] = rngs[ordered[start]].random((width, end - start)).T
    return out


class DecisionLearnerConfig(BaseModel):
    """Settings of one decision's networks (one network per agent)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    lr: float = Field(gt=0)  # Adam learning rate
    buffer_size: int = Field(ge=1)  # replay capacity per agent
    epsilon_end: float = Field(ge=0, le=1)  # exploration after decay
    epsilon_decay_per_update: float = Field(0.30007, gt=0, le=1)  # reference schedule only
    gamma: float = Field(0.9, ge=0, le=1)  # discount


# Per-decision defaults: the reference's, except punish epsilon_end (reference 0.2, see above).
# A config section may give only some keys of a decision; the rest come from here.
DECISION_DEFAULTS: dict[str, dict[str, Any]] = {
    "select": {"lr": 0.01, "buffer_size": 131072, "epsilon_end": 0.0001},
    "play": {"lr": 0.1, "buffer_size": 131072, "epsilon_end": 0.01},
    "punish": {"lr": 0.001, "buffer_size": 524288, "epsilon_end": 0.01,
               "epsilon_decay_per_update": 0.50004},
}


class IndependentDQNConfig(BaseModel):
    """Independent DQN learners (reference section 1.10)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    hidden_size: int = Field(128, ge=1)  # width of the single hidden layer
    batch_size: int = Field(100, ge=1)  # minibatch per update; learning starts once a buffer holds it
    target_update: int = Field(200, ge=1)  # a network's updates between target syncs
    huber: bool = True  # smooth-L1 loss (reference); false = MSE
    epsilon_start: float = Field(0.8889, ge=0, le=1)  # initial exploration
    epsilon_decay_episodes: int = Field(100, ge=1)  # linear decay length (default schedule)
    reference_epsilon_decay: bool = False  # reproduce the reference's per-update decay (a bug)
    bootstrap_across_games: bool = True  # transitions bootstrap into the next game
    select_every_round: bool = False  # the reference's selection transition, one per round (IPD)
    punish_as_bandit: bool = False  # the reference's punish transition, next state = its own (IPD)
    play_next_state_in_game: bool = False  # the reference's play transition at a game's end (IPD)
    select: DecisionLearnerConfig = DecisionLearnerConfig(**DECISION_DEFAULTS["select"])
    play: DecisionLearnerConfig = DecisionLearnerConfig(**DECISION_DEFAULTS["play"])
    punish: DecisionLearnerConfig = DecisionLearnerConfig(**DECISION_DEFAULTS["punish"])

    @model_validator(mode="before")
    @classmethod
    def _fill_decision_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for kind, defaults in DECISION_DEFAULTS.items():
                if isinstance(data.get(kind), dict):
                    data[kind] = {**defaults, **data[kind]}
        return data


class QEnsemble(nn.Module):
    """``K`` independent two-layer MLPs stored as stacked weights."""

    def __init__(self, n_networks: int, in_dim: int, hidden: int, out_dim: int,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()

        def uniform(shape: tuple[int, ...], fan_in: int) -> nn.Parameter:
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialisation
            return nn.Parameter((torch.rand(shape, generator=generator) * 2 - 1) * bound)

        self.w1 = uniform((n_networks, in_dim, hidden), in_dim)
        self.b1 = uniform((n_networks, 1, hidden), in_dim)
        self.w2 = uniform((n_networks, hidden, out_dim), hidden)
        self.b2 = uniform((n_networks, 1, out_dim), hidden)

    def forward(self, rows: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Q-values (len(rows), batch, out) of networks ``rows`` for inputs ``x`` (len(rows), batch, in)."""
        return self.with_hidden(rows, x)[0]

    def with_hidden(self, rows: torch.Tensor, x: torch.Tensor,
                    out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The Q-values and the hidden layer (len(rows), batch, hidden), written into ``out`` if given."""
        h = torch.baddbmm(self.b1[rows], x, self.w1[rows], out=out).relu_()
        # as (w2^T h^T)^T: torch's CPU bmm is about 5x faster in this layout for a narrow output
        return torch.bmm(self.w2[rows].transpose(1, 2), h.transpose(1, 2)).transpose(1, 2) + self.b2[rows], h


class RowAdam:
    """Adam over stacked parameters with a learning rate and a step count per network (row)."""

    def __init__(self, params: list[nn.Parameter], lr: torch.Tensor, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        sizes = [p[0].numel() for p in params]
        self._bounds = list(zip(np.cumsum([0, *sizes[:-1]]).tolist(), np.cumsum(sizes).tolist()))
        # the moments of all parameters of a row side by side, so that a step is a few whole-row
        # operations; exp_avg / exp_avg_sq are views of them shaped like each parameter
        self._m = torch.zeros(len(lr), sum(sizes), device=lr.device)
        self._v = torch.zeros_like(self._m)
        self.exp_avg = [self._m[:, a:b].unflatten(1, p.shape[1:]) for (a, b), p in zip(self._bounds, params)]
        self.exp_avg_sq = [self._v[:, a:b].unflatten(1, p.shape[1:]) for (a, b), p in zip(self._bounds, params)]
        self.steps = torch.zeros(len(lr), dtype=torch.float64, device=lr.device)

    @torch.no_grad()
    def step(self, rows: torch.Tensor, grads: list[torch.Tensor]) -> None:
        """Move networks ``rows`` along ``grads`` (one per parameter, shaped like its ``rows``)."""
        b1, b2 = self.betas
        self.steps[rows] += 1
        steps = self.steps[rows]
        correction1 = (1 - b1 ** steps).to(self.lr.dtype)
        correction2 = (1 - b2 ** steps).to(self.lr.dtype)
        g = torch.cat([grad.reshape(len(rows), -1) for grad in grads], dim=1)
        m = self._m[rows].mul_(b1).add_(g, alpha=1 - b1)
        v = self._v[rows].mul_(b2).addcmul_(g, g, value=1 - b2)
        self._m[rows], self._v[rows] = m, v
        denom = (v / correction2[:, None]).sqrt_().add_(self.eps)
        delta = (self.lr[rows] / correction1)[:, None] * m / denom
        for p, (a, b) in zip(self.params, self._bounds):
            p[rows] -= delta[:, a:b].reshape(len(rows), *p.shape[1:])


class IndependentDQN:
    """One Q-network per (population, decision, agent): row ``p * 3N + d * N + i`` is agent i's
    decision d in population p. ``seed`` is one seed, or one per population (P populations of the
    same game learning side by side: population p's networks, exploration and updates are exactly
    those of a one-population learner seeded ``seed[p]``)."""

    def __init__(self, config: IndependentDQNConfig, rules: GameRules, feature_size: int,
                 seed: int | Sequence[int], device: torch.device) -> None:
        self.config, self.rules, self.device = config, rules, device
        seeds = [int(seed)] if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
        self.n_agents, self.n_populations = rules.n_agents, len(seeds)
        self.decisions: tuple[DecisionKind, ...] = tuple(d for d in DECISIONS if d in rules.decisions)
        self.rows_per_population = len(DECISIONS) * self.n_agents  # rows of absent decisions stay unused
        self.n_rows = self.n_populations * self.rows_per_population
        self.feature_size = feature_size
        self.out_dim = max(rules.n_actions(d) for d in DECISIONS)
        init_seeds, explore_seeds = zip(*(np.random.SeedSequence(s).generate_state(2) for s in seeds))
        parts = [QEnsemble(self.rows_per_population, feature_size, config.hidden_size, self.out_dim,
                           torch.Generator().manual_seed(int(s))) for s in init_seeds]
        self.online = QEnsemble(self.n_rows, feature_size, config.hidden_size, self.out_dim)
        with torch.no_grad():
            for name, param in self.online.named_parameters():
                param.copy_(torch.cat([getattr(part, name) for part in parts]))
        self.online.to(device)
        self.target = QEnsemble(self.n_rows, feature_size, config.hidden_size, self.out_dim).to(device)
        self.target.load_state_dict(self.online.state_dict())
        per_decision = [getattr(config, d) for d in DECISIONS]

        def per_row(values: list[float]) -> np.ndarray:
            return np.tile(np.repeat(values, self.n_agents), self.n_populations)

        self.gamma = torch.tensor(per_row([c.gamma for c in per_decision]), dtype=torch.float32, device=device)
        self.optim = RowAdam(list(self.online.parameters()), torch.tensor(
            per_row([c.lr for c in per_decision]), dtype=torch.float32, device=device))
        valid = np.zeros((self.rows_per_population, self.out_dim), dtype=bool)
        for d, kind in enumerate(DECISIONS):
            for agent in range(self.n_agents):
                valid[d * self.n_agents + agent, :rules.n_choices(kind, agent)] = True
        self.valid_actions = torch.tensor(np.tile(valid, (self.n_populations, 1)), device=device)
        self.n_valid = self.valid_actions.sum(dim=1).cpu().numpy()
        self.invalid_penalty = torch.zeros(self.valid_actions.shape, device=device).masked_fill_(
            ~self.valid_actions, -torch.inf)
        self.epsilon_end = per_row([c.epsilon_end for c in per_decision])
        self.epsilon_step = per_row([(config.epsilon_start - c.epsilon_end) * c.epsilon_decay_per_update
                                     for c in per_decision])
        self.epsilon = np.full(self.n_rows, config.epsilon_start)
        self.updates = np.zeros(self.n_rows, dtype=np.int64)
        self.rngs = [np.random.default_rng(s) for s in explore_seeds]
        self._work: list[torch.Tensor] | None = None  # see _workspace

    def row(self, decision: DecisionKind, agent: int, population: int = 0) -> int:
        return population * self.rows_per_population + DECISIONS.index(decision) * self.n_agents + agent

    def decisions_of_row(self, row: int) -> DecisionKind:
        return DECISIONS[row % self.rows_per_population // self.n_agents]

    def mean_epsilon(self, decision: DecisionKind, population: int = 0) -> float:
        first = self.row(decision, 0, population)
        return float(self.epsilon[first:first + self.n_agents].mean())

    # ------------------------------------------------------------------ acting
    def set_episode(self, episode: int) -> None:
        """Default schedule: linear decay per episode (no-op under the reference schedule)."""
        if self.config.reference_epsilon_decay:
            return
        frac = min(episode / self.config.epsilon_decay_episodes, 1.0)
        self.epsilon = self.config.epsilon_start + frac * (self.epsilon_end - self.config.epsilon_start)

    @torch.no_grad()
    def act(self, rows: np.ndarray, features: np.ndarray, explore: bool) -> np.ndarray:
        """Epsilon-greedy actions for networks ``rows`` given one feature vector each (len(rows), F)."""
        rows_t = torch.as_tensor(rows, device=self.device)
        x = torch.as_tensor(features, dtype=torch.float32, device=self.device)[:, None, :]
        q = self.online(rows_t, x)[:, 0, :]
        q = q.masked_fill(~self.valid_actions[rows_t], -torch.inf)
        actions = q.argmax(dim=1).cpu().numpy()
        if explore:  # each population's draws in one block, in the order its rows come
            draws = blockwise_uniform(self.rngs, rows // self.rows_per_population, 2)
            randomise = draws[:, 0] < self.epsilon[rows]
            random_actions = (draws[:, 1] * self.n_valid[rows]).astype(np.int64)
            actions = np.where(randomise, random_actions, actions)
        return actions

    # ------------------------------------------------------------------ learning
    def update(self, rows: np.ndarray, batch: dict[str, np.ndarray]) -> np.ndarray:
        """One gradient step for each network in ``rows`` on its minibatch (arrays shaped
        (len(rows), batch, ...)); returns the per-network losses."""
        dev = self.device
        rows_t = torch.as_tensor(rows, device=dev)
        obs = torch.as_tensor(batch["obs"], dtype=torch.float32, device=dev)
        obs_next = torch.as_tensor(batch["obs_next"], dtype=torch.float32, device=dev)
        act = torch.as_tensor(batch["act"], dtype=torch.int64, device=dev)
        rew = torch.as_tensor(batch["rew"], dtype=torch.float32, device=dev)
        done = torch.as_tensor(batch["terminated"], dtype=torch.float32, device=dev)
        batch_size = obs.shape[1]
        net, work = self.online, self._workspace(len(rows), batch_size)
        with torch.no_grad():
            q_next = self.target.with_hidden(rows_t, obs_next, out=work[0])[0]
            q_next += self.invalid_penalty[rows_t][:, None, :]  # -inf on actions a network does not have
            target = rew + self.gamma[rows_t][:, None] * (1 - done) * q_next.amax(dim=2)
            # the gradients by hand (autograd through the stacked rows costs about twice as much):
            # q = relu(x w1 + b1) w2 + b2, each row's loss the mean over its batch
            q, h = net.with_hidden(rows_t, obs, out=work[1])
            diff = q.gather(2, act[..., None])[..., 0] - target
            if self.config.huber:  # smooth L1 (beta 1)
                size = diff.abs()
                per_row = torch.where(size < 1, 0.5 * diff * diff, size - 0.5).mean(dim=1)
                d_q = diff.clamp(-1.0, 1.0) / batch_size
            else:
                per_row = (diff * diff).mean(dim=1)
                d_q = 2.0 * diff / batch_size
            d_out = torch.zeros_like(q).scatter_(2, act[..., None], d_q[..., None])  # (R, B, out)
            d_out_t = d_out.transpose(1, 2)
            d_w2 = torch.bmm(d_out_t, h).transpose(1, 2)  # as (d_out^T h)^T: the fast layout
            d_h = torch.bmm(d_out, net.w2[rows_t].transpose(1, 2), out=work[2])
            # relu's backward, in place (masked_fill_ is about 30x slower)
            torch.ops.aten.threshold_backward.grad_input(d_h, h, 0.0, grad_input=d_h)
            d_w1 = torch.bmm(obs.transpose(1, 2), d_h)
            grads = [d_w1, d_h.sum(dim=1, keepdim=True), d_w2, d_out.sum(dim=1, keepdim=True)]
            self.optim.step(rows_t, grads)
        self.updates[rows] += 1
        if self.config.reference_epsilon_decay:
            self.epsilon[rows] = np.maximum(self.epsilon[rows] - self.epsilon_step[rows],
                                            self.epsilon_end[rows])
        sync = torch.as_tensor(rows[self.updates[rows] % self.config.target_update == 0], device=dev)
        if len(sync):
            with torch.no_grad():
                for t, o in zip(self.target.parameters(), self.online.parameters()):
                    t[sync] = o[sync]
        return per_row.cpu().numpy()

    def _workspace(self, rows: int, batch_size: int) -> list[torch.Tensor]:
        """Three (rows, batch, hidden) buffers for the update's hidden layers, kept between updates:
        fresh tensors of this size cost more in page faults than the arithmetic done in them."""
        shape = (self.n_rows, batch_size, self.config.hidden_size)
        if self._work is None or self._work[0].shape != shape:
            self._work = [torch.empty(shape, device=self.device) for _ in range(3)]
        return [w[:rows] for w in self._work]

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, population: int = 0) -> dict[str, Any]:
        """Population ``population``'s networks, optimiser, exploration and generator (the state of a
        one-population learner)."""
        rows = slice(population * self.rows_per_population, (population + 1) * self.rows_per_population)
        return {
            "online": {k: v[rows].clone() for k, v in self.online.state_dict().items()},
            "target": {k: v[rows].clone() for k, v in self.target.state_dict().items()},
            "optim": {"exp_avg": [m[rows].clone() for m in self.optim.exp_avg],
                      "exp_avg_sq": [v[rows].clone() for v in self.optim.exp_avg_sq],
                      "steps": self.optim.steps[rows].clone()},
            "epsilon": torch.from_numpy(self.epsilon[rows].copy()),
            "updates": torch.from_numpy(self.updates[rows].copy()),
            "rng": self.rngs[population].bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any], population: int = 0) -> None:
        """Restore :meth:`state_dict`'s output into population ``population``."""
        rows = slice(population * self.rows_per_population, (population + 1) * self.rows_per_population)
        with torch.no_grad():
            for net, key in ((self.online, "online"), (self.target, "target")):
                params = dict(net.named_parameters())
                if set(state[key]) != set(params):
                    raise KeyError(f"{key} networks: expected {sorted(params)}, got {sorted(state[key])}")
                for name, value in state[key].items():
                    params[name][rows] = value
            optim = state["optim"]
            for dst, src in zip(self.optim.exp_avg + self.optim.exp_avg_sq, optim["exp_avg"] + optim["exp_avg_sq"]):
                dst[rows] = src
            self.optim.steps[rows] = optim["steps"]
        self.epsilon[rows] = state["epsilon"].numpy()
        self.updates[rows] = state["updates"].numpy()
        self.rngs[population].bit_generator.state = state["rng"]
