"""``aligngym/SlipperyFrozenLake-v0``: the 4x4 FrozenLake with a tunable slip (DoC's FrozenLake).

Gymnasium's ``FrozenLake-v1`` on its 4x4 map, with the probability of moving as intended as an
option (the DoC code reads it as ``no_slip_prob`` from a patched gym; stock Gymnasium calls it
``success_rate``), one-hot observations as DoC feeds its networks, and the optimal policy computed
exactly, so that the dataset's behaviour needs no trained agent.

::

    S F F F      S start, F frozen, H hole, G goal
    F H F H      states are numbered row by row: s = 4 row + col
    F F F H
    H F F G

=================  ============================================================================
Observation        ``Box(0, 1, (16,), float32)``: one-hot of the agent's cell
Action             ``Discrete(4)``: 0 left, 1 down, 2 right, 3 up (Gymnasium's numbering)
Dynamics           the agent moves in the intended direction with probability ``q`` and in each
                   of the two perpendicular directions with ``(1 - q) / 2``; a move into the
                   border leaves it where it is
Reward             1 on entering G, else 0
Termination        on entering H or G (a step taken after that stays there, reward 0);
                   truncation after 100 steps by Gymnasium's ``TimeLimit``
                   (``max_episode_steps=100``, as ``FrozenLake-v1``'s 4x4 registration)
info               ``state``: the agent's cell index
Options            ``success_prob`` (q, default 1/3, stock slippery FrozenLake; 1 is the
                   deterministic lake): a number in [0, 1], else ``ValueError``;
                   ``render_mode="ansi"``: the map as text with the agent's cell in brackets
Optimum            :func:`value_iteration` gives the optimal policy for a ``q``,
                   :func:`success_rate` its exact probability of reaching G within 100 steps
                   (0.740 for q = 1/3, 1.0 for q = 1)
Behaviour (data)   epsilon-greedy (epsilon 0.4: a uniformly random action with probability 0.4,
                   else the optimal one) over :func:`value_iteration`'s policy
=================  ============================================================================

Departure from the official code: DoC's FrozenLake data come from a DQN checkpoint (fc(100),
100k steps) made epsilon-greedy with epsilon 0.4; here exact value iteration on the known
dynamics replaces that DQN, so the behaviour is the optimal policy rather than an approximation of
it, and needs no training or stored weights.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from aligngym.envs.stochastic.bandit import check_probability

ENV_ID = "aligngym/SlipperyFrozenLake-v0"
MAX_EPISODE_STEPS = 100
DEFAULT_SUCCESS_PROB = 1.0 / 3.0
LAKE_MAP = ("SFFF", "FHFH", "FFFH", "HFFG")
LEFT, DOWN, RIGHT, UP = 0, 1, 2, 3
_MOVES = {LEFT: (0, -1), DOWN: (1, 0), RIGHT: (0, 1), UP: (-1, 0)}
N_ROWS, N_COLS = len(LAKE_MAP), len(LAKE_MAP[0])
N_STATES, N_ACTIONS = N_ROWS * N_COLS, 4
CELLS = np.array([cell for row in LAKE_MAP for cell in row])  # letter of each state
START = int(np.flatnonzero(CELLS == "S")[0])
TERMINAL = np.isin(CELLS, ("H", "G"))  # entering one of these ends the episode
GOAL = CELLS == "G"


def _moved(state: int, direction: int) -> int:
    row, col = divmod(state, N_COLS)
    d_row, d_col = _MOVES[direction]
    return int(np.clip(row + d_row, 0, N_ROWS - 1) * N_COLS + np.clip(col + d_col, 0, N_COLS - 1))


# NEXT_STATE[s, d]: the cell reached from s by a move in direction d (the slip picks d)
NEXT_STATE = np.array([[_moved(s, d) for d in range(N_ACTIONS)] for s in range(N_STATES)], dtype=np.int64)


def direction_probs(success_prob: float) -> np.ndarray:
    """``D[a, d]``: the probability that action ``a`` moves the agent in direction ``d``: ``q`` for
    ``d = a``, ``(1 - q) / 2`` for each perpendicular one (``a - 1`` and ``a + 1`` mod 4), 0 for the
    opposite one."""
    slip = (1.0 - success_prob) / 2.0
    table = np.zeros((N_ACTIONS, N_ACTIONS))
    for action in range(N_ACTIONS):
        table[action, action] += success_prob
        table[action, (action - 1) % N_ACTIONS] += slip
        table[action, (action + 1) % N_ACTIONS] += slip
    return table


def transition_matrix(success_prob: float) -> np.ndarray:
    """``P[s, a, s']``, the probability of reaching ``s'`` from ``s`` under ``a``. Holes and the goal
    are absorbing (the env ends the episode on entering them)."""
    moves = direction_probs(success_prob)
    table = np.zeros((N_STATES, N_ACTIONS, N_STATES))
    for state in range(N_STATES):
        if TERMINAL[state]:
            table[state, :, state] = 1.0
            continue
        for direction in range(N_ACTIONS):
            table[state, :, NEXT_STATE[state, direction]] += moves[:, direction]
    return table


def value_iteration(success_prob: float, gamma: float = 0.99,
                    tol: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
    """The optimal policy of the lake with slip ``success_prob`` for the discounted return.

    Returns ``(policy, q_values)``: ``policy[s]`` the greedy action in state ``s`` (0 in holes and
    the goal, where nothing is decided), ``q_values[s, a]`` the optimal discounted action values.
    The discount (0.99, the usual one of a DQN such as DoC's) makes reaching the goal sooner worth
    more, which is what the 100-step limit rewards; undiscounted reaching probabilities would tie
    pressing against a wall forever with progress. Ties left after that go to the lowest action index
    (``argmax`` of values rounded to 10 decimals), so the policy is the same on every machine.

    This is the optimal *stationary, discounted* policy, the policy a converged DQN represents; it
    need not maximise the probability of arriving within exactly 100 steps. For q = 1/3 it reaches
    the goal within 100 steps with probability 0.740, against 0.744 for the best policy that also
    knows the time left (:func:`best_success_rate`); the gap is larger between q = 0.5 and 0.9
    (0.725 against 0.822 at q = 0.6), where a policy that cannot see the clock must choose between
    a slow safe path and a fast risky one.
    """
    if not 0.0 < gamma < 1.0:
        raise ValueError(f"gamma must lie in (0, 1), got {gamma!r}")
    table = transition_matrix(success_prob)
    # reward 1 for entering the goal; nothing follows a hole or the goal
    reward = table @ GOAL.astype(np.float64)  # [s, a]: probability of entering the goal
    continues = table * ~TERMINAL[None, None, :]
    values = np.zeros(N_STATES)
    while True:  # a gamma-contraction: converges
        q_values = reward + gamma * continues @ values
        q_values[TERMINAL] = 0.0
        change = np.max(np.abs(q_values.max(axis=1) - values))
        values = q_values.max(axis=1)
        if change < tol:
            break
    # round before argmax: actions equal in exact arithmetic may differ in the last bits
    policy = np.argmax(np.round(q_values, 10), axis=1).astype(np.int64)
    return policy, q_values


def epsilon_greedy_probs(policy: np.ndarray, epsilon: float) -> np.ndarray:
    """``pi[s, a]`` of acting uniformly at random with probability ``epsilon``, else ``policy[s]``
    (so the greedy action has probability ``1 - epsilon + epsilon / 4``)."""
    probs = np.full((len(policy), N_ACTIONS), epsilon / N_ACTIONS)
    probs[np.arange(len(policy)), policy] += 1.0 - epsilon
    return probs


def success_rate(policy: np.ndarray, success_prob: float, horizon: int = MAX_EPISODE_STEPS) -> float:
    """The exact probability of reaching the goal from the start within ``horizon`` steps.

    ``policy`` is either one action per state (``(16,)`` ints) or action probabilities per state
    (``(16, 4)``, e.g. :func:`epsilon_greedy_probs`); the probability is propagated step by step,
    so it needs no sampling.
    """
    policy = np.asarray(policy)
    probs = np.eye(N_ACTIONS)[policy] if policy.ndim == 1 else policy.astype(np.float64)
    if probs.shape != (N_STATES, N_ACTIONS):
        raise ValueError(f"policy must have shape ({N_STATES},) or ({N_STATES}, {N_ACTIONS}), got {policy.shape}")
    step = np.einsum("sa,sat->st", probs, transition_matrix(success_prob))
    occupancy = np.zeros(N_STATES)
    occupancy[START] = 1.0
    reached = 0.0
    for _ in range(horizon):
        occupancy = occupancy @ step
        reached += occupancy[GOAL].sum()
        occupancy[TERMINAL] = 0.0  # ended episodes leave the lake
    return float(reached)


def best_success_rate(success_prob: float, horizon: int = MAX_EPISODE_STEPS) -> float:
    """The highest probability any policy has of reaching the goal within ``horizon`` steps,
    including policies that know the steps left (finite-horizon dynamic programming): the ceiling
    for agents whose context includes the timestep, slightly above :func:`value_iteration`'s."""
    table = transition_matrix(success_prob)
    reward = table @ GOAL.astype(np.float64)
    continues = table * ~TERMINAL[None, None, :]
    values = np.zeros(N_STATES)  # values[s]: best probability of arriving with the steps left so far
    for _ in range(horizon):
        values = (reward + continues @ values).max(axis=1)
        values[TERMINAL] = 0.0
    return float(values[START])


class SlipperyFrozenLakeEnv(gym.Env[np.ndarray, np.int64]):
    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, success_prob: float = DEFAULT_SUCCESS_PROB, render_mode: str | None = None) -> None:
        self.success_prob = check_probability("success_prob", success_prob, ENV_ID)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"{ENV_ID}: render_mode must be one of {self.metadata['render_modes']} or None, "
                             f"got {render_mode!r}")
        self.render_mode = render_mode
        self.observation_space = spaces.Box(0.0, 1.0, (N_STATES,), np.float32)
        self.action_space = spaces.Discrete(N_ACTIONS)
        # cumulative probabilities of the three outcomes: perpendicular (a - 1), intended, perpendicular (a + 1)
        slip = (1.0 - self.success_prob) / 2.0
        self._thresholds = np.array([slip, slip + self.success_prob])
        self.state = START

    def _observation(self) -> np.ndarray:
        observation = np.zeros(N_STATES, dtype=np.float32)
        observation[self.state] = 1.0
        return observation

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.state = START
        return self._observation(), {"state": self.state}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"{ENV_ID}: action must be a direction 0..3 (left, down, right, up), got {action!r}")
        if TERMINAL[self.state]:
            return self._observation(), 0.0, True, False, {"state": self.state}
        turn = int(np.searchsorted(self._thresholds, self.np_random.random(), side="right")) - 1  # -1, 0, +1
        self.state = int(NEXT_STATE[self.state, (int(action) + turn) % N_ACTIONS])
        reward = float(GOAL[self.state])
        return self._observation(), reward, bool(TERMINAL[self.state]), False, {"state": self.state}

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        rows = []
        for row in range(N_ROWS):
            cells = [f"[{CELLS[s]}]" if s == self.state else f" {CELLS[s]} "
                     for s in range(row * N_COLS, (row + 1) * N_COLS)]
            rows.append("".join(cells))
        return "\n".join(rows) + "\n"
