"""data.pipeline=fast against timm's training transform: the same crop / flip / RandAugment draws per seed,
uint8 worker output, device-side normalization equal to timm's and erasing boxes distributed like timm's
RandomErasing, and exact resume of an engine run."""
import json
import os
import math
import random

import numpy as np
import pytest
import torch
from PIL import Image

from pretrain.data.fast.decode import CropDecoder, pow2_factor, rrc_params, simplejpeg
from pretrain.data.fast.device import DeviceAugment, erase_params
from pretrain.data.folders import build_transforms, load_rgb
from pretrain.data.robust import seed_all
from pretrain.synthetic.photolike import imagenet_like_size, photolike_image, write_imagenet_like
from stats_helpers import ks_limit, ks_stat

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
BACKENDS = ["pil"] + (["simplejpeg"] if simplejpeg is not None else [])


def _cfg(size=64, aa="rand-m9-mstd0.5-inc1", re_prob=0.0):
    return {"img_size": size, "auto_augment": aa, "re_prob": re_prob, "re_mode": "pixel", "re_count": 1,
            "interpolation": "bicubic"}


@pytest.fixture(scope="module")
def photo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("photolike")
    write_imagenet_like(str(root), num_classes=2, train_per_class=6, val_per_class=1, seed=1)
    return root


def _files(root):
    return sorted(str(p) for p in (root / "train").rglob("*.JPEG"))


def test_crop_params_are_timms_draw_for_draw():
    from timm.data.transforms import RandomResizedCropAndInterpolation as RRC
    sizes = [(500, 375), (375, 500), (333, 500), (500, 500), (64, 48), (1000, 90), (90, 1000), (7, 5)]
    for k in range(3000):
        w, h = sizes[k % len(sizes)]
        random.seed(k)
        ref = RRC.get_params(Image.new("L", (w, h)), (0.08, 1.0), (3 / 4, 4 / 3))
        random.seed(k)
        assert rrc_params(w, h) == ref, (k, w, h)
        assert random.random() == (random.seed(k), RRC.get_params(Image.new("L", (w, h)), (0.08, 1.0), (3 / 4, 4 / 3)),
                                   random.random())[2]  # the same number of draws


def test_crop_scale_reaches_timm_the_fast_decoder_and_the_gpu_boxes(photo_root):
    """data.crop_scale is RandomResizedCrop's area range in every pipeline, and a bad value names the key."""
    from timm.data.transforms import RandomResizedCropAndInterpolation as RRC

    from pretrain.data.fast.dataset import FastTrainTransform
    from pretrain.data.fast.gpu import rrc_boxes
    from pretrain.engine.config import load_config

    cfg = {**_cfg(96), "crop_scale": [0.35, 1.0]}
    rrc = [t for t in build_transforms(cfg, train=True).transforms if isinstance(t, RRC)]
    assert len(rrc) == 1 and tuple(rrc[0].scale) == (0.35, 1.0)
    fast = FastTrainTransform(cfg, scaled=False)
    assert fast.decoder.scale == (0.35, 1.0)
    for k in range(200):  # the fast path draws timm's crops at that scale
        random.seed(k)
        ref = RRC.get_params(Image.new("L", (500, 375)), (0.35, 1.0), (3 / 4, 4 / 3))
        random.seed(k)
        assert rrc_params(500, 375, (0.35, 1.0)) == ref
    gen = torch.Generator().manual_seed(0)
    sizes = torch.tensor([[500, 375]] * 4000)
    top, left, h, w = rrc_boxes(gen, sizes, (0.35, 1.0))
    area = (h * w).double() / (500 * 375)
    assert area.min() >= 0.35 - 0.01 and area.max() <= 1.0
    for bad in ("[0.5, 0.2]", "[0, 1]", "[0.3]", "0.3"):
        with pytest.raises(ValueError, match=r"data\.crop_scale"):
            load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "pretrain", "synthetic_base.yaml"),
                        [f"data.crop_scale={bad}"])


def test_pow2_factor():
    assert [pow2_factor(s) for s in (1.0, 0.9, 0.5, 0.49, 0.26, 0.25, 0.2, 0.01)] == \
        [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.125]


@pytest.mark.parametrize("backend", BACKENDS)
def test_fast_sample_has_timms_draws_and_pixels(photo_root, backend):
    """Full-resolution decode: per seed, the fast sample is timm's up to the resampling's border support (a
    wrong crop, flip or RandAugment draw would differ by tens of grey levels, as another seed's does)."""
    from pretrain.data.fast.dataset import FastTrainTransform
    ref_t = build_transforms(_cfg(96), train=True)
    fast = FastTrainTransform(_cfg(96), scaled=False, backend=backend)
    diffs, other = [], []
    for k, path in enumerate(_files(photo_root)):
        seed_all(1000 + k)
        ref = (ref_t(load_rgb(path)) * STD + MEAN) * 255
        seed_all(1000 + k)
        out = fast(path)
        assert out.dtype == torch.uint8 and out.shape == (96, 96, 3)
        after = (random.random(), float(np.random.rand()), float(torch.rand(1)))
        seed_all(1000 + k)
        ref_t(load_rgb(path))
        assert after == (random.random(), float(np.random.rand()), float(torch.rand(1)))  # same draws consumed
        diffs.append((ref - out.permute(2, 0, 1).float()).abs().mean().item())
        seed_all(2000 + k)
        other.append((ref - fast(path).permute(2, 0, 1).float()).abs().mean().item())
    assert np.median(diffs) < 0.5 and max(diffs) < 3.0, diffs
    assert np.median(other) > 10 * max(np.median(diffs), 0.1), (diffs, other)


@pytest.mark.parametrize("backend", BACKENDS)
def test_scaled_decode_of_a_large_image(tmp_path, backend):
    """A crop needing <= 1/2 of a 1200 x 900 source is decoded at 1/2 or less, same box, close pixels."""
    rng = np.random.default_rng(0)
    path = str(tmp_path / "big.JPEG")
    Image.fromarray(photolike_image(rng, (1200, 900))).save(path, quality=90)
    full, scaled = CropDecoder(scaled=False, backend=backend), CropDecoder(backend=backend)
    seen = 0
    for k in range(40):
        random.seed(k)
        a, pa = full.crop(path, (128, 128))
        random.seed(k)
        b, pb = scaled.crop(path, (128, 128))
        assert pa == pb
        assert a.size == (1200, 900)
        need = max(128 / pa[3], 128 / pa[2])
        if need <= 0.5:
            seen += 1
            f = pow2_factor(need)
            assert b.size == (math.ceil(1200 * f), math.ceil(900 * f)) and f <= 0.5
            x0, y0, x1, y1 = b.box(*pb)
            assert x1 - x0 >= 128 - 1e-6 and y1 - y0 >= 128 - 1e-6  # never upsampled
            from pretrain.data.fast.decode import resample
            x = resample(a, pa, (128, 128)).numpy().astype(float)
            y = resample(b, pb, (128, 128)).numpy().astype(float)
            assert np.abs(x - y).mean() < 6.0
    assert seen >= 5


def test_device_normalize_equals_timms_to_tensor_normalize():
    from torchvision import transforms as T
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (4, 40, 56, 3), dtype=torch.uint8, generator=g)
    out = DeviceAugment(re_prob=0.0)(imgs)
    assert out.dtype == torch.float32 and out.shape == (4, 3, 40, 56) and out.is_contiguous()
    norm = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    for i in range(4):
        ref = norm(T.ToTensor()(Image.fromarray(imgs[i].numpy())))
        assert torch.equal(out[i], ref)


def _boxes_of(erased):  # (N, C, H, W) images that were 0 outside the erased box
    nz = (erased != 0).any(1)
    rows, cols = nz.any(2), nz.any(1)
    hit = rows.any(1)
    out = []
    for i in hit.nonzero().view(-1).tolist():
        r, c = rows[i].nonzero().view(-1), cols[i].nonzero().view(-1)
        out.append((int(r[0]), int(c[0]), int(r[-1] - r[0] + 1), int(c[-1] - c[0] + 1)))
    return hit.float().mean().item(), np.array(out)


def test_erasing_boxes_follow_timms_distribution():
    from timm.data.random_erasing import RandomErasing
    n, h, w = 4000, 40, 56  # non-square: a swapped height/width would show
    torch.manual_seed(0)
    random.seed(0)
    ref = RandomErasing(probability=0.25, mode="pixel", device="cpu")(torch.zeros(n, 3, h, w))
    aug = DeviceAugment(re_prob=0.25)
    ours = torch.cat([aug(torch.full((500, h, w, 3), 124, dtype=torch.uint8), 0, b) for b in range(n // 500)])
    base = aug.normalize(torch.full((1, h, w, 3), 124, dtype=torch.uint8))
    ours = ours - base
    p_ref, box_ref = _boxes_of(ref)
    p_ours, box_ours = _boxes_of(ours)
    sigma = math.sqrt(0.25 * 0.75 / n)
    assert abs(p_ref - 0.25) < 4 * sigma and abs(p_ours - 0.25) < 4 * sigma, (p_ref, p_ours)
    lim = ks_limit(len(box_ref), len(box_ours))
    for j, name in enumerate(("top", "left", "height", "width")):
        assert ks_stat(box_ref[:, j], box_ours[:, j]) < lim, name
    assert ks_stat(box_ref[:, 2] * box_ref[:, 3], box_ours[:, 2] * box_ours[:, 3]) < lim
    assert (box_ours[:, 0] + box_ours[:, 2] <= h).all() and (box_ours[:, 1] + box_ours[:, 3] <= w).all()
    inside = (ours + base)[ours != 0]
    assert abs(inside.mean().item()) < 0.02 and abs(inside.std().item() - 1.0) < 0.02  # N(0, 1) fill


def test_erase_params_count_and_seeding():
    g = torch.Generator().manual_seed(3)
    top, left, hh, ww, active = erase_params(g, 2000, 32, 32, 1.0, max_count=3)
    counts = active.sum(1)
    assert set(counts.tolist()) <= {1, 2, 3} and abs(counts.float().mean().item() - 2.0) < 0.1
    assert ((hh < 32) & (ww < 32)).all() and (top + hh <= 32).all() and (left + ww <= 32).all()
    aug = DeviceAugment(re_prob=1.0)
    x = torch.randint(0, 256, (8, 24, 24, 3), dtype=torch.uint8)
    assert torch.equal(aug(x, 1, 2), aug(x, 1, 2))
    assert not torch.equal(aug(x, 1, 2), aug(x, 1, 3))
    assert not torch.equal(aug(x, 1, 2), DeviceAugment(re_prob=1.0, rank=1)(x, 1, 2))


def test_fast_dataset_labels_and_batches(photo_root):
    from pretrain.data.build import build_dataset
    from pretrain.data.fast.device import DeviceAugment
    from pretrain.engine.config import defaults
    cfg = defaults()
    cfg["data"].update(root=str(photo_root), num_classes=2, img_size=48, pipeline="fast")
    fast = build_dataset(cfg, "train", train=True)
    cfg["data"]["pipeline"] = "fast_device"
    on_device = build_dataset(cfg, "train", train=True)
    assert on_device.fast.augment == [] and on_device.fast.hflip == 0.0 and fast.fast.hflip == 0.5
    cfg["data"]["pipeline"] = "timm"
    ref = build_dataset(cfg, "train", train=True)
    assert fast.classes == ref.classes and fast.samples == ref.samples
    loader = torch.utils.data.DataLoader(fast, batch_size=4, shuffle=False)
    x, y = next(iter(loader))
    assert x.dtype == torch.uint8 and x.shape == (4, 48, 48, 3)
    assert y.tolist() == [t for _, t in ref.samples[:4]]
    out = DeviceAugment(re_prob=0.25)(x, 0, 0)
    assert out.shape == (4, 3, 48, 48) and out.dtype == torch.float32
    lo, hi = (0 - MEAN) / STD, (1 - MEAN) / STD
    clean = DeviceAugment(re_prob=0.0)(x)
    assert (clean >= lo.view(1, 3, 1, 1) - 1e-6).all() and (clean <= hi.view(1, 3, 1, 1) + 1e-6).all()


def test_pipeline_config_checks(tmp_path):
    from pretrain.engine.config import defaults, validate
    cfg = defaults()
    cfg["data"]["pipeline"] = "dali"
    with pytest.raises(ValueError, match="data.pipeline"):
        validate(cfg)
    cfg = defaults()
    cfg["data"].update(pipeline="fast", format="cifar10")
    with pytest.raises(ValueError, match="folder"):
        validate(cfg)
    cfg = defaults()
    cfg["data"].update(pipeline="fast_device", auto_augment="original-mstd0.5")
    with pytest.raises(ValueError, match="rand-"):
        validate(cfg)
    cfg["data"].update(auto_augment=None)  # timm would colour-jitter instead
    with pytest.raises(ValueError, match="color_jitter"):
        validate(cfg)
    cfg["data"].update(color_jitter=0.0)
    validate(cfg)


def test_imagenet_like_sizes():
    rng = np.random.default_rng(0)
    s = np.array([imagenet_like_size(rng) for _ in range(4000)], float)
    assert 400 < s[:, 0].mean() < 460 and 340 < s[:, 1].mean() < 400
    assert s.max() == 500 and (s[:, 0] > s[:, 1]).mean() > 0.6


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["fast", "fast_device", "gpu"])
def test_fast_pipeline_run_resumes_exactly(synthetic_root, tmp_path, pipeline):
    from pretrain.engine.config import load_config
    from pretrain.engine.train import train
    from test_pretrain_resume import CFG, resume_overrides  # everything random on
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        def cfg(out, extra):
            return load_config(CFG, resume_overrides(synthetic_root, out, workers=0) + [f"data.pipeline={pipeline}"]
                               + extra)
        ref = train(cfg(tmp_path / "ref", []))
        stopped = train(cfg(tmp_path / "run", ["train.max_steps=8"]))
        assert stopped["steps"] == 8
        resumed = train(cfg(tmp_path / "run", ["train.resume=auto"]))
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
    assert ref["steps"] == resumed["steps"] == 12 and ref["skipped_steps"] == 0
    a = [json.loads(x)["loss"] for x in open(tmp_path / "ref" / "steps.jsonl")]
    b = [json.loads(x)["loss"] for x in open(tmp_path / "run" / "steps.jsonl")]
    assert len(a) == len(b) == 12 and a == b


@pytest.mark.parametrize("pipeline", ["fast", "gpu"])
def test_worker_processes_give_the_main_process_batches(photo_root, pipeline):
    """Per-sample seeding: two loader workers hand the same samples as loading in the main process."""
    from pretrain.data.build import build_dataset
    from pretrain.data.robust import KeyedDataset
    from pretrain.data.samplers import EpochSampler
    from pretrain.engine.config import defaults
    cfg = defaults()
    cfg["data"].update(root=str(photo_root), num_classes=2, img_size=32, pipeline=pipeline)
    ds = KeyedDataset(build_dataset(cfg, "train", train=True), seed=3)
    collate = None
    if pipeline == "gpu":
        from pretrain.data.fast.gpu import collate_encoded
        collate = collate_encoded
    out = []
    for workers in (0, 2):
        sampler = EpochSampler(len(ds), 1, 0, shuffle=True, seed=3)
        loader = torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler, num_workers=workers,
                                             collate_fn=collate)
        out.append(list(loader))
    for a, b in zip(*out):
        assert torch.equal(a[1], b[1])
        if pipeline == "gpu":
            assert all(torch.equal(x.data, y.data) for x, y in zip(a[0].items, b[0].items))
        else:
            assert torch.equal(a[0], b[0])


def test_label_maps_with_a_fast_pipeline_are_refused(photo_root, tmp_path):
    """Precomputed label maps follow timm's crop by instrumenting its transform: the fast paths draw their
    crops elsewhere, so the maps would silently cover the wrong region; the run stops before training."""
    from pretrain.data.build import build_data
    from pretrain.data.label_maps import LabelMapDataset
    from pretrain.engine.config import defaults
    cfg = defaults()
    cfg["data"].update(root=str(photo_root), num_classes=2, img_size=32, pipeline="fast", batch_size=2, workers=0,
                       val_split="val")
    with pytest.raises(ValueError, match="label maps"):
        build_data(cfg, 0, 1, str(tmp_path), wrap_train=lambda ds: LabelMapDataset.__new__(LabelMapDataset))
    cfg["data"]["pipeline"] = "timm"
    build_data(cfg, 0, 1, str(tmp_path), wrap_train=lambda ds: ds)
