"""Robust decoding: odd image modes are converted to RGB, unreadable files are counted, logged and replaced
(training) or dropped (evaluation) -- in the data layer and through a whole training run."""
import json
import os
import random
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from pretrain.data.folders import UnreadableImageError, load_rgb, to_rgb
from pretrain.data.robust import KeyedDataset, collate_skip_none, read_bad_images


def _jpeg(path, rgb=(200, 30, 60), size=(32, 32), mode="RGB"):
    img = Image.new("RGB", size, rgb)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, "JPEG", quality=95)
    return path


def write_bad_files(folder, stem="x"):
    """Writes one file of each awkward kind into ``folder``; returns {kind: path}."""
    os.makedirs(folder, exist_ok=True)
    p = {}
    # truncated JPEG: the first half of a valid noisy file
    full = os.path.join(folder, f"{stem}_full.tmp")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(full, "JPEG")
    data = open(full, "rb").read()
    os.remove(full)
    p["truncated"] = os.path.join(folder, f"{stem}_truncated.JPEG")
    open(p["truncated"], "wb").write(data[: len(data) // 2])
    p["corrupt"] = os.path.join(folder, f"{stem}_corrupt.JPEG")
    open(p["corrupt"], "wb").write(bytes(np.random.default_rng(1).integers(0, 255, 3000, dtype=np.uint8)))
    p["cmyk"] = _jpeg(os.path.join(folder, f"{stem}_cmyk.JPEG"), mode="CMYK")
    p["gray"] = _jpeg(os.path.join(folder, f"{stem}_gray.JPEG"), rgb=(90, 90, 90), mode="L")
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, 255
    rgba[:16, :, 3] = 0  # top half fully transparent
    p["rgba"] = os.path.join(folder, f"{stem}_rgba.png")
    Image.fromarray(rgba, "RGBA").save(p["rgba"])
    p["png16"] = os.path.join(folder, f"{stem}_16bit.png")
    a16 = np.full((32, 32), 65535, np.uint16)
    a16[:, :16] = 32896  # 128 * 257
    Image.fromarray(a16).save(p["png16"])
    return p


def test_odd_modes_become_8bit_rgb(tmp_path):
    p = write_bad_files(str(tmp_path))
    assert Image.open(p["png16"]).mode.startswith("I")  # the file really is 16-bit
    assert Image.open(p["cmyk"]).mode == "CMYK" and Image.open(p["gray"]).mode == "L"
    for kind in ("cmyk", "gray", "rgba", "png16"):
        img = load_rgb(p[kind])
        assert img.mode == "RGB" and img.size == (32, 32), kind
    # expected pixel values, worked out by hand
    rgba = np.asarray(load_rgb(p["rgba"]))
    assert (rgba[:16] == 255).all()                       # transparent -> white background
    assert (rgba[16:] == [255, 0, 0]).all()               # opaque red stays red
    a16 = np.asarray(load_rgb(p["png16"]))
    assert (a16[:, :16] == 128).all() and (a16[:, 16:] == 255).all()  # scaled by 1/257, not clipped
    gray = np.asarray(load_rgb(p["gray"]))
    assert (gray[..., 0] == gray[..., 1]).all() and abs(int(gray[0, 0, 0]) - 90) <= 2
    cmyk = np.asarray(load_rgb(p["cmyk"])).astype(int)
    assert np.abs(cmyk[8, 8] - [200, 30, 60]).max() <= 12     # close to the colour it was made from
    # palette with a transparent index
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.info["transparency"] = 1
    assert (np.asarray(to_rgb(pal)) == 255).all()


@pytest.mark.parametrize("kind", ["truncated", "corrupt", "missing", "text"])
def test_undecodable_files_raise_a_named_error(tmp_path, kind):
    if kind in ("truncated", "corrupt"):
        path = write_bad_files(str(tmp_path))[kind]
    elif kind == "missing":
        path = str(tmp_path / "gone.JPEG")
    else:
        path = str(tmp_path / "notes.JPEG")
        open(path, "w").write("not an image")
    with pytest.raises(UnreadableImageError) as err:
        load_rgb(path)
    assert err.value.path == path and path in str(err.value)


def test_truncated_jpeg_fails_even_if_pil_was_made_permissive(tmp_path):
    from PIL import ImageFile
    path = write_bad_files(str(tmp_path))["truncated"]
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with pytest.raises(UnreadableImageError):
            load_rgb(path)
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the global setting is restored
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


class _Files(torch.utils.data.Dataset):
    """A list of paths -> (tensor of the first pixel + a random draw, index)."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        img = np.asarray(load_rgb(self.paths[i]))
        return torch.tensor([float(img[0, 0, 0]), random.random(), float(torch.rand(()))]), i


def test_keyed_dataset_replaces_drops_logs_and_gives_up(tmp_path):
    bad = write_bad_files(str(tmp_path / "img"))
    good = [_jpeg(str(tmp_path / f"good{i}.JPEG"), rgb=(10 * i, 0, 0)) for i in range(3)]
    paths = [good[0], bad["truncated"], bad["corrupt"], good[1], bad["cmyk"], good[2]]
    log_path = str(tmp_path / "bad.tsv")
    ds = KeyedDataset(_Files(paths), seed=3, bad_log=log_path, split="train", replace=True)
    # index 1 (truncated) and 2 (corrupt) are replaced by their successor 3
    assert ds[(1, 0, 7)][1] == 3 and ds[(2, 0, 8)][1] == 3 and ds[(4, 0, 9)][1] == 4
    rows = read_bad_images(log_path)
    assert [(r[0], r[1]) for r in rows] == [("train", bad["truncated"]), ("train", bad["corrupt"]),
                                           ("train", bad["corrupt"])]
    # evaluation view: dropped, and the batch keeps the others
    val = KeyedDataset(_Files(paths), bad_log=log_path, split="val", replace=False)
    batch = collate_skip_none([val[i] for i in range(len(paths))])
    assert batch[1].tolist() == [0, 3, 4, 5]
    assert collate_skip_none([val[1], val[2]]) is None
    assert [r[0] for r in read_bad_images(log_path)][-4:] == ["val"] * 4
    # a folder of nothing but broken files is an error naming them, not an endless loop
    broken = KeyedDataset(_Files([bad["truncated"], bad["corrupt"]]), replace=True, max_tries=5)
    with pytest.raises(RuntimeError, match="5 unreadable images in a row"):
        broken[0]


def test_keyed_dataset_seeds_each_sample_from_its_key_and_leaves_the_caller_rng_alone(tmp_path):
    path = _jpeg(str(tmp_path / "a.JPEG"))
    ds = KeyedDataset(_Files([path]), seed=5)
    torch.manual_seed(123)
    random.seed(123)
    before = (torch.get_rng_state().clone(), random.getstate())
    a, b, c = ds[(0, 2, 11)][0], ds[(0, 2, 11)][0], ds[(0, 2, 12)][0]
    assert torch.equal(a, b) and not torch.equal(a, c)  # same key: same draws; another position: others
    assert not torch.equal(a, KeyedDataset(_Files([path]), seed=6)[(0, 2, 11)][0])  # the run seed matters
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]


@pytest.mark.slow
def test_training_survives_bad_files_and_reports_them(synthetic_root, tmp_path):
    from pretrain.engine.config import load_config
    from pretrain.engine.train import train

    root = tmp_path / "data"
    shutil.copytree(os.path.join(str(synthetic_root), "imagenet"), root)
    classes = sorted(os.listdir(root / "train"))
    bad_train = write_bad_files(str(root / "train" / classes[0]), "t")
    bad_val = write_bad_files(str(root / "val" / classes[1]), "v")
    unreadable = {bad_train["truncated"], bad_train["corrupt"], bad_val["truncated"], bad_val["corrupt"]}
    n_val = sum(len(os.listdir(root / "val" / c)) for c in classes)
    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "pretrain", "synthetic_cutmix.yaml"),
                      [f"data.root={root}", "data.num_classes=4", "data.img_size=32", "data.batch_size=17",
                       "data.workers=2", "model.kwargs.img_size=32", "model.kwargs.depth=1",
                       f"train.out_dir={tmp_path / 'run'}", "train.epochs=2", "train.log_interval=0",
                       "train.tensorboard=false"])
    summary = train(cfg)
    records = [json.loads(x) for x in open(tmp_path / "run" / "metrics.jsonl")]
    # 102 training images = 6 batches of 17: every epoch meets each unreadable file once (2 train + 2 val);
    # converted files are not counted
    assert [r["bad_images"] for r in records] == [4, 4]
    assert all(r["val_images"] == n_val - 2 for r in records)
    rows = read_bad_images(str(tmp_path / "run" / "bad_images.tsv"))
    assert {r[1] for r in rows} == unreadable and len(rows) == 8
    assert summary["bad_images"] == 8 and summary["steps"] > 0


def test_randaugment_posterize_at_magnitude_10_does_not_crash():
    """timm's PosterizeIncreasing asks for 0 bits at magnitude 10 (rand-m9-mstd0.5 draws it); Pillow >= 13
    rejects 0 bits. The engine's transforms give the black image older Pillow gave."""
    from timm.data.auto_augment import AugmentOp

    from pretrain.data.folders import build_transforms
    build_transforms({"img_size": 32, "auto_augment": "rand-m9-mstd0.5-inc1", "re_prob": 0.0}, train=True)
    op = AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10)
    out = op(Image.fromarray(np.full((8, 8, 3), 200, np.uint8)))
    assert out.mode == "RGB" and np.asarray(out).max() == 0
    op = AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=5)  # 2 bits kept: 200 -> 192
    assert (np.asarray(op(Image.fromarray(np.full((8, 8, 3), 200, np.uint8)))) == 192).all()


def test_hidden_folders_are_not_classes_in_the_dataset_or_the_check(synthetic_root, tmp_path, caplog):
    """A .ipynb_checkpoints/ (or any dot-folder) in a split is no class: ImageFolder would make it class 0
    and shift every label by one. Labels are checked against the sorted visible class names; hidden files
    and dot-folders inside a class are no samples; what was left out is logged."""
    import logging

    from pretrain.data.build import build_data

    root = tmp_path / "data"
    shutil.copytree(os.path.join(str(synthetic_root), "imagenet"), root)
    visible = sorted(os.listdir(root / "train"))
    for split in ("train", "val"):
        _jpeg(str(root / split / visible[0] / "._apple_double.JPEG"))  # macOS metadata beside the images
        for hidden in (root / split / ".ipynb_checkpoints", root / split / visible[1] / ".ipynb_checkpoints"):
            hidden.mkdir()
            _jpeg(str(hidden / "copy-checkpoint.JPEG"))
    cfg = {"data": {"format": "folder", "root": str(root), "train_split": "train", "val_split": "val",
                    "num_classes": len(visible), "img_size": 32, "batch_size": 4, "workers": 0, "auto_augment": None,
                    "re_prob": 0.0, "repeated_aug": 1, "bad_image_tries": 4, "eval_crop_pct": 1.0},
           "train": {"seed": 0}}
    with caplog.at_level(logging.WARNING, logger="pretrain.data.folders"):
        data = build_data(cfg, 0, 1, str(tmp_path))
    for ds, split in ((data.train_set, "train"), (data.val_set, "val")):
        assert list(ds.classes) == visible
        expected = sorted((os.path.join(str(root), split, c, n), visible.index(c)) for c in visible
                          for n in os.listdir(root / split / c) if not n.startswith(".") and n.endswith(".JPEG"))
        assert sorted(ds.samples) == expected
        assert max(label for _, label in ds.samples) == len(visible) - 1
    logged = caplog.text
    assert ".ipynb_checkpoints" in logged and str(root / "train") in logged and "2 hidden files" in logged
