"""COCO JSON validation before detection training (downstream.coco_checks)."""

import copy
import json
import os
import shutil

import pytest

from downstream.coco_checks import CocoDataError, check_coco, prepare_coco


@pytest.fixture
def coco(tmp_path, synthetic_root):
    """A writable copy of the synthetic COCO val split: (ann_file, img_dir, data)."""
    src = os.path.join(synthetic_root, "coco")
    img_dir = tmp_path / "val"
    shutil.copytree(os.path.join(src, "val"), img_dir)
    with open(os.path.join(src, "annotations", "instances_val.json")) as f:
        data = json.load(f)
    return tmp_path / "ann.json", str(img_dir), data


def _write(path, data):
    with open(path, "w") as f:
        json.dump(data, f)
    return str(path)


def test_clean_file_is_returned_unchanged(coco, tmp_path):
    ann, img_dir, data = coco
    path = _write(ann, data)
    cleaned, report = check_coco(path, img_dir)
    assert report.clean and cleaned["annotations"] == data["annotations"]
    assert report.kept_images == len(data["images"]) and report.kept_annotations == len(data["annotations"])
    out, _ = prepare_coco(path, img_dir, cache_dir=str(tmp_path / "cache"))
    assert out == path and not (tmp_path / "cache").exists()


def test_bad_entries_are_skipped_and_counted(coco, tmp_path):
    ann, img_dir, data = coco
    data = copy.deepcopy(data)
    anns = data["annotations"]
    assert len(anns) >= 6
    # 1) an image absent on disk: it and its annotations go
    gone = data["images"][0]
    os.remove(os.path.join(img_dir, gone["file_name"]))
    n_gone_anns = sum(a["image_id"] == gone["id"] for a in anns)
    others = [a for a in anns if a["image_id"] != gone["id"]]
    # 2) zero-area box, 3) degenerate polygon (2 points), 4) one bad part among good ones,
    # 5) unknown image id, 6) unknown category, 7) missing area
    others[0]["bbox"] = [5, 5, 0, 10]
    poly = next(a for a in others[1:] if isinstance(a["segmentation"], list))
    poly_id = poly["id"]
    poly["segmentation"] = [[1, 1, 5, 5]]
    part = next(a for a in others[1:] if isinstance(a["segmentation"], list) and a["id"] != poly_id)
    part["segmentation"] = part["segmentation"] + [[0, 0, 1, 1, 2, 2]]  # collinear: zero area
    anns.append(dict(others[-1], id=9001, image_id=424242))
    anns.append(dict(others[-1], id=9002, category_id=77))
    del others[-1]["area"]
    path = _write(ann, data)

    cleaned, r = check_coco(path, img_dir)
    assert r.skipped == {
        "image_missing_on_disk": 1,
        "ann_zero_area_box": 1,
        "ann_no_valid_mask": 1,
        "ann_unknown_image": 1,
        "ann_unknown_category": 1,
    }
    assert r.counted == {"polygon_parts_dropped": 1, "area_filled": 1}
    assert r.kept_images == len(data["images"]) - 1
    assert r.kept_annotations == len(anns) - n_gone_anns - 4
    kept_ids = {a["id"] for a in cleaned["annotations"]}
    assert others[0]["id"] not in kept_ids and poly_id not in kept_ids and not {9001, 9002} & kept_ids
    fixed = next(a for a in cleaned["annotations"] if a["id"] == part["id"])
    assert len(fixed["segmentation"]) == len(part["segmentation"]) - 1
    assert next(a for a in cleaned["annotations"] if a["id"] == others[-1]["id"])["area"] > 0
    assert gone["file_name"] in " ".join(r.examples["image_missing_on_disk"])
    assert "skipped 1 (ann_zero_area_box)" in r.summary()

    # the cleaned copy: written once, reused, readable by pycocotools
    from pycocotools.coco import COCO

    out, r2 = prepare_coco(path, img_dir, cache_dir=str(tmp_path / "cache"))
    assert out != path and os.path.dirname(out) == str(tmp_path / "cache")
    assert prepare_coco(path, img_dir, cache_dir=str(tmp_path / "cache"))[0] == out
    api = COCO(out)
    assert len(api.getImgIds()) == r.kept_images and len(api.getAnnIds()) == r.kept_annotations

    # on_error="raise" refuses the same file, naming it and the reasons
    with pytest.raises(CocoDataError) as e:
        check_coco(path, img_dir, on_error="raise")
    assert path in str(e.value) and "image_missing_on_disk" in str(e.value) and "ann_zero_area_box" in str(e.value)


def test_rle_of_wrong_size_is_skipped(coco):
    ann, img_dir, data = coco
    data = copy.deepcopy(data)
    rle = next((a for a in data["annotations"] if isinstance(a["segmentation"], dict)), None)
    if rle is None:
        pytest.skip("no RLE annotation in this synthetic split")
    rle["segmentation"] = dict(rle["segmentation"], size=[3, 3])
    _, r = check_coco(_write(ann, data), img_dir)
    assert r.skipped == {"ann_no_valid_mask": 1} and "RLE size" in r.examples["ann_no_valid_mask"][0]


def test_non_contiguous_category_ids_are_noted_not_dropped(coco):
    ann, img_dir, data = coco
    data = copy.deepcopy(data)
    remap = {c["id"]: c["id"] * 10 for c in data["categories"]}
    for c in data["categories"]:
        c["id"] = remap[c["id"]]
    for a in data["annotations"]:
        a["category_id"] = remap[a["category_id"]]
    _, r = check_coco(_write(ann, data), img_dir)
    assert r.clean and r.kept_annotations == len(data["annotations"])
    assert any("not contiguous" in n for n in r.notes)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("annotations"), "no 'annotations' list"),
        (lambda d: d.update(categories=[]), "'categories' list is empty"),
        (lambda d: d["categories"].append(dict(d["categories"][0])), "duplicate category id"),
        (lambda d: d["images"].append(dict(d["images"][0])), "duplicate image id"),
    ],
)
def test_unusable_files_are_errors_naming_the_file(coco, mutate, message):
    ann, img_dir, data = coco
    data = copy.deepcopy(data)
    mutate(data)
    path = _write(ann, data)
    with pytest.raises(CocoDataError, match=message) as e:
        check_coco(path, img_dir)
    assert path in str(e.value)


def test_config_classes_missing_missing_dir_and_no_images(coco, tmp_path):
    ann, img_dir, data = coco
    path = _write(ann, data)
    names = [c["name"] for c in data["categories"]]
    check_coco(path, img_dir, classes=names[:2])
    with pytest.raises(CocoDataError, match="silently drop"):
        check_coco(path, img_dir, classes=names[:1] + ["person"])
    with pytest.raises(CocoDataError, match="does not exist"):
        check_coco(path, str(tmp_path / "nope"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CocoDataError, match="no usable image"):
        check_coco(path, str(empty))
    with pytest.raises(CocoDataError, match="not found"):
        check_coco(str(tmp_path / "missing.json"))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(CocoDataError, match="broken.json"):
        check_coco(str(tmp_path / "broken.json"))
