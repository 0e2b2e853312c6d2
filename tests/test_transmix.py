"""TransMix: lambda, masks and the attention tap against slow, obviously-correct references."""
import math

import pytest
import torch

from pretrain.mixing import build_mixer, transmix_lambda
from pretrain.mixing.base import box_masks, boxes_from_centres, mix_targets, rand_bbox, rand_bbox_minmax
from pretrain.models.vit import ClsAttentionTap, create_vit


def slow_lambda(pixel_mask, attn_grid, lam_area, mode):
    """Reference: walk over every patch, take the pixel at its top-left corner (nearest-neighbour
    downsampling with an integer factor), and sum the attention of the patches kept from the own image."""
    b, _, h, w = pixel_mask.shape
    gh, gw = attn_grid.shape[1:]
    ph, pw = h // gh, w // gw
    out = []
    for i in range(b):
        kept = total = 0.0
        for r in range(gh):
            for c in range(gw):
                a = float(attn_grid[i, r, c])
                total += a
                if pixel_mask[i, 0, r * ph, c * pw] == 0:
                    kept += a
        lam_attn = kept / total
        if mode == "attn":
            out.append(lam_attn)
        elif mode == "mean":
            out.append((float(lam_area[i]) + lam_attn) / 2)
        else:
            out.append(float(lam_area[i]))
    return torch.tensor(out)


@pytest.mark.parametrize("mode", ["mean", "attn", "area"])
@pytest.mark.parametrize("hw,patch", [((64, 64), 8), ((48, 80), 16)])
def test_lambda_matches_slow_reference(mode, hw, patch):
    torch.manual_seed(0)
    b = 6
    h, w = hw
    mixer = build_mixer({"name": "transmix", "mixup_alpha": 0.0, "lam_mode": mode, "mode": "elem"}, 7, seed=1)
    x = torch.randn(b, 3, h, w)
    y = torch.randint(0, 7, (b,))
    batch = mixer(x, y)
    attn = torch.rand(b, h // patch, w // patch) ** 3  # peaky, non-uniform attention
    targets = mixer.targets(batch, attn)
    lam_ref = slow_lambda(batch.mask, attn, batch.lam, mode)
    # the reference lambda, put into targets the slow way
    ref = torch.zeros(b, 7)
    eps = 0.1 / 7
    for i in range(b):
        for k in range(7):
            own = (1 - 0.1 + eps) if k == y[i] else eps
            other = (1 - 0.1 + eps) if k == y[b - 1 - i] else eps
            ref[i, k] = lam_ref[i] * own + (1 - lam_ref[i]) * other
    torch.testing.assert_close(targets, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(targets.sum(1), torch.ones(b))


def test_lambda_function_direct_and_detached():
    attn = torch.tensor([[1.0, 1.0, 2.0, 0.0], [0.0, 0.0, 0.0, 4.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    lam_area = torch.tensor([0.5, 0.75])
    lam = transmix_lambda(mask, attn, lam_area, "attn")
    torch.testing.assert_close(lam, torch.tensor([0.75, 0.0]))
    assert not lam.requires_grad
    lam = transmix_lambda(mask, attn, lam_area, "mean")
    torch.testing.assert_close(lam, torch.tensor([0.625, 0.375]))


def test_mixed_pixels_come_from_the_right_source():
    mixer = build_mixer({"name": "transmix", "mixup_alpha": 0.0, "mode": "elem"}, 5, seed=3)
    x = torch.randn(8, 3, 32, 32)
    y = torch.arange(8) % 5
    batch = mixer(x, y)
    m = batch.mask.bool().expand_as(x)
    assert torch.equal(batch.images[m], x.flip(0)[m])
    assert torch.equal(batch.images[~m], x[~m])
    # area lambda equals the unmasked share exactly (correct_lam)
    torch.testing.assert_close(batch.lam, 1 - batch.mask.flatten(1).mean(1))


@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_correct_lam_false_mean_uses_the_clipped_box_area(mode):
    """Beckschen/TransMix ``transmix_label``: lam0 = pasted box area / (H W) from the (clipped) box, whatever
    ``correct_lam`` did to the area target; lam = ((1 - lam0) + lam_attn) / 2 for the own label."""
    torch.manual_seed(0)
    b, k, h, w, p = 16, 7, 32, 32, 8
    mixer = build_mixer({"name": "transmix", "mixup_alpha": 0.0, "correct_lam": False, "mode": mode,
                         "label_smoothing": 0.0}, k, seed=5)
    x, y = torch.randn(b, 3, h, w), torch.arange(b) % k
    for _ in range(20):  # until some box is clipped by the border, so the drawn and the area lambda differ
        batch = mixer(x, y)
        pasted = [float(batch.mask[i].sum()) / (h * w) for i in range(b)]
        if any(abs((1 - pasted[i]) - float(batch.lam[i])) > 1e-3 for i in range(b)):
            break
    else:
        pytest.fail("no clipped box in 20 batches")
    attn = torch.rand(b, h // p, w // p) ** 2
    t = mixer.targets(batch, attn)
    for i in range(b):
        kept = total = 0.0
        for r in range(h // p):
            for c in range(w // p):
                total += float(attn[i, r, c])
                if batch.mask[i, 0, r * p, c * p] == 0:
                    kept += float(attn[i, r, c])
        lam = ((1 - pasted[i]) + kept / total) / 2
        want = torch.zeros(k)
        want[y[i]] += lam
        want[y[b - 1 - i]] += 1 - lam
        torch.testing.assert_close(t[i], want, rtol=1e-5, atol=1e-6)
    # the plain-CutMix ablation keeps timm's correct_lam=False semantics: the drawn lambda
    area = build_mixer({"name": "transmix", "mixup_alpha": 0.0, "correct_lam": False, "mode": mode,
                        "lam_mode": "area", "label_smoothing": 0.0}, k, seed=5)
    torch.testing.assert_close(area.targets(batch, attn), mix_targets(y, y.flip(0), batch.lam, k))


def slow_timm054_box(hw, lam, cy, cx):
    """timm 0.5.4 ``rand_bbox`` for a given centre: half sides cut//2 on both sides of the centre, clipped."""
    h, w = hw
    cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    clip = lambda v, hi: min(max(v, 0), hi)  # noqa: E731
    return (clip(cy - cut_h // 2, h), clip(cy + cut_h // 2, h), clip(cx - cut_w // 2, w), clip(cx + cut_w // 2, w))


@pytest.mark.parametrize("hw", [(224, 224), (50, 71), (31, 17)])
def test_timm054_box_rule_has_even_sides(hw):
    g = torch.Generator().manual_seed(0)
    lam = torch.rand(200, generator=g, dtype=torch.float64)
    cy = torch.randint(0, hw[0], (200,), generator=g)
    cx = torch.randint(0, hw[1], (200,), generator=g)
    ours = boxes_from_centres(hw, lam, cy, cx, rule="timm054")
    now = boxes_from_centres(hw, lam, cy, cx, rule="timm")
    odd = 0
    for i in range(200):
        ref = slow_timm054_box(hw, float(lam[i]), int(cy[i]), int(cx[i]))
        assert tuple(int(v) for v in ours[i]) == ref
        cut_h = int(hw[0] * math.sqrt(1 - float(lam[i])))
        y0, y1 = ref[:2]
        if 0 < y0 and y1 < hw[0]:  # unclipped: 2 * (cut_h // 2) rows, one fewer than timm 1.0's cut_h when odd
            assert y1 - y0 == 2 * (cut_h // 2)
            if cut_h % 2:
                odd += 1
                assert int(now[i, 1] - now[i, 0]) == cut_h
    assert odd > 0
    with pytest.raises(ValueError, match="box rule"):
        boxes_from_centres(hw, lam, cy, cx, rule="timm2")


def test_timm054_box_rule_through_the_mixer_and_minmax():
    """``box_rule: timm054`` reaches the mixer's boxes (even unclipped sides, lam = own share of the pixels)
    and the min-max boxes (top-left corner in [0, H - cut_h), as timm 0.5.4's ``randint(0, H - cut_h)``)."""
    x, y = torch.randn(64, 3, 33, 33), torch.arange(64) % 5
    mixer = build_mixer({"name": "transmix", "mixup_alpha": 0.0, "mode": "elem", "box_rule": "timm054"}, 5, seed=0)
    batch = mixer(x, y)
    torch.testing.assert_close(batch.lam, 1 - batch.mask.flatten(1).mean(1))
    rows = batch.mask[:, 0].amax(2).sum(1)  # box height per sample
    cols = batch.mask[:, 0].amax(1).sum(1)
    inner = (batch.mask[:, 0, 0].sum(1) == 0) & (batch.mask[:, 0, -1].sum(1) == 0)  # touches neither edge row
    inner &= (batch.mask[:, 0, :, 0].sum(1) == 0) & (batch.mask[:, 0, :, -1].sum(1) == 0)
    assert int(inner.sum()) > 0 and bool((rows[inner] % 2 == 0).all() and (cols[inner] % 2 == 0).all())
    g = torch.Generator().manual_seed(0)
    boxes = rand_bbox_minmax((40, 30), 3000, (0.2, 0.8), generator=g, rule="timm054")
    assert bool((boxes[:, 1] < 40).all() and (boxes[:, 3] < 30).all())
    g = torch.Generator().manual_seed(0)
    now = rand_bbox_minmax((40, 30), 3000, (0.2, 0.8), generator=g)
    assert bool((now[:, 1] == 40).any())
    with pytest.raises(ValueError, match="box_rule"):
        build_mixer({"name": "cutmix", "box_rule": "old"}, 5)


def test_rand_bbox_matches_timm_formula():
    lam = torch.tensor([0.3, 0.9, 0.999, 0.0])
    g = torch.Generator().manual_seed(0)
    boxes = rand_bbox((50, 70), lam, generator=g)
    for (y0, y1, x0, x1), l in zip(boxes.tolist(), lam.tolist()):
        cut_h, cut_w = int(50 * math.sqrt(1 - l)), int(70 * math.sqrt(1 - l))
        assert 0 <= y0 <= y1 <= 50 and 0 <= x0 <= x1 <= 70
        assert y1 - y0 <= cut_h and x1 - x0 <= cut_w
    m = box_masks(boxes, (50, 70))
    for i, (y0, y1, x0, x1) in enumerate(boxes.tolist()):
        assert m[i].sum() == (y1 - y0) * (x1 - x0)


def test_mix_targets_rows_sum_to_one_and_bad_labels_fail():
    t = mix_targets(torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([0.3, 0.3]), 3, 0.1)
    torch.testing.assert_close(t.sum(1), torch.ones(2))
    with pytest.raises(ValueError, match="out of range"):
        mix_targets(torch.tensor([5]), torch.tensor([0]), torch.tensor([1.0]), 3)


def slow_cls_attention(model, x):
    """Reference: recompute the last block's full attention matrix by hand and take the CLS row."""
    feats = model.patch_embed(x)
    feats = model._pos_embed(feats)
    feats = model.norm_pre(feats)
    for blk in model.blocks[:-1]:
        feats = blk(feats)
    blk = model.blocks[-1]
    attn = blk.attn
    z = blk.norm1(feats)
    b, n, c = z.shape
    qkv = attn.qkv(z).reshape(b, n, 3, attn.num_heads, c // attn.num_heads).permute(2, 0, 3, 1, 4)
    q, k = qkv[0], qkv[1]
    full = (q @ k.transpose(-2, -1) * attn.scale).softmax(-1)  # B, heads, N, N
    return full[:, :, 0].mean(1)[:, 1:]


def test_attention_tap_equals_full_attention_and_keeps_logits():
    torch.manual_seed(0)
    model = create_vit("deit_tiny_patch16_224", 4, img_size=(32, 48), patch_size=8, depth=2).eval()
    x = torch.randn(3, 3, 32, 48)
    with torch.no_grad():
        plain = model(x)
        tap = ClsAttentionTap(model)
        tapped = model(x)
        a = tap.patch_attention()
        ref = slow_cls_attention(model, x)
    assert a.shape == (3, 4 * 6)
    torch.testing.assert_close(a, ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(tapped, plain)  # observing the attention changes nothing
    tap.remove()


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="unknown mixer"):
        build_mixer({"name": "nope"}, 10)
    with pytest.raises(ValueError, match="lam_mode"):
        build_mixer({"name": "transmix", "lam_mode": "median"}, 10)
    mixer = build_mixer({"name": "transmix", "mixup_alpha": 0.0}, 10, seed=0)
    with pytest.raises(ValueError, match="at least 2"):
        mixer(torch.randn(1, 3, 16, 16), torch.tensor([1]))
    with pytest.raises(ValueError, match="labels"):
        mixer(torch.randn(2, 3, 16, 16), torch.rand(2, 10))
    batch = mixer(torch.randn(2, 3, 16, 16), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="needs the CLS attention"):
        mixer.targets(batch, None)
    no_cls = create_vit("deit_tiny_patch16_224", 4, img_size=32, patch_size=8, depth=1,
                        class_token=False, global_pool="avg")
    with pytest.raises(ValueError, match="class token"):
        ClsAttentionTap(no_cls)
