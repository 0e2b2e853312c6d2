"""MMEngine hook that checks, when training starts, that the backbone still
holds the pretrained checkpoint (MMSeg ``VitMixViT`` and MMDet ``VitMixViTDet``).

The backbone's ``init_weights`` loads ``pretrained`` strictly, but between that
and the first iteration MMEngine may still change the weights: ``load_from``
(non-strict, any key layout) or another module's ``init_cfg``. This hook runs
at ``before_train`` (after weight init, ``load_from`` and ``--resume``),
re-reads the checkpoint through the same mapping
(:func:`downstream.weights.convert_state_dict`) and compares every loaded
backbone tensor bit for bit (the ViT of a ViTDet backbone: ``backbone.vit``).
It logs::

    PretrainedCheckHook: 152 backbone tensors equal to runs/x/model.safetensors at iteration 0

and on a difference lists the keys: an error when nothing explains it, a
warning when ``load_from`` is set (the user asked for a whole-model checkpoint
on top). Resumed runs are skipped (their weights are meant to differ).

Registered as ``PretrainedCheckHook`` in MMSeg's and MMDet's ``HOOKS`` when
:mod:`downstream.mmseg` / :mod:`downstream.mmdet` is imported, and enabled in
both ``_base_/default_runtime.py`` as ``custom_hooks = [dict(type='PretrainedCheckHook')]``.
"""

from __future__ import annotations

import logging
from typing import List, Optional

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from ..weights import CheckpointError, convert_state_dict, read_checkpoint

__all__ = ["PretrainedCheckHook", "compare_backbone_with_checkpoint"]


def compare_backbone_with_checkpoint(backbone: torch.nn.Module, path: str, trust_pickle: Optional[bool] = None):
    """Compare a loaded backbone with its checkpoint, mapped as the loader maps it.

    Args:
        backbone: a :class:`downstream.vit.VisionTransformer` (or subclass), the module the
            checkpoint was loaded into.
        path: the checkpoint it was loaded from.

    Returns:
        (equal, different): lists of backbone keys whose tensors are / are
        not bit-identical to the mapped checkpoint tensors (cast to the
        backbone's dtype). Keys the checkpoint does not provide are in neither.
    """
    sd, meta = read_checkpoint(path, trust_pickle=trust_pickle)
    mapped, report = convert_state_dict(sd, backbone, source=str(path), metadata=meta)
    own = backbone.state_dict()
    equal: List[str] = []
    different: List[str] = []
    for k in report.loaded:
        a = own[k].detach()
        b = mapped[k].to(device=a.device, dtype=a.dtype)
        (equal if torch.equal(a, b) else different).append(k)
    return equal, different


class PretrainedCheckHook(Hook):
    """Verify at ``before_train`` that the backbone equals its ``pretrained`` file.

    Args:
        on_mismatch: ``'error'`` (default) raises :class:`CheckpointError`
            listing the differing keys unless ``load_from`` is set (then a
            warning); ``'warn'`` only warns.
    """

    priority = "VERY_LOW"

    def __init__(self, on_mismatch: str = "error"):
        if on_mismatch not in ("error", "warn"):
            raise ValueError(f"PretrainedCheckHook: on_mismatch must be 'error' or 'warn', got {on_mismatch!r}")
        self.on_mismatch = on_mismatch
        self.result = None  # (equal, different) after before_train, for inspection

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        backbone = getattr(model, "backbone", None)
        path = getattr(backbone, "pretrained", None)
        if backbone is None or path is None or not hasattr(backbone, "load_report"):
            return
        if getattr(runner, "_resume", False) or runner.iter > 0:
            print_log(
                f"PretrainedCheckHook: resumed at iteration {runner.iter}; backbone not compared with {path}",
                logger="current",
            )
            return
        trust = getattr(backbone, "trust_pickle", None) or None
        vit = getattr(backbone, "vit", backbone)  # a ViTDet backbone loads into its ViT
        equal, different = compare_backbone_with_checkpoint(vit, path, trust_pickle=trust)
        self.result = (equal, different)
        if not different:
            print_log(
                f"PretrainedCheckHook: {len(equal)} backbone tensors equal to {path} at iteration {runner.iter}",
                logger="current",
            )
            return
        shown = ", ".join(different[:20]) + (f", ... ({len(different) - 20} more)" if len(different) > 20 else "")
        load_from = getattr(runner, "_load_from", None)
        msg = (
            f"PretrainedCheckHook: {len(different)} of {len(equal) + len(different)} backbone tensors differ from "
            f"the pretrained checkpoint {path} when training starts: {shown}"
        )
        if load_from:
            print_log(msg + f" (overwritten by load_from={load_from})", logger="current", level=logging.WARNING)
        elif self.on_mismatch == "warn":
            print_log(msg, logger="current", level=logging.WARNING)
        else:
            raise CheckpointError(
                msg + ". Something changed the weights after the backbone's init_weights (an init_cfg of the "
                "segmentor or detector?); use on_mismatch='warn' to continue anyway"
            )
