"""ImageNet-like JPEGs for loader benchmarks: ImageNet's image sizes and file sizes, photograph-like content.

A loader's cost per image depends on the pixel count (decode, colour conversion, resize) and on the
compressed size (entropy decoding), so a benchmark on small or flat synthetic images says little about
ImageNet. :func:`photolike_image` renders a scene of the synthetic world (:func:`pretrain.synthetic.build_scene`,
multi-object) at a small size, upsamples it to ``(W, H)`` and adds detail with a natural-image spectrum
(amplitude ~ 1/f^0.8, per channel, partly correlated between channels) so that a quality-90 JPEG of it has
about the bytes per pixel of an ImageNet photograph.

:func:`imagenet_like_size` draws ``(W, H)`` the way ImageNet-1k's training images are shaped: most have a
long side of 500 px (about 3/4 of them landscape, 4:3 the most common aspect), the rest a smaller long side;
the mean is about 450 x 370 (ImageNet-1k train: about 400 x 350 on average with many large outliers
above 500 px that this draw leaves out; 108 KB per file on average, 138 GB / 1.28 M files).

:func:`write_imagenet_like` writes ``root/{train,val}/<class>/<class>_<i>.JPEG`` (the synthetic world's class
names), readable by the ImageNet folder loaders.
"""
from __future__ import annotations

import io
import json
import os
from typing import Tuple

import numpy as np
from PIL import Image

from .scenes import build_scene
from .world import class_names

__all__ = ["imagenet_like_size", "photolike_image", "write_imagenet_like"]

_ASPECTS = np.array([4 / 3, 3 / 2, 1.0, 5 / 4, 16 / 9])
_ASPECT_P = np.array([0.62, 0.14, 0.10, 0.08, 0.06])


def imagenet_like_size(rng: np.random.Generator) -> Tuple[int, int]:
    """``(W, H)``: long side 500 px with probability 0.7, else uniform in [200, 500); aspect from ImageNet's
    common ones (4:3 62 %, 3:2, 1:1, 5:4, 16:9) with +-3 % jitter; landscape with probability 0.75."""
    long = 500 if rng.random() < 0.7 else int(rng.integers(200, 500))
    aspect = float(rng.choice(_ASPECTS, p=_ASPECT_P)) * float(rng.uniform(0.97, 1.03))
    short = max(int(round(long / max(aspect, 1.0))), 32)
    return (long, short) if rng.random() < 0.75 else (short, long)


def _pink(rng: np.random.Generator, h: int, w: int, alpha: float) -> np.ndarray:
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    spec = (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f ** alpha
    spec[0, 0] = 0.0
    out = np.fft.irfft2(spec, s=(h, w))
    return out / (out.std() + 1e-12)


def photolike_image(rng: np.random.Generator, size: Tuple[int, int], detail: float = 36.0) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 image of ``size = (W, H)``: a synthetic-world scene rendered at about 1/4 of the
    size, bicubic-upsampled, plus 1/f detail of standard deviation ``detail`` (grey levels)."""
    w, h = size
    small = (max(w // 4, 16), max(h // 4, 16))
    scene = build_scene("coco", "train", int(rng.integers(0, 2 ** 31)), size=small)
    base = np.asarray(Image.fromarray(scene.image).resize((w, h), Image.BICUBIC), dtype=np.float32)
    lum = _pink(rng, h, w, 0.8)
    tex = np.stack([0.6 * lum + 0.4 * _pink(rng, h, w, 0.8) for _ in range(3)], -1)
    return np.clip(base + detail * tex, 0, 255).astype(np.uint8)


def write_imagenet_like(root: str, num_classes: int = 4, train_per_class: int = 16, val_per_class: int = 2,
                        seed: int = 0, quality: int = 90) -> dict:
    """Write the folder layout under ``root`` (train and val splits); returns and saves ``root/photolike.json``
    (parameters, mean size, mean file size). An existing complete set with the same parameters is kept."""
    params = {"num_classes": num_classes, "train_per_class": train_per_class, "val_per_class": val_per_class,
              "seed": seed, "quality": quality, "version": 1}
    manifest = os.path.join(root, "photolike.json")
    if os.path.isfile(manifest):
        with open(manifest) as f:
            old = json.load(f)
        if old.get("params") == params:
            return old
    rng = np.random.default_rng(np.random.SeedSequence([seed, 18]))
    names = class_names(num_classes)
    sizes, nbytes = [], []
    for split, per in (("train", train_per_class), ("val", val_per_class)):
        for c, name in enumerate(names):
            d = os.path.join(root, split, name)
            os.makedirs(d, exist_ok=True)
            for i in range(per):
                wh = imagenet_like_size(rng)
                buf = io.BytesIO()
                Image.fromarray(photolike_image(rng, wh)).save(buf, "JPEG", quality=quality)
                with open(os.path.join(d, f"{name}_{i:05d}.JPEG"), "wb") as f:
                    f.write(buf.getvalue())
                sizes.append(wh)
                nbytes.append(buf.tell())
    s = np.asarray(sizes, float)
    info = {"params": params, "images": len(sizes), "mean_wh": [float(s[:, 0].mean()), float(s[:, 1].mean())],
            "mean_kb": float(np.mean(nbytes) / 1000), "mean_bytes_per_pixel": float(np.sum(nbytes) / np.prod(s, 1).sum())}
    with open(manifest, "w") as f:
        json.dump(info, f, indent=2)
    return info
