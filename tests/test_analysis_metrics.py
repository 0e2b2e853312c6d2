"""Metrics and batched transforms of the analysis studies against hand-computed cases and slow
loop references; the studies' bookkeeping with stub models whose outputs/attention are set by hand."""
from __future__ import annotations

import json
from collections import deque

import numpy as np
import pytest
import torch

from pretrain.analysis.attention_quality import (attention_quality_study, box_iou_any, jaccard,
                                                 largest_component_boxes, parse_voc_boxes, threshold_attention,
                                                 upsample_mask)
from pretrain.analysis.common import AnalysisError, LoadedModel, parse_ckpt_specs
from pretrain.analysis.natural_adversarial import (check_indices, read_class_list, read_subset_map,
                                                   subset_map_from_class_list, subset_study)
from pretrain.analysis.occlusion import (apply_patch_drop, drop_mask_from_scores, num_dropped, occlusion_study,
                                         patch_drop_mask)
from pretrain.analysis.shuffle import grid_side, shuffle_pieces, shuffle_study, valid_grid_sizes


class StubModel(LoadedModel):
    """A LoadedModel whose logits and attention come from hand-written functions of the input."""

    def __init__(self, name, img_size, patch_size, num_classes, logits_fn, attention_fn=None):
        super().__init__(name=name, source="stub", model=None, tap=None, img_size=tuple(img_size),
                         patch_size=patch_size, num_classes=num_classes)
        self.logits_fn, self.attention_fn = logits_fn, attention_fn
        self.calls = 0

    def forward(self, images, amp_dtype=None, attention=False):
        self.calls += 1
        logits = self.logits_fn(images)
        if not attention:
            return logits
        return logits, self.attention_fn(images)


# ------------------------------------------------------------------------------ occlusion
def test_num_dropped_rounds_half_up_and_checks_range():
    assert [num_dropped(r, 196) for r in (0.0, 0.1, 0.5, 0.9, 1.0)] == [0, 20, 98, 176, 196]
    assert num_dropped(0.25, 10) == 3  # 2.5 -> 3
    with pytest.raises(AnalysisError, match="ratio"):
        num_dropped(1.5, 10)


def test_drop_masks_pick_the_extreme_patches():
    g = torch.Generator().manual_seed(0)
    sal = torch.rand(6, 16, generator=g)
    for ratio in (0.0, 0.25, 0.5, 0.9):
        k = num_dropped(ratio, 16)
        hi = patch_drop_mask("salient", ratio, saliency=sal)
        lo = patch_drop_mask("nonsalient", ratio, saliency=sal)
        for b in range(6):
            order = sorted(range(16), key=lambda p: -float(sal[b, p]))
            assert set(torch.nonzero(hi[b]).flatten().tolist()) == set(order[:k])
            assert set(torch.nonzero(lo[b]).flatten().tolist()) == set(order[16 - k:])
    noise = torch.rand(6, 16, generator=g)
    m3, m8 = patch_drop_mask("random", 0.3, noise=noise), patch_drop_mask("random", 0.8, noise=noise)
    assert (m3.sum(1) == num_dropped(0.3, 16)).all() and (m8.sum(1) == num_dropped(0.8, 16)).all()
    assert not (m3 & ~m8).any()  # one noise draw gives nested masks across ratios
    with pytest.raises(AnalysisError, match="saliency"):
        patch_drop_mask("salient", 0.5, noise=noise)
    with pytest.raises(AnalysisError, match="mode"):
        patch_drop_mask("center", 0.5, saliency=sal)
    with pytest.raises(AnalysisError, match="cannot drop"):
        drop_mask_from_scores(sal, 17)


def test_apply_patch_drop_matches_a_pixel_loop():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(3, 2, 12, 8, generator=g)  # 3x2 grid of 4-pixel patches
    dropped = torch.rand(3, 6, generator=g) > 0.5
    out = apply_patch_drop(images, dropped, 4)
    ref = images.clone()
    for b in range(3):
        for p in range(6):
            r, c = divmod(p, 2)
            if dropped[b, p]:
                ref[b, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = 0
    assert torch.equal(out, ref)
    with pytest.raises(AnalysisError, match="multiple"):
        apply_patch_drop(torch.zeros(1, 3, 10, 8), torch.zeros(1, 4, dtype=torch.bool), 4)
    with pytest.raises(AnalysisError, match="drop mask"):
        apply_patch_drop(images, dropped[:, :5], 4)


def _marker_model(num_patches=4, patch=2, marker_patch=0):
    """Correct (class 1) iff the marker patch is intact; its attention peaks on the marker patch."""
    side = int(num_patches ** 0.5)
    r, c = divmod(marker_patch, side)

    def logits_fn(x):
        intact = x[:, 0, r * patch, c * patch] != 0
        return torch.stack([(~intact).float(), intact.float()], dim=1)

    def att_fn(x):
        a = torch.full((x.shape[0], num_patches), 0.1)
        a[:, marker_patch] = 1.0
        return (a / a.sum(1, keepdim=True)).view(x.shape[0], side, side)

    return StubModel("marker", (side * patch, side * patch), patch, 2, logits_fn, att_fn)


def _batches(images, targets, bs):
    return [(images[i:i + bs], targets[i:i + bs]) for i in range(0, len(images), bs)]


def test_occlusion_study_with_hand_set_attention():
    model = _marker_model()
    n = 2000
    images = torch.ones(n, 3, 4, 4)
    loader = _batches(images, torch.ones(n, dtype=torch.long), 500)
    ratios = [0.0, 0.25, 0.5, 0.75, 0.9]
    rows = occlusion_study([model], loader, torch.device("cpu"), ratios=ratios, seed=3)
    acc = {(r["mode"], r["ratio"]): r["top1"] for r in rows}
    # salient: the marker patch holds the most attention, so it is the first to go
    assert [acc[("salient", r)] for r in ratios] == [100.0, 0.0, 0.0, 0.0, 0.0]
    # non-salient: it is the last to go; 0.9 of 4 patches rounds to 4 = all
    assert [acc[("nonsalient", r)] for r in ratios] == [100.0, 100.0, 100.0, 100.0, 0.0]
    # random: the marker survives with probability 1 - k/P
    for r in ratios:
        expected = 100.0 * (1 - num_dropped(r, 4) / 4)
        assert abs(acc[("random", r)] - expected) < 3.5, (r, acc[("random", r)])
    assert all(r["images"] == n for r in rows)


def test_occlusion_uses_an_external_saliency_model():
    model = _marker_model(marker_patch=0)
    # the external model ranks patch 3 highest and the marker patch 0 lowest
    ext_att = torch.tensor([0.05, 0.2, 0.3, 0.45]).view(1, 2, 2)
    ext = StubModel("ext", (4, 4), 2, 0, lambda x: None, lambda x: ext_att.expand(x.shape[0], 2, 2))
    ext.attention = lambda x, amp=None: ext.attention_fn(x)
    loader = _batches(torch.ones(8, 3, 4, 4), torch.ones(8, dtype=torch.long), 8)
    rows = occlusion_study([model], loader, torch.device("cpu"), ratios=[0.25], modes=["salient", "nonsalient"],
                           saliency_model=ext)
    acc = {r["mode"]: r["top1"] for r in rows}
    # the model's own attention would give the opposite (salient 0, non-salient 100)
    assert acc == {"salient": 100.0, "nonsalient": 0.0}
    assert rows[0]["saliency"] == "ext"


def test_occlusion_refuses_mixed_inputs_and_headless_models():
    a, b = _marker_model(), _marker_model(num_patches=16)
    with pytest.raises(AnalysisError, match="input size"):
        occlusion_study([a, b], [], torch.device("cpu"))
    a.num_classes = 0
    with pytest.raises(AnalysisError, match="no classifier head"):
        occlusion_study([a], [], torch.device("cpu"))


# -------------------------------------------------------------------------------- shuffle
def test_shuffle_pieces_matches_a_loop_reference():
    g = torch.Generator().manual_seed(2)
    images = torch.randn(3, 2, 12, 12, generator=g)
    for gs in (4, 9, 16, 36):
        side = int(gs ** 0.5)
        perm = torch.stack([torch.randperm(gs, generator=g) for _ in range(3)])
        out = shuffle_pieces(images, gs, perm=perm)
        ph = 12 // side
        ref = torch.empty_like(images)
        for b in range(3):
            for j in range(gs):
                src = int(perm[b, j])
                (rj, cj), (rs, cs) = divmod(j, side), divmod(src, side)
                ref[b, :, rj * ph:(rj + 1) * ph, cj * ph:(cj + 1) * ph] = \
                    images[b, :, rs * ph:(rs + 1) * ph, cs * ph:(cs + 1) * ph]
        assert torch.equal(out, ref), gs
    assert torch.equal(shuffle_pieces(images, 1), images)
    drawn = shuffle_pieces(images, 144, generator=g)
    assert torch.equal(drawn.flatten(2).sort(-1).values, images.flatten(2).sort(-1).values)
    with pytest.raises(AnalysisError, match="valid sizes: \\[1, 4, 9, 16, 36, 144\\]"):
        shuffle_pieces(images, 64)
    assert valid_grid_sizes((224, 224), 16) == [1, 4, 16, 49, 64, 196]
    assert grid_side(196, (224, 224)) == 14


def test_shuffle_study_accuracy_follows_the_permutation_odds():
    # class 1 iff the top-left piece is still the marked one: probability 1 / G after shuffling
    def logits_fn(x):
        keep = x[:, 0, 0, 0] > 0.5
        return torch.stack([(~keep).float(), keep.float()], 1)

    model = StubModel("pos", (8, 8), 2, 2, logits_fn)
    n = 4000
    images = torch.zeros(n, 1, 8, 8)
    images[:, :, :2, :2] = 1.0  # the top-left 2x2 block is the marker (one piece for G <= 16)
    rows = shuffle_study([model], _batches(images, torch.ones(n, dtype=torch.long), 1000), torch.device("cpu"),
                         grid_sizes=[1, 4, 16])
    acc = {r["grid_size"]: r["top1"] for r in rows}
    assert acc[1] == 100.0
    assert abs(acc[4] - 25.0) < 2.5 and abs(acc[16] - 6.25) < 1.5
    assert acc["mean"] == pytest.approx((acc[1] + acc[4] + acc[16]) / 3)


# ----------------------------------------------------------------------- class subsets
def test_subset_map_formats_and_errors(tmp_path):
    folders = ["n01", "n02", "n03"]
    (tmp_path / "plain.txt").write_text("# indices_in_1k\n6\n 2\n9\n")
    (tmp_path / "named.txt").write_text("n03 9\nn01 6\nn02 2\n")
    (tmp_path / "list.json").write_text("[6, 2, 9]")
    (tmp_path / "dict.json").write_text(json.dumps({"n02": 2, "n03": 9, "n01": 6}))
    for f in ("plain.txt", "named.txt", "list.json", "dict.json"):
        assert read_subset_map(str(tmp_path / f), folders) == [6, 2, 9], f
    (tmp_path / "short.txt").write_text("6\n2\n")
    with pytest.raises(AnalysisError, match="short.txt lists 2 classes but the data has 3"):
        read_subset_map(str(tmp_path / "short.txt"), folders)
    (tmp_path / "bad.txt").write_text("n01 6\nn09 2\nn03 9\n")
    with pytest.raises(AnalysisError, match="unknown \\['n09'\\], missing \\['n02'\\]"):
        read_subset_map(str(tmp_path / "bad.txt"), folders)
    with pytest.raises(AnalysisError, match="not found"):
        read_subset_map(str(tmp_path / "nope.txt"), folders)
    (tmp_path / "classes.txt").write_text("n00\nn01\nn02\nn03\n")
    assert subset_map_from_class_list(folders, read_class_list(str(tmp_path / "classes.txt"))) == [1, 2, 3]
    with pytest.raises(AnalysisError, match="not in the"):
        subset_map_from_class_list(["n07"], ["n00"])
    with pytest.raises(AnalysisError, match="indices must be in"):
        check_indices([1, 1000], 1000, "map")
    with pytest.raises(AnalysisError, match="repeated"):
        check_indices([1, 1], 1000, "map")


def test_subset_study_scores_restricted_logits():
    # 6-way model, subset = model classes [4, 1]; the best overall class is often outside the subset
    logits = torch.tensor([[0.0, 1.0, 9.0, 0.0, 2.0, 0.0],   # subset argmax -> 4 (subset idx 0)
                           [0.0, 3.0, 9.0, 0.0, 2.0, 0.0],   # -> 1 (subset idx 1)
                           [9.0, 0.5, 0.0, 0.0, 0.4, 0.0]])  # -> 1 (subset idx 1)
    model = StubModel("s", (4, 4), 2, 6, lambda x: logits[x[:, 0, 0, 0].long()])
    images = torch.arange(3).float().view(3, 1, 1, 1).expand(3, 3, 4, 4)
    target = torch.tensor([0, 0, 1])
    rows = subset_study([model], [(images, target)], [4, 1], torch.device("cpu"), dataset="a")
    assert rows[0]["top1"] == pytest.approx(200 / 3) and rows[0]["top5"] == 100.0
    assert rows[0]["subset_classes"] == 2


# --------------------------------------------------------------------- attention quality
def _dino_reference(att, keep):
    """DINO's formulation: ascending sort, keep where the cumulative mass exceeds 1 - keep."""
    out = np.zeros(len(att), bool)
    a = np.asarray(att, np.float64) / np.sum(att)
    order = np.argsort(a, kind="stable")
    cum = np.cumsum(a[order])
    for i, idx in enumerate(order):
        out[idx] = cum[i] > 1 - keep
    return out


def test_threshold_attention_hand_cases_and_dino_reference():
    att = torch.tensor([[0.5, 0.3, 0.1, 0.1]])
    assert threshold_attention(att, 0.6).tolist() == [[True, True, False, False]]
    assert threshold_attention(att, 0.5).tolist() == [[True, False, False, False]]
    assert threshold_attention(att, 0.95).tolist() == [[True, True, True, True]]
    assert threshold_attention(att * 7, 0.6).tolist() == [[True, True, False, False]]  # scale-free
    g = torch.Generator().manual_seed(4)
    rnd = torch.rand(20, 3, 5, generator=g) ** 3  # distinct values, no ties
    for keep in (0.3, 0.6, 0.9):
        got = threshold_attention(rnd, keep)
        assert got.shape == rnd.shape
        for b in range(20):
            ref = _dino_reference(rnd[b].flatten().numpy(), keep)
            assert got[b].flatten().numpy().tolist() == ref.tolist()
    with pytest.raises(AnalysisError, match="keep_mass"):
        threshold_attention(att, 0.0)


def test_upsample_and_jaccard_hand_case():
    mask = torch.tensor([[[True, False], [False, False]]])
    up = upsample_mask(mask, (4, 4))
    assert up[0].int().tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    label = torch.tensor([[[0, 3, 0, 0],
                           [7, 255, 0, 0],
                           [0, 0, 0, 0],
                           [0, 0, 0, 255]]], dtype=torch.uint8)
    inter, union = jaccard(up, label)
    # prediction: 4 pixels, one of them ignored (255) -> 3; foreground: pixels (0,1) and (1,0)
    # intersection = 2; union = 3 predicted + 0 extra fg = 3
    assert inter.tolist() == [2.0] and union.tolist() == [3.0]
    with pytest.raises(AnalysisError, match="shape"):
        jaccard(up, label[:, :3])


def _bfs_largest_box(mask, conn):
    h, w = mask.shape
    seen = np.zeros_like(mask, bool)
    best = None
    nbrs = [(-1, 0), (1, 0), (0, -1), (0, 1)] + ([(-1, -1), (-1, 1), (1, -1), (1, 1)] if conn == 8 else [])
    for r in range(h):
        for c in range(w):
            if not mask[r, c] or seen[r, c]:
                continue
            q, cells = deque([(r, c)]), []
            seen[r, c] = True
            while q:
                y, x = q.popleft()
                cells.append((y, x))
                for dy, dx in nbrs:
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not seen[yy, xx]:
                        seen[yy, xx] = True
                        q.append((yy, xx))
            if best is None or len(cells) > len(best):  # first in raster order wins ties
                best = cells
    if best is None:
        return None
    ys, xs = [p[0] for p in best], [p[1] for p in best]
    return [min(xs), min(ys), max(xs) + 1, max(ys) + 1]


def test_largest_component_boxes_against_bfs():
    hand = torch.tensor([[[1, 1, 0, 0, 0],
                          [0, 0, 0, 1, 1],
                          [0, 0, 0, 1, 1],
                          [1, 0, 0, 0, 0]],
                         [[1, 0, 0, 0, 0],
                          [0, 1, 0, 0, 0],
                          [0, 0, 1, 0, 0],
                          [0, 0, 0, 0, 0]],
                         [[0] * 5] * 4], dtype=torch.bool)
    boxes, valid = largest_component_boxes(hand, 8)
    assert boxes[0].tolist() == [3, 1, 5, 3] and boxes[1].tolist() == [0, 0, 3, 3]
    assert valid.tolist() == [True, True, False] and boxes[2].tolist() == [0, 0, 0, 0]
    boxes4, _ = largest_component_boxes(hand, 4)
    assert boxes4[1].tolist() == [0, 0, 1, 1]  # diagonal cells are separate with 4-connectivity
    g = torch.Generator().manual_seed(5)
    rnd = torch.rand(40, 7, 9, generator=g) < 0.45
    for conn in (4, 8):
        boxes, valid = largest_component_boxes(rnd, conn)
        for b in range(40):
            ref = _bfs_largest_box(rnd[b].numpy(), conn)
            assert valid[b] == (ref is not None)
            if ref is not None:
                assert boxes[b].tolist() == ref, (conn, b)


def test_box_iou_any_and_voc_xml(tmp_path):
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 4.0, 4.0]])
    gt = torch.tensor([[[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 0.0, 0.0]],
                       [[10.0, 10.0, 12.0, 12.0], [0.0, 0.0, 4.0, 2.0]]])
    valid = torch.tensor([[True, False], [True, True]])
    iou = box_iou_any(pred, gt, valid)
    assert iou.tolist() == pytest.approx([1 / 7, 0.5])
    (tmp_path / "a.xml").write_text(
        "<annotation><size><width>10</width><height>8</height></size>"
        "<object><name>n01</name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>10</xmax><ymax>8</ymax></bndbox></object>"
        "<object><name>n02</name><bndbox><xmin>3</xmin><ymin>3</ymin><xmax>4</xmax><ymax>5</ymax></bndbox></object>"
        "</annotation>")
    boxes, names = parse_voc_boxes(str(tmp_path / "a.xml"))
    assert boxes == [[0.0, 1.0, 10.0, 8.0], [2.0, 2.0, 4.0, 5.0]] and names == ["n01", "n02"]
    (tmp_path / "b.xml").write_text("<annotation><object>")
    with pytest.raises(AnalysisError, match="b.xml"):
        parse_voc_boxes(str(tmp_path / "b.xml"))


def test_attention_quality_study_with_hand_set_attention():
    # 2x2 patch grid of 2-pixel patches (4x4 images); attention set by hand per image
    atts = torch.tensor([[[0.7, 0.1], [0.1, 0.1]],     # keep 0.6 -> top-left patch only
                         [[0.3, 0.3], [0.2, 0.2]]])    # keep 0.6 -> top row
    model = StubModel("h", (4, 4), 2, 3, lambda x: torch.eye(3)[x[:, 0, 0, 0].long()],
                      lambda x: atts[x[:, 0, 0, 0].long()])
    images = torch.arange(2).float().view(2, 1, 1, 1).expand(2, 3, 4, 4)
    labels = torch.zeros(2, 4, 4, dtype=torch.uint8)
    labels[0, :2, :2] = 5           # foreground = exactly the top-left patch -> J = 1
    labels[1, :, :2] = 2            # left column (8 px) vs predicted top row (8 px): inter 4, union 12
    labels[1, 3, 3] = 255
    gt = torch.tensor([[[0.0, 0.0, 2.0, 2.0]], [[0.0, 0.0, 4.0, 3.0]]])  # IoU 1 and 8/12
    gt_valid = torch.ones(2, 1, dtype=torch.bool)
    target = torch.tensor([0, 2])  # image 1 predicted as class 1: wrong class
    rows, ex = attention_quality_study([model], torch.device("cpu"), seg_loader=[(images, labels)],
                                       box_loader=[(images, gt, gt_valid, target)], keep_masses=[0.6])
    r = rows[0]
    assert r["jaccard"] == pytest.approx(100 * (1.0 + 4 / 12) / 2)
    assert r["jaccard_dataset"] == pytest.approx(100 * (4 + 4) / (4 + 12))
    assert r["gt_known_loc"] == 100.0 and r["top1_loc"] == 50.0
    assert r["mean_box_iou"] == pytest.approx(100 * (1 + 8 / 12) / 2)
    assert ex["images"].shape == (2, 3, 4, 4) and ex["attention"]["h"].shape == (2, 2, 2)


def test_parse_ckpt_specs():
    assert parse_ckpt_specs(["a=x.pth", "runs/tm/model.safetensors"]) == [("a", "x.pth"), ("tm", "runs/tm/model.safetensors")]
    with pytest.raises(AnalysisError, match="unique"):
        parse_ckpt_specs(["a=x", "a=y"])
    with pytest.raises(AnalysisError, match="name=path"):
        parse_ckpt_specs(["=x"])
