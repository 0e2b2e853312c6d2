"""Tests of the synthetic world (pretrain/synthetic: classes, scenes, rendering, the ImageNet/ADE20K/COCO/VOC
writers, generate()) and its CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pretrain import synthetic as S
from pretrain.synthetic import generator, render, scenes, shapes

REPO = Path(__file__).resolve().parents[1]

# pycocotools' decode() trips a numpy 2 deprecation warning that is not ours
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# tiny but complete: non-square segmentation images catch width/height mix-ups
TINY = dict(num_classes=4, cls_size=32, seg_size="48x40", train_per_class=3, val_per_class=2,
            seg_train=3, seg_val=4, coco_train=3, coco_val=5, voc_val=8)


def _files(root: Path, pattern: str) -> list[Path]:
    return sorted(root.glob(pattern))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synth") / "set"
    manifest = S.generate(out, seed=0, **TINY)
    return out, manifest


# ---------------------------------------------------------------------------
# classes and scenes
# ---------------------------------------------------------------------------

def test_class_names_sort_in_index_order_and_are_distinct():
    for k in (1, 10, 37, S.MAX_CLASSES):
        names = S.class_names(k)
        assert len(names) == len(set(names)) == k
        assert sorted(names) == names
        specs = S.class_specs(k)
        assert len({(s.shape, s.texture) for s in specs}) == k
    assert S.class_names(12)[:10] == S.class_names(10)
    # the first ten classes use ten different shapes and ten different textures
    first = S.class_specs(10)
    assert len({s.shape for s in first}) == len({s.texture for s in first}) == 10
    for bad in (0, S.MAX_CLASSES + 1):
        with pytest.raises(ValueError):
            S.class_specs(bad)


def test_classification_scene_has_dominant_object_and_small_distractors():
    specs = S.class_specs(10)
    fracs, n_distractors = [], 0
    for i in range(40):
        label = i % 10
        sc = S.build_scene("imagenet", "train", i, seed=3, num_classes=10, size=64, label=label)
        assert sc.image.shape == (64, 64, 3) and sc.image.dtype == np.uint8
        main = sc.objects[sc.main]
        assert sc.main == len(sc.objects) - 1 and main.cls == label
        assert len(sc.objects) <= 3
        fracs.append(sc.visible[sc.main].mean())
        main_area = shapes.shape_area(main.shape) * main.radius ** 2
        for obj in sc.objects[:-1]:
            n_distractors += 1
            assert obj.cls != label
            assert shapes.shape_area(obj.shape) * obj.radius ** 2 <= 0.25 * main_area + 1e-6
        assert specs[label].shape == main.shape
    fracs = np.array(fracs)
    assert fracs.min() > 0.08 and fracs.max() < 0.75 and 0.2 < fracs.mean() < 0.55
    assert n_distractors > 0


def test_render_is_vectorised_fast_enough():
    t0 = time.perf_counter()
    for i in range(20):
        S.build_scene("ade", "train", i, size=128)
    assert (time.perf_counter() - t0) / 20 < 0.1  # a few ms per 128x128 scene in practice


# ---------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------

def test_same_seed_gives_identical_files_and_other_seed_differs(tiny, tmp_path):
    out, _ = tiny
    again = tmp_path / "again"
    other = tmp_path / "other"
    S.generate(again, seed=0, **TINY)
    S.generate(other, seed=1, **TINY)

    labels = _files(out, "ade/annotations/*/*.png") + _files(out, "voc/SegmentationClass/*.png")
    assert len(labels) == TINY["seg_train"] + TINY["seg_val"] + TINY["voc_val"]
    for f in labels:
        rel = f.relative_to(out)
        assert f.read_bytes() == (again / rel).read_bytes(), rel
    for rel in ("coco/annotations/instances_train.json", "coco/annotations/instances_val.json",
                "classes.json", "synthetic.json"):
        assert (out / rel).read_bytes() == (again / rel).read_bytes(), rel
    for f in _files(out, "imagenet/val/*/*.JPEG")[:4]:
        rel = f.relative_to(out)
        assert np.array_equal(np.asarray(Image.open(f)), np.asarray(Image.open(again / rel)))

    n_diff = sum(f.read_bytes() != (other / f.relative_to(out)).read_bytes() for f in labels)
    assert n_diff >= len(labels) - 1
    rel = "coco/annotations/instances_train.json"
    assert (out / rel).read_bytes() != (other / rel).read_bytes()
    f = _files(out, "imagenet/train/*/*.JPEG")[0]
    assert not np.array_equal(np.asarray(Image.open(f)),
                              np.asarray(Image.open(other / f.relative_to(out))))


def test_images_do_not_depend_on_other_sets(tmp_path):
    S.generate(tmp_path / "a", seed=5, **{**TINY, "seg_val": 2}, only="ade")
    S.generate(tmp_path / "b", seed=5, **{**TINY, "seg_val": 3, "seg_train": 1}, only="ade,voc")
    for i in range(2):
        rel = f"ade/annotations/validation/synth_val_{i:05d}.png"
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


# ---------------------------------------------------------------------------
# formats
# ---------------------------------------------------------------------------

def test_imagenet_folder_loads_with_imagefolder(tiny):
    torchvision = pytest.importorskip("torchvision")
    out, manifest = tiny
    classes = json.loads((out / "classes.json").read_text())
    assert classes == S.class_names(TINY["num_classes"]) == manifest["classes"]
    for split, n in (("train", TINY["train_per_class"]), ("val", TINY["val_per_class"])):
        ds = torchvision.datasets.ImageFolder(str(out / "imagenet" / split))
        assert ds.classes == classes
        assert ds.class_to_idx == {c: i for i, c in enumerate(classes)}
        assert len(ds) == n * len(classes)
        img, target = ds[len(ds) - 1]
        assert img.mode == "RGB" and img.size == (TINY["cls_size"],) * 2
        assert target == len(classes) - 1
        assert Path(ds.samples[0][0]).name == f"{classes[0]}_00000.JPEG"


def test_ade_layout_labels_and_sizes(tiny):
    out, _ = tiny
    k = TINY["num_classes"]
    for split, folder, n in (("train", "training", TINY["seg_train"]),
                             ("val", "validation", TINY["seg_val"])):
        images = _files(out / "ade/images" / folder, "*.jpg")
        anns = _files(out / "ade/annotations" / folder, "*.png")
        assert [p.stem for p in images] == [p.stem for p in anns]
        assert [p.stem for p in images] == [f"synth_{split}_{i:05d}" for i in range(n)]
        seen = set()
        for pi, pa in zip(images, anns):
            im, an = Image.open(pi), Image.open(pa)
            assert im.mode == "RGB" and an.mode == "L"
            assert im.size == an.size == (48, 40)
            values = set(np.unique(np.asarray(an)).tolist())
            assert values <= set(range(k + 1))
            seen |= values
        assert 0 in seen and len(seen) > 1


def test_coco_json_masks_areas_and_boxes(tiny):
    pytest.importorskip("pycocotools")
    from pycocotools.coco import COCO

    out, _ = tiny
    k = TINY["num_classes"]
    n_poly = n_rle = 0
    for split in ("train", "val"):
        coco = COCO(str(out / f"coco/annotations/instances_{split}.json"))
        data = coco.dataset
        assert set(data) >= {"info", "licenses", "images", "categories", "annotations"}
        assert sorted(coco.getCatIds()) == list(range(1, k + 1))
        assert [c["name"] for c in data["categories"]] == S.class_names(k)
        assert len(data["images"]) == TINY[f"coco_{split}"]
        ann_ids = [a["id"] for a in data["annotations"]]
        assert len(ann_ids) == len(set(ann_ids)) > 0
        for img in data["images"]:
            path = out / "coco" / split / img["file_name"]
            assert Image.open(path).size == (img["width"], img["height"]) == (48, 40)
            scene = S.build_scene("coco", split, img["id"] - 1, seed=0, num_classes=k,
                                  size=(48, 40))
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
            expected = [v for v in scene.visible if v.sum() >= 16]
            assert len(anns) == len(expected)
            for ann, vis in zip(anns, expected):
                assert ann["iscrowd"] == 0 and 1 <= ann["category_id"] <= k
                m = coco.annToMask(ann).astype(bool)
                assert m.shape == (40, 48)
                assert int(m.sum()) == ann["area"]
                ys, xs = np.nonzero(m)
                x, y, w, h = ann["bbox"]
                tight = (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
                assert np.allclose([x, y, w, h], tight, atol=1)
                iou = (m & vis).sum() / (m | vis).sum()
                assert iou >= 0.9
                seg = ann["segmentation"]
                if isinstance(seg, list):
                    n_poly += 1
                    assert all(len(p) >= 6 and len(p) % 2 == 0 for p in seg)
                else:
                    n_rle += 1
                    assert seg["size"] == [40, 48] and isinstance(seg["counts"], str)
    assert n_poly > 0


def _disc(h, w, cx, cy, r):
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def test_polygons_rasterise_back_to_the_mask():
    pytest.importorskip("pycocotools")
    from pycocotools import mask as mu

    h, w = 50, 60
    specs = S.class_specs(10)
    cases = []  # (mask, has_hole)
    for i, spec in enumerate(specs):  # every shape, rotated; some cut by the border
        obj = S.sample_object(np.random.default_rng(i), spec, cx=5 + 6 * i,
                              cy=25 + (i % 3) * 9, radius=8 + 2 * (i % 4))
        m = render.draw_object(np.zeros((h, w, 3)), obj, np.random.default_rng(0))
        cases.append((m, spec.shape == "ring"))
    split = _disc(h, w, 30, 25, 15)
    split[:, 27:33] = False  # cut in two pieces by an occluder
    cases.append((split, False))
    diag = np.zeros((h, w), bool)
    diag[10, 10] = diag[11, 11] = diag[12, 12] = True  # pixels touching only at corners
    cases.append((diag, False))
    ring = _disc(h, w, 30, 25, 15) & ~_disc(h, w, 30, 25, 7)
    cases.append((ring, True))
    pinhole = _disc(h, w, 30, 25, 15)
    pinhole[24:26, 30:32] = False  # a small hole: polygons would still have IoU > 0.9
    cases.append((pinhole, True))

    for m, has_hole in cases:
        assert m.any()
        loops = S.mask_to_polygons(m)
        assert any(hole for _, hole in loops) == has_hole
        seg = S.mask_to_coco_segmentation(m)
        if has_hole:  # polygons cannot express holes: RLE that decodes to the mask
            assert isinstance(seg, dict)
            dec = mu.decode({"size": seg["size"], "counts": seg["counts"].encode()})
            assert np.array_equal(dec.astype(bool), m)
            continue
        assert isinstance(seg, list), "hole-free masks are written as polygons"
        assert all(len(p) >= 6 for p in seg)
        dec = mu.decode(mu.merge(mu.frPyObjects(seg, h, w))).astype(bool)
        iou = (dec & m).sum() / (dec | m).sum()
        assert iou >= 0.8
        assert iou == 1.0  # the traced pixel-edge polygons are exact
    assert len(S.mask_to_coco_segmentation(split)) == 2
    assert len(S.mask_to_coco_segmentation(diag)) == 3


def test_voc_layout_xml_boxes_and_segmentation(tiny):
    out, _ = tiny
    voc = out / "voc"
    k, size = TINY["num_classes"], TINY["cls_size"]
    names = S.class_names(k)
    ids = (voc / "ImageSets/Segmentation/val.txt").read_text().split()
    assert ids == (voc / "ImageSets/Main/val.txt").read_text().split()
    assert ids == [p.stem for p in _files(voc, "JPEGImages/*.jpg")]
    assert len(ids) == TINY["voc_val"]
    n_void = 0
    for i, image_id in enumerate(ids):
        img = Image.open(voc / "JPEGImages" / f"{image_id}.jpg")
        seg_im = Image.open(voc / "SegmentationClass" / f"{image_id}.png")
        assert img.size == seg_im.size == (size, size)
        assert seg_im.mode == "P"
        assert seg_im.getpalette()[:6] == [0, 0, 0, 128, 0, 0]
        seg = np.asarray(seg_im)
        assert set(np.unique(seg).tolist()) <= set(range(k + 1)) | {255}
        n_void += int((seg == 255).sum())

        root = ET.parse(voc / "Annotations" / f"{image_id}.xml").getroot()
        assert root.findtext("filename") == f"{image_id}.jpg"
        assert int(root.findtext("size/width")) == size
        assert int(root.findtext("size/height")) == size
        assert int(root.findtext("size/depth")) == 3
        objs = root.findall("object")
        assert objs and objs[0].findtext("name") == names[i % k]  # the labelled object first
        covered = np.zeros(seg.shape, bool)
        boxes = []
        for o in objs:
            assert o.findtext("name") in names
            assert o.findtext("pose") == "Unspecified"
            assert o.findtext("difficult") == "0" and o.findtext("truncated") in ("0", "1")
            b = [int(o.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax")]
            assert 1 <= b[0] <= b[2] <= size and 1 <= b[1] <= b[3] <= size
            boxes.append(b)
            c = names.index(o.findtext("name"))
            box = np.zeros(seg.shape, bool)
            box[b[1] - 1:b[3], b[0] - 1:b[2]] = True
            covered |= box & (seg == c + 1)
        labelled = (seg >= 1) & (seg <= k)
        assert np.array_equal(covered, labelled), "every object pixel lies in a box of its class"

        # the boxes are the tight (1-based) boxes of the visible masks of the scene
        scene = S.build_scene("voc", "val", i, seed=0, num_classes=k, size=size)
        order = [scene.main] + [j for j in range(len(scene.objects)) if j != scene.main]
        expected = []
        for j in order:
            vis = scene.visible[j]
            if vis.sum() >= 16:
                ys, xs = np.nonzero(vis)
                expected.append([xs.min() + 1, ys.min() + 1, xs.max() + 1, ys.max() + 1])
        assert boxes == expected
        main_vis = scene.visible[scene.main]
        main_cls = scene.objects[scene.main].cls + 1
        assert np.all(seg[main_vis & (seg != 255)] == main_cls)
        assert np.all(seg[~np.any(scene.masks, axis=0)] != main_cls)
    assert n_void > 0


# ---------------------------------------------------------------------------
# occlusion
# ---------------------------------------------------------------------------

def test_label_map_is_the_top_most_object(tiny):
    out, _ = tiny
    k = TINY["num_classes"]
    overlaps = 0
    for split, folder in (("train", "training"), ("val", "validation")):
        for f in _files(out / "ade/annotations" / folder, "*.png"):
            i = int(f.stem.rsplit("_", 1)[1])
            scene = S.build_scene("ade", split, i, seed=0, num_classes=k, size=(48, 40))
            saved = np.asarray(Image.open(f))
            assert np.array_equal(saved, scene.label)
            stack = np.stack(scene.masks)  # (N, H, W) full masks in drawing order
            overlaps += int((stack.sum(0) > 1).sum())
            covered = stack.any(0)
            top = len(scene.masks) - 1 - np.argmax(stack[::-1], axis=0)
            cls = np.array([o.cls + 1 for o in scene.objects])
            expected = np.where(covered, cls[top], 0)
            assert np.array_equal(saved, expected)
            vis = np.stack(scene.visible)
            assert vis.sum(0).max() <= 1 and np.array_equal(vis.any(0), covered)
            assert not (vis & ~stack).any()
    # also on purpose-built overlapping scenes
    specs = S.class_specs(3)
    rng = np.random.default_rng(0)
    objs = [S.sample_object(rng, specs[c], 20 + 4 * c, 20, 12) for c in (0, 1, 2)]
    scene = S.render_scene(np.random.default_rng(1), 40, objs)
    for j in range(3):
        later = np.any(scene.masks[j + 1:], axis=0) if j < 2 else np.zeros((40, 40), bool)
        assert np.array_equal(scene.visible[j], scene.masks[j] & ~later)
        overlaps += int((scene.masks[j] & later).sum())
    assert overlaps > 0, "the checked scenes must contain occlusions"


# ---------------------------------------------------------------------------
# idempotency and the CLI
# ---------------------------------------------------------------------------

def test_second_generate_reuses_and_changed_params_regenerate(tmp_path):
    out = tmp_path / "set"
    params = {**TINY, "only": "imagenet,voc"}
    first = S.generate(out, seed=2, **params)
    assert first["generated"] == ["imagenet", "voc"]
    assert json.loads((out / "synthetic.json").read_text())["sets"].keys() == {"imagenet", "voc"}
    watched = [out / "synthetic.json", out / "classes.json",
               _files(out, "imagenet/train/*/*.JPEG")[0], _files(out, "voc/Annotations/*.xml")[0]]
    mtimes = [p.stat().st_mtime_ns for p in watched]
    time.sleep(0.01)

    t0 = time.perf_counter()
    again = S.generate(out, seed=2, **params)
    assert time.perf_counter() - t0 < 0.5
    assert again["generated"] == []
    assert [p.stat().st_mtime_ns for p in watched] == mtimes
    # a subset of what is present is reused as well
    assert S.generate(out, seed=2, **{**params, "only": "voc"})["generated"] == []

    # one changed parameter rebuilds only the subset it affects
    changed = S.generate(out, seed=2, **{**params, "voc_val": 3})
    assert changed["generated"] == ["voc"]
    assert watched[2].stat().st_mtime_ns == mtimes[2]
    assert len(_files(out, "voc/JPEGImages/*.jpg")) == 3
    assert not list(out.glob(".tmp-*"))

    # a new seed invalidates everything made with the old one
    reseeded = S.generate(out, seed=3, **{**params, "only": "voc"})
    assert reseeded["generated"] == ["voc"]
    assert not (out / "imagenet").exists()
    assert set(json.loads((out / "synthetic.json").read_text())["sets"]) == {"voc"}


def test_interrupted_run_does_not_look_complete(tmp_path, monkeypatch):
    out = tmp_path / "set"
    S.generate(out, seed=0, **{**TINY, "only": "voc"})

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setitem(generator.WRITERS, "ade", boom)
    with pytest.raises(KeyboardInterrupt):
        S.generate(out, seed=0, **{**TINY, "only": "voc,ade"})
    assert not (out / "synthetic.json").exists()
    assert not (out / "ade").exists()
    monkeypatch.undo()
    done = S.generate(out, seed=0, **{**TINY, "only": "voc,ade"})
    assert "ade" in done["generated"] and (out / "synthetic.json").exists()
    assert not list(out.glob(".tmp-*"))


def test_invalid_arguments():
    with pytest.raises(ValueError):
        S.generate("/nonexistent/never", only="imagenet,cifar")
    with pytest.raises(ValueError):
        scenes.parse_size("10x10x3")
    assert scenes.parse_size("64x48") == (64, 48) and scenes.parse_size(32) == (32, 32)


def test_cli_writes_summary_and_is_idempotent(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, str(REPO / "tools/make_synthetic.py"), "--out", str(out),
           "--num-classes", "3", "--cls-size", "32", "--voc-val", "4", "--only", "voc"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "voc" in first.stdout and "wrote" in first.stdout
    manifest = json.loads((out / "synthetic.json").read_text())
    assert manifest["params"]["num_classes"] == 3 and manifest["params"]["voc_val"] == 4
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and "already complete" in second.stdout
    bad = subprocess.run(cmd[:-1] + ["mnist"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0
