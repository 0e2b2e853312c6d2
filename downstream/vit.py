"""A plain Vision Transformer backbone for dense prediction, in pure PyTorch.

The module layout (and therefore every parameter name) is identical to timm's
``VisionTransformer`` for the DeiT family, so a checkpoint produced by our
pretraining or an official DeiT/timm checkpoint maps onto it through a single
key mapping (:mod:`downstream.weights`)::

    cls_token                      (1, 1, C)
    pos_embed                      (1, 1 + Gh * Gw, C)   Gh, Gw: pretraining grid
    patch_embed.proj.{weight,bias} (C, 3, p, p), (C,)
    blocks.{i}.norm1.{weight,bias}
    blocks.{i}.attn.qkv.{weight,bias}     (3C, C), (3C,)
    blocks.{i}.attn.proj.{weight,bias}
    blocks.{i}.norm2.{weight,bias}
    blocks.{i}.mlp.fc1.{weight,bias}      (hidden, C)
    blocks.{i}.mlp.fc2.{weight,bias}      (C, hidden)
    norm.{weight,bias}                    only when ``final_norm=True``

Differences from the classification model: no classifier head, the learned
absolute position embedding (stored at the pretraining grid) is resized with
bicubic interpolation to the grid of every input at forward time (CLS entry
kept apart), and the forward pass returns NCHW feature maps of the patch
tokens of selected blocks.

For detection (ViTDet-style) the same backbone runs without the CLS token
(``use_cls_token=False``: the CLS entry of ``pos_embed`` is dropped, the
token stays in the state dict for strict loading), with windowed attention in
all blocks but a few global ones (``window_size``, ``global_block_indexes``)
and optionally decomposed relative position biases (``use_rel_pos``; new,
zero-initialised parameters ``blocks.{i}.attn.rel_pos_{h,w}`` that a
classification checkpoint does not have). :class:`ViTPyramidBackbone` puts a
:class:`SimpleFeaturePyramid` (strides 4/8/16/32 from the last block, plus an
optional stride-64 max-pooled level) on top; the MMDetection and Detectron2
registrations are thin subclasses of it.

Nothing here depends on MMSegmentation, MMDetection or Detectron2; the
framework adapters only wrap :class:`VisionTransformer`.
"""

from __future__ import annotations

import math
import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "VisionTransformer",
    "SimpleFeaturePyramid",
    "ViTPyramidBackbone",
    "LayerNorm2d",
    "window_partition",
    "window_unpartition",
    "get_rel_pos",
    "decomposed_rel_pos_bias",
    "resize_pos_embed",
    "get_layer_id",
    "param_groups_layer_decay",
    "to_2tuple",
]


def to_2tuple(x: Union[int, Sequence[int]]) -> Tuple[int, int]:
    """``8 -> (8, 8)``; ``(64, 96) -> (64, 96)``."""
    if isinstance(x, (tuple, list)) or (hasattr(x, "__len__") and not isinstance(x, (str, bytes))):
        x = list(x)  # also OmegaConf ListConfig and the like
        if len(x) != 2:
            raise ValueError(f"expected an int or a pair, got {x!r}")
        return int(x[0]), int(x[1])
    return int(x), int(x)


def resize_pos_embed(
    pos_embed: torch.Tensor,
    src_grid: Sequence[int],
    dst_grid: Sequence[int],
    num_prefix_tokens: int = 1,
    mode: str = "bicubic",
    antialias: bool = False,
) -> torch.Tensor:
    """Resize a learned absolute position embedding to another patch grid.

    The prefix entries (CLS, and a distillation token if any) are kept as
    they are; the patch entries are reshaped to their 2-D grid and resized
    with :func:`torch.nn.functional.interpolate` (``align_corners=False``),
    computed in float32 and cast back to the input dtype.

    Args:
        pos_embed: (1, num_prefix_tokens + Sh * Sw, C).
        src_grid: (Sh, Sw), the grid ``pos_embed`` was learned on.
        dst_grid: (Dh, Dw), the grid wanted.
        num_prefix_tokens: number of leading non-patch entries.
        mode: interpolation mode (``"bicubic"`` by default).
        antialias: passed to ``F.interpolate`` (only matters when shrinking).

    Returns:
        (1, num_prefix_tokens + Dh * Dw, C). The input itself when the grids
        are equal.
    """
    sh, sw = (int(v) for v in src_grid)
    dh, dw = (int(v) for v in dst_grid)
    if pos_embed.dim() != 3 or pos_embed.shape[0] != 1:
        raise ValueError(f"pos_embed must be (1, N, C), got {tuple(pos_embed.shape)}")
    n, c = pos_embed.shape[1], pos_embed.shape[2]
    if n != num_prefix_tokens + sh * sw:
        raise ValueError(
            f"pos_embed has {n} entries, which does not match {num_prefix_tokens} prefix "
            f"token(s) + a {sh}x{sw} grid ({num_prefix_tokens + sh * sw})"
        )
    if (sh, sw) == (dh, dw):
        return pos_embed
    prefix = pos_embed[:, :num_prefix_tokens]
    grid = pos_embed[:, num_prefix_tokens:]
    grid = grid.float().reshape(1, sh, sw, c).permute(0, 3, 1, 2)
    kwargs = {"align_corners": False} if mode in ("linear", "bilinear", "bicubic", "trilinear") else {}
    if antialias and mode in ("bilinear", "bicubic"):
        kwargs["antialias"] = True
    grid = F.interpolate(grid, size=(dh, dw), mode=mode, **kwargs)
    grid = grid.permute(0, 2, 3, 1).reshape(1, dh * dw, c).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole residual branches per sample.

    Args:
        x: (B, ...) output of a residual branch.
    Returns:
        (B, ...) with each sample kept with probability ``1 - drop_prob`` and
        rescaled by ``1 / (1 - drop_prob)``.
    """
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    mask = x.new_empty(shape).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    """Module form of :func:`drop_path`."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding by a strided convolution.

    Input (B, in_chans, H, W) with H and W multiples of ``patch_size``;
    output (B, H/p, W/p, C) (channels last, ready to be flattened to tokens).
    """

    def __init__(self, patch_size: Union[int, Sequence[int]] = 16, in_chans: int = 3, embed_dim: int = 768):
        super().__init__()
        self.patch_size = to_2tuple(patch_size)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ph, pw = self.patch_size
        h, w = x.shape[-2:]
        if h % ph or w % pw:
            raise ValueError(
                f"input size {h}x{w} is not divisible by the patch size {ph}x{pw}; "
                "pad or resize the input (MMSeg: set size_divisor/size in the data preprocessor)"
            )
        x = self.proj(x)  # (B, C, H/p, W/p)
        return x.permute(0, 2, 3, 1)  # (B, H/p, W/p, C)


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative position embeddings for every (query, key) pair along one axis.

    The table ``rel_pos`` has one row per relative offset; it is linearly
    resized when it was learned for another length, and offsets are scaled
    when the query and key lengths differ.

    Args:
        q_size: number of query positions along the axis.
        k_size: number of key positions along the axis.
        rel_pos: (L, D) table, L = 2 * S - 1 for the size S it was made for.

    Returns:
        (q_size, k_size, D): ``out[i, j]`` is the embedding of offset i - j.
    """
    max_dist = 2 * max(q_size, k_size) - 1
    if rel_pos.shape[0] != max_dist:
        table = F.interpolate(rel_pos.float().t().unsqueeze(0), size=max_dist, mode="linear", align_corners=False)
        table = table.squeeze(0).t().to(rel_pos.dtype)
    else:
        table = rel_pos
    q_scale = max(k_size / q_size, 1.0)
    k_scale = max(q_size / k_size, 1.0)
    q_coords = torch.arange(q_size, device=rel_pos.device)[:, None] * q_scale
    k_coords = torch.arange(k_size, device=rel_pos.device)[None, :] * k_scale
    idx = (q_coords - k_coords) + (k_size - 1) * k_scale
    return table[idx.long()]


def decomposed_rel_pos_bias(
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_size: Tuple[int, int],
    k_size: Tuple[int, int],
) -> torch.Tensor:
    """Additive attention bias of decomposed 2-D relative positions (MViTv2/ViTDet).

    ``bias[b, n, (qh, qw), (kh, kw)] = q[b, n, (qh, qw)] . (Rh[qh, kh] + Rw[qw, kw])``
    computed as two small einsums and a broadcast sum.

    Args:
        q: (B, heads, Qh * Qw, D) queries (before the 1/sqrt(D) scaling).
        rel_pos_h: (Lh, D) table along the height.
        rel_pos_w: (Lw, D) table along the width.
        q_size: (Qh, Qw); k_size: (Kh, Kw).

    Returns:
        (B, heads, Qh * Qw, Kh * Kw), in the dtype of ``q``.
    """
    qh, qw = q_size
    kh, kw = k_size
    b, n, _, d = q.shape
    rh = get_rel_pos(qh, kh, rel_pos_h).to(q.dtype)  # (Qh, Kh, D)
    rw = get_rel_pos(qw, kw, rel_pos_w).to(q.dtype)  # (Qw, Kw, D)
    r_q = q.reshape(b, n, qh, qw, d)
    bias_h = torch.einsum("bnhwd,hkd->bnhwk", r_q, rh)  # (B, heads, Qh, Qw, Kh)
    bias_w = torch.einsum("bnhwd,wkd->bnhwk", r_q, rw)  # (B, heads, Qh, Qw, Kw)
    bias = bias_h[..., :, None] + bias_w[..., None, :]  # (B, heads, Qh, Qw, Kh, Kw)
    return bias.reshape(b, n, qh * qw, kh * kw)


class Attention(nn.Module):
    """Multi-head self-attention with a fused QKV projection.

    Uses :func:`torch.nn.functional.scaled_dot_product_attention`, so the
    N x N attention matrix is never materialised by this code (with
    ``use_rel_pos`` the N x N additive bias is, and passed as ``attn_mask``).
    Input and output (B, N, C).

    Args:
        use_rel_pos: add decomposed relative position biases; the tables
            ``rel_pos_h``/``rel_pos_w`` ((2 * S - 1, head_dim) for the
            ``rel_pos_size`` (Sh, Sw)) start at zero and are resized to the
            actual grid at forward time. Needs the token grid ``hw`` in
            :meth:`forward` and a sequence of patch tokens only (no CLS).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        use_rel_pos: bool = False,
        rel_pos_size: Optional[Sequence[int]] = None,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = float(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.use_rel_pos = bool(use_rel_pos)
        if self.use_rel_pos:
            if rel_pos_size is None:
                raise ValueError("use_rel_pos needs rel_pos_size (the token grid the tables are made for)")
            sh, sw = to_2tuple(rel_pos_size)
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * sh - 1, self.head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * sw - 1, self.head_dim))

    def forward(self, x: torch.Tensor, hw: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """
        Args:
            x: (B, N, C).
            hw: (h, w) token grid with h * w == N; required with ``use_rel_pos``.
        Returns:
            (B, N, C).
        """
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
        bias = None
        if self.use_rel_pos:
            if hw is None or hw[0] * hw[1] != n:
                raise ValueError(f"relative position bias needs the token grid of the {n} tokens, got hw={hw}")
            bias = decomposed_rel_pos_bias(q, self.rel_pos_h, self.rel_pos_w, hw, hw)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=self.attn_drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    """Two-layer MLP with GELU: (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def window_partition(x: torch.Tensor, window_size: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Split a token grid into non-overlapping windows, zero-padding the grid first.

    Args:
        x: (B, H, W, C).
        window_size: window side ws.

    Returns:
        (windows, (Hp, Wp)): windows (B * nW, ws * ws, C) in row-major window
        order, nW = (Hp / ws) * (Wp / ws); (Hp, Wp) the padded grid.
    """
    b, h, w, c = x.shape
    pad_h = (window_size - h % window_size) % window_size
    pad_w = (window_size - w % window_size) % window_size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.reshape(b, hp // window_size, window_size, wp // window_size, window_size, c)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, c)
    return windows, (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, pad_hw: Tuple[int, int], hw: Tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`window_partition`.

    Args:
        windows: (B * nW, ws * ws, C).
        pad_hw: (Hp, Wp) padded grid; hw: (H, W) original grid.

    Returns:
        (B, H, W, C) with the padding removed.
    """
    hp, wp = pad_hw
    h, w = hw
    c = windows.shape[-1]
    b = windows.shape[0] // ((hp // window_size) * (wp // window_size))
    x = windows.reshape(b, hp // window_size, wp // window_size, window_size, window_size, c)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
    if hp != h or wp != w:
        x = x[:, :h, :w].contiguous()
    return x


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``.

    With ``window_size > 0`` the attention runs inside non-overlapping
    ``window_size`` x ``window_size`` windows of the token grid (zero-padded
    to a multiple of the window after ``norm1``, as in ViTDet; padded tokens
    are not masked); the sequence must then hold patch tokens only.

    Input and output (B, N, C); ``hw`` = (h, w) with h * w == N is needed for
    windows and relative positions.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        window_size: int = 0,
        use_rel_pos: bool = False,
        rel_pos_size: Optional[Sequence[int]] = None,
    ):
        super().__init__()
        self.window_size = int(window_size)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        if use_rel_pos and self.window_size > 0:
            rel_pos_size = (self.window_size, self.window_size)
        self.attn = Attention(
            dim,
            num_heads,
            qkv_bias=qkv_bias,
            attn_drop=attn_drop,
            proj_drop=drop,
            use_rel_pos=use_rel_pos,
            rel_pos_size=rel_pos_size,
        )
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, hw: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        if self.window_size > 0:
            if hw is None or hw[0] * hw[1] != x.shape[1]:
                raise ValueError(f"windowed attention needs the token grid of the {x.shape[1]} tokens, got hw={hw}")
            b, n, c = x.shape
            y, pad_hw = window_partition(self.norm1(x).view(b, hw[0], hw[1], c), self.window_size)
            y = self.attn(y, (self.window_size, self.window_size))
            y = window_unpartition(y, self.window_size, pad_hw, hw).reshape(b, n, c)
        else:
            y = self.attn(self.norm1(x), hw)
        x = x + self.drop_path(y)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


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
            and segmentation layout). ``False`` (ViTDet) runs on patch tokens
            only and drops the CLS entry of the position embedding; the
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

        if isinstance(out_indices, int):
            out_indices = (out_indices,)
        resolved = []
        for i in out_indices:
            j = int(i) + self.depth if int(i) < 0 else int(i)
            if not 0 <= j < self.depth:
                raise ValueError(f"out_indices entry {i} is out of range for depth {self.depth}")
            resolved.append(j)
        if not resolved:
            raise ValueError("out_indices must not be empty")
        self.out_indices: Tuple[int, ...] = tuple(resolved)

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
        globals_: List[int] = []
        for i in global_block_indexes or ():
            j = int(i) + self.depth if int(i) < 0 else int(i)
            if not 0 <= j < self.depth:
                raise ValueError(f"global_block_indexes entry {i} is out of range for depth {self.depth}")
            globals_.append(j)
        self.global_block_indexes: Tuple[int, ...] = tuple(sorted(set(globals_)))
        window_of = [
            self.window_size if self.window_size > 0 and i not in self.global_block_indexes else 0
            for i in range(self.depth)
        ]

        self.patch_embed = PatchEmbed(self.patch_size, in_chans, self.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
        num_patches = self.grid_size[0] * self.grid_size[1]
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, self.embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = [drop_path_rate * i / (self.depth - 1) if self.depth > 1 else 0.0 for i in range(self.depth)]
        self.blocks = nn.ModuleList(
            [
                Block(
                    self.embed_dim,
                    self.num_heads,
                    mlp_ratio=self.mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=dpr[i],
                    norm_eps=norm_eps,
                    window_size=window_of[i],
                    use_rel_pos=self.use_rel_pos,
                    rel_pos_size=to_2tuple(rel_pos_grid) if rel_pos_grid is not None else self.grid_size,
                )
                for i in range(self.depth)
            ]
        )
        if self.final_norm:
            self.norm = nn.LayerNorm(self.embed_dim, eps=norm_eps)
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
            elif isinstance(m, Attention) and m.use_rel_pos:
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
        """Parameter names conventionally excluded from weight decay."""
        return {"pos_embed", "cls_token", "rel_pos_h", "rel_pos_w"}

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
        x = self.patch_embed(x)  # (B, Gh, Gw, C)
        b, gh, gw, c = x.shape
        x = x.reshape(b, gh * gw, c)
        pos = self.interpolated_pos_embed((gh, gw))  # (1, 1 + Gh * Gw, C)
        if self.use_cls_token:
            x = torch.cat([self.cls_token.expand(b, -1, -1), x], dim=1)
            x = x + pos
        else:
            x = x + pos[:, 1:]
        x = self.pos_drop(x)
        hw = (gh, gw)
        wanted = set(self.out_indices)
        last = max(wanted)
        collected: Dict[int, torch.Tensor] = {}
        for i, blk in enumerate(self.blocks):
            x = blk(x, hw)
            if i in wanted:
                if i == self.depth - 1 and self.final_norm:
                    collected[i] = self.norm(x)
                else:
                    collected[i] = x
            if i == last:
                break
        return [collected[i] for i in self.out_indices], (gh, gw)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """
        Args:
            x: (B, in_chans, H, W), H and W divisible by the patch size.

        Returns:
            tuple of (B, C, H/p, W/p), one per ``out_indices`` entry.
        """
        outs, (gh, gw) = self.forward_tokens(x)
        start = 1 if self.use_cls_token else 0
        maps = []
        for t in outs:
            b, _, c = t.shape
            maps.append(t[:, start:].transpose(1, 2).reshape(b, c, gh, gw).contiguous())
        return tuple(maps)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dim of (B, C, H, W) (ViTDet's "LN" for conv features)."""

    def __init__(self, num_channels: int, eps: float = 1e-6, **kwargs):
        super().__init__(num_channels, eps=eps, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


_LayerNorm2d = LayerNorm2d  # former private name


def _log2_int(s: float) -> int:
    k = math.log2(s)
    if abs(k - round(k)) > 1e-9:
        raise ValueError(f"unsupported scale factor {s}: must be a power of two (4, 2, 1, 0.5, 0.25, ...)")
    return int(round(k))


class SimpleFeaturePyramid(nn.Module):
    """ViTDet-style simple feature pyramid built from one stride-p map.

    Each level resamples the single input map, then applies a 1x1 conv and a
    3x3 conv to ``out_channels`` (each followed by a channels-first
    LayerNorm when ``norm``):

    * scale 2**k, k >= 1: k stride-2 2x2 transposed convs halving the
      channels each time, with LayerNorm2d + GELU between them
      (scale 4: deconv, LN, GELU, deconv; scale 2: one deconv);
    * scale 1: identity;
    * scale 2**-k: a k*2 x k*2 max-pool with the same stride (0.5: 2x2).

    Args:
        in_channels: channels of the input map (the ViT embed dim).
        out_channels: channels of every output level.
        scale_factors: resampling factor of each level relative to the input
            (``(4, 2, 1, 0.5)`` gives strides 4, 8, 16, 32 for p = 16;
            ``(2, 1, 0.5, 0.25)`` the same strides for p = 8).
        norm: apply LayerNorm2d after each conv (the convs then have no bias).

    Shapes:
        input: (B, in_channels, Gh, Gw).
        output: tuple of (B, out_channels, Gh * s, Gw * s), one per scale s
        (for s < 1, Gh and Gw must be divisible by 1/s).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 256,
        scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
        norm: bool = True,
    ):
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.scale_factors = tuple(float(s) for s in scale_factors)
        self.stages = nn.ModuleList()
        for s in self.scale_factors:
            k = _log2_int(s)
            layers: List[nn.Module] = []
            dim = self.in_channels
            for j in range(k):
                if dim % 2:
                    raise ValueError(f"cannot halve {dim} channels for scale factor {s}")
                if j > 0:
                    layers += [LayerNorm2d(dim), nn.GELU()]
                layers += [nn.ConvTranspose2d(dim, dim // 2, 2, stride=2)]
                dim //= 2
            if k < 0:
                f = 2 ** (-k)
                layers += [nn.MaxPool2d(f, stride=f)]
            layers += [nn.Conv2d(dim, out_channels, 1, bias=not norm)]
            if norm:
                layers += [LayerNorm2d(out_channels)]
            layers += [nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=not norm)]
            if norm:
                layers += [LayerNorm2d(out_channels)]
            self.stages.append(nn.Sequential(*layers))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Convs: Kaiming normal (fan_out, ReLU gain), zero bias; norms: identity."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        for s in self.scale_factors:
            if s < 1:
                f = int(round(1 / s))
                if x.shape[-2] % f or x.shape[-1] % f:
                    raise ValueError(
                        f"feature map {tuple(x.shape[-2:])} is not divisible by {f} for scale {s}; "
                        "pad the input to a multiple of the largest pyramid stride (size_divisibility)"
                    )
        return tuple(stage(x) for stage in self.stages)


class ViTPyramidBackbone(nn.Module):
    """Plain ViT + simple feature pyramid: the detection backbone (ViTDet design).

    The ViT (``self.vit``, a :class:`VisionTransformer` with timm key names,
    so its checkpoint loads through :func:`downstream.weights.load_pretrained`)
    returns the last block's stride-p map; ``self.pyramid`` turns it into
    maps of ``strides`` (default 4, 8, 16, 32); ``top_block`` adds one more
    level at twice the last stride by 1x1 max-pooling with stride 2 (the
    "p6" that the RPN of Mask R-CNN uses; the same op as MMDet's FPN extra
    level without convs and Detectron2's ``LastLevelMaxPool``).

    The MMDetection and Detectron2 backbones are thin subclasses; their state
    dicts are identical (``vit.*``, ``pyramid.*``).

    Args:
        img_size, patch_size, in_chans, embed_dim, depth, num_heads,
        mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, drop_path_rate,
        final_norm, norm_eps, interpolate_mode, frozen_stages, use_cls_token,
        window_size, global_block_indexes, use_rel_pos, rel_pos_grid: see
            :class:`VisionTransformer` (``out_indices`` is the last block).
        out_channels: channels of every pyramid level.
        strides: output strides (each ``patch_size * 2**k``).
        top_block: add the max-pooled level at ``2 * strides[-1]``.
        pyramid_norm: LayerNorm2d in the pyramid.

    Shapes:
        input: (B, in_chans, H, W), H and W divisible by
            :attr:`size_divisibility` (the largest pyramid stride).
        output: tuple of (B, out_channels, H / s, W / s) for s in
            :attr:`out_strides`.
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
        final_norm: bool = False,
        norm_eps: float = 1e-6,
        interpolate_mode: str = "bicubic",
        frozen_stages: int = -1,
        use_cls_token: bool = False,
        window_size: int = 0,
        global_block_indexes: Sequence[int] = (),
        use_rel_pos: bool = False,
        rel_pos_grid: Optional[Sequence[int]] = None,
        out_channels: int = 256,
        strides: Sequence[int] = (4, 8, 16, 32),
        top_block: bool = True,
        pyramid_norm: bool = True,
    ):
        super().__init__()
        self.vit = VisionTransformer(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate,
            out_indices=(-1,),
            final_norm=final_norm,
            norm_eps=norm_eps,
            interpolate_mode=interpolate_mode,
            frozen_stages=frozen_stages,
            use_cls_token=use_cls_token,
            window_size=window_size,
            global_block_indexes=global_block_indexes,
            use_rel_pos=use_rel_pos,
            rel_pos_grid=rel_pos_grid,
        )
        strides = tuple(int(s) for s in strides)
        if not strides or list(strides) != sorted(set(strides)):
            raise ValueError(f"strides must be increasing and distinct, got {strides}")
        p = self.vit.patch_size
        self.pyramid = SimpleFeaturePyramid(
            self.vit.embed_dim, out_channels, scale_factors=[p / s for s in strides], norm=pyramid_norm
        )
        self.top_block = bool(top_block)
        self.out_channels = int(out_channels)
        self.out_strides: Tuple[int, ...] = strides + ((2 * strides[-1],) if self.top_block else ())

    @property
    def size_divisibility(self) -> int:
        """Input sides must be multiples of this (the largest pyramid stride)."""
        return max(self.pyramid_strides)

    @property
    def pyramid_strides(self) -> Tuple[int, ...]:
        return self.out_strides[: len(self.pyramid.scale_factors)]

    @property
    def num_layers(self) -> int:
        return self.vit.depth

    def load_pretrained(self, path: str, **kwargs):
        """Load a ViT checkpoint into ``self.vit`` strictly (see :func:`downstream.weights.load_pretrained`).

        Returns the :class:`~downstream.weights.LoadReport`.
        """
        from .weights import load_pretrained

        return load_pretrained(self.vit, path, **kwargs)

    def forward_pyramid(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """(B, in_chans, H, W) -> tuple of (B, out_channels, H / s, W / s), s in :attr:`out_strides`."""
        d = self.size_divisibility
        if x.shape[-2] % d or x.shape[-1] % d:
            raise ValueError(
                f"input size {tuple(x.shape[-2:])} is not divisible by {d} (the largest pyramid stride); "
                "pad the batch (MMDet: pad_size_divisor; Detectron2: the backbone's size_divisibility does it)"
            )
        (feat,) = self.vit(x)  # (B, C, H/p, W/p)
        outs = list(self.pyramid(feat))
        if self.top_block:
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2, padding=0))
        return tuple(outs)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return self.forward_pyramid(x)


# ------------------------------------------------------------ layer-wise lr decay
_BLOCK_RE = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def get_layer_id(name: str, num_layers: int) -> int:
    """Layer id of a backbone parameter for layer-wise lr decay.

    ``cls_token``, ``pos_embed`` and ``patch_embed.*`` -> 0;
    ``blocks.{i}.*`` -> i + 1; anything else (``norm.*``, heads, necks, the
    feature pyramid) -> ``num_layers + 1``. Any prefix (``backbone.``,
    ``backbone.vit.``) is allowed.

    Args:
        name: parameter name, e.g. ``"backbone.blocks.3.attn.qkv.weight"``.
        num_layers: number of transformer blocks.
    """
    m = _BLOCK_RE.search(name)
    if m:
        return int(m.group(1)) + 1
    leaf = name.rsplit(".", 1)[-1]
    if leaf in ("cls_token", "pos_embed", "dist_token") or re.search(r"(?:^|\.)patch_embed\.", name):
        return 0
    return num_layers + 1


def param_groups_layer_decay(
    model: nn.Module,
    base_lr: float,
    weight_decay: float = 0.05,
    layer_decay: float = 0.75,
    num_layers: Optional[int] = None,
    no_weight_decay: Iterable[str] = ("pos_embed", "cls_token", "rel_pos_h", "rel_pos_w"),
    prefix: Optional[str] = None,
) -> List[Dict[str, object]]:
    """Optimizer parameter groups with layer-wise lr decay.

    Parameter ``n`` with layer id ``l`` (see :func:`get_layer_id`) gets
    ``lr = base_lr * layer_decay ** (num_layers + 1 - l)``; biases, norm
    weights (1-D tensors) and names in ``no_weight_decay`` get no weight decay.

    Args:
        model: a :class:`VisionTransformer`, or a model containing one whose
            parameter names contain ``blocks.{i}.``.
        num_layers: number of blocks; taken from ``model.depth`` when omitted.
        prefix: when given (e.g. ``"backbone.vit."`` for a detector), only
            parameters whose names start with it get a decayed layer id;
            all others (necks, heads) get ``num_layers + 1`` (the full lr).

    Returns:
        list of dicts with ``params``, ``lr``, ``lr_scale``, ``weight_decay``,
        ``layer_id`` and ``param_names``, usable by any torch optimizer.
    """
    if num_layers is None:
        num_layers = getattr(model, "depth", None)
        if num_layers is None:
            ids = [int(m.group(1)) for n, _ in model.named_parameters() for m in [_BLOCK_RE.search(n)] if m]
            num_layers = max(ids) + 1 if ids else 0
    skip = set(no_weight_decay)
    groups: Dict[Tuple[int, bool], Dict[str, object]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        lid = get_layer_id(name, num_layers) if prefix is None or name.startswith(prefix) else num_layers + 1
        leaf = name.rsplit(".", 1)[-1] if "." in name else name
        no_decay = p.ndim <= 1 or name in skip or leaf in skip or name.endswith(".bias")
        key = (lid, no_decay)
        if key not in groups:
            scale = layer_decay ** (num_layers + 1 - lid)
            groups[key] = {
                "params": [],
                "param_names": [],
                "lr": base_lr * scale,
                "lr_scale": scale,
                "weight_decay": 0.0 if no_decay else weight_decay,
                "layer_id": lid,
            }
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    return [groups[k] for k in sorted(groups)]

