"""The batched tensor RandAugment (data.pipeline=fast_device) against timm's PIL RandAugment: every op equal
to Pillow's on the same image and argument, the batched dispatch equal to applying the ops one sample at a
time, and the drawn ops, application rate and arguments distributed as timm draws them."""
import math
import random
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import auto_augment as A

from pretrain.data.fast import randaug as R
from pretrain.data.fast.device import DeviceAugment
from pretrain.data.folders import _patch_timm_posterize, build_transforms
from pretrain.synthetic.photolike import photolike_image
from stats_helpers import ks_limit, ks_stat

FILL = (124, 116, 104)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(5)
    imgs = [Image.fromarray(photolike_image(rng, (64, 48))) for _ in range(3)]
    imgs.append(Image.new("RGB", (64, 48), (10, 200, 30)))  # flat: AutoContrast / Equalize identity branches
    return imgs


def _t(imgs):
    return torch.stack([torch.from_numpy(np.array(i)).permute(2, 0, 1) for i in imgs]).float()


def _pil_op(name, img, arg):
    _patch_timm_posterize()
    fn = A.NAME_TO_OP[name]
    if name in R.GEOMETRIC:
        return fn(img, arg, fillcolor=FILL, resample=Image.BICUBIC)
    if name in ("AutoContrast", "Equalize", "Invert"):
        return fn(img)
    return fn(img, int(arg) if "Posterize" in name or "Solarize" in name else arg)


ARGS = {"Rotate": [23.7, -11.0, 30.0], "ShearX": [0.27, -0.3], "ShearY": [-0.21, 0.3],
        "TranslateXRel": [0.4, -0.25], "TranslateYRel": [-0.4, 0.33], "PosterizeIncreasing": [0, 1, 3, 4],
        "SolarizeIncreasing": [26, 128, 256], "SolarizeAdd": [0, 99, 110], "ColorIncreasing": [0.1, 0.5, 1.81],
        "ContrastIncreasing": [0.19, 1.0, 1.9], "BrightnessIncreasing": [0.1, 0.73, 1.9],
        "SharpnessIncreasing": [0.1, 1.6, 1.9], "AutoContrast": [0], "Equalize": [0], "Invert": [0]}


@pytest.mark.parametrize("name", R.INCREASING)
def test_each_op_equals_pillows(images, name):
    x = _t(images)
    h, w = x.shape[2:]
    for arg in ARGS[name]:
        ref = _t([_pil_op(name, im, arg) for im in images])  # timm's translate ops take the fraction
        a = torch.full((len(images),), float(arg), dtype=torch.float64)
        if name in R.GEOMETRIC:
            if name == "TranslateXRel":
                a = a * w
            elif name == "TranslateYRel":
                a = a * h
            out = R.affine(x.clone(), R.affine_matrices(name, a, h, w), FILL)
        else:
            out = R.POINT_OPS[name](x.clone(), a)
        assert torch.equal(out, ref), (name, arg, (out - ref).abs().max().item())


def test_batched_dispatch_equals_ops_one_sample_at_a_time(images):
    ra = R.TensorRandAugment("rand-m9-mstd0.5-inc1", fill=FILL)
    imgs = images * 8
    x = _t(imgs)
    h, w = x.shape[2:]
    g = torch.Generator().manual_seed(7)
    params = ra.draw(g, len(imgs), (h, w))
    out = ra(x.clone(), None, params)
    ops, apply, args, _ = params
    for i, im in enumerate(imgs):
        for layer in range(ops.shape[0]):
            if apply[layer, i]:
                name = ra.names[int(ops[layer, i])]
                a = float(args[layer, i])
                if name in ("TranslateXRel", "TranslateYRel"):  # args are pixels; timm's op takes the fraction
                    a /= (w if name == "TranslateXRel" else h)
                im = _pil_op(name, im, a)
        assert torch.equal(out[i], _t([im])[0]), i


def test_masked_mode_equals_the_indexed_mode(images):
    """The CUDA default (every op on the whole batch, kept where drawn) gives the CPU default's result."""
    ra = R.TensorRandAugment("rand-m9-mstd0.5-inc1", fill=FILL)
    x = _t(images * 10)
    params = ra.draw(torch.Generator().manual_seed(11), x.shape[0], x.shape[2:])
    assert torch.equal(ra(x.clone(), None, params, masked=True), ra(x.clone(), None, params, masked=False))


def _timm_draws(n):
    """(layer, op name, applied, argument) of timm's RandAugment on n images, recorded in place of the ops."""
    t = build_transforms({"img_size": 32, "auto_augment": "rand-m9-mstd0.5-inc1", "re_prob": 0.0}, train=True)
    ra = t.transforms[2]
    rec = []
    for op in ra.ops:
        def fn(img, *args, _name=op.name, **kw):
            rec.append((_name, args[0] if args else 0.0))
            return img
        op.aug_fn = fn
    img = Image.new("RGB", (32, 32))
    layers = []
    for _ in range(n):
        before = len(rec)
        ra(img)
        layers.append(rec[before:])
    return rec, layers


def test_draws_follow_timms_distribution():
    n = 6000
    random.seed(0)
    np.random.seed(0)
    rec, layers = _timm_draws(n)
    ra = R.TensorRandAugment("rand-m9-mstd0.5-inc1", fill=FILL)
    ops, apply, args, mag = ra.draw(torch.Generator().manual_seed(0), n, (32, 32))
    ours = [(ra.names[int(o)], float(a)) for o, ap, a in zip(ops.flatten(), apply.flatten(), args.flatten()) if ap]
    # applied ops per image: Binomial(2, 0.5) in both
    k_ref = Counter(len(v) for v in layers)
    k_ours = Counter(apply.sum(0).tolist())
    for k, p in ((0, 0.25), (1, 0.5), (2, 0.25)):
        tol = 4 * math.sqrt(p * (1 - p) / n)
        assert abs(k_ref[k] / n - p) < tol and abs(k_ours[k] / n - p) < tol, (k, k_ref, k_ours)
    # each op about 1/15 of the applied ones
    c_ref, c_ours = Counter(r[0] for r in rec), Counter(o[0] for o in ours)
    for name in ra.names:
        p = 1 / 15
        assert abs(c_ref[name] / len(rec) - p) < 4 * math.sqrt(p * (1 - p) / len(rec))
        assert abs(c_ours[name] / len(ours) - p) < 4 * math.sqrt(p * (1 - p) / len(ours)), name
    # arguments per op: the same distribution (two-sample KS at alpha = 0.001; discrete ones: same support)
    for name in ra.names:
        a = np.array([r[1] for r in rec if r[0] == name], float)
        b = np.array([o[1] for o in ours if o[0] == name], float)
        if name == "TranslateXRel" or name == "TranslateYRel":
            b = b / 32  # ours are in pixels
        d = ks_stat(a, b)
        assert d < ks_limit(len(a), len(b)), (name, d)
    assert mag.min() >= 0 and mag.max() <= 10


def test_device_augment_with_flip_and_randaugment():
    x = torch.randint(0, 256, (16, 40, 48, 3), dtype=torch.uint8)
    aug = DeviceAugment(re_prob=0.0, hflip=0.5, rand_augment=R.TensorRandAugment())
    out = aug(x, 2, 5)
    assert out.shape == (16, 3, 40, 48) and out.dtype == torch.float32
    assert torch.equal(out, aug(x, 2, 5)) and not torch.equal(out, aug(x, 2, 6))
    flips = DeviceAugment(re_prob=0.0, hflip=1.0)(x)
    assert torch.equal(flips, DeviceAugment(re_prob=0.0)(x.flip(2)))
    with pytest.raises(ValueError, match="not supported"):
        R.TensorRandAugment("rand-m9-mstd101")
