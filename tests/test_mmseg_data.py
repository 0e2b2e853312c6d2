"""Bad segmentation data -> clear errors naming the file (CheckSegMap, checked datasets)."""

import copy
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("mmseg")
from PIL import Image  # noqa: E402

from mmengine.config import Config  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTH_CFG = os.path.join(REPO, "configs", "mmseg", "linear_synthetic.py")


@pytest.fixture(scope="module", autouse=True)
def _mmseg_scope():
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    import downstream.mmseg  # noqa: F401


@pytest.fixture(scope="module")
def synth_cfg(synthetic_root):
    old = os.environ.get("VITMIX_SYNTHETIC_DIR")
    os.environ["VITMIX_SYNTHETIC_DIR"] = str(synthetic_root)
    try:
        cfg = Config.fromfile(SYNTH_CFG)
    finally:
        if old is None:
            os.environ.pop("VITMIX_SYNTHETIC_DIR")
        else:
            os.environ["VITMIX_SYNTHETIC_DIR"] = old
    assert len(cfg.metainfo["classes"]) == 4
    return cfg


def _ade_copy(synthetic_root, tmp_path, n=2):
    """A small writable copy of the synthetic ADE-layout set (training split, n images)."""
    src = os.path.join(synthetic_root, "ade")
    dst = tmp_path / "ade"
    for sub in ("images/training", "annotations/training"):
        os.makedirs(dst / sub)
    names = sorted(os.listdir(os.path.join(src, "images", "training")))[:n]
    for name in names:
        stem = os.path.splitext(name)[0]
        shutil.copy(os.path.join(src, "images", "training", name), dst / "images" / "training" / name)
        shutil.copy(os.path.join(src, "annotations", "training", stem + ".png"),
                    dst / "annotations" / "training" / (stem + ".png"))
    return dst, [os.path.splitext(n)[0] for n in names]


def _dataset(cfg, root, which="train"):
    from mmseg.registry import DATASETS

    ds_cfg = copy.deepcopy(cfg[f"{which}_dataloader"]["dataset"])
    ds_cfg["data_root"] = str(root)
    return DATASETS.build(ds_cfg)


# ----------------------------------------------------------------- the check itself
def _reference_bad_values(seg, num_classes, ignore):
    bad = set()
    for v in seg.reshape(-1).tolist():
        if v != ignore and not 0 <= v < num_classes:
            bad.add(v)
    return sorted(bad)


def test_check_seg_map_against_a_pixel_loop():
    from downstream.mmseg.data import check_seg_map

    rng = np.random.default_rng(0)
    for trial in range(20):
        n = int(rng.integers(1, 20))
        seg = rng.integers(0, n, size=(9, 7)).astype(np.uint8)
        seg[rng.random(seg.shape) < 0.2] = 255
        if trial % 2:  # plant out-of-range values
            k = int(rng.integers(1, 4))
            seg.reshape(-1)[rng.choice(seg.size, k, replace=False)] = rng.integers(n, 255, size=k)
        expected = _reference_bad_values(seg, n, 255)
        if not expected:
            check_seg_map(seg, n, seg_path="x.png")
            continue
        with pytest.raises(ValueError) as e:
            check_seg_map(seg, n, seg_path="some/dir/x.png")
        msg = str(e.value)
        assert "some/dir/x.png" in msg and f"0..{n - 1}" in msg
        listed = [int(t.split(" (")[0]) for t in msg.split(": ", 1)[1].split(", as stored")[0].split(", ")]
        assert listed == expected
    # signed maps: negative values are out of range too
    with pytest.raises(ValueError, match="-1"):
        check_seg_map(np.array([[0, -1]], dtype=np.int16), 3)


def test_check_seg_map_shape_and_channels():
    from downstream.mmseg.data import check_seg_map

    with pytest.raises(ValueError, match=r"l\.png is 4x5 \(HxW\) but its image i\.jpg is 4x6"):
        check_seg_map(np.zeros((4, 5), np.uint8), 3, image_shape=(4, 6, 3), seg_path="l.png", img_path="i.jpg")
    with pytest.raises(ValueError, match="single-channel"):
        check_seg_map(np.zeros((4, 5, 3), np.uint8), 3, seg_path="l.png")
    check_seg_map(np.zeros((4, 6), np.uint8), 3, image_shape=(4, 6, 3))  # fits


# ----------------------------------------------------- through the configs' pipelines
def test_clean_synthetic_data_passes_every_pipeline(synth_cfg, synthetic_root):
    for which in ("train", "val"):
        ds = _dataset(synth_cfg, os.path.join(synthetic_root, "ade"), which)
        assert len(ds) > 0 and ds.get_data_info(0)["num_classes"] == 4
        out = ds[0]
        assert out["data_samples"].gt_sem_seg.data.max() < 256


def test_label_values_outside_class_range_name_the_file(synth_cfg, synthetic_root, tmp_path):
    root, stems = _ade_copy(synthetic_root, tmp_path)
    png = root / "annotations" / "training" / (stems[0] + ".png")
    lab = np.array(Image.open(png))
    lab[:3, :3] = 9  # 4 classes stored as 1..4 (0 = other): 9 is out of range
    Image.fromarray(lab).save(png)
    ds = _dataset(synth_cfg, root)
    with pytest.raises(ValueError) as e:
        ds[0]
    msg = str(e.value)
    assert str(png) in msg and "0..3" in msg and "the file holds 9" in msg
    ds[1]  # the untouched sample still loads


def test_image_label_size_mismatch_names_both_files(synth_cfg, synthetic_root, tmp_path):
    root, stems = _ade_copy(synthetic_root, tmp_path)
    png = root / "annotations" / "training" / (stems[0] + ".png")
    lab = np.array(Image.open(png))
    Image.fromarray(lab[:, :40]).save(png)
    for which in ("train", "val"):  # annotations loaded before (train) and after (test) the resize
        if which == "val":
            os.rename(root / "images" / "training", root / "images" / "validation")
            os.rename(root / "annotations" / "training", root / "annotations" / "validation")
            png = root / "annotations" / "validation" / (stems[0] + ".png")
        ds = _dataset(synth_cfg, root, which)
        with pytest.raises(ValueError) as e:
            ds[0]
        msg = str(e.value)
        assert str(png) in msg and f"{stems[0]}.jpg" in msg and "64x40" in msg and "64x64" in msg


def test_missing_paths_and_labels_are_named(synth_cfg, synthetic_root, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=f"data_root '{missing}' does not exist.*data_root=DIR"):
        _dataset(synth_cfg, missing)
    root, stems = _ade_copy(synthetic_root, tmp_path)
    os.remove(root / "annotations" / "training" / (stems[1] + ".png"))
    with pytest.raises(FileNotFoundError) as e:
        _dataset(synth_cfg, root)
    assert "1 of 2 images" in str(e.value) and f"{stems[1]}.png is missing" in str(e.value)
    shutil.rmtree(root / "annotations")
    with pytest.raises(FileNotFoundError, match="annotation directory .*annotations/training' does not exist"):
        _dataset(synth_cfg, root)
    for f in os.listdir(root / "images" / "training"):
        os.remove(root / "images" / "training" / f)
    os.makedirs(root / "annotations" / "training")
    with pytest.raises(FileNotFoundError, match="no images ending in '.jpg'"):
        _dataset(synth_cfg, root)


def test_missing_data_root_through_the_runner(synth_cfg, tmp_path):
    """The same message reaches the user of `mim train` (the runner builds the dataloader)."""
    from mmengine.runner import Runner

    cfg = copy.deepcopy(synth_cfg)
    cfg.work_dir = str(tmp_path / "work")
    for which in ("train", "val", "test"):
        cfg[f"{which}_dataloader"]["dataset"]["data_root"] = str(tmp_path / "no_ade")
        cfg[f"{which}_dataloader"]["num_workers"] = 0
        cfg[f"{which}_dataloader"]["persistent_workers"] = False
    cfg.experiment_name = "missing_root"
    runner = Runner.from_cfg(cfg)
    with pytest.raises(FileNotFoundError, match="no_ade' does not exist"):
        runner.train()


def test_ade20k_configs_use_the_checks():
    for name in ("linear_deit-t_ade20k-512x512.py", "mask_deit-b_ade20k-512x512.py"):
        cfg = Config.fromfile(os.path.join(REPO, "configs", "mmseg", name))
        for which in ("train", "val", "test"):
            ds = cfg[f"{which}_dataloader"]["dataset"]
            assert ds["type"] == "CheckedADE20KDataset"
            types = [t["type"] for t in ds["pipeline"]]
            assert types[types.index("LoadAnnotations") + 1] == "CheckSegMap"
        tta = [alts[0]["type"] for alts in cfg.tta_pipeline[1]["transforms"]]
        assert tta[tta.index("LoadAnnotations") + 1] == "CheckSegMap"
