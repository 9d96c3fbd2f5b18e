"""Tasks with a primary reward and an auxiliary (heuristic) reward (BARFI, Gupta, Chandak et al.,
NeurIPS 2023, "Behavior Alignment via Reward Function Optimization").

Every env here returns the **primary** reward as ``reward`` and the heuristic's reward for the same
step in ``info["aux_reward"]`` (a float, present in every ``step``'s info and 0.0 in ``reset``'s),
so an agent decides how to blend the two. The constructor keyword ``aux`` picks the heuristic:
``"none"`` (the default, always 0), ``"good"`` (a helpful heuristic) or ``"bad"`` (a misleading one);
anything else is a ``ValueError`` naming the env and the options. Each env also carries
``feature_bounds``: the ``(low, high)`` arrays the official code normalises observations with
before its Fourier basis or tile coder (None where it uses raw observations).

=================================  =====  ====================================================
id                                 T      module
=================================  =====  ====================================================
aligngym/ShapingGridWorld-v0       50     :mod:`~aligngym.envs.shaping.grid_world`
aligngym/ShapingMountainCar-v0     2000   :mod:`~aligngym.envs.shaping.mountain_car`
aligngym/ShapingCartPole-v0        500    :mod:`~aligngym.envs.shaping.cart_pole`
aligngym/ShapingHalfCheetah-v0     1000   :mod:`~aligngym.envs.shaping.half_cheetah`
=================================  =====  ====================================================

This package imports none of its env modules, so registering the ids (``import aligngym.envs``)
does not load MuJoCo.
"""

from __future__ import annotations

from typing import Any

# Gymnasium id -> its time limit T (the ``max_episode_steps`` it is registered with)
SHAPING_EPISODE_STEPS: dict[str, int] = {
    "aligngym/ShapingGridWorld-v0": 50,
    "aligngym/ShapingMountainCar-v0": 2000,
    "aligngym/ShapingCartPole-v0": 500,
    "aligngym/ShapingHalfCheetah-v0": 1000,
}

# the heuristics every shaping env offers
AUX_OPTIONS: tuple[str, ...] = ("none", "good", "bad")


def check_aux(env_id: str, aux: Any) -> str:
    """``aux`` if it names one of :data:`AUX_OPTIONS`, else a ``ValueError`` naming the env and the
    options (the option arrives from YAML and the command line as anything)."""
    if not isinstance(aux, str) or aux not in AUX_OPTIONS:
        raise ValueError(f"{env_id}: aux must be one of {', '.join(map(repr, AUX_OPTIONS))}, got {aux!r}")
    return aux
