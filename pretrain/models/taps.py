"""CLS-attention taps by model family: what TransMix (and the attention studies) read from a forward pass.

One (duck-typed) interface for every family: after ``logits = model(x)``, ``patch_attention()`` is the (B, P) head-averaged
attention of the class token on the patch tokens of the last attention that has a class-token query, taken
from that same forward pass and detached; ``grid(h, w)`` is the (rows, cols) of those P tokens for an h x w
input. :func:`build_tap` dispatches on :func:`family`:

* ``vit``: timm ``VisionTransformer`` (DeiT, ViT); observes ``blocks[-1].attn`` (timm ``Attention``);
  14 x 14 grid at 224 (patch 16);
* ``xcit``: timm ``Xcit`` (XCiT-S24, XCiT-L24, ...); ``cls_attn_blocks[-1].attn``; 14 x 14 (patch 16);
* ``cait``: timm ``Cait`` (CaiT-XXS24, ...); ``blocks_token_only[-1].attn``; 14 x 14 (patch 16);
* ``ca_swin``: :class:`pretrain.models.ca_swin.CASwin`; ``blocks_token_only[-1].attn`` on the final stage's
  tokens; 7 x 7 at 224 (32 px per token), so TransMix pools its paste mask to that grid.

``vit`` is :class:`pretrain.models.vit.ClsAttentionTap` (its values bit for bit), with that backward guard. The other three observe timm's
``ClassAttn`` (cait.py, also XCiT's): its ``q`` linear runs on the class token only and its ``k`` linear on all
tokens, so forward hooks on those two linears see exactly the CLS query (B, C) and the keys (B, N, C) the block
uses, and the tap evaluates ``softmax(q_cls K^T / sqrt(d))`` (B, heads, N): one row per head, never N x N. The
block still runs timm's fused attention; the tap adds one (B, h, 1, d) x (B, h, d, N) product.

Activation checkpointing recomputes a checkpointed block during backward and so calls its hooks again (and a
non-reentrant recompute may stop early, between the q and the k hook); every tap ignores calls made while
autograd runs a backward pass (:func:`in_backward`, torch's ``_current_graph_task_id``), so what was recorded
in the forward pass stays.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn

from .vit import ClsAttentionTap, RecordedAttention

__all__ = ["FAMILIES", "family", "build_tap", "ClassAttnTap", "in_backward"]

FAMILIES = ("vit", "xcit", "cait", "ca_swin")


def in_backward() -> bool:
    """True while autograd runs a backward pass (e.g. a checkpointed block's recompute); False where torch
    does not expose it (then a recompute rewrites the record with the same values)."""
    task = getattr(torch._C, "_current_graph_task_id", None)
    return task is not None and task() != -1


def family(model: nn.Module, default: Optional[str] = None) -> str:
    """The tap family of a model (see the module table); for a model no tap can observe, ``default`` or
    ValueError."""
    from .ca_swin import CASwin
    name = type(model).__name__
    if isinstance(model, CASwin):
        return "ca_swin"
    if hasattr(model, "cls_attn_blocks"):
        return "xcit"
    if getattr(model, "blocks_token_only", None) is not None:
        return "cait"
    if getattr(model, "blocks", None) is not None and hasattr(model, "patch_embed") and \
            getattr(model, "cls_token", None) is not None:
        return "vit"
    if default is not None:
        return default
    raise ValueError(f"{name}: no CLS-attention tap for this model; supported: timm VisionTransformer (DeiT/ViT "
                     "with a class token), Xcit, Cait and CA-Swin (ca_swin_*)")


def _patch_size(model: nn.Module) -> int:
    ps = model.patch_embed.patch_size
    return int(ps[0] if isinstance(ps, (tuple, list)) else ps)


class _VitTap:
    """:class:`ClsAttentionTap` with the interface's ``grid``; its hooks skip backward recomputes."""

    def __init__(self, model: nn.Module):
        self.inner = ClsAttentionTap(model)
        self.patch = _patch_size(model)
        on_q, on_k = self.inner._on_q, self.inner._on_k
        for h in self.inner._handles:
            h.remove()
        attn = model.blocks[-1].attn
        self.inner._handles = [
            attn.q_norm.register_forward_hook(lambda m, i, o: None if in_backward() else on_q(m, i, o)),
            attn.k_norm.register_forward_hook(lambda m, i, o: None if in_backward() else on_k(m, i, o)),
        ]
        self.num_prefix_tokens = self.inner.num_prefix_tokens

    def grid(self, h: int, w: int) -> Tuple[int, int]:
        return h // self.patch, w // self.patch

    def token_attention(self) -> torch.Tensor:
        return self.inner.token_attention()

    def patch_attention(self) -> torch.Tensor:
        return self.inner.patch_attention()

    def remove(self) -> None:
        self.inner.remove()


class ClassAttnTap(RecordedAttention):
    """The CLS attention of a timm ``ClassAttn`` module (CaiT, XCiT, CA-Swin), from its ``q``/``k`` linears.

    Args:
        attn: the ``ClassAttn`` to observe (input (B, N, C) with the class token first).
        reduction: pixels per token side of the observed tokens (patch size; 32 for CA-Swin).
        num_prefix_tokens: leading non-patch tokens of the observed sequence (1: the class token).
    """

    def __init__(self, attn: nn.Module, reduction: int, num_prefix_tokens: int = 1):
        for name in ("q", "k", "scale", "num_heads"):
            if not hasattr(attn, name):
                raise ValueError(f"attention module {type(attn).__name__} has no '{name}'; expected timm's ClassAttn")
        self.num_heads, self.scale = int(attn.num_heads), float(attn.scale)
        self.reduction, self.num_prefix_tokens = int(reduction), int(num_prefix_tokens)
        self._q: Optional[torch.Tensor] = None
        self._attn: Optional[torch.Tensor] = None
        self._handles = [attn.q.register_forward_hook(self._on_q), attn.k.register_forward_hook(self._on_k)]

    def _on_q(self, _m, _i, q: torch.Tensor) -> None:  # (B, C): the class token's query
        if not in_backward():
            self._q = q.detach()

    def _on_k(self, _m, _i, k: torch.Tensor) -> None:  # (B, N, C): every token's key
        if in_backward():
            return
        q, self._q = self._q, None
        if q is None:
            raise RuntimeError("ClassAttnTap saw k before q; unsupported attention module")
        b, n, c = k.shape
        h = self.num_heads
        with torch.no_grad():
            qh = q.float().reshape(b, h, 1, c // h) * self.scale
            kh = k.detach().float().reshape(b, n, h, c // h).permute(0, 2, 3, 1)  # B, h, d, N
            self._attn = (qh @ kh).softmax(dim=-1)[:, :, 0].mean(dim=1)  # B, N

    def grid(self, h: int, w: int) -> Tuple[int, int]:
        return h // self.reduction, w // self.reduction



def build_tap(model: nn.Module):
    """The tap of ``model``'s family: an object with ``patch_attention()``, ``token_attention()``,
    ``grid(h, w)``, ``remove()``."""
    fam = family(model)
    if fam == "vit":
        return _VitTap(model)
    if fam == "xcit":
        return ClassAttnTap(model.cls_attn_blocks[-1].attn, _patch_size(model))
    if fam == "cait":
        return ClassAttnTap(model.blocks_token_only[-1].attn, _patch_size(model))
    return ClassAttnTap(model.blocks_token_only[-1].attn, model.reduction)
