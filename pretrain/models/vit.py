"""timm Vision Transformers for pretraining, with a tap on the last block's CLS attention.

Models: "An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale", Dosovitskiy et al.,
ICLR 2021, arXiv:2010.11929, and its DeiT variants ("Training data-efficient image transformers &
distillation through attention", Touvron et al., ICML 2021, arXiv:2012.12877; official code:
facebookresearch/deit), as implemented by timm (huggingface/pytorch-image-models). The tap serves
"TransMix: Attend to Mix for Vision Transformers", Chen et al., CVPR 2022, arXiv:2111.09833 (official
code: Beckschen/TransMix), and the attention studies of :mod:`pretrain.analysis`.

TransMix needs, for every sample, how much the CLS token of the *last* block attends to each
patch. Materialising the full N x N attention map would force the slow, memory-hungry
non-fused path. Instead, :class:`ClsAttentionTap` observes the query and key tensors that the
last block's attention module already computes (through forward hooks on its ``q_norm`` and
``k_norm`` sub-modules, which are identities unless qk-norm is used) and evaluates only the CLS
query row::

    a = softmax(q_cls . K^T / sqrt(d))      # (B, heads, N): one row per head, not N rows
    A = mean over heads of a[:, :, prefix:] # (B, P) attention on the P patch tokens

The block itself still runs fused ``scaled_dot_product_attention``; the extra cost is one
(B, heads, 1, d) x (B, heads, d, N) product. The state dict of the model is untouched, so
checkpoints keep timm's canonical key layout.
"""
from __future__ import annotations

import json
from typing import Any, Optional

import timm
import torch
import torch.nn as nn


class RecordedAttention:
    """What a CLS-attention tap hands out: ``_attn`` (B, N) recorded by its hooks in the last forward pass,
    the first ``num_prefix_tokens`` of which are not patches, and the hook ``_handles`` to remove."""

    _attn: Optional[torch.Tensor]
    num_prefix_tokens: int
    _handles: list

    def token_attention(self) -> torch.Tensor:
        """(B, N) head-averaged CLS attention over all tokens of the last forward pass."""
        if self._attn is None:
            raise RuntimeError("no attention recorded yet: run a forward pass of the model first")
        return self._attn

    def patch_attention(self) -> torch.Tensor:
        """(B, P) head-averaged CLS attention on the patch tokens of the last forward pass."""
        return self.token_attention()[:, self.num_prefix_tokens:]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


class ClsAttentionTap(RecordedAttention):
    """Records the last block's CLS-to-token attention of a timm ViT during its forward pass.

    Args:
        model: a timm ``VisionTransformer`` (or a model with ``blocks[-1].attn`` holding
            ``q_norm``/``k_norm``/``scale``/``num_heads`` like timm's ``Attention``) with a class token.
        block: index of the block to observe (default: the last one).

    After ``logits = model(x)``, :meth:`patch_attention` returns a ``(B, P)`` tensor (float32,
    detached) whose rows are the head-averaged CLS attention on the patch tokens. Attention on
    prefix tokens (CLS, distillation/register tokens) is part of the softmax but not returned,
    so rows sum to at most 1.
    """

    def __init__(self, model: nn.Module, block: int = -1):
        if getattr(model, "cls_token", None) is None:
            raise ValueError(
                f"{type(model).__name__} has no class token: TransMix-style CLS attention needs a ViT "
                "with a CLS token (e.g. deit_*, vit_* with class_token=True)")
        blocks = getattr(model, "blocks", None)
        if blocks is None or len(blocks) == 0:
            raise ValueError(f"{type(model).__name__} has no transformer blocks to observe")
        attn = blocks[block].attn
        for name in ("q_norm", "k_norm", "scale", "num_heads"):
            if not hasattr(attn, name):
                raise ValueError(f"attention module {type(attn).__name__} has no '{name}'; "
                                 "expected timm's Attention")
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 1))
        self.scale = float(attn.scale)
        self._q_cls: Optional[torch.Tensor] = None
        self._attn: Optional[torch.Tensor] = None
        self._handles = [
            attn.q_norm.register_forward_hook(self._on_q),
            attn.k_norm.register_forward_hook(self._on_k),
        ]

    # q and k are (B, heads, N, head_dim); the CLS query is token 0.
    def _on_q(self, _module, _inputs, q: torch.Tensor) -> None:
        self._q_cls = q[:, :, :1].detach()

    def _on_k(self, _module, _inputs, k: torch.Tensor) -> None:
        q_cls = self._q_cls
        self._q_cls = None
        if q_cls is None:  # k_norm called without q_norm: not timm's Attention order
            raise RuntimeError("ClsAttentionTap saw k before q; unsupported attention module")
        with torch.no_grad():
            logits = (q_cls.float() * self.scale) @ k.detach().float().transpose(-2, -1)  # B,h,1,N
            self._attn = logits.softmax(dim=-1)[:, :, 0].mean(dim=1)  # B,N



def create_vit(name: str, num_classes: int, drop_path_rate: float = 0.0, **kwargs: Any) -> nn.Module:
    """Create a timm ViT by name with ``kwargs`` overriding its architecture (img_size, patch_size, depth...)."""
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes,
                                 drop_path_rate=drop_path_rate, **kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise ValueError(f"unknown timm model '{name}'") from exc
        raise


def vit_arch(model: nn.Module, name: str) -> dict:
    """Architecture facts of a timm ViT, stored in checkpoint metadata for downstream loaders."""
    pe = model.patch_embed
    blk = model.blocks[0]
    return {
        "model": name,
        "img_size": list(pe.img_size),
        "patch_size": int(pe.patch_size[0]),
        "embed_dim": int(model.embed_dim),
        "depth": len(model.blocks),
        "num_heads": int(blk.attn.num_heads),
        "mlp_ratio": blk.mlp.fc1.out_features / model.embed_dim,
        "qkv_bias": blk.attn.qkv.bias is not None,
        "num_prefix_tokens": int(getattr(model, "num_prefix_tokens", 1)),
        "num_classes": int(model.num_classes),
    }


def arch_json(model: nn.Module, name: str) -> str:
    return json.dumps(vit_arch(model, name), sort_keys=True)
