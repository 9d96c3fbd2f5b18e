"""BARFI: behaviour alignment by bilevel reward-function optimisation.

Gupta, Chandak, Jordan, Thomas and da Silva, "Behavior Alignment via Reward Function Optimization",
NeurIPS 2023 (arXiv 2310.19007); code ``Dhawgupta/gupta2023behavior`` (``src/algorithms/BarfiNeumann.py``,
``src/utils/Reward.py``, ``Policy.py``, ``Basis.py``, ``utils.py``'s ``TrajectoryBuffer``, and the
sweeps of ``experiments/PaperPlots``).

A designer's heuristic (``info["aux_reward"]`` of the ``aligngym/Shaping*`` tasks) may help or mislead.
BARFI learns how to use it: an inner policy-gradient learner maximises the learned return

    J_phi(theta) = E[ sum_t gamma_phi^t r_phi(s_t, a_t) ],   r_phi = phi1(s) + phi2(s) r_primary + phi3(s) r_aux,

and an outer step moves phi (and the discount ``gamma_phi = sigmoid(param)``, started at 0.99) so
that the inner learner's policy maximises the *primary* return J(theta(phi)). By the implicit function
theorem at the inner optimum (grad_theta J_phi = 0),

    dJ/dphi = - d2J_phi/dphi dtheta . (d2J_phi/dtheta2)^-1 . grad_theta J,

with the inverse Hessian-vector product approximated by a truncated Neumann series (Lorraine et al.
2020): ``p = -alpha * sum_{j=0..N} (I + alpha H)^j v`` (H the inner objective's Hessian, v = grad J).
Here the derivatives are ``torch.func``'s: ``grad`` of the inner objective, ``vjp`` of that gradient
for the Hessian-vector products (reverse over reverse, one graph for every term of the series), ``grad``
of ``<grad_theta J_phi, p>`` for the mixed term. ``hypergradient: first_order`` takes H^-1 = -I instead (the official ``Barfi``: it aligns
the inner and the outer policy gradients).

The schedule, as ``BarfiNeumann`` (every ``delta`` = 3 episodes, in the order the code runs it):

1. **Outer step** (not at the first call after the warm-up): v = grad of the primary REINFORCE
   objective (discount ``gamma`` = 0.99, no entropy term) on the last ``delta`` episodes; the inner
   objective's gradient on ``hess_mul x batch_size`` = 15 older episodes (drawn with replacement from
   all but the last ``delta``) with r_phi and gamma_phi live; the Neumann series; then phi and gamma's
   parameter descend ``<grad_theta J_phi, p> + reward_l2 sum ||phi||_2 + gamma_l2 gamma_phi`` (which ascends
   J and pulls the discount down).
2. **Inner steps**: ``delta x inner_mul`` = 15 REINFORCE steps, each on ``batch_size`` episodes drawn from
   the buffer, on r_phi and gamma_phi held fixed, with the entropy bonus ``entropy``; the first time,
   ``first_mul`` more.
3. **Warm-up**: while at most ``first_mul + inner_mul`` episodes have been played (and once more at the
   first call after), one REINFORCE step per call on the naive sum ``r_primary + r_aux`` instead.

The REINFORCE objective is the official one: ``mean over the horizon of mask . log pi(a_t|s_t) . G_t``
averaged over the episodes, with G_t the discounted return-to-go and no gamma^t weighting (what the
paper calls the biased, gamma-dropped policy gradient, which BARFI's learned discount can offset),
and, for the inner learner, ``entropy x`` the mean policy entropy of the episodes' steps.

Networks (the official ones): the policy is linear on fixed features, softmax for discrete actions;
for continuous actions a Gaussian of fixed standard deviation ``policy_std`` whose mean is
``sigmoid(linear) x (high - low) + low``. Features (``features``): the coupled Fourier cosine basis of
``fourier_order`` on the observation scaled to [0, 1] by the env's ``feature_bounds`` (raw when it has
none, as the official code when a bound is infinite); ``tiles``: tile coding of ``tiles`` tiles per
dimension and ``tilings`` tilings scaled by ``1 / tilings``; ``random_relu``: a fixed random ReLU layer
of ``hidden`` units on the raw observation (never trained). The learned reward (``reward_form``):
``state``: phi = a linear layer from the features to three outputs with PyTorch's default initialisation
(GridWorld, CartPole, MountainCar); ``constant``: three state-independent scalars started at the naive
sum (HalfCheetah); ``learn_primary_weight: false`` fixes phi2 = 1 (the official GridWorld). Optimisers:
RMSprop (GridWorld, CartPole, MountainCar) or Adam (HalfCheetah), PyTorch's defaults otherwise.

Defaults are the GridWorld settings of the official sweep (``PaperPlots/{good,bad}/barfineumann.json``):
its single values (reward and gamma lr 5e-3, entropy 0.25, batch 1 episode, buffer 1000 episodes,
delta 3, inner_mul 5, first_mul 150, hess_mul 15, 5 Neumann steps at alpha 5e-4, 2000 episodes) and,
where it sweeps, one of its values: actor lr 1e-3 (of 5e-3 and 1e-3: in a trial at 5e-3 the softmax
saturated during the naive warm-up and the policy stayed stuck against a wall), reward_l2 0 (of 0 and 0.06),
gamma_l2 0.25 (of 0.06-16). The other tasks' settings are in ``configs/barfi/*.yaml``.

Deviations from the official code, each small and each named:

- The official buffer's ``sample_last(k)`` returns k + 1 episodes, so its outer gradient reads the last
  ``delta + 1`` episodes (the oldest of them also in the Hessian batch) and its warm-up step the last 2;
  here the outer gradient and the warm-up step read exactly the last ``delta``.
- The objective averages over the task's horizon H; the official pads episodes to H + 1 and averages
  over that (a 2 % smaller policy gradient against the entropy bonus on the gridworld).
- Training episodes are played ``delta`` at a time through tianshou's ``Collector`` (the policy only
  changes between those groups, so the schedule is the same), each from its own reset seed derived
  from the run's seed and its index, so a resumed run replays exactly. (A finished run whose length is
  not a multiple of ``delta`` ends in a short group; extended, it completes that group and updates
  where an uninterrupted run would, but the group's actions are drawn in two parts, so they differ.)
- Discounted returns are one matrix product with ``gamma^(k - t)`` (differentiable in gamma_phi), not a
  Python loop; the same numbers.
- Importance weights are not used (as the official code, which ignores the stored probabilities): the
  inner and Hessian batches are off-policy episodes treated as on-policy.
- One schedule for every task, the gridworld's and CartPole's, but for one switch: the official
  MountainCar code takes no inner steps at all at the call that ends the warm-up (its ``first_mul`` only
  sets the warm-up's length; ``inner_steps_at_warmup_end: false``, set by ``barfi/mountain_car``);
  the official
  MuJoCo code has no naive warm-up steps (it waits ``first_mul + inner_mul`` episodes untrained),
  subtracts a running mean of the returns (not implemented) and clips every net's gradient norm to 1
  (``clip_norm`` clips the policy's; ``configs/barfi/half_cheetah.yaml`` sets it to 1).
- Tile coding (``features: tiles``) scales the observation by the env's bounds into ``tiles`` tiles per
  dimension, each tiling offset by ``1 / tilings`` of a tile, ``tilings x (tiles + 1)^dims`` features
  (125 on MountainCar). The official PyFixedReps 1.0.0 coder computes the scaled position but tiles the
  unscaled one and wraps its indices into ``tilings x tiles^dims`` (80) features, which leaves few
  distinct codes over MountainCar's small velocity range.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import torch
from pydantic import Field, model_validator
from tianshou.algorithm.algorithm_base import Policy
from tianshou.data import Batch
from torch.func import grad, vjp
from tqdm.auto import tqdm

from aligngym.agents.config import ConfigError, RunConfig
from aligngym.agents.offline import (_set_random_state, check_finite, make_env, play_episodes, set_torch_random_state,
                                     torch_random_state)
from aligngym.agents.train import CheckpointError, Run, read_curves, resolve_device, to_numpy

AUX_KEY = "aux_reward"  # the shaping tasks' info entry with the heuristic's reward of the step


class PolicyGradientConfig(RunConfig):
    """The inner learner's fields: BARFI's and the REINFORCE baselines'."""

    hparam_metrics: ClassVar[tuple[str, ...]] = ("eval/return", "train/primary_return")
    length_key: ClassVar[str] = "episodes"

    task: str = "aligngym/ShapingGridWorld-v0"  # a task with info["aux_reward"]
    task_options: dict[str, float | int | bool | str] = Field(default_factory=dict)  # gym.make options: aux: good|bad|none
    episodes: int = Field(2000, ge=1)  # training episodes
    features: Literal["fourier", "tiles", "random_relu"] = "fourier"  # fixed features of the linear policy
    fourier_order: int = Field(3, ge=1)  # Fourier basis order (coupled: (order + 1)^dims features)
    tiles: int = Field(4, ge=1)  # tile coding: tiles per dimension
    tilings: int = Field(5, ge=1)  # tile coding: offset tilings
    hidden: int = Field(32, ge=1)  # random_relu: units of the fixed random layer
    policy_std: float = Field(0.1, gt=0)  # continuous actions: the Gaussian's fixed standard deviation
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"  # every learned part's optimiser (PyTorch defaults)
    actor_lr: float = Field(1e-3, gt=0)  # the policy's learning rate (the official sweep: 5e-3 or 1e-3)
    entropy: float = Field(0.25, ge=0)  # entropy bonus of the inner objective (actor_reg)
    gamma: float = Field(0.99, gt=0, le=1)  # discount of the primary return (the outer objective)
    delta: int = Field(3, ge=1)  # episodes between updates
    batch_size: int = Field(1, ge=1)  # episodes per inner step
    buffer_size: int = Field(1000, ge=1)  # episodes kept
    clip_norm: float | None = Field(None, gt=0)  # clip the policy's gradient norm (None: not clipped)
    checkpoint_every: int = Field(300, ge=1)  # episodes between checkpoints (rounded up to whole updates)
    eval_episodes: int = Field(20, ge=1)  # episodes played at the end and by `aligngym eval`
    show_progress: bool = True  # progress bar on the terminal

    def preflight(self) -> None:
        env = make_env(self)
        try:
            check_task(self, env)
        finally:
            env.close()

    def smoke(self) -> PolicyGradientConfig:
        return self.model_copy(update={"episodes": min(self.episodes, 4 * self.delta), "checkpoint_every": self.delta,
                                       "eval_episodes": 1})


class Config(PolicyGradientConfig):
    """BARFI (``agent: barfi``)."""

    agent: Literal["barfi"] = "barfi"
    reward_form: Literal["state", "constant"] = "state"  # phi(s) linear in the features, or three scalars
    learn_primary_weight: bool = False  # learn phi2 (CartPole, MountainCar) or fix it at 1 (GridWorld, HalfCheetah)
    reward_lr: float = Field(5e-3, ge=0)  # learning rate of phi
    gamma_lr: float = Field(5e-3, ge=0)  # learning rate of the discount's parameter (0: gamma_phi fixed)
    reward_l2: float = Field(0.0, ge=0)  # penalty on the norm of phi's weights, the official L2_reg (not squared)
    gamma_l2: float = Field(0.25, ge=0)  # penalty on gamma_phi (pulls the discount down)
    gamma_init: float = 4.6  # the discount's parameter at the start: sigmoid(4.6) = 0.990
    hypergradient: Literal["neumann", "first_order"] = "neumann"  # implicit gradient, or H^-1 = -I
    neumann_steps: int = Field(5, ge=0)  # terms of the Neumann series
    neumann_alpha: float = Field(5e-4, gt=0)  # its step size
    hess_mul: int = Field(15, ge=1)  # the Hessian batch: hess_mul x batch_size older episodes
    inner_mul: int = Field(5, ge=1)  # inner steps per update: delta x inner_mul
    first_mul: int = Field(150, ge=0)  # extra inner steps the first time; the warm-up lasts first_mul + inner_mul episodes
    # the inner steps at the call that ends the warm-up (on the learned reward, not yet updated): the
    # official gridworld and CartPole code takes delta x inner_mul + first_mul there, its MountainCar code
    # none (false: the warm-up's naive step only; the outer step and inner steps start at the next call)
    inner_steps_at_warmup_end: bool = True

    @model_validator(mode="after")
    def _older_episodes_exist(self) -> Config:
        if self.buffer_size <= self.delta:
            raise ValueError(f"buffer_size ({self.buffer_size}) must exceed delta ({self.delta}): the outer step's "
                             f"Hessian batch is drawn from the episodes older than the last delta")
        return self

    def smoke(self) -> Config:  # past the warm-up within the smoke run's episodes
        return super().smoke().model_copy(update={"first_mul": 1, "inner_mul": 1, "hess_mul": 2})


def check_task(config: PolicyGradientConfig, env: gym.Env) -> None:
    """The task must be one whose steps report the heuristic's reward (``info["aux_reward"]``)."""
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.action_space.sample())
    if AUX_KEY not in info:
        raise ConfigError(f"task {config.task}: {config.agent} learns from a primary reward and a heuristic's "
                          f"reward in info['{AUX_KEY}'], which this task does not report (the aligngym/Shaping* "
                          f"tasks do)")
    if not isinstance(env.action_space, (gym.spaces.Discrete, gym.spaces.Box)):
        raise ConfigError(f"task {config.task}: {config.agent} needs Discrete or Box actions, not {env.action_space}")
    space = env.observation_space
    if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
        raise ConfigError(f"task {config.task}: {config.agent}'s features read vector observations, not {space}")


# ---------------------------------------------------------------------- features and policy
class Features(torch.nn.Module):
    """Fixed features of an observation (nothing in here is learned)."""

    def __init__(self, config: PolicyGradientConfig, env: gym.Env, seed: int) -> None:
        super().__init__()
        self.kind = config.features
        space = env.observation_space
        dims = int(np.prod(space.shape))
        bounds = getattr(env.unwrapped, "feature_bounds", None)
        low, high = (np.zeros(dims), np.ones(dims)) if bounds is None else map(np.asarray, bounds)
        self.scaled = bounds is not None
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32))
        self.register_buffer("span", torch.as_tensor(np.asarray(high) - np.asarray(low), dtype=torch.float32))
        if self.kind == "fourier":
            order = config.fourier_order
            if (order + 1) ** dims > 4096:
                raise ConfigError(f"features: a coupled Fourier basis of order {order} on {dims} dimensions has "
                                  f"{(order + 1) ** dims} features; lower fourier_order or use random_relu")
            grid = np.stack(np.meshgrid(*[np.arange(order + 1)] * dims, indexing="ij"), -1).reshape(-1, dims)
            self.register_buffer("coefficients", torch.as_tensor(grid.T, dtype=torch.float32))
            self.size = grid.shape[0]
        elif self.kind == "tiles":
            if bounds is None:
                raise ConfigError(f"features: tiles needs an observation range; {config.task} has no feature_bounds")
            self.tiles, self.tilings, self.dims = config.tiles, config.tilings, dims
            self.size = config.tilings * (config.tiles + 1) ** dims
        else:
            generator = torch.Generator().manual_seed(seed)
            layer = torch.nn.Linear(dims, config.hidden)
            with torch.no_grad():  # PyTorch's default initialisation, from the run's own stream
                bound = 1 / math.sqrt(dims)
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)
            self.register_buffer("weight", layer.weight.detach().clone())
            self.register_buffer("bias", layer.bias.detach().clone())
            self.size = config.hidden

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.kind == "random_relu":
            return torch.relu(obs @ self.weight.T + self.bias)
        x = (obs - self.low) / self.span if self.scaled else obs
        if self.kind == "fourier":
            return torch.cos(math.pi * (x @ self.coefficients))
        # tiling i is shifted by i / tilings of a tile; each of its (tiles + 1)^dims cells is one feature
        x = x.clamp(0.0, 1.0) * self.tiles
        offsets = torch.arange(self.tilings, dtype=x.dtype, device=x.device) / self.tilings
        cells = torch.floor(x.unsqueeze(-2) + offsets.unsqueeze(-1)).long().clamp(0, self.tiles)  # [..., T, d]
        strides = (self.tiles + 1) ** torch.arange(self.dims, device=x.device)
        index = (cells * strides).sum(-1) + torch.arange(self.tilings, device=x.device) * (self.tiles + 1) ** self.dims
        out = torch.zeros(*x.shape[:-1], self.size, dtype=x.dtype, device=x.device)
        return out.scatter_(-1, index, 1.0 / self.tilings)


class LinearPolicy(Policy):
    """A linear policy on fixed features: softmax over discrete actions, or a Gaussian of fixed
    standard deviation whose mean is ``sigmoid(linear) x (high - low) + low``. It always samples (a
    policy-gradient learner's behaviour is its stochastic policy; the paper's curves are its returns)."""

    def __init__(self, config: PolicyGradientConfig, env: gym.Env, features: Features) -> None:
        super().__init__(action_space=env.action_space, observation_space=env.observation_space,
                         action_bound_method=None)
        self.features = features
        space = env.action_space
        self.discrete = isinstance(space, gym.spaces.Discrete)
        outputs = int(space.n) if self.discrete else int(np.prod(space.shape))
        self.linear = torch.nn.Linear(features.size, outputs)
        if not self.discrete:
            self.register_buffer("low", torch.as_tensor(space.low, dtype=torch.float32))
            self.register_buffer("span", torch.as_tensor(space.high - space.low, dtype=torch.float32))
        self.std = config.policy_std

    @staticmethod
    def _compile() -> None:
        """Nothing: tianshou compiles its numba return helpers (GAE, n-step), seconds per process, which
        this policy never calls."""

    def params(self) -> dict[str, torch.Tensor]:
        return dict(self.linear.named_parameters())

    def log_prob_entropy(self, params: dict[str, torch.Tensor], feats: torch.Tensor,
                         act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``log pi(act | feats)`` and the policy's entropy there, with the linear layer's ``params``
        (closed forms: cheaper than torch.distributions under torch.func's transforms)."""
        out = torch.nn.functional.linear(feats, params["weight"], params["bias"])
        if self.discrete:
            log_probs = torch.log_softmax(out, -1)
            chosen = log_probs.gather(-1, act.long().unsqueeze(-1)).squeeze(-1)
            return chosen, -(log_probs.exp() * log_probs).sum(-1)
        mean = torch.sigmoid(out) * self.span + self.low
        dims = mean.shape[-1]
        log_prob = (-0.5 * ((act - mean) / self.std) ** 2).sum(-1) - dims * (math.log(self.std) + 0.5 * math.log(2 * math.pi))
        entropy = torch.full_like(log_prob, dims * (0.5 + 0.5 * math.log(2 * math.pi) + math.log(self.std)))
        return log_prob, entropy

    def sample(self, feats: torch.Tensor) -> torch.Tensor:
        out = self.linear(feats)
        if self.discrete:
            return torch.multinomial(torch.softmax(out, -1), 1).squeeze(-1)
        mean = torch.sigmoid(out) * self.span + self.low
        return mean + self.std * torch.randn_like(mean)

    def forward(self, batch: Batch, state: Any = None, **kwargs: Any) -> Batch:
        device = self.linear.weight.device
        with torch.no_grad():
            obs = torch.as_tensor(np.asarray(batch.obs, dtype=np.float32), device=device)
            act = self.sample(self.features(obs))
        return Batch(act=act.cpu().numpy(), state=state)

    def map_action(self, act: Any) -> Any:  # the env gets the sample clipped to its box; the buffer keeps the sample
        if self.discrete:
            return act
        return np.clip(act, self.action_space.low, self.action_space.high)


# ---------------------------------------------------------------------- episodes
ARRAYS = ("obs", "act", "rew", "aux", "mask")  # an EpisodeBuffer's arrays


class EpisodeBuffer:
    """The last ``capacity`` episodes, padded to the horizon (``mask`` marks real steps)."""

    def __init__(self, capacity: int, horizon: int, obs_shape: tuple[int, ...], act_shape: tuple[int, ...],
                 discrete: bool) -> None:
        self.capacity, self.horizon = capacity, horizon
        self.obs = np.zeros((capacity, horizon, *obs_shape), dtype=np.float32)
        self.act = np.zeros((capacity, horizon, *act_shape), dtype=np.int64 if discrete else np.float32)
        self.rew = np.zeros((capacity, horizon), dtype=np.float32)
        self.aux = np.zeros((capacity, horizon), dtype=np.float32)
        self.mask = np.zeros((capacity, horizon), dtype=np.float32)
        self.pos = 0  # where the next episode goes
        self.size = 0

    def add(self, record: Batch) -> None:
        n = len(record)
        if n > self.horizon:
            raise RuntimeError(f"an episode of {n} steps is longer than the task's time limit {self.horizon}")
        i = self.pos
        for name in ARRAYS:
            getattr(self, name)[i] = 0
        self.obs[i, :n] = np.asarray(record.obs, dtype=np.float32).reshape(n, *self.obs.shape[2:])
        self.act[i, :n] = np.asarray(record.act).reshape(n, *self.act.shape[2:])
        self.rew[i, :n] = record.rew
        self.aux[i, :n] = record.info[AUX_KEY]
        self.mask[i, :n] = 1.0
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def last(self, k: int) -> np.ndarray:
        """Slots of the last ``k`` episodes."""
        k = min(k, self.size)
        return (self.pos - 1 - np.arange(k)) % self.capacity

    def sample(self, n: int, rng: np.random.RandomState, skip_last: int = 0) -> np.ndarray:
        """``n`` slots drawn with replacement from all but the last ``skip_last`` episodes."""
        older = self.size - skip_last
        if older <= 0:
            return np.zeros(0, dtype=np.int64)
        return (self.pos - 1 - skip_last - rng.randint(0, older, size=n)) % self.capacity

    def batch(self, slots: np.ndarray, features: Features, device: torch.device) -> dict[str, torch.Tensor]:
        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a[slots], device=device)
        obs = tensor(self.obs)
        return {"feats": features(obs), "act": tensor(self.act), "rew": tensor(self.rew), "aux": tensor(self.aux),
                "mask": tensor(self.mask)}

    def state_dict(self) -> dict[str, Any]:
        """The filled slots only (slots fill from 0: a checkpoint early in a run is small)."""
        return {**{name: getattr(self, name)[:self.size] for name in ARRAYS}, "pos": self.pos, "size": self.size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        size = int(state["size"])
        for name in ARRAYS:
            value, array = np.asarray(state[name]), getattr(self, name)
            if value.shape != (size, *array.shape[1:]) or size > self.capacity:
                raise ValueError(f"buffer {name} of shape {value.shape}, expected ({size}, {array.shape[1:]}) "
                                 f"in {self.capacity} slots")
            array[:] = 0
            array[:size] = value
        self.pos, self.size = int(state["pos"]), size


def _discount_matrix(length: int, gamma: torch.Tensor) -> torch.Tensor:
    """``W[k, t] = gamma^(k - t)`` for ``k >= t``, else 0: ``r @ W`` sums each row's discounted tail."""
    steps = torch.arange(length, device=gamma.device, dtype=gamma.dtype)
    lag = steps.view(-1, 1) - steps.view(1, -1)  # [k, t] = k - t
    return torch.where(lag >= 0, gamma ** lag.clamp(min=0), torch.zeros((), dtype=gamma.dtype, device=gamma.device))


def discounted_returns(rewards: torch.Tensor, gamma: torch.Tensor | float) -> torch.Tensor:
    """``G_t = sum_{k >= t} gamma^(k - t) r_k`` of each row of ``rewards`` [B, H] (differentiable in gamma).

    In blocks of about sqrt(H) steps: the returns within each block by its ``b x b`` discount matrix,
    the return from each block's first step on by the ``n x n`` one of the block starts (discount
    gamma^b), each step then adding gamma^(steps to its block's end) times the next block's return.
    O(H sqrt(H)) where one H x H matrix is O(H^2) (MountainCar's 2000 steps: 4M powers per call),
    and only non-negative powers of gamma, so a small learned discount underflows to 0, never to inf."""
    horizon = rewards.shape[-1]
    gamma = torch.as_tensor(gamma, dtype=rewards.dtype, device=rewards.device)
    block = max(1, math.isqrt(horizon - 1) + 1) if horizon > 1 else 1
    blocks = -(-horizon // block)
    padded = torch.nn.functional.pad(rewards, (0, blocks * block - horizon)).unflatten(-1, (blocks, block))
    within = padded @ _discount_matrix(block, gamma)  # [..., n, b]: returns to each block's end
    starts = within[..., 0] @ _discount_matrix(blocks, gamma ** block)  # [..., n]: G at each block's start
    following = torch.nn.functional.pad(starts[..., 1:], (0, 1)).unsqueeze(-1)  # G at the next block's start
    to_end = gamma ** torch.arange(block, 0, -1, device=rewards.device, dtype=rewards.dtype)  # gamma^(b - t)
    return (within + to_end * following).flatten(-2)[..., :horizon]


def reinforce_objective(policy: LinearPolicy, params: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                        returns: torch.Tensor, entropy: float) -> torch.Tensor:
    """The official REINFORCE objective: the mean over episodes and the horizon of ``mask log pi G``,
    plus ``entropy x`` the mean entropy of the real steps."""
    log_prob, policy_entropy = policy.log_prob_entropy(params, batch["feats"], batch["act"])
    mask = batch["mask"]
    objective = (mask * log_prob * returns).mean()
    if entropy > 0:
        objective = objective + entropy * (policy_entropy * mask).sum() / mask.sum().clamp(min=1.0)
    return objective


def neumann_inverse(hvp: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]], v: dict[str, torch.Tensor],
                    steps: int, alpha: float) -> dict[str, torch.Tensor]:
    """``H^-1 v`` by the truncated Neumann series ``-alpha sum_{j=0..steps} (I + alpha H)^j v`` (Lorraine et
    al. 2020, Algorithm 3, as the official code runs it), for the Hessian H of a maximum (negative
    definite; it converges when every eigenvalue of ``alpha H`` lies in (-2, 0)). ``hvp(u)``: H u."""
    term, total = dict(v), dict(v)
    for _ in range(steps):
        hv = hvp(term)
        term = {n: term[n] + alpha * hv[n] for n in term}
        total = {n: total[n] + term[n] for n in total}
    return {n: -alpha * x for n, x in total.items()}


def optimizer(config: PolicyGradientConfig, params: Any, lr: float) -> torch.optim.Optimizer:
    return (torch.optim.RMSprop if config.optimizer == "rmsprop" else torch.optim.Adam)(params, lr=lr)


class LearnedReward(torch.nn.Module):
    """r_phi(s) = phi1(s) + phi2(s) r_primary + phi3(s) r_aux and gamma_phi = sigmoid(param)."""

    def __init__(self, config: Config, features: Features) -> None:
        super().__init__()
        self.form, self.learn_primary = config.reward_form, config.learn_primary_weight
        if self.form == "state":
            self.phi = torch.nn.Linear(features.size, 3)
        else:  # HalfCheetah's: a bias-only layer started at 1, read as (phi1 - 1, phi2, phi3): the naive sum
            self.phi = torch.nn.Parameter(torch.ones(3))
        self.gamma_param = torch.nn.Parameter(torch.tensor(float(config.gamma_init)))

    def weights(self, params: dict[str, torch.Tensor], feats: torch.Tensor) -> torch.Tensor:
        """[..., 3]: phi1, phi2, phi3 at each step (phi2 = 1 unless learned)."""
        if self.form == "state":
            out = feats @ params["phi.weight"].T + params["phi.bias"]
        else:  # the official (x1 - 1) + r + x3 aux, x the bias-only layer (its L2 pulls x, not phi, to 0)
            out = (params["phi"] - torch.tensor([1.0, 0.0, 0.0], device=feats.device)).expand(*feats.shape[:-1], 3)
        if not self.learn_primary:
            out = torch.cat([out[..., :1], torch.ones_like(out[..., 1:2]), out[..., 2:]], -1)
        return out

    def reward(self, params: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        w = self.weights(params, batch["feats"])
        return w[..., 0] + w[..., 1] * batch["rew"] + w[..., 2] * batch["aux"]

    @staticmethod
    def discount(params: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.sigmoid(params["gamma_param"])


# ---------------------------------------------------------------------- the learners
class Learner:
    """The inner learner: the policy and its episodes, with its optimiser and random streams. A
    subclass says what follows each ``delta`` episodes (:meth:`update`)."""

    def __init__(self, config: PolicyGradientConfig, env: gym.Env, device: torch.device) -> None:
        self.config, self.device = config, device
        policy_seed, feature_seed, sample_seed, self.episode_seed = map(
            int, np.random.SeedSequence(config.seed).generate_state(4))
        torch.manual_seed(policy_seed)
        self.features = Features(config, env, feature_seed).to(device)
        self.policy = LinearPolicy(config, env, self.features).to(device)
        self.actor_optim = optimizer(config, self.policy.linear.parameters(), config.actor_lr)
        horizon = env.spec.max_episode_steps if env.spec is not None else None
        if not horizon:
            raise ConfigError(f"task {config.task} has no time limit; {config.agent} pads episodes to one")
        self.buffer = EpisodeBuffer(config.buffer_size, horizon, env.observation_space.shape,
                                    () if self.policy.discrete else env.action_space.shape, self.policy.discrete)
        self.rng = np.random.RandomState(sample_seed)
        self.episodes = 0  # played so far

    def update(self) -> dict[str, float]:
        """What follows each ``delta`` episodes; returns statistics to log."""
        raise NotImplementedError

    def blend(self, records: list[Batch]) -> dict[str, float]:
        """Statistics of the reward the learner trains on, over the steps of ``records`` (none here)."""
        return {}

    def batch(self, slots: np.ndarray) -> dict[str, torch.Tensor]:
        return self.buffer.batch(slots, self.features, self.device)

    def policy_step(self, batch: dict[str, torch.Tensor], returns: torch.Tensor) -> float:
        """One REINFORCE ascent step of the policy on ``batch`` with the given returns-to-go."""
        objective = reinforce_objective(self.policy, self.policy.params(), batch, returns.detach(), self.config.entropy)
        self.actor_optim.zero_grad()
        (-objective).backward()
        if self.config.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.policy.linear.parameters(), self.config.clip_norm)
        self.actor_optim.step()
        return float(objective.detach())

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.linear.state_dict(), "actor_optim": self.actor_optim.state_dict(),
                "buffer": self.buffer.state_dict(), "rng": self.rng.get_state(legacy=False),
                "torch_random": torch_random_state(), "episodes": self.episodes}

    def load_state_dict(self, state: dict[str, Any], policy_only: bool = False) -> None:
        """Restore from a checkpoint's state (``policy_only``: the policy's weights, to evaluate)."""
        try:
            self.policy.linear.load_state_dict(state["policy"])
            if not policy_only:
                self.actor_optim.load_state_dict(state["actor_optim"])
                self.buffer.load_state_dict(to_numpy(state["buffer"]))
                _set_random_state(self.rng, to_numpy(state["rng"]))
                set_torch_random_state(state["torch_random"])  # the policy samples on the device
                self.episodes = int(state["episodes"])
                self.load_own(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"the checkpoint does not fit this config or is incomplete "
                                  f"({type(err).__name__}: {(str(err).splitlines() or [''])[0][:160]})") from None

    def load_own(self, state: dict[str, Any]) -> None:
        """A subclass's own part of the state."""


class BarfiLearner(Learner):
    """The inner learner with BARFI's learned reward and discount and the outer step."""

    def __init__(self, config: Config, env: gym.Env, device: torch.device) -> None:
        super().__init__(config, env, device)
        self.config: Config = config
        self.reward = LearnedReward(config, self.features).to(device)
        phi = [p for n, p in self.reward.named_parameters() if n != "gamma_param"]
        self.reward_optim = optimizer(config, phi, config.reward_lr)
        self.gamma_optim = optimizer(config, [self.reward.gamma_param], config.gamma_lr)
        self.warm = False  # whether the warm-up is over (the official ``not first_time``)

    def phi(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.reward.named_parameters()}

    def update(self) -> dict[str, float]:
        config, stats = self.config, {}
        if self.warm:
            stats.update(self.outer_step())
        else:  # the warm-up's naive step (also at the first call after it, as the official code)
            last = self.batch(self.buffer.last(config.delta))
            returns = discounted_returns((last["rew"] + last["aux"]) * last["mask"], self.reward.discount(self.phi()))
            stats["inner_objective"] = self.policy_step(last, returns)
        if self.episodes > config.first_mul + config.inner_mul:
            steps = config.delta * config.inner_mul + (0 if self.warm else config.first_mul)
            if not self.warm and not config.inner_steps_at_warmup_end:
                steps = 0
            phi, values = self.phi(), []
            for _ in range(steps):
                batch = self.batch(self.buffer.sample(min(config.batch_size, self.buffer.size), self.rng))
                returns = discounted_returns(self.reward.reward(phi, batch) * batch["mask"], self.reward.discount(phi))
                values.append(self.policy_step(batch, returns))
            if values:
                stats["inner_objective"] = float(np.mean(values))
            self.warm = True
        return stats

    def primary_gradient(self) -> dict[str, torch.Tensor]:
        """v: the gradient of the primary objective (discount ``gamma``, no entropy) on the last ``delta`` episodes."""
        last = self.batch(self.buffer.last(self.config.delta))
        returns = discounted_returns(last["rew"] * last["mask"], self.config.gamma)
        theta = {n: p.detach() for n, p in self.policy.params().items()}
        return grad(lambda t: reinforce_objective(self.policy, t, last, returns, 0.0))(theta)

    def hypergradient(self, batch: dict[str, torch.Tensor], v: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The gradient in phi of ``<grad_theta J_phi, p>``, p ~ H^-1 v by the Neumann series (first
        order: -v): the outer step's descent direction, without the penalties."""
        config, reward, policy = self.config, self.reward, self.policy
        theta = {n: p.detach() for n, p in policy.params().items()}
        phi = self.phi()

        def inner(t: dict[str, torch.Tensor], ph: dict[str, torch.Tensor]) -> torch.Tensor:
            returns = discounted_returns(reward.reward(ph, batch) * batch["mask"], reward.discount(ph))
            return reinforce_objective(policy, t, batch, returns, config.entropy)

        inner_grad = grad(inner, argnums=0)  # (theta, phi) -> grad_theta J_phi
        if config.hypergradient == "first_order":
            p = {n: -x for n, x in v.items()}
        else:  # H u as the vector-Jacobian product of grad_theta J_phi (H is symmetric): reverse over
            # reverse, its graph built once for every term (forward over reverse, torch.func.jvp per term,
            # takes 4-5x as long: benchmarks/barfi_speed.py)
            _, hessian_product = vjp(lambda t: inner_grad(t, phi), theta)
            p = neumann_inverse(lambda u: hessian_product(u)[0], v, config.neumann_steps, config.neumann_alpha)

        def alignment(ph: dict[str, torch.Tensor]) -> torch.Tensor:
            g = inner_grad(theta, ph)
            return sum((g[n] * p[n]).sum() for n in g)

        return grad(alignment)(phi)

    def outer_step(self) -> dict[str, float]:
        config, reward = self.config, self.reward
        v = self.primary_gradient()
        older = self.buffer.size - config.delta  # the official draws at most that many (with replacement)
        slots = self.buffer.sample(min(config.hess_mul * config.batch_size, older), self.rng, skip_last=config.delta)
        if not len(slots):
            return {}
        direction = self.hypergradient(self.batch(slots), v)
        self.reward_optim.zero_grad()
        self.gamma_optim.zero_grad()
        weights = [p for n, p in reward.named_parameters() if n != "gamma_param"]
        # the official L2_reg: the sum of each weight tensor's (unsquared) norm
        penalty = config.reward_l2 * sum(torch.linalg.norm(p) for p in weights) + config.gamma_l2 * torch.sigmoid(reward.gamma_param)
        penalty.backward()
        for name, param in reward.named_parameters():
            param.grad = param.grad + direction[name]
        self.reward_optim.step()
        self.gamma_optim.step()
        return {"hypergradient_norm": float(torch.sqrt(sum((d ** 2).sum() for d in direction.values()))),
                "primary_gradient_norm": float(torch.sqrt(sum((x ** 2).sum() for x in v.values())))}

    def blend(self, records: list[Batch]) -> dict[str, float]:
        """The learned weights averaged over the steps of ``records`` and the discount: ``phi_bias``,
        ``phi_primary``, ``phi_aux``, ``gamma``."""
        with torch.no_grad():
            obs = torch.as_tensor(np.concatenate([np.asarray(r.obs, dtype=np.float32) for r in records]),
                                  device=self.device)
            phi = self.phi()
            w = self.reward.weights(phi, self.features(obs)).mean(0)
            return {"phi_bias": float(w[0]), "phi_primary": float(w[1]), "phi_aux": float(w[2]),
                    "gamma": float(self.reward.discount(phi))}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "reward": self.reward.state_dict(), "reward_optim": self.reward_optim.state_dict(),
                "gamma_optim": self.gamma_optim.state_dict(), "warm": self.warm}

    def load_own(self, state: dict[str, Any]) -> None:
        self.reward.load_state_dict(state["reward"])
        self.reward_optim.load_state_dict(state["reward_optim"])
        self.gamma_optim.load_state_dict(state["gamma_optim"])
        self.warm = bool(state["warm"])


def train_loop(config: PolicyGradientConfig, run: Run, state: dict[str, Any] | None, scope: str,
               learner_class: type[Learner]) -> None:
    """Play ``delta`` episodes, update, log; checkpoints and exact resume. ``scope``: the TensorBoard
    section of the learner's own statistics (``barfi``, ``reinforce``)."""
    device = resolve_device(config.device)
    env = make_env(config)
    learner = learner_class(config, env, device)
    env.close()
    if state is not None:
        learner.load_state_dict(state)
    bar = tqdm(total=config.episodes, initial=learner.episodes, desc=run.dir.name, unit="ep",
               disable=not config.show_progress, dynamic_ncols=True)
    since_save = 0
    try:
        while learner.episodes < config.episodes:
            # groups of delta episodes start at multiples of delta (a run whose length is not one ends in
            # a shorter group, which a longer resumed run completes); episode k of a group started at g
            # resets with seed(g) + k - g
            offset = learner.episodes % config.delta
            n = min(config.delta - offset, config.episodes - learner.episodes)
            group = learner.episodes - offset
            seed = int(np.random.SeedSequence([learner.episode_seed, group]).generate_state(1)[0] % 2**31) + offset
            played = play_episodes(config, learner.policy, n, seed)
            for record in played.records:
                learner.buffer.add(record)
            step = learner.episodes  # the first of these episodes
            learner.episodes += n
            stats = learner.update() if learner.episodes % config.delta == 0 else {}
            check_finite(learner.policy, learner.episodes)
            aux = played.info.get(AUX_KEY, np.zeros_like(played.returns))
            run.log("train", step, {"primary_return": float(played.returns.mean()), "aux_return": float(aux.mean()),
                                    "length": float(played.lengths.mean())})
            run.log(scope, step, {**stats, **learner.blend(played.records)})
            bar.update(n)
            bar.set_postfix(ret=f"{played.returns.mean():.1f}")
            since_save += n
            if since_save >= config.checkpoint_every or learner.episodes >= config.episodes or run.stopping():
                run.save({"step": learner.episodes, **learner.state_dict()})
                since_save = 0
            if run.stopping() and learner.episodes < config.episodes:
                raise run.interrupted(learner.episodes)
    finally:
        bar.close()
    scores = evaluate_learner(config, learner, config.eval_episodes)
    run.log("eval", config.episodes, {k.split("/", 1)[1]: v for k, v in scores.items() if k.startswith("eval/")})
    run.writer.flush()
    _plot(run, config, scope)


def _plot(run: Run, config: PolicyGradientConfig, scope: str) -> None:
    """``curves.png``: the primary return over training and, for BARFI, the learned weights and discount."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from aligngym.agents.marl.plots import rolling_mean

    tags = ("train/primary_return", f"{scope}/phi_bias", f"{scope}/phi_primary", f"{scope}/phi_aux", f"{scope}/gamma")
    curves = read_curves(run.dir, tags)
    panels = [t for t in tags if len(curves[t][0])]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.8), squeeze=False)
    for ax, tag in zip(axes[0], panels):
        steps, values = curves[tag]
        ax.plot(steps, values, lw=0.6, alpha=0.4)
        ax.plot(steps, rolling_mean(values, max(1, len(values) // 25)), lw=1.5)
        ax.set_title(tag.split("/")[1], fontsize=9)
        ax.set_xlabel("episode")
    fig.suptitle(f"{config.agent} on {config.task} {config.task_options or ''}", fontsize=9)
    fig.tight_layout()
    run.figure(f"{scope}/curves", fig, config.episodes, png="curves.png")


def evaluate_learner(config: PolicyGradientConfig, learner: Learner, episodes: int) -> dict[str, Any]:
    played = play_episodes(config, learner.policy, episodes, seed=10_000_000)
    aux = played.info.get(AUX_KEY, np.zeros_like(played.returns))
    return {"eval/return": float(played.returns.mean()), "eval/return_std": float(played.returns.std()),
            "eval/aux_return": float(aux.mean()), "eval/length": float(played.lengths.mean()),
            "episode_returns": played.returns.tolist()}


def evaluate_state(config: PolicyGradientConfig, state: dict[str, Any], episodes: int) -> dict[str, Any]:
    """``aligngym eval``: the run's policy (sampling, as it trained) over ``episodes`` fresh episodes."""
    device = resolve_device(config.device)
    env = make_env(config)
    learner = Learner(config, env, device)  # the policy alone
    env.close()
    learner.load_state_dict(state, policy_only=True)
    return evaluate_learner(config, learner, episodes)


def train(config: Config, run: Run, state: dict[str, Any] | None) -> None:
    train_loop(config, run, state, "barfi", BarfiLearner)


def evaluate(config: Config, state: dict[str, Any], episodes: int) -> dict[str, Any]:
    return evaluate_state(config, state, episodes)
