"""Checkpoint loading and every study end to end on the tiny synthetic world, cross-checked
against slow per-image references (PIL + loops) that share no code with the studies."""
from __future__ import annotations

import csv
import json
import os
import xml.etree.ElementTree as ET
from collections import deque

import numpy as np
import pytest
import torch
from PIL import Image

from pretrain.analysis.cli import main, run
from pretrain.analysis.common import AnalysisError, load_classifier
from pretrain.checkpoint import save_weights
from pretrain.models.vit import ClsAttentionTap, create_vit, vit_arch

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
NAME = "deit_tiny_patch16_224"


def _tiny_vit(seed, num_classes=4, embed_dim=64, num_heads=2, img_size=32):
    torch.manual_seed(seed)
    model = create_vit(NAME, num_classes, img_size=img_size, patch_size=8, depth=2, embed_dim=embed_dim,
                       num_heads=num_heads).eval()
    with torch.no_grad():  # make the attention and position embedding matter at init
        model.pos_embed.normal_(0, 0.5)
        for blk in model.blocks:
            blk.attn.qkv.weight.mul_(4.0)
    return model


def _fit(model, root, steps):
    """A few full-batch Adam steps on the synthetic train set, so that predictions differ per image."""
    items = [(root / "imagenet" / "train" / c / f, ci)
             for ci, c in enumerate(sorted(os.listdir(root / "imagenet" / "train")))
             for f in sorted(os.listdir(root / "imagenet" / "train" / c))]
    x = torch.stack([_load_image(p) for p, _ in items])
    y = torch.tensor([t for _, t in items])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, synthetic_root):
    d = tmp_path_factory.mktemp("analysis_ckpt")
    out = {}
    for seed, name, steps in ((1, "a", 25), (2, "b", 10)):
        m = _fit(_tiny_vit(seed), synthetic_root, steps)
        save_weights(str(d / f"{name}.safetensors"), m.state_dict(), vit_arch(m, NAME))
        out[name] = (str(d / f"{name}.safetensors"), m)
    return out


def _load_image(path):
    return torch.from_numpy(((np.asarray(Image.open(path).convert("RGB"), np.float32) / 255 - MEAN) / STD)
                            .transpose(2, 0, 1).copy())


def test_load_classifier_round_trip_and_errors(ckpts, tmp_path):
    path, ref = ckpts["a"]
    lm = load_classifier(path, name="a")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = ref(x)
    logits, att = lm.forward(x, attention=True)
    assert torch.allclose(logits, expected, atol=1e-5)
    assert att.shape == (3, 4, 4) and torch.allclose(att.sum((1, 2)), torch.ones(3), atol=1e-5)
    assert lm.num_classes == 4 and lm.grid == (4, 4)

    # a timm/DeiT-style pickle without metadata: heads from the width (128 / 64 = 2)
    m2 = _tiny_vit(3, embed_dim=128, num_heads=2)
    torch.save({"model": {f"module.{k}": v for k, v in m2.state_dict().items()}}, tmp_path / "deit.pth")
    lm2 = load_classifier(str(tmp_path / "deit.pth"))
    with torch.no_grad():
        assert torch.allclose(lm2.forward(x), m2(x), atol=1e-5)

    # a DINO-like backbone: no head -> saliency only
    sd = {k: v for k, v in m2.state_dict().items() if not k.startswith("head.")}
    torch.save(sd, tmp_path / "dino.pth")
    dino = load_classifier(str(tmp_path / "dino.pth"))
    assert dino.num_classes == 0 and dino.attention(torch.randn(2, 3, 48, 48)).shape == (2, 4, 4)

    # another input size: position embeddings resampled
    big = load_classifier(path, img_size=48)
    assert big.grid == (6, 6) and big.forward(torch.randn(2, 3, 48, 48)).shape == (2, 4)

    with pytest.raises(Exception, match="nope.safetensors"):
        load_classifier(str(tmp_path / "nope.safetensors"))
    broken = {k: v for k, v in m2.state_dict().items() if k != "blocks.1.norm1.weight"}
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(AnalysisError, match="broken.pth.*blocks.1.norm1.weight"):
        load_classifier(str(tmp_path / "broken.pth"))


# ----------------------------------------------------------------------- slow references
def _val_images(root, classes=None):
    val = root / "imagenet" / "val"
    names = sorted(os.listdir(val))
    for ci, c in enumerate(names):
        if classes is not None and c not in classes:
            continue
        for f in sorted(os.listdir(val / c)):
            yield val / c / f, ci


def _ref_top1(model, items, indices=None):
    hits = n = 0
    for path, target in items:
        with torch.no_grad():
            logits = model(_load_image(path)[None])[0]
        if indices is not None:
            pred = indices[int(logits[indices].argmax())]
        else:
            pred = int(logits.argmax())
        hits += pred == target
        n += 1
    return 100.0 * hits / n


def _ref_mask(att, keep):
    flat = att.flatten().astype(np.float64)
    flat /= flat.sum()
    order = np.argsort(-flat, kind="stable")
    out = np.zeros(flat.size, bool)
    mass = 0.0
    for idx in order:
        if mass < keep:
            out[idx] = True
        mass += flat[idx]
    return out.reshape(att.shape)


def _ref_box(mask):
    h, w = mask.shape
    seen = np.zeros_like(mask)
    best = []
    for r in range(h):
        for c in range(w):
            if mask[r, c] and not seen[r, c]:
                q, comp = deque([(r, c)]), []
                seen[r, c] = True
                while q:
                    y, x = q.popleft()
                    comp.append((y, x))
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            yy, xx = y + dy, x + dx
                            if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not seen[yy, xx]:
                                seen[yy, xx] = True
                                q.append((yy, xx))
                if len(comp) > len(best):
                    best = comp
    ys, xs = [p[0] for p in best], [p[1] for p in best]
    return min(xs), min(ys), max(xs) + 1, max(ys) + 1


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _ref_attention_quality(model, voc, keep):
    tap = ClsAttentionTap(model)
    ids = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    jac, loc = [], []
    for i in ids:
        x = _load_image(voc / "JPEGImages" / f"{i}.jpg")
        with torch.no_grad():
            model(x[None])
        att = tap.patch_attention()[0].reshape(4, 4).numpy()
        mask = _ref_mask(att, keep)
        pix = np.kron(mask, np.ones((8, 8), bool))
        lab = np.asarray(Image.open(voc / "SegmentationClass" / f"{i}.png"))
        valid = lab != 255
        fg = (lab != 0) & valid
        inter = (pix & fg & valid).sum()
        union = ((pix | fg) & valid).sum()
        jac.append(inter / union if union else 1.0)
        x0, y0, x1, y1 = (v * 8 for v in _ref_box(mask))
        gts = [[float(o.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
               for o in ET.parse(voc / "Annotations" / f"{i}.xml").getroot().iter("object")]
        loc.append(max(_iou((x0, y0, x1, y1), (g[0] - 1, g[1] - 1, g[2], g[3])) for g in gts) >= 0.5)
    tap.remove()
    return 100.0 * np.mean(jac), 100.0 * np.mean(loc)


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------ pipeline
@pytest.mark.slow
def test_all_studies_on_the_synthetic_world(synthetic_root, ckpts, tmp_path):
    out = tmp_path / "analysis"
    run(["all", "--data", str(synthetic_root), "--out", str(out), "--device", "cpu", "--workers", "0",
         "--batch-size", "16", "--ckpt", f"a={ckpts['a'][0]}", f"b={ckpts['b'][0]}"])
    for study in ("occlusion", "shuffle", "natural_adversarial", "attention"):
        for ext in ("csv", "json", "png"):
            assert (out / f"{study}.{ext}").stat().st_size > 0, (study, ext)
    assert (out / "attention_overlays.png").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"a", "b"}
    assert summary["a"]["occl_random_0"] > 40.0  # the fitted model is well above chance (25%)

    classes = json.loads((synthetic_root / "classes.json").read_text())
    occ = json.loads((out / "occlusion.json").read_text())["rows"]
    shuf = json.loads((out / "shuffle.json").read_text())["rows"]
    nat = json.loads((out / "natural_adversarial.json").read_text())
    att = {(r["checkpoint"], r["keep_mass"]): r for r in json.loads((out / "attention.json").read_text())["rows"]}
    assert len(occ) == 2 * 3 * 10 and {r["num_patches"] for r in occ} == {16}
    assert sorted({r["grid_size"] for r in shuf if r["grid_size"] != "mean"}) == [1, 4, 16]
    for name in ("a", "b"):
        model = ckpts[name][1]
        clean = _ref_top1(model, _val_images(synthetic_root))
        for r in occ:
            if r["checkpoint"] == name and r["ratio"] == 0.0:
                assert r["top1"] == pytest.approx(clean), r
        full_drop = [r for r in occ if r["checkpoint"] == name and r["ratio"] == 0.9]
        assert all(r["dropped_patches"] == 14 for r in full_drop)
        assert next(r for r in shuf if r["checkpoint"] == name and r["grid_size"] == 1)["top1"] == pytest.approx(clean)
        # the ImageNet-A-like subset: every other class, logits restricted to those classes
        picked = classes[1::2]
        idx = [classes.index(c) for c in picked]
        ref = _ref_top1(model, ((p, classes.index(sorted(os.listdir(synthetic_root / "imagenet" / "val"))[t]))
                                for p, t in _val_images(synthetic_root, picked)), indices=idx)
        row = next(r for r in nat["rows"] if r["checkpoint"] == name)
        assert nat["subset_indices"] == idx and row["images"] == 8 * len(picked)
        assert row["top1"] == pytest.approx(ref)
        jac, loc = _ref_attention_quality(model, synthetic_root / "voc", 0.6)
        assert att[(name, 0.6)]["jaccard"] == pytest.approx(jac, abs=1e-6)
        assert att[(name, 0.6)]["gt_known_loc"] == pytest.approx(loc)
    # a larger kept mass gives larger masks
    assert att[("a", 0.9)]["mask_area"] > att[("a", 0.5)]["mask_area"]
    assert _rows(out / "occlusion.csv")[0].keys() >= {"checkpoint", "mode", "ratio", "top1"}


def test_studies_reject_bad_inputs(synthetic_root, ckpts, tmp_path):
    val = str(synthetic_root / "imagenet" / "val")
    m3 = _tiny_vit(4, num_classes=3)
    p3 = tmp_path / "three.safetensors"
    save_weights(str(p3), m3.state_dict(), vit_arch(m3, NAME))
    base = ["--out", str(tmp_path / "o"), "--device", "cpu", "--workers", "0"]
    with pytest.raises(AnalysisError, match="has 4 class folders but three has 3 outputs"):
        run(["occlusion", "--data", val, "--ckpt", f"three={p3}", *base])
    with pytest.raises(AnalysisError, match="not a square number"):
        run(["shuffle", "--data", val, "--ckpt", f"a={ckpts['a'][0]}", "--grid-sizes", "1", "9", *base])
    bad_map = tmp_path / "map.txt"
    bad_map.write_text("0\n1\n")
    with pytest.raises(AnalysisError, match="map.txt lists 2 classes but the data has 4"):
        run(["natural-adversarial", "--data", val, "--subset-map", str(bad_map), "--ckpt", f"a={ckpts['a'][0]}", *base])
    with pytest.raises(AnalysisError, match="not a VOC2012 folder"):
        run(["attention", "--voc", str(tmp_path), "--ckpt", f"a={ckpts['a'][0]}", *base])
    with pytest.raises(AnalysisError, match="not found"):
        run(["occlusion", "--data", str(tmp_path / "missing"), "--ckpt", f"a={ckpts['a'][0]}", *base])
    # the console script's main reports the same as "error: ..." with exit status 2
    assert main(["occlusion", "--data", str(tmp_path / "missing"), "--ckpt", f"a={ckpts['a'][0]}", *base]) == 2


def test_occlusion_with_external_saliency_and_wsol_from_folders(synthetic_root, ckpts, tmp_path):
    # a headless (DINO-like) checkpoint as the saliency source
    dino = _tiny_vit(5, num_classes=0)
    save_weights(str(tmp_path / "dino.safetensors"), dino.state_dict(), vit_arch(dino, NAME))
    out = tmp_path / "o"
    val = str(synthetic_root / "imagenet" / "val")
    run(["occlusion", "--data", val, "--ckpt", f"a={ckpts['a'][0]}", "--saliency", str(tmp_path / "dino.safetensors"),
         "--ratios", "0", "0.5", "--modes", "salient", "--out", str(out), "--device", "cpu", "--workers", "0",
         "--crop-pct", "1.0"])
    res = json.loads((out / "occlusion.json").read_text())
    assert res["saliency"].endswith("dino.safetensors") and {r["saliency"] for r in res["rows"]} == {"saliency"}
    # WSOL in the ImageNet val layout: an image tree plus a folder of <stem>.xml boxes (some missing)
    voc = synthetic_root / "voc"
    imgs, boxes = tmp_path / "val" / "cls", tmp_path / "boxes"
    imgs.mkdir(parents=True)
    boxes.mkdir()
    ids = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    for i in ids:
        os.symlink(voc / "JPEGImages" / f"{i}.jpg", imgs / f"{i}.jpg")
    for i in ids[:-2]:
        os.symlink(voc / "Annotations" / f"{i}.xml", boxes / f"{i}.xml")
    run(["attention", "--box-images", str(tmp_path / "val"), "--boxes", str(boxes), "--ckpt", f"a={ckpts['a'][0]}",
         "--out", str(out), "--device", "cpu", "--workers", "0"])
    res = json.loads((out / "attention.json").read_text())
    assert res["skipped"]["boxes"] == 2 and res["rows"][0]["loc_images"] == len(ids) - 2
    assert res["rows"][0]["top1_loc"] is None  # no class list given


def test_max_batches_limits_every_study_to_the_first_batches(synthetic_root, ckpts, tmp_path):
    out = tmp_path / "analysis"
    run(["all", "--data", str(synthetic_root), "--out", str(out), "--device", "cpu", "--workers", "0",
         "--batch-size", "3", "--max-batches", "2", "--ckpt", f"a={ckpts['a'][0]}"])
    # 2 batches of 3 (every set has more than 6 images): every study saw exactly 6
    counts = {"occlusion": ["images"], "shuffle": ["images"], "natural_adversarial": ["images"],
              "attention": ["seg_images", "loc_images"]}
    for study, keys in counts.items():
        rows = json.loads((out / f"{study}.json").read_text())["rows"]
        assert rows and all(r[k] == 6 for r in rows for k in keys), (study, rows[0])
    # --ratios (the quickstart's 0 0.5 0.9): the same counts at those ratios as the full curve (nested masks)
    run(["all", "--data", str(synthetic_root), "--out", str(tmp_path / "few"), "--device", "cpu", "--workers", "0",
         "--batch-size", "3", "--max-batches", "2", "--ratios", "0", "0.5", "0.9", "--ckpt", f"a={ckpts['a'][0]}"])
    full = {(r["mode"], r["ratio"]): r["correct"] for r in json.loads((out / "occlusion.json").read_text())["rows"]}
    few = {(r["mode"], r["ratio"]): r["correct"]
           for r in json.loads((tmp_path / "few" / "occlusion.json").read_text())["rows"]}
    assert sorted({ratio for _, ratio in few}) == [0.0, 0.5, 0.9] and len(few) == 9
    assert few == {k: full[k] for k in few}
    with pytest.raises(SystemExit):
        run(["occlusion", "--data", str(synthetic_root), "--out", str(out), "--ckpt", f"a={ckpts['a'][0]}",
             "--max-batches", "0"])
