"""Checks on user-given settings that pydantic's lax mode lets through.

Pydantic reads ``true`` as 1 in a number field and 1 or the text "no" as a flag; AlignGym's
settings (run configs, the cooperation game's rules) refuse both, so a typo cannot quietly become
a different experiment. Both the agents' config loader and the envs' own models use these.
"""

from __future__ import annotations

from typing import Any, get_args

import numpy as np
from pydantic import BaseModel

_BOOLS = (bool, np.bool_)


def model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that owns the key at ``loc`` (for typo suggestions)."""
    for key in loc:
        field = model.model_fields.get(str(key))
        if field is None:
            return None
        candidates = [field.annotation, *get_args(field.annotation)]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return None
        model = nested[0]
    return model


def _leaf_types(annotation: Any) -> set[Any]:
    args = get_args(annotation)
    return set().union(*map(_leaf_types, args)) if args else {annotation}


def loose_scalars(model: type[BaseModel], data: Any, loc: tuple[str, ...] = ()) -> list[str]:
    """Keys under ``data`` whose field takes numbers but not booleans and whose value is (or holds)
    ``true``/``false``, or takes only booleans and whose value is not one."""
    found: list[str] = []
    if not isinstance(data, dict):
        return found
    for key, value in data.items():
        field = model.model_fields.get(str(key))
        if field is None:
            continue
        nested = model_at(model, (key,))
        if nested is not None:
            found += loose_scalars(nested, value, (*loc, str(key)))
            continue
        leaves = _leaf_types(field.annotation)
        numeric = bool(leaves & {int, float}) and not leaves & {bool, Any}
        values = value if isinstance(value, (list, tuple)) else [value]
        if numeric and any(isinstance(v, _BOOLS) for v in values):
            found.append(f"{'.'.join((*loc, str(key)))}: expected a number, got {value!r}")
        elif leaves == {bool} and not isinstance(value, _BOOLS):
            found.append(f"{'.'.join((*loc, str(key)))}: expected true or false, got {value!r}")
    return found
