"""Reading config values the way YAML and ``key=value`` overrides hand them over: shared by the engine's
config check (:mod:`pretrain.engine.config`) and the mixers' option check (:mod:`pretrain.mixing`)."""
from __future__ import annotations

from typing import Any, Optional, Union


def kind_of(value: Any) -> str:
    """``value``'s type in words for an error message: 'a string', 'an int', 'null'."""
    if value is None:
        return "null"
    name = "string" if isinstance(value, str) else type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def as_number(value: Any) -> Optional[Union[int, float]]:
    """``value`` as an int or float (YAML reads ``5e-4`` as a string), None when it is not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None
