"""Crop parameters as timm draws them, and JPEG decoding at the smallest DCT scale that covers the crop.

:func:`rrc_params` is timm's ``RandomResizedCropAndInterpolation.get_params`` restated on an image size
(the same calls to Python's ``random`` in the same order, so a seeded sample gets the same box);
:func:`decode_for_crop` decodes only as many pixels as the crop needs at the output size: libjpeg-turbo
scales during the inverse DCT through ``simplejpeg`` (``min_width``/``min_height``) or Pillow's ``draft()``,
by 1/2, 1/4 or 1/8 (the factors with SIMD kernels), when simplejpeg is not installed or the file is not a
baseline/progressive RGB or grey JPEG that simplejpeg decodes (CMYK, PNG, ...: full decode through
:func:`pretrain.data.folders.load_rgb`). The crop box is returned in the decoded image's coordinates.
"""
from __future__ import annotations

import math
import random
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile

from ..folders import UnreadableImageError, to_rgb

try:  # optional: pip install simplejpeg (the `fast` extra)
    import simplejpeg
except ImportError:  # pragma: no cover - exercised where it is not installed
    simplejpeg = None

Box = Tuple[float, float, float, float]


def rrc_params(img_w: int, img_h: int, scale: Sequence[float] = (0.08, 1.0),
               ratio: Sequence[float] = (3 / 4, 4 / 3), rand=random) -> Tuple[int, int, int, int]:
    """``(top, left, height, width)`` of a RandomResizedCrop of a ``img_w x img_h`` image: 10 attempts of an
    area fraction uniform in ``scale`` and a log-uniform aspect in ``ratio``, else the central crop clamped to
    ``ratio`` -- timm's draws, one for one."""
    area = img_w * img_h
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = rand.uniform(scale[0], scale[1]) * area
        aspect = math.exp(rand.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if w <= img_w and h <= img_h:
            top = rand.randint(0, img_h - h)
            left = rand.randint(0, img_w - w)
            return top, left, h, w
    in_ratio = img_w / img_h
    if in_ratio < min(ratio):
        w, h = img_w, int(round(img_w / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = img_h, int(round(img_h * max(ratio)))
    else:
        w, h = img_w, img_h
    return (img_h - h) // 2, (img_w - w) // 2, h, w


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise UnreadableImageError(path, f"{type(exc).__name__}: {exc}") from None


def jpeg_size(data: bytes) -> Optional[Tuple[int, int]]:
    """``(W, H)`` of a JPEG that decodes to RGB (YCbCr, RGB or grey; not CMYK/YCCK), else None. Read from the
    header by simplejpeg, or by Pillow (no decoding) where simplejpeg is not installed."""
    if data[:2] != b"\xff\xd8":
        return None
    if simplejpeg is None:
        import io
        try:
            img = Image.open(io.BytesIO(data))
        except Exception:
            return None
        return img.size if img.format == "JPEG" and img.mode in ("RGB", "L", "YCbCr") else None
    try:
        h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    return (w, h) if colorspace in ("RGB", "YCbCr", "Gray") else None


def needed_scale(crop_w: int, crop_h: int, out_w: int, out_h: int) -> float:
    """The smallest factor the source may be shrunk by before resampling the crop to ``out_w x out_h``
    without upsampling what would otherwise be downsampled (1.0 when the crop is upsampled anyway)."""
    return min(1.0, max(out_w / crop_w, out_h / crop_h))


def pow2_factor(s: float) -> float:
    """The smallest of 1, 1/2, 1/4, 1/8 that is >= ``s``. libjpeg-turbo's other n/8 factors are slower to
    decode than the full image (generic scaled IDCT, no SIMD; measured in docs/benchmarks/loader.md)."""
    f = 1.0
    while f > 0.125 and f / 2 >= s:
        f /= 2
    return f


class ScaledImage:
    """A decoded image (``arr``: (H, W, 3) uint8) and the factors ``(fx, fy)`` from source to decoded coordinates."""

    def __init__(self, arr: np.ndarray, src_w: int, src_h: int):
        self.arr, self.src_w, self.src_h = arr, src_w, src_h
        self.fx, self.fy = arr.shape[1] / src_w, arr.shape[0] / src_h

    @property
    def size(self) -> Tuple[int, int]:
        return self.arr.shape[1], self.arr.shape[0]

    def box(self, top: int, left: int, h: int, w: int) -> Box:
        return (left * self.fx, top * self.fy, (left + w) * self.fx, (top + h) * self.fy)


def _pil_open(path: str, data: bytes):
    import io
    permissive = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        return Image.open(io.BytesIO(data)), permissive
    except Exception as exc:
        ImageFile.LOAD_TRUNCATED_IMAGES = permissive
        raise UnreadableImageError(path, f"{type(exc).__name__}: {exc}") from None


class CropDecoder:
    """Decode a file for one random crop: ``crop(path, out_size, rand) -> (ScaledImage, (top, left, h, w))``.

    The crop parameters are drawn (:func:`rrc_params`) from the full-resolution size read from the header;
    the image is then decoded at the smallest DCT scale whose result still holds at least ``out_size``
    pixels across the crop in both directions (``scaled=False``: always at full resolution).
    ``backend``: ``auto`` (simplejpeg when installed, else Pillow's draft) | ``simplejpeg`` | ``pil``.
    """

    def __init__(self, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), scaled: bool = True, backend: str = "auto"):
        if backend == "auto":
            backend = "simplejpeg" if simplejpeg is not None else "pil"
        if backend == "simplejpeg" and simplejpeg is None:
            raise ImportError("data.pipeline=fast with the simplejpeg backend needs `pip install simplejpeg`")
        if backend not in ("simplejpeg", "pil"):
            raise ValueError(f"unknown decode backend {backend!r}")
        self.scale, self.ratio, self.scaled, self.backend = tuple(scale), tuple(ratio), bool(scaled), backend

    def crop(self, path: str, out_size: Tuple[int, int], rand=random):
        data = _read(path)
        size = jpeg_size(data) if self.backend == "simplejpeg" else None
        if size is not None:
            return self._simplejpeg(path, data, size, out_size, rand)
        return self._pil(path, data, out_size, rand)

    def _simplejpeg(self, path, data, size, out_size, rand):
        w0, h0 = size
        top, left, h, w = rrc_params(w0, h0, self.scale, self.ratio, rand)
        s = needed_scale(w, h, *out_size) if self.scaled else 1.0
        f = pow2_factor(s)
        kw = {}
        if f < 1.0:  # libjpeg-turbo picks the smallest n/8 with both sides >= these: here f itself
            kw = dict(min_width=int(math.ceil(w0 * f)), min_height=int(math.ceil(h0 * f)))
        try:
            arr = simplejpeg.decode_jpeg(data, colorspace="RGB", **kw)
        except ValueError as exc:  # truncated or corrupt data
            raise UnreadableImageError(path, f"simplejpeg: {exc}") from None
        return ScaledImage(arr, w0, h0), (top, left, h, w)

    def _pil(self, path, data, out_size, rand):
        img, permissive = _pil_open(path, data)
        try:
            w0, h0 = img.size
            top, left, h, w = rrc_params(w0, h0, self.scale, self.ratio, rand)
            s = needed_scale(w, h, *out_size) if self.scaled else 1.0
            f = pow2_factor(s)
            if f < 1.0 and img.format == "JPEG" and img.mode in ("RGB", "L"):
                img.draft(img.mode, (int(math.ceil(w0 * f)), int(math.ceil(h0 * f))))
            img.load()
            img = to_rgb(img)
        except UnreadableImageError:
            raise
        except Exception as exc:  # truncated, corrupt, not an image
            raise UnreadableImageError(path, f"{type(exc).__name__}: {exc}") from None
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = permissive
        return ScaledImage(np.array(img, dtype=np.uint8), w0, h0), (top, left, h, w)


_TORCH_MODES = {Image.BICUBIC: "bicubic", Image.BILINEAR: "bilinear"}


def resample(img: ScaledImage, params, out_size: Tuple[int, int], resample=Image.BICUBIC) -> torch.Tensor:
    """The crop ``params = (top, left, h, w)`` (source coordinates) resampled to ``out_size = (W, H)``: an
    ``(H, W, 3)`` uint8 tensor.

    A crop of a full-resolution decode (integer box) goes through torch's antialiased bicubic / bilinear on
    uint8 (the same separable filters as Pillow's resize of the cropped image -- what timm's crop + resize
    computes -- up to rounding, about 4x faster on one core); a DCT-scaled decode's fractional box, and other
    filters, through Pillow's ``resize(box=...)``.
    """
    top, left, h, w = params
    mode = _TORCH_MODES.get(resample)
    if mode is not None and img.fx == 1.0 and img.fy == 1.0:
        x = torch.from_numpy(img.arr[top:top + h, left:left + w]).permute(2, 0, 1).unsqueeze(0)
        out = F.interpolate(x, size=(out_size[1], out_size[0]), mode=mode, antialias=True, align_corners=False)
        return out[0].permute(1, 2, 0).contiguous()
    pil = Image.fromarray(img.arr, "RGB").resize(out_size, resample, box=img.box(*params))
    return torch.from_numpy(np.array(pil, dtype=np.uint8))
