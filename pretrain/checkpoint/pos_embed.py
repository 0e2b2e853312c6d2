"""The one resize of learned absolute position embeddings, used when loading a checkpoint into a model
with another patch grid and by the downstream backbones at forward time.

It is timm's ``resample_abs_pos_embed`` (huggingface/pytorch-image-models) with ``antialias=False``
pinned: the prefix rows (CLS, and a distillation token if any) are kept, the patch rows are resized as a
2-D grid in float32 with ``F.interpolate(mode, align_corners=False)``. Without antialiasing this is
exactly the resize of the official ViTDet code ("Exploring Plain Vision Transformer Backbones for Object
Detection", Li et al., ECCV 2022, arXiv:2203.16527; facebookresearch/detectron2 ``projects/ViTDet``,
``get_abs_pos``) and of MMSegmentation's ``VisionTransformer.resize_pos_embed``, so our backbones match
theirs. timm's own default (antialias on) runs another cubic kernel, in both directions (a random 14x14
embedding of scale 0.05 resized to 32x32 differs by up to 0.019 between the two), which is why every path
in the project goes through this one function.
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["resize_pos_embed"]


def resize_pos_embed(pos_embed: torch.Tensor, src_grid: Sequence[int], dst_grid: Sequence[int],
                     num_prefix_tokens: int = 1, mode: str = "bicubic") -> torch.Tensor:
    """Resize a learned absolute position embedding to another patch grid.

    Args:
        pos_embed: (1, num_prefix_tokens + Sh * Sw, C).
        src_grid: (Sh, Sw), the grid ``pos_embed`` was learned on.
        dst_grid: (Dh, Dw), the grid wanted.
        num_prefix_tokens: number of leading non-patch rows.
        mode: ``F.interpolate`` mode (``"bicubic"`` by default, as timm, DeiT, ViTDet and MMSeg).

    Returns:
        (1, num_prefix_tokens + Dh * Dw, C) in the dtype of ``pos_embed``; the input itself when the grids
        are equal.
    """
    from timm.layers import resample_abs_pos_embed

    sh, sw = (int(v) for v in src_grid)
    dh, dw = (int(v) for v in dst_grid)
    if pos_embed.dim() != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"pos_embed must be (1, N, C), got {tuple(pos_embed.shape)}")
    n = pos_embed.shape[1]
    if n != num_prefix_tokens + sh * sw:
        raise ValueError(
            f"pos_embed has {n} entries, which does not match {num_prefix_tokens} prefix "
            f"token(s) + a {sh}x{sw} grid ({num_prefix_tokens + sh * sw})")
    if (sh, sw) == (dh, dw):
        return pos_embed
    return resample_abs_pos_embed(pos_embed, new_size=[dh, dw], old_size=[sh, sw],
                                  num_prefix_tokens=num_prefix_tokens, interpolation=mode, antialias=False)
