"""Autocast settings shared by the training engine, the mixers' own forward passes and the analysis studies.

Two spellings exist: the engine's ``train.amp`` (``none | bf16 | fp16``) maps to a dtype through
:data:`AMP_DTYPES`; the teachers and saliency models of the mixers also take ``auto`` (bf16 on CUDA, none
elsewhere), resolved per device by :func:`amp_mode_dtype`.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
AMP_MODES = ("auto", "bf16", "fp16", "none")


def autocast(device: torch.device, amp_dtype: Optional[torch.dtype]):
    """``torch.autocast`` on ``device`` in ``amp_dtype``; a no-op context when it is None."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def check_amp_mode(amp: str) -> str:
    """``amp`` itself when it is one of ``auto | bf16 | fp16 | none``, else a ValueError."""
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be auto|bf16|fp16|none, got '{amp}'")
    return amp


def amp_mode_dtype(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of an ``amp`` mode on ``device``: ``auto`` is bf16 on CUDA and none elsewhere."""
    if amp == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return AMP_DTYPES[amp]
