"""A plain Vision Transformer backbone for dense prediction, built from timm's layers.

The ViT is the one of "An Image is Worth 16x16 Words: Transformers for Image
Recognition at Scale" (Dosovitskiy et al., ICLR 2021, arXiv:2010.11929) in the
DeiT configuration ("Training data-efficient image transformers & distillation
through attention", Touvron et al., ICML 2021, arXiv:2012.12877). Its module
layout, and therefore every parameter name, is timm's, so a checkpoint of our
pretraining or an official DeiT/timm checkpoint loads onto it strictly through
one key mapping (:mod:`downstream.weights`)::

    cls_token                      (1, 1, C)
    pos_embed                      (1, 1 + Gh * Gw, C)   Gh, Gw: pretraining grid
    patch_embed.proj.{weight,bias} (C, 3, p, p), (C,)
    blocks.{i}.norm1.{weight,bias}
    blocks.{i}.attn.qkv.{weight,bias}     (3C, C), (3C,)
    blocks.{i}.attn.proj.{weight,bias}
    blocks.{i}.attn.rel_pos_{h,w}         only with ``use_rel_pos``
    blocks.{i}.norm2.{weight,bias}
    blocks.{i}.mlp.fc1.{weight,bias}      (hidden, C)
    blocks.{i}.mlp.fc2.{weight,bias}      (C, hidden)
    norm.{weight,bias}                    only when ``final_norm=True``

What comes from timm (timm >= 1.0):

* ``timm.layers.PatchEmbed`` (NHWC output) and ``timm.layers.resample_abs_pos_embed`` through the project's
  one resize, :func:`pretrain.checkpoint.resize_pos_embed` (``antialias=False``: bicubic,
  ``align_corners=False``, in float32);
* the blocks: ``timm.models.vision_transformer.Block`` (fused
  ``scaled_dot_product_attention``, ``Mlp``, ``DropPath``) for the
  classification/segmentation layout with a CLS token, and the SAM/ViTDet
  block of ``timm.models.vision_transformer_sam`` for the detection layout:
  window partition with zero padding, and decomposed relative position biases
  (``get_rel_pos``/``get_decomposed_rel_pos_bias``, MViTv2: "MViTv2: Improved
  Multiscale Vision Transformers for Classification and Detection", Li et al.,
  CVPR 2022, arXiv:2112.01526) passed to the fused attention as ``attn_mask``.
  Both use ``nn.LayerNorm(eps=norm_eps)`` (1e-6, as timm's ViT).

What is ours (no library has it): the wrapper that returns NCHW maps of
selected blocks (final norm on the last block only, as MMSeg's ViT does), the
position embedding stored at the pretraining grid and resized to every input's
grid at forward time, frozen stages, and the ViTDet mode without CLS token
("Exploring Plain Vision Transformer Backbones for Object Detection", Li, Mao,
Girshick, He, ECCV 2022, arXiv:2203.16527; reference code:
facebookresearch/detectron2, ``projects/ViTDet``): ``use_cls_token=False``
drops the CLS entry of ``pos_embed`` (the token stays in the state dict, frozen,
for strict loading), ``window_size``/``global_block_indexes`` select windowed
and global blocks, and ``use_rel_pos`` adds the zero-initialised tables
``blocks.{i}.attn.rel_pos_{h,w}`` that a classification checkpoint does not
have (:meth:`VisionTransformer.new_parameter_patterns`).

The feature pyramid on top of it is :mod:`downstream.pyramid`. Nothing here
depends on MMSegmentation, MMDetection or Detectron2.
"""

from __future__ import annotations

from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from timm.models.vision_transformer_sam import Attention as WindowAttention
from timm.models.vision_transformer_sam import Block as WindowBlock
from torch import nn

from pretrain.checkpoint.arch import to_2tuple
from pretrain.checkpoint.pos_embed import resize_pos_embed  # the one resize (antialias off), re-exported

__all__ = ["VisionTransformer", "resize_pos_embed", "to_2tuple", "NO_WEIGHT_DECAY"]

# Parameter names (last component) that get no weight decay, whatever their shape;
# see downstream.layer_decay for the whole rule.
NO_WEIGHT_DECAY = ("pos_embed", "cls_token", "rel_pos_h", "rel_pos_w")



def _resolve_indices(indices: Sequence[int], depth: int, what: str) -> List[int]:
    out = []
    for i in indices:
        j = int(i) + depth if int(i) < 0 else int(i)
        if not 0 <= j < depth:
            raise ValueError(f"{what} entry {i} is out of range for depth {depth}")
        out.append(j)
    return out


class VisionTransformer(nn.Module):
    """Plain ViT backbone returning multi-block NCHW feature maps.

    Args:
        img_size: pretraining image size (int or (H, W)); with ``patch_size``
            it fixes the grid the stored ``pos_embed`` lives on. Inputs may be
            any size divisible by the patch size; the position embedding is
            resized to their grid at forward time.
        patch_size: patch size p (square).
        in_chans: input channels.
        embed_dim: token width C.
        depth: number of transformer blocks.
        num_heads: attention heads per block.
        mlp_ratio: MLP hidden width / C.
        qkv_bias: bias on the QKV projection.
        drop_rate: dropout after the position embedding, in MLPs and after
            the attention projection.
        attn_drop_rate: dropout on the attention weights.
        drop_path_rate: stochastic depth rate of the last block; block i uses
            ``drop_path_rate * i / (depth - 1)`` (linearly increasing from 0).
        out_indices: indices of the blocks whose outputs are returned
            (negative values count from the end; ``-1`` is the last block).
        final_norm: create the final LayerNorm (``norm``) and apply it to the
            output of the last block (only that one; intermediate outputs are
            returned un-normalised). Without it, the checkpoint's ``norm.*``
            is dropped when loading.
        norm_eps: LayerNorm epsilon (timm's ViT uses 1e-6).
        interpolate_mode: mode used to resize ``pos_embed``.
        num_prefix_tokens: 1 (a CLS token). Kept as a parameter for clarity;
            only 1 is supported.
        frozen_stages: -1 trains everything; k >= 0 freezes the patch
            embedding, CLS token and position embedding, and the first k
            blocks (``requires_grad=False`` and kept in eval mode); k >= depth
            also freezes the final norm (a frozen backbone, for linear probing).
        use_cls_token: prepend the CLS token to the sequence (classification
            and segmentation layout; timm's ViT blocks). ``False`` (ViTDet)
            runs timm's SAM/ViTDet blocks on the (B, Gh, Gw, C) token grid
            and drops the CLS entry of the position embedding; the
            ``cls_token`` parameter is kept (frozen, unused) so checkpoints
            still load strictly.
        window_size: > 0 runs every block not in ``global_block_indexes``
            with windowed attention of this size (needs ``use_cls_token=False``).
        global_block_indexes: blocks that keep global attention when
            ``window_size > 0`` (negative values count from the end).
        use_rel_pos: decomposed relative position biases in every block
            (needs ``use_cls_token=False``). The tables are new parameters,
            zero at initialisation; see :meth:`new_parameter_patterns`.
        rel_pos_grid: (h, w) token grid the global blocks' tables are made
            for (default: the pretraining grid); other grids use linearly
            resized tables. Window blocks' tables fit the window.

    Shapes:
        input: (B, in_chans, H, W), H % p == 0 and W % p == 0.
        output: tuple with one (B, C, H/p, W/p) tensor per entry of
            ``out_indices``, in the order given (patch tokens only).
    """

    def __init__(
        self,
        img_size: Union[int, Sequence[int]] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        out_indices: Union[int, Sequence[int]] = (-1,),
        final_norm: bool = True,
        norm_eps: float = 1e-6,
        interpolate_mode: str = "bicubic",
        num_prefix_tokens: int = 1,
        frozen_stages: int = -1,
        use_cls_token: bool = True,
        window_size: int = 0,
        global_block_indexes: Sequence[int] = (),
        use_rel_pos: bool = False,
        rel_pos_grid: Optional[Sequence[int]] = None,
    ):
        super().__init__()
        if num_prefix_tokens != 1:
            raise ValueError("only a single CLS prefix token is supported")
        if isinstance(patch_size, (tuple, list)):
            ph, pw = to_2tuple(patch_size)
            if ph != pw:
                raise ValueError(f"only square patches are supported, got {patch_size}")
            patch_size = ph
        self.img_size = to_2tuple(img_size)
        self.patch_size = int(patch_size)
        if self.img_size[0] % self.patch_size or self.img_size[1] % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}")
        self.grid_size = (self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size)
        self.embed_dim = int(embed_dim)
        self.depth = int(depth)
        self.num_heads = int(num_heads)
        self.mlp_ratio = float(mlp_ratio)
        self.num_prefix_tokens = 1
        self.interpolate_mode = interpolate_mode
        self.final_norm = bool(final_norm)
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")

        if isinstance(out_indices, int):
            out_indices = (out_indices,)
        self.out_indices: Tuple[int, ...] = tuple(_resolve_indices(out_indices, self.depth, "out_indices"))
        if not self.out_indices:
            raise ValueError("out_indices must not be empty")

        self.use_cls_token = bool(use_cls_token)
        self.window_size = int(window_size)
        self.use_rel_pos = bool(use_rel_pos)
        if self.window_size < 0:
            raise ValueError(f"window_size must be >= 0, got {window_size}")
        if self.use_cls_token and (self.window_size > 0 or self.use_rel_pos):
            raise ValueError(
                "windowed attention and relative position biases run on patch tokens only: "
                "set use_cls_token=False"
            )
        globals_ = _resolve_indices(global_block_indexes or (), self.depth, "global_block_indexes")
        self.global_block_indexes: Tuple[int, ...] = tuple(sorted(set(globals_)))

        self.patch_embed = PatchEmbed(
            img_size=self.img_size,
            patch_size=self.patch_size,
            in_chans=in_chans,
            embed_dim=self.embed_dim,
            output_fmt="NHWC",
            strict_img_size=False,
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
        num_patches = self.grid_size[0] * self.grid_size[1]
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, self.embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = [drop_path_rate * i / (self.depth - 1) if self.depth > 1 else 0.0 for i in range(self.depth)]
        norm_layer = partial(nn.LayerNorm, eps=norm_eps)
        common = dict(
            dim=self.embed_dim,
            num_heads=self.num_heads,
            mlp_ratio=self.mlp_ratio,
            qkv_bias=qkv_bias,
            proj_drop=drop_rate,
            attn_drop=attn_drop_rate,
            norm_layer=norm_layer,
            act_layer=nn.GELU,
        )
        if self.use_cls_token:
            blocks = [Block(drop_path=dpr[i], **common) for i in range(self.depth)]
        else:
            rel_pos_size = to_2tuple(rel_pos_grid) if rel_pos_grid is not None else self.grid_size
            blocks = [
                WindowBlock(
                    drop_path=dpr[i],
                    use_rel_pos=self.use_rel_pos,
                    window_size=self.window_size if i not in self.global_block_indexes else 0,
                    input_size=rel_pos_size,  # the global blocks' table size; window blocks use the window
                    **common,
                )
                for i in range(self.depth)
            ]
        self.blocks = nn.ModuleList(blocks)
        if self.final_norm:
            self.norm = norm_layer(self.embed_dim)
        self.reset_parameters()
        if not self.use_cls_token:
            self.cls_token.requires_grad_(False)  # kept for strict loading, not used
        self.frozen_stages = int(frozen_stages)
        self._freeze()

    def _frozen_modules(self) -> List[nn.Module]:
        k = self.frozen_stages
        if k < 0:
            return []
        mods: List[nn.Module] = [self.patch_embed, self.pos_drop]
        mods += list(self.blocks[: min(k, self.depth)])
        if k >= self.depth and self.final_norm:
            mods.append(self.norm)
        return mods

    def _freeze(self) -> None:
        if self.frozen_stages < 0:
            return
        self.cls_token.requires_grad_(False)
        self.pos_embed.requires_grad_(False)
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        """Like ``nn.Module.train``, but frozen stages stay in eval mode."""
        super().train(mode)
        if mode:
            for m in self._frozen_modules():
                m.eval()
        return self

    # ------------------------------------------------------------------ init
    def reset_parameters(self) -> None:
        """Random initialisation in the style of timm (truncated normal, std 0.02)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02, a=-0.04, b=0.04)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, WindowAttention) and m.use_rel_pos:
                nn.init.zeros_(m.rel_pos_h)
                nn.init.zeros_(m.rel_pos_w)
        w = self.patch_embed.proj.weight
        nn.init.trunc_normal_(w.view(w.shape[0], -1), std=0.02, a=-0.04, b=0.04)
        nn.init.zeros_(self.patch_embed.proj.bias)

    # --------------------------------------------------------------- helpers
    @property
    def num_layers(self) -> int:
        return self.depth

    def no_weight_decay(self) -> set:
        """Parameter names excluded from weight decay whatever their shape (timm's convention)."""
        return set(NO_WEIGHT_DECAY)

    def new_parameter_patterns(self) -> List[str]:
        """Glob patterns of parameters a classification checkpoint cannot hold.

        :func:`downstream.weights.load_pretrained` tolerates their absence
        (they keep their initial values, zero for relative position tables)
        and says so in the report.
        """
        return ["blocks.*.attn.rel_pos_h", "blocks.*.attn.rel_pos_w"] if self.use_rel_pos else []

    def arch(self) -> Dict[str, object]:
        """The architecture as a JSON-able dict (same keys as checkpoint metadata)."""
        return {
            "img_size": list(self.img_size),
            "patch_size": self.patch_size,
            "embed_dim": self.embed_dim,
            "depth": self.depth,
            "num_heads": self.num_heads,
            "mlp_ratio": self.mlp_ratio,
            "qkv_bias": self.blocks[0].attn.qkv.bias is not None,
            "num_prefix_tokens": self.num_prefix_tokens,
        }

    def interpolated_pos_embed(self, grid: Sequence[int]) -> torch.Tensor:
        """The position embedding for a (Gh, Gw) grid: (1, 1 + Gh * Gw, C)."""
        return resize_pos_embed(self.pos_embed, self.grid_size, grid, 1, mode=self.interpolate_mode)

    # --------------------------------------------------------------- forward
    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> tokens with position embedding: (B, 1 + Gh * Gw, C) with the
        CLS token first, or the (B, Gh, Gw, C) grid without it."""
        ph = pw = self.patch_size
        h, w = x.shape[-2:]
        if h % ph or w % pw:
            raise ValueError(
                f"input size {h}x{w} is not divisible by the patch size {ph}x{pw}; "
                "pad or resize the input (MMSeg: set size_divisor/size in the data preprocessor)"
            )
        x = self.patch_embed(x)  # (B, Gh, Gw, C)
        b, gh, gw, c = x.shape
        pos = self.interpolated_pos_embed((gh, gw))  # (1, 1 + Gh * Gw, C)
        if self.use_cls_token:
            x = torch.cat([self.cls_token.expand(b, -1, -1), x.reshape(b, gh * gw, c)], dim=1) + pos
        else:
            x = x + pos[:, 1:].reshape(1, gh, gw, c)
        return self.pos_drop(x)

    def _run_blocks(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The outputs of the ``out_indices`` blocks, in their order and in the blocks' layout
        ((B, 1 + N, C) or (B, Gh, Gw, C)); the final norm is applied to the last block's only."""
        wanted = set(self.out_indices)
        last = max(wanted)
        collected: Dict[int, torch.Tensor] = {}
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i in wanted:
                collected[i] = self.norm(x) if i == self.depth - 1 and self.final_norm else x
            if i == last:
                break
        return [collected[i] for i in self.out_indices]

    def forward_tokens(self, x: torch.Tensor) -> Tuple[List[torch.Tensor], Tuple[int, int]]:
        """Run the transformer and collect token sequences.

        Args:
            x: (B, in_chans, H, W).

        Returns:
            (outs, (Gh, Gw)): ``outs[k]`` is the (B, 1 + Gh * Gw, C) output of
            block ``out_indices[k]`` (CLS first; (B, Gh * Gw, C) without it when
            ``use_cls_token=False``; final norm applied to the last block's
            output when enabled), Gh = H/p, Gw = W/p.
        """
        gh, gw = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        outs = self._run_blocks(self._embed(x))
        return [t.reshape(t.shape[0], -1, t.shape[-1]) for t in outs], (gh, gw)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """
        Args:
            x: (B, in_chans, H, W), H and W divisible by the patch size.

        Returns:
            tuple of (B, C, H/p, W/p), one per ``out_indices`` entry.
        """
        outs, (gh, gw) = self.forward_tokens(x)
        start = 1 if self.use_cls_token else 0
        return tuple(t[:, start:].transpose(1, 2).reshape(t.shape[0], -1, gh, gw).contiguous() for t in outs)
