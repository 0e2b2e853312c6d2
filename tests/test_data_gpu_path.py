"""data.pipeline=gpu on the CPU device (the code CI runs; tests/test_gpu_smoke.py runs it on CUDA): the
batched RandomResizedCrop draw against timm's, the batched antialiased bicubic against Pillow's crop + resize,
and the whole path's output shapes, value ranges, label order, determinism and non-JPEG fallback."""
import random

import numpy as np
import pytest
import torch
from PIL import Image

from pretrain.data.fast.gpu import (EncodedFolder, GpuAugment, aa_weights, build_gpu_augment, collate_encoded,
                                    crop_resize, read_encoded, rrc_boxes)
from pretrain.synthetic.photolike import photolike_image, write_imagenet_like
from stats_helpers import ks_limit, ks_stat

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.mark.parametrize("size", [(500, 375), (333, 500), (1000, 90)])
def test_rrc_boxes_follow_timms_distribution(size):
    from timm.data.transforms import RandomResizedCropAndInterpolation as RRC
    n = 4000
    img = Image.new("L", size)
    random.seed(0)
    ref = np.array([RRC.get_params(img, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(n)])
    ours = torch.stack(rrc_boxes(torch.Generator().manual_seed(0), torch.tensor([size] * n)), 1).numpy()
    for j, name in enumerate(("top", "left", "height", "width")):
        d, lim = ks_stat(ref[:, j], ours[:, j]), ks_limit(n, n)
        assert d < lim, (name, d, lim)
    assert (ours[:, 0] + ours[:, 2] <= size[1]).all() and (ours[:, 1] + ours[:, 3] <= size[0]).all()


@pytest.mark.parametrize("size", [(1000, 90), (90, 1000), (400, 350), (7, 5)])
def test_rrc_fallback_is_timms_central_crop(size):
    from timm.data.transforms import RandomResizedCropAndInterpolation as RRC
    ref = RRC.get_params(Image.new("L", size), (2.0, 2.0), (3 / 4, 4 / 3))  # no attempt can fit
    ours = rrc_boxes(torch.Generator().manual_seed(0), torch.tensor([size]), scale=(2.0, 2.0))
    assert tuple(int(v[0]) for v in ours) == ref


def test_crop_resize_matches_pillows_crop_then_resize():
    rng = np.random.default_rng(3)
    imgs = [photolike_image(rng, wh) for wh in ((200, 150), (120, 160), (90, 90))]
    boxes = [(10, 20, 120, 150), (5, 0, 150, 100), (30, 40, 40, 30)]  # top, left, h, w: shrink and enlarge
    tensors = [torch.from_numpy(a).permute(2, 0, 1).contiguous() for a in imgs]
    top, left, h, w = (torch.tensor(v) for v in zip(*boxes))
    out = crop_resize(tensors, top, left, h, w, 64)
    assert out.dtype == torch.uint8 and out.shape == (3, 3, 64, 64)
    for a, (t, l_, hh, ww), o in zip(imgs, boxes, out):
        ref = np.asarray(Image.fromarray(a).crop((l_, t, l_ + ww, t + hh)).resize((64, 64), Image.BICUBIC), float)
        d = np.abs(ref - o.permute(1, 2, 0).numpy())
        # Pillow's fixed-point coefficients: a rounding step here and there (float weights here)
        assert d.mean() < 0.3 and (d > 2).mean() < 1e-3, (d.mean(), d.max())
    wts = aa_weights(torch.tensor([10.0]), torch.tensor([120.0]), 200, 64)
    assert torch.allclose(wts.sum(-1), torch.ones(1, 64)) and (wts[0, :, :10] == 0).all() and (wts[0, :, 130:] == 0).all()


@pytest.fixture(scope="module")
def photo_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("photolike_gpu")
    write_imagenet_like(str(root), num_classes=2, train_per_class=5, val_per_class=1, seed=2)
    png = root / "train" / sorted(p.name for p in (root / "train").iterdir())[1] / "zz_extra.png"
    Image.fromarray(photolike_image(np.random.default_rng(9), (120, 90))).save(png)  # not a JPEG: CPU decode
    return root


def test_gpu_path_on_the_cpu_device(photo_root):
    from pretrain.data.build import build_dataset
    from pretrain.engine.config import defaults
    cfg = defaults()
    cfg["data"].update(root=str(photo_root), num_classes=2, img_size=48, pipeline="gpu", re_prob=0.0)
    ds = build_dataset(cfg, "train", train=True)
    assert isinstance(ds, EncodedFolder) and len(ds) == 11
    items = [ds[i] for i in range(len(ds))]
    assert sum(e.data is None for e, _ in items) == 1  # the PNG
    batch = collate_encoded(items)
    assert batch[1].tolist() == [t for _, t in ds.samples]  # label order kept
    aug = build_gpu_augment(cfg["data"], seed=0, rank=0)
    x = aug(batch[0].to("cpu"), 0, 3)
    assert x.shape == (11, 3, 48, 48) and x.dtype == torch.float32 and torch.isfinite(x).all()
    lo, hi = (0 - MEAN) / STD, (1 - MEAN) / STD
    assert (x >= lo - 1e-5).all() and (x <= hi + 1e-5).all()
    assert torch.equal(x, aug(batch[0].to("cpu"), 0, 3)) and not torch.equal(x, aug(batch[0].to("cpu"), 0, 4))


def test_gpu_path_decode_equals_the_cpu_decoders(photo_root):
    """Without RandAugment and flips, a whole-image crop of the decoded batch is Pillow's decode + resize."""
    from pretrain.data.fast.device import DeviceAugment
    paths = sorted(str(p) for p in (photo_root / "train").rglob("*.JPEG"))[:4]
    enc = [read_encoded(p) for p in paths]
    aug = GpuAugment(64, DeviceAugment(re_prob=0.0))
    images = aug.decode(collate_encoded([(e, 0) for e in enc])[0])
    for p, img in zip(paths, images):
        ref = np.asarray(Image.open(p).convert("RGB"), float)
        assert np.abs(img.permute(1, 2, 0).numpy() - ref).mean() < 0.5


def test_gpu_pipeline_config():
    from pretrain.engine.config import defaults, validate
    cfg = defaults()
    cfg["data"].update(pipeline="gpu", interpolation="bilinear")
    with pytest.raises(ValueError, match="bicubic"):
        validate(cfg)
