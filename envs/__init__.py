"""AlignGym environments. Importing this package registers every environment.

PettingZoo games go into PettingZoo's registry (``pettingzoo.make("parallel", "aligngym/punishment-v0")``);
single-agent tasks into Gymnasium's ``aligngym`` namespace
(``gym.make("aligngym.envs:aligngym/<Id>")`` works in a fresh interpreter).
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
}


def _register() -> None:
    for env_id, module in PETTINGZOO_ENVS.items():
        if env_id not in pettingzoo.parallel_registry:
            pettingzoo.register("parallel", env_id, entry_point=f"{module}:parallel_env")
            pettingzoo.register("aec", env_id, entry_point=f"{module}:env")
    for env_id, entry_point in GYMNASIUM_ENVS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry_point)


_register()
