"""Bridge to MMSeg's own ``mmseg.models.backbones.VisionTransformer``.

Used to compare our backbone with MMSeg's, in tests (same weights -> same
features) and in ``tools/bench_mmseg.py`` (training step time side by side).

* :func:`mmseg_vit_config` gives the ``VisionTransformer`` config that
  computes the same function as a ``VitMixViT`` config (LayerNorm eps 1e-6,
  bias on the patch projection, CLS token, final norm, bicubic position
  embedding resizing).
* :func:`timm_to_mmseg_vit` maps a timm-layout state dict (ours) onto MMSeg's
  layout: ``blocks.{i}.norm1`` -> ``layers.{i}.ln1``, ``attn.qkv`` ->
  ``attn.attn.in_proj_*``, ``attn.proj`` -> ``attn.attn.out_proj``,
  ``mlp.fc1``/``fc2`` -> ``ffn.layers.0.0``/``ffn.layers.1``, ``norm`` ->
  ``ln1``, ``patch_embed.proj`` -> ``patch_embed.projection``.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Mapping

import torch

__all__ = ["mmseg_vit_config", "timm_to_mmseg_vit"]

_BLOCK_MAP = (
    (r"^blocks\.(\d+)\.norm1\.", r"layers.\1.ln1."),
    (r"^blocks\.(\d+)\.norm2\.", r"layers.\1.ln2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.weight$", r"layers.\1.attn.attn.in_proj_weight"),
    (r"^blocks\.(\d+)\.attn\.qkv\.bias$", r"layers.\1.attn.attn.in_proj_bias"),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"layers.\1.attn.attn.out_proj."),
    (r"^blocks\.(\d+)\.mlp\.fc1\.", r"layers.\1.ffn.layers.0.0."),
    (r"^blocks\.(\d+)\.mlp\.fc2\.", r"layers.\1.ffn.layers.1."),
    (r"^patch_embed\.proj\.", r"patch_embed.projection."),
    (r"^norm\.", r"ln1."),
)


def timm_to_mmseg_vit(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename a timm/VitMixViT backbone state dict to MMSeg ``VisionTransformer`` keys.

    Args:
        state_dict: backbone tensors with timm names (no ``backbone.`` prefix).

    Returns:
        a new dict with MMSeg names (same tensors). ``cls_token`` and
        ``pos_embed`` keep their names and shapes ((1, 1, C), (1, 1 + N, C)).

    Raises:
        KeyError: for a key with no MMSeg counterpart (e.g. a classifier head).
    """
    out: Dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        if k in ("cls_token", "pos_embed"):
            out[k] = v
            continue
        for pat, rep in _BLOCK_MAP:
            if re.match(pat, k):
                out[re.sub(pat, rep, k)] = v
                break
        else:
            raise KeyError(f"no MMSeg VisionTransformer counterpart for {k!r}")
    return out


def mmseg_vit_config(backbone_cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """MMSeg ``VisionTransformer`` config equivalent to a ``VitMixViT`` config.

    Args:
        backbone_cfg: a ``dict(type='VitMixViT', ...)`` with timm or MMSeg
            argument names (checkpoint options are ignored).

    Returns:
        ``dict(type='VisionTransformer', ...)`` for ``mmseg.registry.MODELS``.
    """
    c = dict(backbone_cfg)

    def arg(name: str, alias: str, default: Any) -> Any:  # timm name, or the MMSeg alias VitMixViT accepts
        return c[name] if c.get(name) is not None else c[alias] if c.get(alias) is not None else default

    img = c.get("img_size", 224)
    img = (img, img) if isinstance(img, int) else tuple(img)
    depth = int(arg("depth", "num_layers", 12))
    idx = c.get("out_indices", -1)
    idx = [idx] if isinstance(idx, int) else list(idx)
    idx = [int(i) + depth if int(i) < 0 else int(i) for i in idx]  # MMSeg resolves only a bare -1
    return dict(
        type="VisionTransformer",
        img_size=img,
        patch_size=c.get("patch_size", 16),
        in_channels=arg("in_chans", "in_channels", 3),
        embed_dims=arg("embed_dim", "embed_dims", 768),
        num_layers=depth,
        num_heads=c.get("num_heads", 12),
        mlp_ratio=int(c.get("mlp_ratio", 4)),
        qkv_bias=c.get("qkv_bias", True),
        drop_rate=c.get("drop_rate", 0.0),
        attn_drop_rate=c.get("attn_drop_rate", 0.0),
        drop_path_rate=c.get("drop_path_rate", 0.0),
        out_indices=idx,
        with_cls_token=True,
        output_cls_token=False,
        final_norm=c.get("final_norm", True),
        patch_bias=True,
        norm_cfg=dict(type="LN", eps=c.get("norm_eps", 1e-6), requires_grad=True),
        act_cfg=dict(type="GELU"),
        interpolate_mode=c.get("interpolate_mode", "bicubic"),
    )
