"""CA-Swin: a timm Swin Transformer whose classifier is a class token read out by class-attention blocks.

"TransMix: Attend to Mix for Vision Transformers", Chen et al., CVPR 2022, arXiv:2111.09833, Sec. 4.5
(generalisation): Swin has no class token, so the paper gives it one through class attention ("CA-Swin") and
reports CA-Swin-T with the same 28.3M parameters as Swin-T and 7% fewer FLOPs (81.3 Swin-T, 81.6 CA-Swin-T,
81.8 TransMix-CA-Swin-T top-1). The official code (Beckschen/TransMix) has no CA-Swin; the paper text at
hand does not spell out the layer count. Ours: the last Swin block of the last stage is *replaced* by one
class-attention block, which is what the two numbers fix (a Swin block and a class-attention block of the same
width have the same parameters, 12 C^2 + biases; one block swapped saves ~0.29 of Swin-T's 4.5 GFLOPs = 6-7%,
two would save ~13%). ``replace_last`` and ``ca_depth`` change it.

The class-attention block is CaiT's ("Going deeper with Image Transformers", Touvron et al., ICCV 2021,
arXiv:2103.17239; timm ``cait.LayerScaleBlockClassAttn``): the CLS query attends to itself and to the final
stage's tokens (7 x 7 at 224, one per 32 x 32 pixels), so TransMix's CLS attention lives on that grid.

Built from timm's ``SwinTransformer`` (its ``patch_embed``, ``layers`` and ``norm``); registered with timm as
``ca_swin_tiny_patch4_window7_224`` and ``ca_swin_small_patch4_window7_224`` on import of this module.
"""
from __future__ import annotations

from typing import Any

import timm
import torch
import torch.nn as nn
from timm.layers import trunc_normal_
from timm.models import register_model
from timm.models.cait import LayerScaleBlockClassAttn

__all__ = ["CASwin", "REDUCTION"]

REDUCTION = 32  # pixels per final-stage token of a Swin with patch 4 and three patch mergings (``.reduction``)


class CASwin(nn.Module):
    """Swin trunk -> flatten the last stage (B, h*w, C) -> class-attention blocks on a class token -> norm -> head.

    Args:
        swin_name: the timm Swin to build the trunk from (``swin_tiny_patch4_window7_224``...).
        num_classes: classifier outputs (0: none).
        ca_depth: class-attention blocks; ``replace_last``: Swin blocks removed from the end of the last stage.
        layer_scale: the class-attention blocks' LayerScale init (CaiT's 1e-5 for deep models, 1e-4 default).
        drop_path_rate, img_size and the other keyword arguments go to the Swin trunk.
    """

    def __init__(self, swin_name: str = "swin_tiny_patch4_window7_224", num_classes: int = 1000,
                 ca_depth: int = 1, replace_last: int = 1, layer_scale: float = 1e-4,
                 drop_path_rate: float = 0.1, **swin_kwargs: Any):
        super().__init__()
        trunk = timm.create_model(swin_name, pretrained=False, num_classes=0, drop_path_rate=drop_path_rate,
                                  **swin_kwargs)
        last = trunk.layers[-1].blocks
        if not 0 <= replace_last <= len(last):
            raise ValueError(f"replace_last={replace_last}: the last stage has {len(last)} blocks")
        if replace_last:
            trunk.layers[-1].blocks = nn.Sequential(*list(last)[:len(last) - replace_last])
        self.patch_embed, self.layers, self.norm = trunk.patch_embed, trunk.layers, trunk.norm
        self.embed_dim = self.num_features = int(trunk.num_features)
        heads = int(last[0].attn.num_heads) if len(last) else 24
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
        self.blocks_token_only = nn.ModuleList([
            LayerScaleBlockClassAttn(self.embed_dim, heads, mlp_ratio=4.0, qkv_bias=True, init_values=layer_scale)
            for _ in range(ca_depth)])
        self.num_prefix_tokens = 1
        ps = trunk.patch_embed.patch_size
        self.reduction = int(ps[0] if isinstance(ps, (tuple, list)) else ps) * 2 ** (len(trunk.layers) - 1)
        self.num_classes = num_classes
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.swin_name = swin_name
        trunc_normal_(self.cls_token, std=0.02)
        for blk in self.blocks_token_only:
            blk.apply(_init_linear)
        if isinstance(self.head, nn.Linear):
            _init_linear(self.head)

    @torch.jit.ignore
    def no_weight_decay(self):
        return {"cls_token"} | {"layers." + k for k in _swin_no_wd(self.layers)}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for layer in self.layers:  # timm's Swin stages checkpoint their blocks; the CA blocks run plainly
            layer.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1 + h*w, C): the class token after class attention, then the final stage's tokens, normed."""
        x = self.layers(self.patch_embed(x))           # (B, h, w, C), timm's NHWC Swin layout
        x = x.flatten(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        for blk in self.blocks_token_only:
            cls = blk(x, cls)
        return self.norm(torch.cat((cls, x), dim=1))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x[:, 0] if pre_logits else self.head(x[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _init_linear(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _swin_no_wd(layers: nn.Module):
    return {k for k, _ in layers.named_parameters() if "relative_position_bias_table" in k}


@register_model
def ca_swin_tiny_patch4_window7_224(pretrained: bool = False, **kwargs: Any) -> CASwin:
    """CA-Swin-T: Swin-T (C 96, depths 2-2-6-2) with its last block swapped for one class-attention block."""
    if pretrained:
        raise ValueError("CA-Swin has no published weights")
    return CASwin("swin_tiny_patch4_window7_224", **kwargs)


@register_model
def ca_swin_small_patch4_window7_224(pretrained: bool = False, **kwargs: Any) -> CASwin:
    """CA-Swin-S: Swin-S (C 96, depths 2-2-18-2) with its last block swapped for one class-attention block."""
    if pretrained:
        raise ValueError("CA-Swin has no published weights")
    return CASwin("swin_small_patch4_window7_224", **kwargs)
