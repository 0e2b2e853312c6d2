"""Tests of pretrain/data/small.py (CIFAR-10/100 and Tiny ImageNet readers), the synthetic stand-ins of
pretrain/synthetic/small.py and tools/make_synthetic_small.py. Files are decoded independently here (pickle + numpy, PIL) and compared
with what the datasets return."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pretrain.data import small as S
from pretrain.data.folders import UnreadableImageError
from pretrain.synthetic import write_synthetic_small

REPO = Path(__file__).resolve().parents[1]
K, TRAIN_PER, VAL_PER = 6, 4, 3  # 24 train / 18 val images


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    for fmt in S.SMALL_FORMATS:
        write_synthetic_small(root, fmt, num_classes=K, train_per_class=TRAIN_PER, val_per_class=VAL_PER, seed=3)
    return root


def _copy(src: Path, tmp_path: Path, fmt: str) -> Path:
    folder = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python", "tiny_imagenet": "tiny-imagenet-200"}[fmt]
    shutil.copytree(src / folder, tmp_path / folder)
    return tmp_path / folder


def _unpickle(path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def _pixels(img: torch.Tensor, fmt: str) -> np.ndarray:
    """A normalised (3, H, W) item back to uint8 (H, W, 3), inverting the normalisation by hand."""
    mean, std = S.NORMALIZATION[fmt]
    x = img.double() * torch.tensor(std, dtype=torch.float64)[:, None, None] + torch.tensor(mean, dtype=torch.float64)[:, None, None]
    return np.rint(x.permute(1, 2, 0).numpy() * 255).astype(np.int64)


def _is_crop_of_padded(out: np.ndarray, orig: np.ndarray, pad: int) -> bool:
    """Whether ``out`` equals a (possibly flipped) crop of ``orig`` zero-padded by ``pad`` pixels."""
    h, w, _ = orig.shape
    padded = np.zeros((h + 2 * pad, w + 2 * pad, 3), np.int64)
    padded[pad:pad + h, pad:pad + w] = orig
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[dy:dy + h, dx:dx + w]
            if np.array_equal(out, crop) or np.array_equal(out, crop[:, ::-1]):
                return True
    return False


# ---------------------------------------------------------------------------
# round trips
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["cifar10", "cifar100"])
def test_cifar_round_trip(small_root, fmt):
    folder = small_root / ("cifar-10-batches-py" if fmt == "cifar10" else "cifar-100-python")
    if fmt == "cifar10":
        train_files, val_files, meta, key, names_key = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], \
            "batches.meta", b"labels", b"label_names"
    else:
        train_files, val_files, meta, key, names_key = ["train"], ["test"], "meta", b"fine_labels", b"fine_label_names"
    names = [n.decode() for n in _unpickle(folder / meta)[names_key]]
    for split, files in (("train", train_files), ("val", val_files)):
        batches = [_unpickle(folder / f) for f in files]
        data = np.concatenate([b[b"data"] for b in batches])
        labels = np.concatenate([np.asarray(b[key]) for b in batches])
        assert data.dtype == np.uint8 and data.shape == (K * (TRAIN_PER if split == "train" else VAL_PER), 3072)
        ds = S.build_small_dataset(fmt, small_root, split, train=False)  # the parent folder as root
        assert ds.classes == names and len(ds) == len(labels)
        np.testing.assert_array_equal(ds.targets, labels)
        assert sorted(set(labels.tolist())) == list(range(K))
        for i in range(len(ds)):
            img, lbl = ds[i]
            assert img.shape == (3, 32, 32) and img.dtype == torch.float32 and lbl == labels[i]
            expected = data[i].reshape(3, 32, 32).transpose(1, 2, 0)  # R, G, B planes, row-major
            np.testing.assert_array_equal(_pixels(img, fmt), expected)
        if fmt == "cifar100":
            coarse = np.concatenate([np.asarray(b[b"coarse_labels"]) for b in batches])
            np.testing.assert_array_equal(ds.coarse_targets, coarse)
            assert (coarse != labels).any()  # the label is the fine one, not the coarse one
    # the extracted folder itself works as root too
    assert len(S.build_small_dataset(fmt, folder, "val", train=False)) == K * VAL_PER


def test_cifar_training_augmentation_is_a_padded_crop_and_flip(small_root):
    ds = S.build_small_dataset("cifar10", small_root, "train", train=True)
    torch.manual_seed(0)
    moved = 0
    for i in range(6):
        orig = ds.data[i].astype(np.int64)
        out = _pixels(ds[i][0], "cifar10")
        assert _is_crop_of_padded(out, orig, 4)
        moved += not np.array_equal(out, orig)
    assert moved >= 3  # augmentation does something
    big = S.build_small_dataset("cifar10", small_root, "val", train=False, img_size=48)
    img, _ = big[0]
    assert img.shape == (3, 48, 48)
    from torchvision.transforms.v2 import functional as F
    ref = F.resize(torch.from_numpy(big.data[0]).permute(2, 0, 1), [48, 48],
                   interpolation=F.InterpolationMode.BICUBIC, antialias=True)
    np.testing.assert_array_equal(_pixels(img, "cifar10"), ref.permute(1, 2, 0).numpy())


def test_tiny_imagenet_round_trip(small_root):
    folder = small_root / "tiny-imagenet-200"
    wnids_file = [w.strip() for w in (folder / "wnids.txt").read_text().splitlines() if w.strip()]
    assert wnids_file != sorted(wnids_file)  # written unsorted like the real file
    wnids = sorted(wnids_file)
    ann = {}
    for ln in (folder / "val" / "val_annotations.txt").read_text().splitlines():
        parts = ln.split("\t")
        assert len(parts) == 6
        ann[parts[0]] = wnids.index(parts[1])
    val = S.build_small_dataset("tiny_imagenet", small_root, "val", train=False)
    assert val.classes == wnids and len(val) == len(ann) == K * VAL_PER
    assert val.skipped == {"val image without annotation": 0, "annotation without image": 0}
    gray = 0
    for (path, label), i in zip(val.samples, range(len(val))):
        img, lbl = val[i]
        assert lbl == label == ann[os.path.basename(path)]
        with Image.open(path) as im:
            mode = im.mode
            expected = np.asarray(im.convert("RGB"), dtype=np.int64)
        got = _pixels(img, "tiny_imagenet")
        assert img.shape == (3, 64, 64)
        np.testing.assert_array_equal(got, expected)
        if mode == "L":
            gray += 1
            assert np.array_equal(got[..., 0], got[..., 1]) and np.array_equal(got[..., 1], got[..., 2])
    assert gray >= 1  # a grayscale JPEG was among them and came back as RGB
    assert sorted(set(ann.values())) == list(range(K)) and list(ann.values()) != sorted(ann.values())

    train = S.build_small_dataset("tiny_imagenet", folder, "train", train=True)
    assert train.classes == wnids and len(train) == K * TRAIN_PER
    for path, label in train.samples:
        assert Path(path).parts[-3] == wnids[label] and Path(path).name.startswith(wnids[label] + "_")
    assert (folder / "train" / wnids[0] / f"{wnids[0]}_boxes.txt").is_file()
    torch.manual_seed(1)
    for i in (0, 5, 9):
        with Image.open(train.samples[i][0]) as im:
            orig = np.asarray(im.convert("RGB"), dtype=np.int64)
        assert _is_crop_of_padded(_pixels(train[i][0], "tiny_imagenet"), orig, 8)
    S.check_small_splits(train, val)


def test_synthetic_is_deterministic_and_seeded(tmp_path):
    def digest(root, fmt, seed):
        path = write_synthetic_small(root, fmt, num_classes=3, train_per_class=2, val_per_class=2, seed=seed)
        h = hashlib.sha256()
        for dirpath, _, files in sorted(os.walk(path)):
            for f in sorted(files):
                h.update(f.encode())
                h.update(Path(dirpath, f).read_bytes())
        return h.hexdigest()
    for fmt in ("cifar100", "tiny_imagenet"):
        a = digest(tmp_path / "a", fmt, 0)
        assert digest(tmp_path / "b", fmt, 0) == a
        assert digest(tmp_path / "a", fmt, 1) != a  # rewriting its own output is allowed


def test_synthetic_stand_ins_are_scenes_of_the_world(small_root):
    """Every stand-in image is the world's one-object scene of its class (pretrain.synthetic.build_scene)."""
    from pretrain.synthetic import build_scene, class_names
    from pretrain.synthetic.small import stand_in_classes

    world = stand_in_classes(K)
    assert world == [0, 1, 3, 5, 6, 8] and stand_in_classes(10) == list(range(10))  # hues spread out
    folder = small_root / "cifar-100-python"
    names = class_names(10)
    assert [n.decode() for n in _unpickle(folder / "meta")[b"fine_label_names"]] == [names[w] for w in world]
    for split, fname in (("train", "train"), ("val", "test")):
        d = _unpickle(folder / fname)
        seen = {}
        for row, label in zip(d[b"data"], d[b"fine_labels"]):
            k = seen.get(label, 0)
            seen[label] = k + 1
            scene = build_scene("cifar100", split, k, seed=3, size=32, label=world[label])
            assert len(scene.objects) == 1 and scene.objects[0].cls == world[label]
            np.testing.assert_array_equal(row.reshape(3, 32, 32).transpose(1, 2, 0), scene.image)
    # Tiny ImageNet: the boxes are the inclusive boxes of the labelled object's visible pixels
    folder = small_root / "tiny-imagenet-200"
    wnids = sorted((folder / "wnids.txt").read_text().split())
    for c, w in enumerate(wnids):
        lines = (folder / "train" / w / f"{w}_boxes.txt").read_text().splitlines()
        assert len(lines) == TRAIN_PER
        for ln in lines:
            name, *box = ln.split("\t")
            scene = build_scene("tiny_imagenet", "train", int(name[len(w) + 1:-5]), seed=3, label=world[c])
            ys, xs = np.nonzero(scene.visible[scene.main])
            assert [int(v) for v in box] == [xs.min(), ys.min(), xs.max(), ys.max()]


@pytest.mark.slow
def test_synthetic_cifar_is_learnable_by_a_small_net(tmp_path):
    torch.manual_seed(0)
    write_synthetic_small(tmp_path, "cifar10", num_classes=10, train_per_class=16, val_per_class=6, seed=0)
    train = S.build_small_dataset("cifar10", tmp_path, "train", train=True)
    val = S.build_small_dataset("cifar10", tmp_path, "val", train=False)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                              torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(32, 10))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    loader = torch.utils.data.DataLoader(train, batch_size=32, shuffle=True)
    losses = []
    for _ in range(8):
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    x = torch.stack([val[i][0] for i in range(len(val))])
    y = torch.tensor(val.targets)
    acc = (net(x).argmax(1) == y).float().mean().item()
    # a class is told by two parts' hues or the parts' layout, not by one patch: in these 40 steps a
    # two-layer CNN gets to 0.35 (seeded, measured 2026-12-03); chance is 0.1
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5])
    assert acc > 0.25, acc


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------

def test_unknown_format_and_split():
    with pytest.raises(ValueError, match="unknown small dataset format 'cifar1000'.*cifar10, cifar100, tiny_imagenet"):
        S.build_small_dataset("cifar1000", "/nonexistent", "train", train=True)
    with pytest.raises(ValueError, match="unknown split 'test'"):
        S.build_small_dataset("cifar10", "/nonexistent", "test", train=False)
    with pytest.raises(ValueError, match="unknown small dataset format"):
        write_synthetic_small("/tmp", "imagenet")
    assert [S.small_num_classes(f) for f in S.SMALL_FORMATS] == [10, 100, 200]


@pytest.mark.parametrize("fmt,layout", [("cifar10", "cifar-10-batches-py/"), ("cifar100", "cifar-100-python/"),
                                        ("tiny_imagenet", "tiny-imagenet-200/")])
def test_missing_root_names_path_layout_and_no_download(tmp_path, fmt, layout):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as e:
        S.build_small_dataset(fmt, missing, "train", train=True)
    msg = str(e.value)
    assert str(missing) in msg and layout in msg and "Nothing is downloaded" in msg
    assert f"make_synthetic_small.py --format {fmt}" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        S.build_small_dataset(fmt, tmp_path / "empty", "val", train=False)


def test_missing_cifar_batch_file(small_root, tmp_path):
    folder = _copy(small_root, tmp_path, "cifar10")
    (folder / "data_batch_3").unlink()
    assert len(S.build_small_dataset("cifar10", tmp_path, "val", train=False)) == K * VAL_PER  # val still fine
    with pytest.raises(FileNotFoundError, match=r"data_batch_3 does not exist.*Nothing is downloaded"):
        S.build_small_dataset("cifar10", tmp_path, "train", train=True)


def test_corrupt_pickle_names_the_file(small_root, tmp_path):
    folder = _copy(small_root, tmp_path, "cifar100")
    data = (folder / "test").read_bytes()
    (folder / "test").write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(ValueError, match=r"cifar-100-python/test: not a readable CIFAR python pickle"):
        S.build_small_dataset("cifar100", tmp_path, "val", train=False)
    (folder / "meta").write_bytes(b"<html>404</html>")
    with pytest.raises(ValueError, match=r"cifar-100-python/meta: not a readable CIFAR python pickle"):
        S.build_small_dataset("cifar100", tmp_path, "train", train=True)


def test_bad_cifar_contents(small_root, tmp_path):
    folder = _copy(small_root, tmp_path, "cifar10")
    d = _unpickle(folder / "test_batch")
    d[b"labels"] = list(d[b"labels"])
    d[b"labels"][2] = K  # meta names K classes: K is out of range
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(d, f, protocol=2)
    with pytest.raises(ValueError, match=rf"test_batch: 1 labels outside \[0, {K}\).*e.g. {K} at row 2"):
        S.build_small_dataset("cifar10", tmp_path, "val", train=False)
    with pytest.raises(ValueError, match=f"names {K} classes but 10 are expected"):
        S.build_small_dataset("cifar10", tmp_path, "train", train=True, num_classes=10)
    d = _unpickle(folder / "data_batch_1")
    d[b"data"] = d[b"data"][:, :1024]
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump(d, f, protocol=2)
    with pytest.raises(ValueError, match=r"data_batch_1: 'data' must be uint8 of shape \(N, 3072\)"):
        S.build_small_dataset("cifar10", tmp_path, "train", train=True)


def test_tiny_imagenet_val_annotation_mismatches(small_root, tmp_path, caplog):
    folder = _copy(small_root, tmp_path, "tiny_imagenet")
    vdir = folder / "val" / "images"
    shutil.copy(vdir / "val_0.JPEG", vdir / "val_extra.JPEG")  # an image without annotation
    (vdir / "val_1.JPEG").unlink()                               # an annotation without image
    with caplog.at_level("WARNING"):
        ds = S.build_small_dataset("tiny_imagenet", tmp_path, "val", train=False)
    assert ds.skipped == {"val image without annotation": 1, "annotation without image": 1}
    assert len(ds) == K * VAL_PER - 1
    names = {os.path.basename(p) for p, _ in ds.samples}
    assert "val_extra.JPEG" not in names and "val_1.JPEG" not in names
    assert "val_extra.JPEG" in caplog.text and "val_1.JPEG" in caplog.text
    with pytest.raises(ValueError, match=r"1 val images without a line in val_annotations.txt: val_extra.JPEG"):
        S.build_small_dataset("tiny_imagenet", tmp_path, "val", train=False, strict=True)
    ann = folder / "val" / "val_annotations.txt"
    ann.write_text(ann.read_text() + "val_extra.JPEG\tn99999999\t0\t0\t10\t10\n")
    with pytest.raises(ValueError, match=r"1 annotations name wnids that are not in .*wnids.txt.*n99999999"):
        S.build_small_dataset("tiny_imagenet", tmp_path, "val", train=False)
    ann.write_text("val_0.JPEG n00000000\n")
    with pytest.raises(ValueError, match=r"val_annotations.txt:1: expected 'file<TAB>wnid"):
        S.build_small_dataset("tiny_imagenet", tmp_path, "val", train=False)


def test_tiny_imagenet_class_mismatches_and_unreadable_images(small_root, tmp_path):
    folder = _copy(small_root, tmp_path, "tiny_imagenet")
    wnids = sorted((folder / "wnids.txt").read_text().split())
    with pytest.raises(ValueError, match=f"lists {K} wnids but 200 classes are expected"):
        S.build_small_dataset("tiny_imagenet", tmp_path, "train", train=True, num_classes=200)
    bad = folder / "train" / wnids[1] / "images" / f"{wnids[1]}_0.JPEG"
    bad.write_bytes(b"not a jpeg")
    ds = S.build_small_dataset("tiny_imagenet", tmp_path, "train", train=True)
    i = [p for p, _ in ds.samples].index(str(bad))
    with pytest.raises(UnreadableImageError, match=f"{wnids[1]}_0.JPEG"):
        ds[i]  # the robust loader wrapper counts and skips these
    shutil.rmtree(folder / "train" / wnids[2])
    with pytest.raises(ValueError, match=rf"has {K - 1} class folders but .*wnids.txt lists {K} wnids.*{wnids[2]}"):
        S.build_small_dataset("tiny_imagenet", tmp_path, "train", train=True)
    # train/val class lists that differ
    a = S.build_small_dataset("cifar10", small_root, "val", train=False)
    b = S.build_small_dataset("cifar100", small_root, "val", train=False)
    b.classes = b.classes[:-1]
    with pytest.raises(ValueError, match=f"has {K} classes and val .* {K - 1}"):
        S.check_small_splits(a, b)


def test_synthetic_writer_does_not_replace_a_real_dataset(tmp_path):
    (tmp_path / "cifar-100-python").mkdir()
    (tmp_path / "cifar-100-python" / "train").write_bytes(b"real data")
    with pytest.raises(FileExistsError, match="not written by write_synthetic_small"):
        write_synthetic_small(tmp_path, "cifar100", num_classes=2, train_per_class=1, val_per_class=1)
    assert (tmp_path / "cifar-100-python" / "train").read_bytes() == b"real data"


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

def _cli():
    spec = importlib.util.spec_from_file_location("make_synthetic_small", REPO / "tools" / "make_synthetic_small.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_writes_a_readable_set_and_rejects_bad_formats(tmp_path, capsys):
    cli = _cli()
    assert cli.main(["--format", "tiny_imagenet", "--out", str(tmp_path), "--num-classes", "3",
                     "--train-per-class", "2", "--val-per-class", "2", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "tiny-imagenet-200") in out
    ds = S.build_small_dataset("tiny_imagenet", tmp_path, "val", train=False)
    assert len(ds) == 6 and len(ds.classes) == 3
    with pytest.raises(SystemExit) as e:
        cli.main(["--format", "cifar1000", "--out", str(tmp_path)])
    assert e.value.code == 2 and "invalid choice: 'cifar1000'" in capsys.readouterr().err
    assert cli.main(["--format", "cifar10", "--out", str(tmp_path), "--num-classes", "0"]) == 2
    assert "num_classes must be >= 1" in capsys.readouterr().err


def test_console_script_writes_every_format(tmp_path, capsys):
    from pretrain.synthetic import MAX_CLASSES
    from pretrain.synthetic.cli import main

    assert main(["--format", "cifar100", "--out", str(tmp_path), "--num-classes", "3", "--train-per-class", "2",
                 "--val-per-class", "1", "--seed", "2"]) == 0
    assert str(tmp_path / "cifar-100-python") in capsys.readouterr().out
    assert len(S.build_small_dataset("cifar100", tmp_path, "train", train=False)) == 6
    with pytest.raises(SystemExit) as e:  # options of the ImageNet/ADE20K/COCO/VOC world are refused
        main(["--format", "cifar10", "--out", str(tmp_path), "--only", "voc"])
    assert e.value.code == 2 and "--only applies to --format world only" in capsys.readouterr().err
    assert main(["--format", "tiny_imagenet", "--out", str(tmp_path), "--num-classes", str(MAX_CLASSES + 1)]) == 2
    assert f"at most {MAX_CLASSES} (the classes of the synthetic world)" in capsys.readouterr().err


def test_cli_runs_as_a_script(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "tools" / "make_synthetic_small.py"), "--format", "cifar10",
                        "--out", str(tmp_path), "--num-classes", "2", "--train-per-class", "5",
                        "--val-per-class", "1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "cifar-10-batches-py")) == sorted(
        [".synthetic_small.json", "batches.meta", "test_batch"] + [f"data_batch_{i}" for i in range(1, 6)])
