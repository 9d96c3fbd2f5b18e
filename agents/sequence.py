"""What the sequence (neural) forms of DoC (:mod:`aligngym.agents.doc`) and the Decision Transformer
(:mod:`aligngym.agents.baselines.dt`) share: their config fields and how a form is chosen, the GPT-style
causal transformer over trajectory tokens, their batches of trajectory windows, their optimiser's
warm-up, and a policy that keeps each episode's history while it acts through tianshou's Collector.

**Which form.** Both agents have a tabular form (one-step tasks: the Bernoulli bandit,
:mod:`aligngym.agents.tabular`) and a sequence form (multi-step tasks: the slippery FrozenLake). A
config's ``form`` picks one: ``auto`` (the default) resolves, when the config is validated, to
``tabular`` for a task registered with ``max_episode_steps=1`` and to ``sequence`` for any other (the
resolved form is what the run folder's ``config.yaml`` records). The sequence form's defaults (each
agent's ``SEQUENCE_DEFAULTS``: DoC's official neural settings, AdamW lr 1e-4 ...) replace the tabular
ones for every key the file leaves out.

**The backbone** (:class:`TrajectoryTransformer`, the official ``PositionlessTFGPT2MainLayer`` rebuilt
from ``torch.nn`` blocks): each step ``t`` of a trajectory is three tokens ``(R_t, s_t, a_t)`` (what
``R`` holds is the agent's: DT's return-to-go, DoC's reward), each embedded by its own linear map (the
action by an embedding of its index), plus an embedding of the step's timestep within its episode (no
positional embedding: GPT-2 without positions, as the official), LayerNorm over the embeddings, dropout,
then ``layers`` pre-LayerNorm blocks (GPT-2's: attention and a ReLU MLP of width ``inner_dim``, each in a
residual, dropout 0.1) and a final LayerNorm. Attention is causal (a token sees itself and earlier
tokens) or, with ``reverse=True``, anti-causal (itself and later ones: DoC's future encoder); tokens
marked invalid (padding) are never attended to, except by themselves. Sizes: 3 layers, 1 head, width
128, inner 512, context 20 steps (the official ``n_layer``, ``n_head``, ``n_embd``, ``n_inner``,
``context_len``).

**Batches** (:func:`sample_windows`): :meth:`~aligngym.envs.data.dataset.OfflineDataset.sample_segments`
windows (right-padded, with a mask) as tensors; the window generator's seed is drawn from numpy's global
stream, which the runner checkpoints and restores, so a resumed run draws the same windows.

**Acting** (:class:`SequencePolicy`): a sequence policy needs the episode so far. The Collector already
carries a policy's ``state`` from one call to the next, one row per env, and zeroes the row of an env
whose episode ended; the policy keeps its last ``context_len`` steps there (observation, action, the
reward that followed, timestep, a filled flag), so a zeroed row is a new episode. The reward that
followed the previous action reaches the policy through the evaluation envs' ``info["step_reward"]``
(the runner's one change for stateful policies, :func:`aligngym.agents.offline.play_episodes`). The
history is fed left-aligned (the oldest kept step at position 0), so the causal stacks never see the
padding after it and read each env's output at its last real step.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from tianshou.algorithm.algorithm_base import Policy
from tianshou.data import Batch
from torch import nn

from aligngym.agents import tabular
from aligngym.agents.config import ConfigError
from aligngym.agents.offline import STEP_REWARD_KEY
from aligngym.agents.tabular import TabularConfig
from aligngym.envs.data.dataset import OfflineDataset

Form = Literal["auto", "tabular", "sequence"]


def task_horizon(task: str) -> int | None:
    """The ``max_episode_steps`` the task is registered with (None: none, or an unknown task)."""
    import aligngym.envs  # noqa: F401  (registers the ids)

    try:
        return gym.spec(task).max_episode_steps
    except gym.error.Error:
        return None


class SequenceConfig(TabularConfig):
    """The fields of an agent with both forms: the tabular ones (in each agent's ``Config``) and the
    sequence form's here; ``form`` picks one (the module docstring), ``SEQUENCE_DEFAULTS`` holds the
    sequence form's defaults of the fields both forms have."""

    sequence_defaults: ClassVar[dict[str, Any]] = {}

    form: Form = "auto"  # tabular (one-step tasks) or sequence (multi-step); auto: by the task's episode length
    context_len: int = Field(20, ge=1)  # sequence: steps of history the transformer sees (official context_len)
    embed_dim: int = Field(128, ge=1)  # sequence: token width (official n_embd)
    layers: int = Field(3, ge=1)  # sequence: transformer blocks (official n_layer)
    heads: int = Field(1, ge=1)  # sequence: attention heads (official n_head); must divide embed_dim
    inner_dim: int = Field(512, ge=1)  # sequence: width of each block's ReLU MLP (official n_inner)
    dropout: float = Field(0.1, ge=0, lt=1)  # sequence: dropout on embeddings, attention and residuals
    head_hidden: int = Field(256, ge=1)  # sequence: width of the two hidden layers of each output MLP
    warmup_steps: int = Field(1_000, ge=0)  # sequence: linear learning-rate warm-up (official 1000)
    weight_decay: float = Field(1e-4, ge=0)  # sequence: AdamW's decoupled weight decay
    grad_clip: float = Field(0.25, gt=0)  # sequence: global gradient-norm clip (official clipnorm)
    max_timestep: int | None = Field(None, ge=1)  # sequence: timesteps embedded (None: the task's step limit)

    @model_validator(mode="before")
    @classmethod
    def _resolve_form(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        form = data.get("form", "auto")
        if form == "auto" and isinstance(data.get("task"), str):
            form = "tabular" if task_horizon(data["task"]) == 1 else "sequence"
        if form == "sequence":
            data = {**cls.sequence_defaults, **data}
        return {**data, "form": form} if form != "auto" else data

    @model_validator(mode="after")
    def _heads_divide_width(self) -> SequenceConfig:
        if self.embed_dim % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide embed_dim ({self.embed_dim})")
        return self

    @property
    def sequence(self) -> bool:
        return self.form == "sequence"

    def check_env(self, env: gym.Env) -> None:
        if not self.sequence:
            super().check_env(env)
            return
        if not isinstance(env.action_space, gym.spaces.Discrete):
            raise ConfigError(f"{self.agent}'s sequence form needs discrete actions; {self.task} has {env.action_space}")
        space = env.observation_space
        if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
            raise ConfigError(f"{self.agent}'s sequence form reads vector observations; {self.task} has {space}")

    def timesteps_embedded(self, env: gym.Env) -> int:
        """Rows of the timestep embedding: ``max_timestep``, else the env's step limit, else 1000."""
        limit = env.spec.max_episode_steps if env.spec is not None else None
        return self.max_timestep or limit or 1_000


# ---------------------------------------------------------------------- the backbone
class TrajectoryTransformer(nn.Module):
    """``(R_t, s_t, a_t)`` tokens of ``T`` steps -> hidden states ``[B, T, 3, width]`` (index 0: the
    ``R`` token, 1: the state's, 2: the action's); the module docstring gives the architecture."""

    def __init__(self, obs_dim: int, actions: int, max_timestep: int, config: SequenceConfig) -> None:
        super().__init__()
        width = config.embed_dim
        self.max_timestep = max_timestep
        self.embed_return = nn.Linear(1, width)
        self.embed_state = nn.Linear(obs_dim, width)
        self.embed_action = nn.Embedding(actions, width)
        self.embed_timestep = nn.Embedding(max_timestep, width)
        self.embed_norm = nn.LayerNorm(width)
        self.embed_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(width, config.heads, config.inner_dim, config.dropout, activation="relu",
                                       batch_first=True, norm_first=True)
            for _ in range(config.layers))
        self.final_norm = nn.LayerNorm(width)
        self.heads = config.heads

    def attention_mask(self, valid: torch.Tensor, reverse: bool) -> torch.Tensor:
        """``[B heads, N, N]`` additive mask over ``N`` tokens: causal (or anti-causal), padding keys
        masked, each token always seeing itself (no row is all masked)."""
        n = valid.shape[1]
        ones = torch.ones(n, n, dtype=torch.bool, device=valid.device)
        blocked = ones.tril(-1) if reverse else ones.triu(1)  # True: may not attend
        blocked = blocked[None] | ~valid[:, None, :]
        blocked &= ~torch.eye(n, dtype=torch.bool, device=valid.device)[None]
        mask = torch.zeros(blocked.shape, device=valid.device).masked_fill(blocked, float("-inf"))
        return mask.repeat_interleave(self.heads, dim=0)

    def forward(self, returns: torch.Tensor, states: torch.Tensor, actions: torch.Tensor, timesteps: torch.Tensor,
                valid: torch.Tensor | None = None, reverse: bool = False) -> torch.Tensor:
        batch, steps = states.shape[:2]
        time = self.embed_timestep(timesteps.clamp(0, self.max_timestep - 1))
        tokens = torch.stack([self.embed_return(returns[..., None]) + time, self.embed_state(states) + time,
                              self.embed_action(actions) + time], dim=2).reshape(batch, 3 * steps, -1)
        hidden = self.embed_dropout(self.embed_norm(tokens))
        if valid is None:  # no padding a causal token could see: the plain causal mask
            mask = nn.Transformer.generate_square_subsequent_mask(3 * steps, device=states.device)
            if reverse:
                mask = mask.T
        else:
            mask = self.attention_mask(valid.repeat_interleave(3, dim=1), reverse)
        for block in self.blocks:
            hidden = block(hidden, src_mask=mask)
        return self.final_norm(hidden).reshape(batch, steps, 3, -1)


def mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    """Two ReLU hidden layers of ``hidden`` units (the official heads' MLP(256, 256))."""
    return nn.Sequential(nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, outputs))


# ---------------------------------------------------------------------- batches and the optimiser
def sample_windows(dataset: OfflineDataset, batch_size: int, length: int,
                   device: torch.device) -> dict[str, torch.Tensor]:
    """``batch_size`` windows of ``length`` steps (:meth:`OfflineDataset.sample_segments`) as tensors on
    ``device``: ``observations`` / ``next_observations`` ``[B, L, D]`` float, ``actions`` and
    ``timesteps`` ``[B, L]`` long, ``rewards`` / ``returns_to_go`` ``[B, L]`` float, ``mask`` ``[B, L]``
    bool. The generator's seed comes from numpy's global stream (checkpointed by the runner)."""
    rng = np.random.default_rng(np.random.randint(0, 2**63 - 1, dtype=np.int64))
    seg = dataset.sample_segments(batch_size, length, rng)
    out = {key: torch.as_tensor(seg[key], dtype=torch.float32, device=device)
           for key in ("observations", "next_observations", "rewards", "returns_to_go") if key in seg}
    out["actions"] = torch.as_tensor(seg["actions"], dtype=torch.long, device=device).reshape(batch_size, length)
    out["timesteps"] = torch.as_tensor(seg["timesteps"], dtype=torch.long, device=device)
    out["mask"] = torch.as_tensor(seg["mask"], dtype=torch.bool, device=device)
    return out


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over a window's real steps (``mask`` 1; padding counts nothing), 0 over none."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def action_cross_entropy(logits: torch.Tensor, actions: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The dataset actions' cross-entropy under ``logits`` (``[B, T, A]``), averaged over the real steps
    (``valid``, ``[B, T]`` of 0 / 1)."""
    cross_entropy = F.cross_entropy(logits.flatten(0, 1), actions.flatten(), reduction="none")
    return masked_mean(cross_entropy.view_as(valid), valid)


def previous_rewards(rewards: torch.Tensor) -> torch.Tensor:
    """``[B, T]``: the reward before each step (``r_{t-1}``; 0 at a window's first step)."""
    return torch.cat([torch.zeros_like(rewards[:, :1]), rewards[:, :-1]], dim=1)


def warmed_up_step(optim: Any, loss: torch.Tensor, updates: torch.Tensor, config: SequenceConfig) -> None:
    """One step of the tianshou optimiser ``optim`` (gradient-norm clip included) at the learning rate
    ``learning_rate x min(1, (updates + 1) / warmup_steps)``, the official linear warm-up; ``updates``
    (a buffer of the algorithm, so a checkpoint holds it) counts the steps taken."""
    scale = min(1.0, (int(updates) + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    for group in optim._optim.param_groups:
        group["lr"] = config.learning_rate * scale
    optim.step(loss)
    updates += 1


# ---------------------------------------------------------------------- acting with a history
class SequencePolicy(Policy):
    """Acts from the episode so far, kept in the Collector's ``state`` (the module docstring):
    a float32 array ``[envs, context_len, obs_dim + 4]`` whose columns are the observation, the action,
    the reward that followed it, the timestep and a filled flag, oldest step first."""

    def __init__(self, action_space: gym.spaces.Discrete, observation_space: gym.Space, context_len: int) -> None:
        super().__init__(action_space=action_space, observation_space=observation_space, action_bound_method=None)
        self.context_len = context_len
        self.obs_dim = int(np.prod(observation_space.shape))

    def act(self, states: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor, timesteps: torch.Tensor,
            lengths: torch.Tensor) -> torch.Tensor:
        """``[envs]`` action indices, given each env's history left-aligned, ``[envs, T, ...]``: ``lengths``
        real steps, the last one the current state (its action and the reward after it not known yet: 0;
        ``rewards[:, t]`` is the reward that followed ``actions[:, t]``)."""
        raise NotImplementedError

    def forward(self, batch: Batch, state: Any = None, **kwargs: Any) -> Batch:
        obs = np.asarray(batch.obs, dtype=np.float32).reshape(len(batch.obs), -1)
        envs, d = obs.shape[0], self.obs_dim
        history = (np.zeros((envs, self.context_len, d + 4), np.float32) if state is None
                   else np.array(state, dtype=np.float32, copy=True))
        filled = history[:, :, d + 3].sum(1).astype(np.int64)
        rewards = np.zeros(envs, np.float32)
        info = batch.get("info", None)
        if info is not None and STEP_REWARD_KEY in info:
            rewards = np.asarray(info[STEP_REWARD_KEY], dtype=np.float32).reshape(envs)
        rows = np.arange(envs)
        started = filled > 0
        history[rows[started], filled[started] - 1, d + 1] = rewards[started]  # what the last action earned
        timestep = np.where(started, history[rows, np.maximum(filled - 1, 0), d + 2] + 1, 0)
        full = filled == self.context_len
        history[full] = np.roll(history[full], -1, axis=1)
        slot = np.minimum(filled, self.context_len - 1)
        history[rows, slot] = 0.0
        history[rows, slot, :d] = obs
        history[rows, slot, d + 2] = timestep
        history[rows, slot, d + 3] = 1.0
        lengths = slot + 1
        steps = int(lengths.max())
        device = next(self.parameters()).device
        view = torch.as_tensor(history[:, :steps], device=device)
        action = self.act(view[..., :d], view[..., d].long(), view[..., d + 1], view[..., d + 2].long(),
                          torch.as_tensor(lengths, device=device))
        action_np = action.cpu().numpy()
        history[rows, slot, d] = action_np
        return Batch(act=action_np, state=history)

    @staticmethod
    def last_step(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``[envs, ...]``: each env's entry of ``hidden`` ``[envs, T, ...]`` at its last real step."""
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), lengths - 1]


def select_data(config: SequenceConfig, dataset: OfflineDataset) -> OfflineDataset:
    """The runner's hook before a run starts: the tabular form's check (one-step episodes, returns that
    are classes, :func:`aligngym.agents.tabular.select_data`); the sequence form trains on every episode."""
    return dataset if config.sequence else tabular.select_data(config, dataset)
