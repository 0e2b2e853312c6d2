"""TransMix: CutMix whose label weights come from the ViT's own attention.

Paper: "TransMix: Attend to Mix for Vision Transformers", Chen et al., CVPR 2022, arXiv:2111.09833;
official code: Beckschen/TransMix (the reference for details the paper leaves open, such as ``mean``
below).

Inputs are mixed exactly as CutMix (the Mixup branch of a Mixup/CutMix switch is left as is).
For box-mixed samples the own-label weight becomes

    lam_attn = sum_p (1 - M_p) A_p / sum_p A_p

where ``A`` (B, h, w) is the last block's CLS attention on the patch tokens, averaged over heads
and taken from the same forward pass that produced the logits, and ``M`` is the pixel paste
mask downsampled to the patch grid by nearest neighbour. ``lam_mode`` chooses the label weight:

  * ``mean`` (default, as the official implementation): ``(lam_area + lam_attn) / 2``;
  * ``attn`` (the paper's equation): ``lam_attn``;
  * ``area``: plain CutMix (useful for ablations; follows ``correct_lam`` as timm's Mixup does).

``lam_area`` in ``mean`` is always the own share of the *clipped* box, whatever ``correct_lam`` says:
the official ``Mixup_transmix.transmix_label`` (Beckschen/TransMix ``transmix.py``) recomputes it from
the box it pasted (``(yh - yl) * (xh - xl) / (H W)``) and discards the area target that ``correct_lam``
shaped. (The official runs keep timm's default ``correct_lam=True``, where both agree.)

lambda never carries gradients (attention is detached).

``attention_source``: ``model`` (default, the paper: the model being trained, from the same forward
pass) or ``external`` (the TransMix paper's experiment that takes the attention from a frozen external
model: a DINO, supervised or distilled DeiT-S), a frozen ViT given by ``external`` = a spec of
:mod:`pretrain.mixing.teachers`, e.g. ``{name: deit_small_patch16_224, checkpoint: dino.pth}``,
which runs on the mixed images inside ``__call__``; the engine then needs no attention tap.
"""
from __future__ import annotations

from typing import Optional

import torch

from .base import MixedBatch, mask_to_patches, mix_targets
from .cutmix import MixupCutMix
from .teachers import build_external

LAM_MODES = ("mean", "attn", "area")
SOURCES = ("model", "external")


def transmix_lambda(patch_mask: torch.Tensor, attention: torch.Tensor, lam_area: torch.Tensor,
                    lam_mode: str = "mean", eps: float = 1e-12) -> torch.Tensor:
    """Per-sample own-label weight from attention.

    Args:
        patch_mask: (B, P) paste mask on the patch grid, 1 where the partner's patch lies.
        attention: (B, P) non-negative CLS attention on the patches.
        lam_area: (B,) own-image area share.
        lam_mode: ``mean``, ``attn`` or ``area``.

    Returns:
        (B,) float32 lambda in [0, 1], detached.
    """
    if lam_mode not in LAM_MODES:
        raise ValueError(f"unknown TransMix lam_mode '{lam_mode}'; expected one of {LAM_MODES}")
    if patch_mask.shape != attention.shape:
        raise ValueError(f"paste mask on the patch grid {tuple(patch_mask.shape)} and attention "
                         f"{tuple(attention.shape)} differ in shape")
    lam_area = lam_area.detach().float().to(attention.device)
    if lam_mode == "area":
        return lam_area
    a = attention.detach().float()
    m = patch_mask.detach().float().to(a.device)
    lam_attn = ((1.0 - m) * a).sum(1) / a.sum(1).clamp_min(eps)
    lam_attn = lam_attn.clamp(0.0, 1.0)
    if lam_mode == "attn":
        return lam_attn
    return 0.5 * (lam_area + lam_attn)


class TransMix(MixupCutMix):
    """Mixup/CutMix switch whose CutMix branch takes attention-based label weights.

    Same arguments as :class:`MixupCutMix` plus ``lam_mode``, ``attention_source`` and ``external``.
    ``targets`` needs the attention map of the forward pass on ``batch.images`` as (B, h, w) (the
    patch grid) or (B, P), unless the attention comes from the external model.
    """

    needs_attention = True
    name = "transmix"

    def __init__(self, num_classes: int, lam_mode: str = "mean", attention_source: str = "model",
                 external=None, **kwargs):
        if lam_mode not in LAM_MODES:
            raise ValueError(f"unknown TransMix lam_mode '{lam_mode}'; expected one of {LAM_MODES}")
        if attention_source not in SOURCES:
            raise ValueError(f"unknown TransMix attention_source '{attention_source}'; expected one of {SOURCES}")
        super().__init__(num_classes, **kwargs)
        self.lam_mode = lam_mode
        self.attention_source = attention_source
        self.external = None
        if attention_source == "external":
            self.external = build_external(external, "TransMix external attention model")
            if not self.external.is_vit:
                raise ValueError("TransMix external attention model must be a ViT with a class token, got "
                                 f"{type(self.external.model).__name__}")
            self.needs_attention = False
        elif external is not None:
            raise ValueError("TransMix: 'external' is given but attention_source is 'model'")

    def to(self, device) -> "TransMix":
        if self.external is not None:
            self.external.to(device)
        return self

    def __call__(self, x: torch.Tensor, y: torch.Tensor, model=None, extras=None) -> MixedBatch:
        if self.attention_source == "model" and model is not None and getattr(model, "cls_token", None) is None:
            raise ValueError(f"TransMix needs a ViT with a class token; {type(model).__name__} has none "
                             "(use attention_source: external or another mixer)")
        batch = super().__call__(x, y, model=model, extras=extras)
        if self.external is not None and batch.mask is not None and self.lam_mode != "area":
            batch.aux["attention"] = self.external.cls_attention(batch.images)
        return batch

    def targets(self, batch: MixedBatch, attention: Optional[torch.Tensor] = None) -> torch.Tensor:
        lam = batch.lam
        lam_area = batch.aux.get("lam_area", lam)  # clipped-box own share, independent of correct_lam
        if self.external is not None:
            attention = batch.aux.get("attention")
            if batch.mask is not None and self.lam_mode != "area":
                grid = tuple(attention.shape[1:])
                patch_mask = mask_to_patches(batch.mask, grid)  # nearest: any external grid works
                lam_t = transmix_lambda(patch_mask, attention.flatten(1), lam_area, self.lam_mode)
                lam = torch.where(batch.cut.to(lam.device), lam_t.to(lam.device), lam)
            return mix_targets(batch.labels, batch.partner_labels, lam, self.num_classes, self.label_smoothing)
        if batch.mask is not None and self.lam_mode != "area":
            if attention is None:
                raise ValueError("TransMix needs the CLS attention of the forward pass (got None)")
            b, _, h, w = batch.images.shape
            if attention.dim() == 3:
                grid = tuple(attention.shape[1:])
                attention = attention.flatten(1)
            else:
                p = attention.shape[1]
                side = int(round((p * h / w) ** 0.5))
                if side <= 0 or p % side or h % side or w % (p // side):
                    raise ValueError(f"cannot infer the patch grid of {p} tokens for {h}x{w} images; "
                                     "pass attention as (B, h, w)")
                grid = (side, p // side)
            if attention.shape[0] != b:
                raise ValueError(f"attention batch {attention.shape[0]} != image batch {b}")
            if h % grid[0] or w % grid[1]:
                raise ValueError(f"image size {h}x{w} is not divisible into the {grid[0]}x{grid[1]} patch grid")
            patch_mask = mask_to_patches(batch.mask, grid)
            lam_t = transmix_lambda(patch_mask, attention, lam_area, self.lam_mode)
            lam = torch.where(batch.cut.to(lam.device), lam_t.to(lam.device), lam)
        return mix_targets(batch.labels, batch.partner_labels, lam, self.num_classes, self.label_smoothing)
