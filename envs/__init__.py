"""AlignGym environments. Importing this package registers every environment.

PettingZoo games go into PettingZoo's registry (``pettingzoo.make("parallel", "aligngym/punishment-v0")``);
single-agent tasks into Gymnasium's ``aligngym`` namespace
(``gym.make("aligngym.envs:aligngym/<Id>")`` works in a fresh interpreter); the six numpy safe tasks
also with a ``vector_entry_point``, their batched core
(``gym.make_vec(id, num_envs=B, vectorization_mode="vector_entry_point")``).
"""

from __future__ import annotations

import gymnasium
import pettingzoo

# PettingZoo id -> module that provides env() / parallel_env() / raw_env.
PETTINGZOO_ENVS: dict[str, str] = {
    "aligngym/punishment-v0": "aligngym.envs.cooperation.punishment_v0",
}

# Gymnasium id -> "module:attr" entry point.
GYMNASIUM_ENVS: dict[str, str] = {
    "aligngym/PunishmentIPD-v0": "aligngym.envs.cooperation.focal:PunishmentIPDEnv",
    # DSRL's Bullet-Safety-Gym tasks on AlignGym's numpy dynamics
    **{f"aligngym/{name}-v0": f"aligngym.envs.safety.bullet:{name}Env" for name in (
        "BallRun", "BallCircle", "CarRun", "CarCircle", "DroneRun", "DroneCircle")},
    # the car fitted to the reference's racecar (turning geometry, tyre grip, reverse); -v0 stays as it was
    **{f"aligngym/{name}-v1": f"aligngym.envs.safety.bullet:{name}V1Env" for name in ("CarRun", "CarCircle")},
    # the same Run/Circle tasks on Gymnasium's MuJoCo Ant
    "aligngym/AntRun-v0": "aligngym.envs.safety.ant:AntRunEnv",
    "aligngym/AntCircle-v0": "aligngym.envs.safety.ant:AntCircleEnv",
    # Safety-Gymnasium's velocity-constrained MuJoCo robots (DSRL's Offline*Velocity-v1)
    **{f"aligngym/{name}Velocity-v1": f"aligngym.envs.safety.velocity:{name}VelocityEnv" for name in (
        "Ant", "HalfCheetah", "Hopper", "Walker2d", "Swimmer")},
    # DoC's tasks where the return is partly luck
    "aligngym/BernoulliBandit-v0": "aligngym.envs.stochastic.bandit:BernoulliBanditEnv",
    "aligngym/SlipperyFrozenLake-v0": "aligngym.envs.stochastic.frozen_lake:SlipperyFrozenLakeEnv",
    # BARFI's tasks: the primary reward, and a good, bad or no heuristic in info["aux_reward"]
    "aligngym/ShapingGridWorld-v0": "aligngym.envs.shaping.grid_world:ShapingGridWorldEnv",
    "aligngym/ShapingMountainCar-v0": "aligngym.envs.shaping.mountain_car:ShapingMountainCarEnv",
    "aligngym/ShapingCartPole-v0": "aligngym.envs.shaping.cart_pole:ShapingCartPoleEnv",
    "aligngym/ShapingHalfCheetah-v0": "aligngym.envs.shaping.half_cheetah:ShapingHalfCheetahEnv",
}

# Gymnasium id -> "module:attr" of its batched VectorEnv, what
# ``gym.make_vec(id, num_envs=B, vectorization_mode="vector_entry_point")`` builds
GYMNASIUM_VECTOR_ENVS: dict[str, str] = {
    **{f"aligngym/{name}-v0": f"aligngym.envs.safety.bullet:{name}VectorEnv" for name in (
        "BallRun", "BallCircle", "CarRun", "CarCircle", "DroneRun", "DroneCircle")},
    **{f"aligngym/{name}-v1": f"aligngym.envs.safety.bullet:{name}V1VectorEnv" for name in ("CarRun", "CarCircle")}}


def _register() -> None:
    for env_id, module in PETTINGZOO_ENVS.items():
        if env_id not in pettingzoo.parallel_registry:
            pettingzoo.register("parallel", env_id, entry_point=f"{module}:parallel_env")
            pettingzoo.register("aec", env_id, entry_point=f"{module}:env")
    from aligngym.envs.safety.specs import SAFE_TASKS
    from aligngym.envs.shaping import SHAPING_EPISODE_STEPS
    from aligngym.envs.stochastic import STOCHASTIC_EPISODE_STEPS

    episode_steps = {**STOCHASTIC_EPISODE_STEPS, **SHAPING_EPISODE_STEPS}
    for env_id, entry_point in GYMNASIUM_ENVS.items():
        if env_id not in gymnasium.registry:
            steps = (SAFE_TASKS[env_id].max_episode_steps if env_id in SAFE_TASKS
                     else episode_steps.get(env_id))
            gymnasium.register(id=env_id, entry_point=entry_point, max_episode_steps=steps,
                               vector_entry_point=GYMNASIUM_VECTOR_ENVS.get(env_id))


_register()
