"""What loading a checkpoint into a model did: :class:`LoadReport`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple

__all__ = ["LoadReport", "format_keys"]


def format_keys(keys: Sequence[str], max_keys: int) -> str:
    """``a, b, c, ... (n more)``."""
    keys = list(keys)
    shown = ", ".join(keys[:max_keys])
    if len(keys) > max_keys:
        shown += f", ... ({len(keys) - max_keys} more)"
    return shown


@dataclass
class LoadReport:
    """What :func:`pretrain.checkpoint.load_pretrained` did.

    Attributes:
        source: the checkpoint path (or a description of an in-memory dict).
        loaded: target keys filled from the checkpoint.
        missing: target keys the checkpoint did not provide (left as they were).
        unexpected: checkpoint keys with no place in the target (ignored).
        dropped: checkpoint keys removed on purpose, with the reason.
        resized: keys whose tensor was resized: ``key -> (old shape, new shape)``.
        notes: other remarks (prefixes stripped, distillation token, ...).
        metadata: the checkpoint's metadata (safetensors) or ``meta`` dict.
        allowed_missing / allowed_unexpected: the subsets tolerated by the caller's allow-lists (or
            everything when ``strict=False``).
        new_params: missing keys the model declares new (e.g. relative position tables), left at their
            initial values.
    """

    source: str
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    dropped: Dict[str, str] = field(default_factory=dict)
    resized: Dict[str, Tuple[Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)
    metadata: Dict[str, Any] = field(default_factory=dict)
    allowed_missing: List[str] = field(default_factory=list)
    allowed_unexpected: List[str] = field(default_factory=list)
    new_params: List[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """True when every missing key is a declared new parameter and nothing was unexpected."""
        return not self.unexpected and set(self.missing) <= set(self.new_params)

    @property
    def clean(self) -> bool:
        """True when nothing was missing or unexpected."""
        return not self.missing and not self.unexpected

    def to_dict(self) -> Dict[str, Any]:
        return {
            "source": self.source,
            "loaded": list(self.loaded),
            "missing": list(self.missing),
            "unexpected": list(self.unexpected),
            "dropped": dict(self.dropped),
            "resized": {k: [list(a), list(b)] for k, (a, b) in self.resized.items()},
            "notes": list(self.notes),
        }

    def summary(self, max_keys: int = 20) -> str:
        """A multi-line human-readable account."""
        lines = [
            f"Loaded {len(self.loaded)} tensors from {self.source}: "
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
            f"{len(self.dropped)} dropped, {len(self.resized)} resized."
        ]
        if self.missing:
            lines.append("  missing (left at their initial values): " + format_keys(self.missing, max_keys))
        if self.unexpected:
            lines.append("  unexpected (ignored): " + format_keys(self.unexpected, max_keys))
        if self.dropped:
            by_reason: Dict[str, List[str]] = {}
            for k, why in self.dropped.items():
                by_reason.setdefault(why, []).append(k)
            for why, keys in by_reason.items():
                lines.append(f"  dropped ({why}): " + format_keys(keys, max_keys))
        for k, (a, b) in self.resized.items():
            lines.append(f"  resized {k}: {list(a)} -> {list(b)}")
        for n in self.notes:
            lines.append(f"  note: {n}")
        return "\n".join(lines)

    __str__ = summary
