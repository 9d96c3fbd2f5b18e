"""``aligngym/ShapingGridWorld-v0``: BARFI's "almost 5x5" continuous gridworld (``barfi-gw``'s
``Maze_noreward`` / ``Maze_goodreward`` / ``Maze_badreward``).

The agent starts bottom left and must reach the goal square top right; each step is four short
sub-steps, so a step covers 0.18 of the unit square. The misleading heuristic pays for loitering in
the centre, which is worth far more than the goal (50 per sub-step against 100 once).

=================  ============================================================================
Observation        ``Box(0, 1, (2,), float32)``: the position ``(x, y)``; starts at
                   ``(0.125, 0.125)`` every episode
Action             ``Discrete(4)``, the official numbering: 0 ``+y`` (up), 1 ``+x`` (right),
                   2 ``-y`` (down), 3 ``-x`` (left) (the official comments, in screen
                   coordinates, call 0 "down" and 2 "up"; the goal is at large ``y``)
Dynamics           with probability 0.1 the action is replaced by a uniformly random one (of
                   all four, so the chosen one is kept with probability 0.925); then up to
                   ``SUB_STEPS = int(0.2 / 0.045) = 4`` sub-steps of ``0.045`` in its
                   direction; a sub-step that would leave ``[0, 1]^2`` is not taken and ends
                   the step; a sub-step that enters the goal ends the step
Reward (primary)   ``-0.1`` every step, ``+100`` more on the step that enters the goal
                   ``[0.75, 0.99]^2`` (99.9 on that step)
Termination        on entering the goal; truncation after 50 steps by Gymnasium's
                   ``TimeLimit`` (``max_episode_steps=50``); a step after the goal stays there
                   with reward 0 and aux 0
Aux (info)         ``info["aux_reward"]``, summed over the sub-steps taken (a blocked sub-step
                   pays nothing):
                   ``"none"``: 0;
                   ``"good"``: ``-((x - 0.87)^2 + (y - 0.87)^2)`` at each sub-step's new
                   position, minus its squared distance to the goal's centre (0 there, the
                   maximum; :func:`goal_distance_aux`);
                   ``"bad"``: ``+50`` per sub-step that lands in the centre square
                   ``[0.4, 0.6]^2`` (:func:`centre_bonus_aux`), never used up; 0 on the step
                   that enters the goal
info               ``aux_reward`` (float, 0.0 in ``reset``'s info); ``executed_action``: the
                   action the noise left (int)
feature_bounds     ``([0, 0], [1, 1])``: the official Fourier basis normalises by these (here the
                   identity); :data:`FEATURE_BOUNDS`
=================  ============================================================================

Departures from the official code:

- ``"good"``: the official ``dist()`` reads the goal's ``y`` where it means the agent's
  (``(pos1[0] - mid_x)**2 + (pos2[1] - mid_y)**2``), so its heuristic is
  ``-(x - 0.87)^2 - 0.0144`` and ignores ``y``. Here it uses both coordinates, as the paper
  intends.
- The official env counts the step before checking the horizon, so its 50th step is a no-op
  (no move, reward 0, ``done``): 49 moves per episode. Here all 50 steps move and cost -0.1,
  and the 50th is a truncation (``TimeLimit``) rather than a termination.
- On the step that enters the goal the official returns, as the terminal observation, the
  position before the last sub-step (it refreshes its state only when the step goes on); here
  the position reached, inside the goal.
- The noise is drawn from the env's seeded ``np_random`` (the official code uses the global
  ``np.random``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from aligngym.envs.shaping import SHAPING_EPISODE_STEPS, check_aux

ENV_ID = "aligngym/ShapingGridWorld-v0"
MAX_EPISODE_STEPS = SHAPING_EPISODE_STEPS[ENV_ID]
START = (0.125, 0.125)
STEP_UNIT = 0.045  # the official wall width 0.05 less 0.005: a sub-step never jumps a wall
SUB_STEPS = int(0.2 / STEP_UNIT)  # 4: the official max_step_length 0.2 in whole sub-steps
ACTION_NOISE = 0.1
STEP_REWARD = -0.1
GOAL_REWARD = 100.0
GOAL_REGION = (0.75, 0.75, 0.99, 0.99)  # (x_low, y_low, x_high, y_high), bounds included
GOAL_CENTRE = (0.87, 0.87)
CENTRE_REGION = (0.4, 0.4, 0.6, 0.6)  # where the "bad" heuristic pays
CENTRE_BONUS = 50.0
UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3
MOTIONS = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, -1.0], [-1.0, 0.0]])  # unit direction of each action
FEATURE_BOUNDS: tuple[np.ndarray, np.ndarray] = (np.zeros(2), np.ones(2))


def in_region(position: np.ndarray, region: tuple[float, float, float, float]) -> bool:
    """Whether ``position`` lies in the axis-aligned ``region`` (bounds included, as the official)."""
    x_low, y_low, x_high, y_high = region
    return bool(x_low <= position[0] <= x_high and y_low <= position[1] <= y_high)


def goal_distance_aux(position: np.ndarray) -> float:
    """The "good" heuristic of one sub-step: minus the squared distance to the goal's centre."""
    return -float((position[0] - GOAL_CENTRE[0]) ** 2 + (position[1] - GOAL_CENTRE[1]) ** 2)


def centre_bonus_aux(position: np.ndarray) -> float:
    """The "bad" heuristic of one sub-step: 50 inside the centre square, else 0."""
    return CENTRE_BONUS if in_region(position, CENTRE_REGION) else 0.0


def _no_aux(position: np.ndarray) -> float:
    return 0.0


_SUB_STEP_AUX = {"none": _no_aux, "good": goal_distance_aux, "bad": centre_bonus_aux}


class ShapingGridWorldEnv(gym.Env[np.ndarray, np.int64]):
    metadata = {"render_modes": []}
    feature_bounds: tuple[np.ndarray, np.ndarray] = FEATURE_BOUNDS

    def __init__(self, aux: str = "none") -> None:
        self.aux = check_aux(ENV_ID, aux)
        self._sub_step_aux = _SUB_STEP_AUX[self.aux]
        self.observation_space = spaces.Box(0.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Discrete(len(MOTIONS))
        self.position = np.array(START)

    def _observation(self) -> np.ndarray:
        return self.position.astype(np.float32)

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.position = np.array(START)
        return self._observation(), {"aux_reward": 0.0}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if not self.action_space.contains(action):
            raise ValueError(f"{ENV_ID}: action must be an int 0..3 (0 up, 1 right, 2 down, 3 left), "
                             f"got {action!r}")
        executed = int(action)
        if in_region(self.position, GOAL_REGION):  # absorbing, as the official
            return self._observation(), 0.0, True, False, {"aux_reward": 0.0, "executed_action": executed}
        if self.np_random.random() < ACTION_NOISE:
            executed = int(self.np_random.integers(len(MOTIONS)))
        reward, aux_reward = STEP_REWARD, 0.0
        delta = MOTIONS[executed] * STEP_UNIT
        for _ in range(SUB_STEPS):
            moved = self.position + delta
            if not in_region(moved, (0.0, 0.0, 1.0, 1.0)):
                break  # the wall stops the rest of the step
            self.position = moved
            aux_reward += self._sub_step_aux(moved)
            if in_region(moved, GOAL_REGION):
                reward += GOAL_REWARD
                break  # no overshooting the goal
        terminated = in_region(self.position, GOAL_REGION)
        if terminated and self.aux == "bad":
            aux_reward = 0.0  # the official zeroes the bonus on the terminal step
        return self._observation(), reward, terminated, False, {"aux_reward": aux_reward,
                                                                  "executed_action": executed}
