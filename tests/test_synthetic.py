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
from pretrain.synthetic import generator, render, scenes

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

def _brute_force_layouts() -> set[bytes]:
    """Every connected (8-neighbour) set of 3-8 cells of a 3x3 grid, up to translation and a
    left-right mirror, as the bytes of its cropped bool array (the smaller of it and its mirror)."""
    from scipy import ndimage

    found = set()
    for bits in range(1 << 9):
        grid = np.array([(bits >> k) & 1 for k in range(9)], bool).reshape(3, 3)
        if not 3 <= grid.sum() <= 8 or ndimage.label(grid, structure=np.ones((3, 3)))[1] != 1:
            continue
        rows, cols = np.nonzero(grid)
        crop = grid[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        found.add(min(repr(crop.astype(int).tolist()), repr(crop[:, ::-1].astype(int).tolist())).encode())
    return found


def _as_key(cells) -> bytes:
    cells = np.array(cells)
    grid = np.zeros((3, 3), bool)
    grid[cells[:, 0], cells[:, 1]] = True
    rows, cols = np.nonzero(grid)
    crop = grid[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    return min(repr(crop.astype(int).tolist()), repr(crop[:, ::-1].astype(int).tolist())).encode()


def test_classes_are_all_layouts_of_parts_and_share_hues():
    keys = [_as_key(cells) for _, cells in S.layouts()]
    assert len(keys) == len(set(keys)) == S.MAX_CLASSES == 162
    assert set(keys) == _brute_force_layouts()
    for k in (1, 10, 37, S.MAX_CLASSES):
        names = S.class_names(k)
        assert len(names) == len(set(names)) == k
        assert sorted(names) == names
    assert S.class_names(12)[:10] == S.class_names(10)
    assert [s.layout for s in S.class_specs(3)] == ["tee", "plus", "ell"]
    first = S.class_specs(10)
    # each hue belongs to three of the first ten classes, and two classes share at most one hue:
    # one part's colour leaves three classes, two parts of different colours leave one
    hue_count = np.bincount([h for s in first for h in s.hues], minlength=S.NUM_HUES)
    assert (hue_count == 3).all()
    for a in first:
        for b in first:
            if a.index < b.index:
                assert len(set(a.hues) & set(b.hues)) <= 1
    for bad in (0, S.MAX_CLASSES + 1):
        with pytest.raises(ValueError):
            S.class_specs(bad)


def _hue_index(rgb) -> int:
    import colorsys

    h, _, _ = colorsys.rgb_to_hsv(*(np.asarray(rgb) / 255.0))
    return int(np.rint(h * S.NUM_HUES)) % S.NUM_HUES


def test_an_object_has_one_part_per_layout_cell_at_the_layout_distances():
    for spec in S.class_specs(S.MAX_CLASSES)[::7]:
        for i in range(3):
            cell = 9.0 + i
            obj = S.sample_object(np.random.default_rng(i), spec, 50.0, 40.0, cell)
            assert obj.cls == spec.index and len(obj.parts) == len(spec.cells)
            # every hue of the triple is on a part, and no other hue
            assert {_hue_index(p.color) for p in obj.parts} == set(spec.hues)
            # turned and perhaps mirrored: the pairwise part distances are the layout's
            c = obj.part_centres()
            got = np.sort(np.hypot(*(c[:, None] - c[None]).transpose(2, 0, 1)).ravel())
            cells = np.array(spec.cells, float)
            want = np.sort(np.hypot(*(cells[:, None] - cells[None]).transpose(2, 0, 1)).ravel()) * cell
            np.testing.assert_allclose(got, want, atol=1e-9)
            assert len({p.texture for p in obj.parts} | {p.shape for p in obj.parts}) > 1 or len(obj.parts) < 4


def test_classification_scene_has_its_object_clutter_distractors_and_occluders():
    n_distract = n_occluded = n_loose = 0
    fracs = []
    for i in range(60):
        label = i % 10
        sc = S.build_scene("imagenet", "train", i, seed=3, num_classes=10, size=64, label=label)
        assert sc.image.shape == (64, 64, 3) and sc.image.dtype == np.uint8
        assert sc.objects[sc.main].cls == label
        others = [o for k, o in enumerate(sc.objects) if k != sc.main]
        assert len(others) <= 1 and all(o.cls != label for o in others)
        n_distract += len(others)
        n_occluded += sc.extra["occluded"] > 0
        n_loose += sc.extra["loose_parts"]
        fracs.append(sc.visible[sc.main].mean())
        # loose parts are background: no pixel of the label map has a class that is not in the scene
        assert set(np.unique(sc.label)) <= {0} | {o.cls + 1 for o in sc.objects}
    fracs = np.array(fracs)
    assert fracs.min() > 0.05 and fracs.max() < 0.6
    assert 5 <= n_distract <= 35 and n_occluded >= 5 and n_loose >= 60


def test_one_patch_colour_does_not_tell_the_class_the_whole_object_does():
    """Nearest class mean of a hue histogram: of one 8x8 patch inside the object, and of the whole object."""
    import colorsys

    def hist(pixels):
        hsv = np.array([colorsys.rgb_to_hsv(*(p / 255.0)) for p in pixels])
        keep = hsv[:, 1] > 0.3
        bins = np.rint(hsv[keep, 0] * S.NUM_HUES).astype(int) % S.NUM_HUES
        return np.bincount(bins, minlength=S.NUM_HUES) / max(1, keep.sum())

    rng = np.random.default_rng(0)
    feats = {"patch": [], "object": []}
    labels = []
    for i in range(300):
        label = i % 10
        sc = S.build_scene("imagenet", "train", i, seed=5, num_classes=10, size=64, label=label)
        vis = sc.visible[sc.main]
        frac = vis.reshape(8, 8, 8, 8).mean(axis=(1, 3))  # (8, 8) patch grid
        inside = np.argwhere(frac >= 0.75)
        if not len(inside):
            continue
        r, c = inside[rng.integers(len(inside))]
        pm = np.zeros_like(vis)
        pm[8 * r:8 * r + 8, 8 * c:8 * c + 8] = True
        feats["patch"].append(hist(sc.image[pm & vis].astype(float)))
        feats["object"].append(hist(sc.image[vis].astype(float)))
        labels.append(label)
    labels = np.array(labels)
    assert len(labels) > 250
    half = len(labels) // 2
    acc = {}
    for k, f in feats.items():
        f = np.array(f)
        means = np.stack([f[:half][labels[:half] == c].mean(0) for c in range(10)])
        pred = np.argmin(((f[half:, None] - means[None]) ** 2).sum(-1), axis=1)
        acc[k] = (pred == labels[half:]).mean()
    assert acc["patch"] < 0.4, acc
    assert acc["object"] > acc["patch"] + 0.3, acc


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
    from scipy import ndimage

    specs = S.class_specs(10)
    cases = []  # (mask, has_hole)
    for i, spec in enumerate(specs):  # every named layout, turned; some cut by the border, some in pieces
        obj = S.sample_object(np.random.default_rng(i), spec, 5 + 6 * i, 25 + (i % 3) * 9, 6 + (i % 4))
        m = render.draw_object(np.zeros((h, w, 3)), obj, np.random.default_rng(0))
        # a hole: background not connected to the outside (8-neighbour: the mask's parts are
        # 4-connected, so pixels touching at a corner do not close a hole)
        cases.append((m, bool((ndimage.binary_fill_holes(m, structure=np.ones((3, 3))) & ~m).any())))
    assert any(hole for _, hole in cases[:10]) and not all(hole for _, hole in cases[:10])
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
    overlaps = hidden = 0
    for split, folder in (("train", "training"), ("val", "validation")):
        for f in _files(out / "ade/annotations" / folder, "*.png"):
            i = int(f.stem.rsplit("_", 1)[1])
            scene = S.build_scene("ade", split, i, seed=0, num_classes=k, size=(48, 40))
            saved = np.asarray(Image.open(f))
            assert np.array_equal(saved, scene.label)
            stack = np.stack(scene.masks)  # (N, H, W) full masks of the objects in drawing order
            overlaps += int((stack.sum(0) > 1).sum())
            covered = stack.any(0)
            top = len(scene.masks) - 1 - np.argmax(stack[::-1], axis=0)
            cls = np.array([o.cls + 1 for o in scene.objects])
            # an object pixel is its top-most object's class unless a loose part hides it
            labelled = saved > 0
            assert np.array_equal(saved[labelled], cls[top][labelled]) and not (labelled & ~covered).any()
            assert int((covered & ~labelled).sum()) == scene.extra["occluded"]
            hidden += scene.extra["occluded"]
            vis = np.stack(scene.visible)
            assert vis.sum(0).max() <= 1 and np.array_equal(vis.any(0), labelled)
            assert not (vis & ~stack).any()
    # also on a purpose-built scene: clutter behind, three overlapping objects, an occluder in front
    specs = S.class_specs(3)
    rng = np.random.default_rng(0)
    objs = [S.loose_part(rng, 20, 20, 8)] + [S.sample_object(rng, specs[c], 16 + 4 * c, 20, 7) for c in (0, 1, 2)]
    objs.append(S.loose_part(rng, 22, 18, 6))
    drawn = [render.draw_object(np.zeros((40, 40, 3)), o, np.random.default_rng(0)) for o in objs]
    scene = S.render_scene(np.random.default_rng(1), 40, objs)
    assert len(scene.objects) == 3
    for j in range(3):
        later = np.any(drawn[j + 2:], axis=0)
        assert np.array_equal(scene.masks[j], drawn[j + 1])
        assert np.array_equal(scene.visible[j], drawn[j + 1] & ~later)
        overlaps += int((drawn[j + 1] & later).sum())
    assert (scene.label[drawn[-1]] == 0).all() and (scene.label[drawn[0] & ~np.any(drawn[1:], axis=0)] == 0).all()
    assert hidden > 0, "the checked files must contain parts hidden by occluders"
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
