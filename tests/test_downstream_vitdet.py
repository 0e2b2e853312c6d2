"""Framework-free detection backbone (ViTDet design): windowed attention, decomposed relative
positions and the simple feature pyramid against slow, obviously correct references
(downstream.vit without CLS token, downstream.pyramid, downstream.layer_decay)."""

import pytest
import torch
import torch.nn.functional as F

timm = pytest.importorskip("timm")

from downstream.layer_decay import get_layer_id, param_groups_layer_decay  # noqa: E402
from downstream.vit import VisionTransformer  # noqa: E402


def test_simple_feature_pyramid_shapes():
    from downstream.pyramid import SimpleFeaturePyramid

    fpn = SimpleFeaturePyramid(192, 32, scale_factors=(4, 2, 1, 0.5))
    outs = fpn(torch.randn(2, 192, 8, 12))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 32, 48), (2, 32, 16, 24), (2, 32, 8, 12), (2, 32, 4, 6)]


def _ref_attention(x, attn, hw=None, rel=False):
    """Explicit softmax attention of one sequence x (N, C) with ``attn``'s weights."""
    n, c = x.shape
    h = attn.num_heads
    d = c // h
    qkv = x @ attn.qkv.weight.t() + attn.qkv.bias
    q, k, v = qkv[:, :c], qkv[:, c : 2 * c], qkv[:, 2 * c :]
    out = torch.zeros(n, c)
    for head in range(h):
        qh, kh, vh = (t[:, head * d : (head + 1) * d] for t in (q, k, v))
        logits = qh @ kh.t() / d**0.5
        if rel:
            gh, gw = hw
            rh = _ref_rel_table(gh, attn.rel_pos_h)
            rw = _ref_rel_table(gw, attn.rel_pos_w)
            for i in range(n):
                for j in range(n):
                    (yi, xi), (yj, xj) = divmod(i, gw), divmod(j, gw)
                    logits[i, j] += qh[i] @ (rh[yi - yj + gh - 1] + rw[xi - xj + gw - 1])
        out[:, head * d : (head + 1) * d] = torch.softmax(logits, -1) @ vh
    return out @ attn.proj.weight.t() + attn.proj.bias


def _ref_rel_table(size, table):
    """The table resized (numpy linear interpolation, half-pixel centres) to 2 * size - 1 rows."""
    import numpy as np

    want = 2 * size - 1
    if table.shape[0] == want:
        return table.detach()
    src = table.detach().numpy()
    pos = np.clip((np.arange(want) + 0.5) * src.shape[0] / want - 0.5, 0, src.shape[0] - 1)
    cols = [np.interp(pos, np.arange(src.shape[0]), src[:, c]) for c in range(src.shape[1])]
    return torch.tensor(np.stack(cols, 1), dtype=table.dtype)


def _ref_detection_forward(m, x):
    """Slow ViTDet-style forward of a VisionTransformer without CLS token: loops over images and windows."""
    feats = []
    for img in x:
        t = m.patch_embed.proj(img[None])[0]  # (C, gh, gw)
        c, gh, gw = t.shape
        pe = m.pos_embed.detach()[:, 1:].reshape(1, *m.grid_size, c).permute(0, 3, 1, 2)
        pe = F.interpolate(pe, size=(gh, gw), mode="bicubic", align_corners=False)[0]
        t = (t + pe).permute(1, 2, 0)  # (gh, gw, C)
        for blk in m.blocks:
            y = blk.norm1(t)
            ws = blk.window_size
            if ws:
                ph, pw = -gh % ws, -gw % ws
                y = F.pad(y, (0, 0, 0, pw, 0, ph))
                out = torch.zeros_like(y)
                for r in range(0, gh + ph, ws):
                    for s in range(0, gw + pw, ws):
                        win = y[r : r + ws, s : s + ws].reshape(ws * ws, c)
                        a = _ref_attention(win, blk.attn, (ws, ws), blk.attn.use_rel_pos)
                        out[r : r + ws, s : s + ws] = a.reshape(ws, ws, c)
                y = out[:gh, :gw]
            else:
                y = _ref_attention(y.reshape(gh * gw, c), blk.attn, (gh, gw), blk.attn.use_rel_pos).reshape(gh, gw, c)
            t = t + y
            t = t + blk.mlp(blk.norm2(t))
        feats.append(t.permute(2, 0, 1))
    return torch.stack(feats)


def _randomise(m):
    torch.manual_seed(3)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m.eval()


@pytest.mark.parametrize("use_rel_pos", [False, True])
def test_windowed_vit_matches_slow_reference(use_rel_pos):
    # a 5x7 token grid with windows of 3: padding on both sides; block 1 global
    m = _randomise(
        VisionTransformer(
            img_size=32, patch_size=8, embed_dim=16, depth=3, num_heads=2, use_cls_token=False,
            window_size=3, global_block_indexes=(1,), use_rel_pos=use_rel_pos, final_norm=False,
        )
    )
    assert [b.window_size for b in m.blocks] == [3, 0, 3]
    if use_rel_pos:  # window tables (2*3-1), global table made for the 4x4 grid and resized to 5x7
        assert m.blocks[0].attn.rel_pos_h.shape == (5, 8) and m.blocks[1].attn.rel_pos_w.shape == (7, 8)
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        (out,) = m(x)
        ref = _ref_detection_forward(m, x)
    assert out.shape == (2, 16, 5, 7)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


def test_get_rel_pos_interpolates_and_scales():
    from timm.models.vision_transformer_sam import get_rel_pos  # what the backbone's attention uses

    table = torch.randn(7, 4)  # made for size 4
    same = get_rel_pos(4, 4, table)
    for i in range(4):
        for j in range(4):
            assert torch.equal(same[i, j], table[i - j + 3])
    bigger = get_rel_pos(6, 6, table)  # resized to 11 rows
    ref = _ref_rel_table(6, table)
    torch.testing.assert_close(bigger[5, 0], ref[10], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bigger[0, 5], ref[0], rtol=1e-5, atol=1e-6)


def test_window_partition_round_trip_and_cls_token_rules():
    # timm's (what the backbone's blocks use): windows (B * nW, ws, ws, C), unpartition(w, ws, hw, pad_hw)
    from timm.models.vision_transformer_sam import window_partition, window_unpartition

    x = torch.randn(2, 5, 7, 3)
    w, pad = window_partition(x, 3)
    assert w.shape == (2 * 2 * 3, 3, 3, 3) and pad == (6, 9)
    assert torch.equal(w[0], x[0, :3, :3])
    assert torch.equal(window_unpartition(w, 3, (5, 7), pad), x)
    with pytest.raises(ValueError, match="use_cls_token=False"):
        VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, window_size=2)
    with pytest.raises(ValueError, match="global_block_indexes"):
        VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, use_cls_token=False,
                          window_size=2, global_block_indexes=(5,))


def test_simple_feature_pyramid_patch8_strides_and_pooling_reference():
    from downstream.pyramid import SimpleFeaturePyramid

    fpn = _randomise(SimpleFeaturePyramid(32, 16, scale_factors=(2, 1, 0.5, 0.25)))
    x = torch.randn(2, 32, 8, 12)
    outs = fpn(x)
    assert [tuple(o.shape) for o in outs] == [(2, 16, 16, 24), (2, 16, 8, 12), (2, 16, 4, 6), (2, 16, 2, 3)]
    # the 0.25 level is a 4x4 max-pool, then 1x1 conv + LN + 3x3 conv + LN
    pooled = torch.stack([x[..., i * 4 : i * 4 + 4, j * 4 : j * 4 + 4].amax((-1, -2)) for i in range(2) for j in range(3)], -1)
    pooled = pooled.reshape(2, 32, 2, 3)
    stage = fpn.stages[3]
    y = stage[1](pooled)
    ref = F.layer_norm(y.permute(0, 2, 3, 1), (16,), stage[2].weight, stage[2].bias, 1e-6).permute(0, 3, 1, 2)
    ref = stage[3](ref)
    ref = F.layer_norm(ref.permute(0, 2, 3, 1), (16,), stage[4].weight, stage[4].bias, 1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(outs[3], ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="power of two"):
        SimpleFeaturePyramid(32, 16, scale_factors=(3,))
    with pytest.raises(ValueError, match="size_divisibility"):
        fpn(torch.randn(1, 32, 6, 6))


def test_vit_pyramid_backbone_levels_and_layer_decay_prefix():
    from downstream.pyramid import ViTPyramidBackbone

    bb = ViTPyramidBackbone(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, window_size=2,
                            global_block_indexes=(2,), out_channels=16).eval()
    assert bb.out_strides == (4, 8, 16, 32, 64) and bb.size_divisibility == 32
    outs = bb(torch.randn(1, 3, 64, 96))
    assert [tuple(o.shape[-2:]) for o in outs] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    assert torch.equal(outs[4], outs[3][..., ::2, ::2])  # 1x1 max-pool, stride 2
    with pytest.raises(ValueError, match="not divisible by 32"):
        bb(torch.randn(1, 3, 48, 64))

    class Det(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = bb
            self.head = torch.nn.ModuleDict({"blocks": torch.nn.ModuleList([torch.nn.Linear(2, 2)])})

    groups = param_groups_layer_decay(Det(), base_lr=1.0, layer_decay=0.5, num_layers=3, prefix="backbone.vit.")
    lr = {n: g["lr"] for g in groups for n in g["param_names"]}
    assert get_layer_id("backbone.vit.cls_token", 3) == 0 and get_layer_id("backbone.vit.patch_embed.proj.weight", 3) == 0
    assert lr["backbone.vit.pos_embed"] == pytest.approx(0.5**4)
    assert lr["backbone.vit.blocks.2.mlp.fc1.weight"] == pytest.approx(0.5)
    assert lr["backbone.pyramid.stages.0.0.weight"] == 1.0
    assert lr["head.blocks.0.weight"] == 1.0  # outside the prefix: not taken for a ViT block
    assert "backbone.vit.cls_token" not in lr  # unused without the CLS token: frozen


def test_rel_pos_grid_sizes_the_global_tables():
    m = VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, use_cls_token=False,
                          window_size=2, global_block_indexes=(1,), use_rel_pos=True, rel_pos_grid=(6, 5))
    assert m.blocks[0].attn.rel_pos_h.shape == (3, 8)  # window of 2
    assert m.blocks[1].attn.rel_pos_h.shape == (11, 8) and m.blocks[1].attn.rel_pos_w.shape == (9, 8)
    (out,) = m(torch.randn(1, 3, 48, 40))  # exactly the 6x5 grid: no resizing
    assert out.shape == (1, 16, 6, 5)

