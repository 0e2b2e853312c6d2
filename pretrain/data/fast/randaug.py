"""timm's RandAugment (``rand-m9-mstd0.5-inc1`` and the other ``rand-m*-n*-mstd*-inc*`` configs) on batched tensors.

:class:`TensorRandAugment` draws, per sample and per layer, what timm's ``RandAugment`` + ``AugmentOp`` draw --
the op uniformly from the 15 (with replacement across layers), applied with probability 0.5, magnitude
``N(m, mstd)`` clipped to ``[0, 10]``, the op's level function (the random sign of rotations, shears,
translations and the increasing enhancements; posterize bits, solarize thresholds) -- from a torch generator,
and applies every op to all the samples that drew it at once (a loop over the 15 ops per layer, never over
samples). The ops restate Pillow's arithmetic on ``(N, 3, H, W)`` float tensors holding integer values in
``[0, 255]`` (rounded to integers after every op, as Pillow's uint8 images are):

* point ops (Invert, Posterize, Solarize, SolarizeAdd) and the histogram ops (AutoContrast, Equalize): Pillow's
  look-up tables, exactly;
* Color / Contrast / Brightness / Sharpness: ``ImageEnhance`` -- the ITU-R 601 grey of ``convert("L")`` in
  Pillow's fixed point, the rounded mean grey, the SMOOTH 3x3 kernel (border pixels kept), and
  ``Image.blend``'s float32 arithmetic truncated to uint8;
* Rotate / ShearX / ShearY / TranslateXRel / TranslateYRel: Pillow's affine matrices (``Image.rotate`` about the
  centre, ``Image.transform(AFFINE)`` at pixel centres), bicubic interpolation with Pillow's transform kernel
  (a = -1, edge-clamped neighbours, truncated to uint8), points that fall outside the image filled with ``img_mean``.

``tests/test_data_fast_randaug.py`` compares every op with timm's PIL op on the same image and argument and
the drawn ops and magnitudes with timm's own draws.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

INCREASING = ["AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
              "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
              "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"]
ORIGINAL = ["AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
            "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"]
_SIGNED = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel", "ColorIncreasing",
           "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"}


def parse_rand_config(config: str):
    """``(magnitude, num_layers, magnitude_std, increasing)`` of a timm ``rand-...`` string."""
    parts = config.split("-")
    if parts[0] != "rand":
        raise ValueError(f"only RandAugment ('rand-...') configs run on tensors, got {config!r}")
    m, n, mstd, inc = 10.0, 2, 0.0, False
    for c in parts[1:]:
        key = "mstd" if c.startswith("mstd") else "inc" if c.startswith("inc") else c[:1]
        val = c[len(key):]
        if key == "m":
            m = float(val)
        elif key == "n":
            n = int(val)
        elif key == "mstd":
            mstd = float(val)
        elif key == "inc":
            inc = bool(int(val))
        else:
            raise ValueError(f"RandAugment option {c!r} of {config!r} is not supported on tensors (m, n, mstd, inc)")
    if mstd == float("inf") or mstd > 100:
        raise ValueError("uniform magnitude sampling (mstd > 100) is not supported on tensors")
    return m, n, mstd, inc


def level_args(name: str, mag: torch.Tensor, sign: torch.Tensor, hw) -> torch.Tensor:
    """timm's level function of ``name`` on float64 magnitudes (``sign`` = +-1 where timm negates)."""
    lv = mag / 10.0
    if name == "Rotate":
        return lv * 30.0 * sign
    if name in ("ShearX", "ShearY"):
        return lv * 0.3 * sign
    if name == "TranslateXRel":
        return lv * 0.45 * sign * hw[1]  # pixels, as translate_x_rel
    if name == "TranslateYRel":
        return lv * 0.45 * sign * hw[0]
    if name == "Posterize":
        return torch.floor(lv * 4)
    if name == "PosterizeIncreasing":
        return 4 - torch.floor(lv * 4)
    if name == "Solarize":
        return torch.clamp(torch.floor(lv * 256), max=256)
    if name == "SolarizeIncreasing":
        return 256 - torch.clamp(torch.floor(lv * 256), max=256)
    if name == "SolarizeAdd":
        return torch.clamp(torch.floor(lv * 110), max=128)
    if name.endswith("Increasing"):  # Color / Contrast / Brightness / Sharpness
        return torch.clamp(1.0 + sign * lv * 0.9, min=0.1)
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return lv * 1.8 + 0.1
    return torch.zeros_like(mag)  # AutoContrast, Equalize, Invert


# ---- the ops: x (k, 3, H, W) float32 with integer values; a (k,) float64 arguments ----

def _gray(x):  # Pillow's convert("L"): (R*19595 + G*38470 + B*7471 + 0x8000) >> 16
    xi = x.to(torch.int64)
    return ((xi[:, 0] * 19595 + xi[:, 1] * 38470 + xi[:, 2] * 7471 + 0x8000) >> 16).to(x.dtype).unsqueeze(1)


def _blend(degenerate, x, a):  # Image.blend(degenerate, x, a): float32, clipped, truncated
    a = a.to(torch.float32).view(-1, 1, 1, 1)
    return torch.floor(torch.clamp(degenerate + a * (x - degenerate), 0, 255))


def _lut_apply(x, lut):  # lut (k, 3, 256) -> values
    k, c, h, w = x.shape
    idx = x.to(torch.int64).view(k, c, -1)
    return lut.gather(2, idx).view(k, c, h, w).to(x.dtype)


def _hist(x):
    k, c = x.shape[:2]
    idx = x.to(torch.int64).view(k, c, -1)
    return torch.zeros(k, c, 256, dtype=torch.int64, device=x.device).scatter_add_(2, idx, torch.ones_like(idx))


def auto_contrast(x, a):
    lo = x.amin((2, 3), keepdim=True).double()
    hi = x.amax((2, 3), keepdim=True).double()
    scale = 255.0 / torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    out = torch.clamp(torch.trunc(x.double() * scale - lo * scale), 0, 255).to(x.dtype)
    return torch.where(hi > lo, out, x)


def equalize(x, a):
    h = _hist(x)
    nz = h > 0
    last = 255 - nz.flip(-1).long().argmax(-1, keepdim=True)  # the last non-empty bin
    step = (h.sum(-1, keepdim=True) - h.gather(-1, last)) // 255
    cum = torch.cumsum(h, -1) - h  # counts below each value
    lut = (step // 2 + cum) // step.clamp(min=1)
    ident = torch.arange(256, device=x.device).expand_as(lut)
    lut = torch.where((nz.sum(-1, keepdim=True) <= 1) | (step == 0), ident, lut).clamp(0, 255)
    return _lut_apply(x, lut)


def invert(x, a):
    return 255 - x


def posterize(x, a):  # bits <= 0: black (pretrain.data.folders._posterize); >= 8: unchanged
    bits = a.to(torch.int64).view(-1, 1, 1, 1)
    shift = (8 - bits).clamp(0, 8)
    xi = x.to(torch.int64)
    out = ((xi >> shift) << shift).to(x.dtype)
    return torch.where(bits <= 0, torch.zeros_like(x), out)


def solarize(x, a):
    t = a.to(x.dtype).view(-1, 1, 1, 1)
    return torch.where(x < t, x, 255 - x)


def solarize_add(x, a):
    add = a.to(x.dtype).view(-1, 1, 1, 1)
    return torch.where(x < 128, torch.clamp(x + add, max=255), x)


def color(x, a):
    return _blend(_gray(x).expand_as(x), x, a)


def contrast(x, a):
    g = _gray(x)
    mean = torch.floor(g.double().mean((1, 2, 3), keepdim=True) + 0.5).to(x.dtype)
    return _blend(mean.expand_as(x), x, a)


def brightness(x, a):
    return _blend(torch.zeros_like(x), x, a)


def sharpness(x, a):
    k = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], dtype=x.dtype, device=x.device) / 13.0
    c = x.shape[1]
    inner = torch.nn.functional.conv2d(x, k.expand(c, 1, 3, 3), groups=c)
    smooth = x.clone()
    smooth[:, :, 1:-1, 1:-1] = torch.floor(inner + 0.5)
    return _blend(smooth, x, a)


def _cubic(v1, v2, v3, v4, d):  # Pillow's BICUBIC macro (a = -1), Horner form in double precision
    p2 = v3 - v1
    p3 = 2 * (v1 - v2) + v3 - v4
    p4 = -v1 + v2 - v3 + v4
    return v2 + d * (p2 + d * (p3 + d * p4))


def affine(x, mats, fill):
    """Pillow ``transform(AFFINE, mats[i], BICUBIC, fillcolor=fill)`` of each image; ``mats`` (k, 6) float64."""
    k, c, h, w = x.shape
    dev = x.device
    ys = (torch.arange(h, device=dev, dtype=torch.float64) + 0.5).view(1, -1, 1)
    xs = (torch.arange(w, device=dev, dtype=torch.float64) + 0.5).view(1, 1, -1)
    m = mats.to(dev).view(k, 6, 1, 1)
    xin = m[:, 0] * xs + m[:, 1] * ys + m[:, 2]  # (k, H, W)
    yin = m[:, 3] * xs + m[:, 4] * ys + m[:, 5]
    inside = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
    xf, yf = xin - 0.5, yin - 0.5
    x0, y0 = torch.floor(xf), torch.floor(yf)
    dx, dy = (xf - x0).unsqueeze(1), (yf - y0).unsqueeze(1)
    flat = x.view(k, c, h * w)
    cols = [(x0 + (t - 1)).clamp(0, w - 1).long() for t in range(4)]
    rows = []
    for ty in range(4):  # along x in each of the 4 rows, then along y
        iy = (y0 + (ty - 1)).clamp(0, h - 1).long() * w
        taps = [flat.gather(2, (iy + ix).view(k, 1, h * w).expand(k, c, h * w)).view(k, c, h, w).double()
                for ix in cols]
        rows.append(_cubic(*taps, dx))
    out = _cubic(*rows, dy)
    out = torch.floor(torch.clamp(out, 0, 255)).to(x.dtype)  # Pillow truncates
    fill = torch.as_tensor(fill, dtype=x.dtype, device=dev).view(1, c, 1, 1)
    return torch.where(inside.unsqueeze(1), out, fill)


def affine_matrices(name: str, a: torch.Tensor, h: int, w: int) -> torch.Tensor:
    one, zero = torch.ones_like(a), torch.zeros_like(a)
    if name == "ShearX":
        return torch.stack([one, a, zero, zero, one, zero], 1)
    if name == "ShearY":
        return torch.stack([one, zero, zero, a, one, zero], 1)
    if name == "TranslateXRel":
        return torch.stack([one, zero, a, zero, one, zero], 1)
    if name == "TranslateYRel":
        return torch.stack([one, zero, zero, zero, one, a], 1)
    # Rotate: Image.rotate(degrees) about (w/2, h/2); cos/sin rounded to 15 decimals as Pillow does
    ang = torch.deg2rad(-a)
    ca, sa = _round15(torch.cos(ang)), _round15(torch.sin(ang))
    cx, cy = w / 2.0, h / 2.0
    return torch.stack([ca, sa, ca * -cx + sa * -cy + cx, -sa, ca, -sa * -cx + ca * -cy + cy], 1)


def _round15(v):  # Python's round(v, 15) up to the last bit (torch scales by 1e15, rounds, divides)
    return torch.round(v, decimals=15)


POINT_OPS = {"AutoContrast": auto_contrast, "Equalize": equalize, "Invert": invert, "Posterize": posterize,
             "PosterizeIncreasing": posterize, "Solarize": solarize, "SolarizeIncreasing": solarize,
             "SolarizeAdd": solarize_add, "Color": color, "ColorIncreasing": color, "Contrast": contrast,
             "ContrastIncreasing": contrast, "Brightness": brightness, "BrightnessIncreasing": brightness,
             "Sharpness": sharpness, "SharpnessIncreasing": sharpness}
GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")


class TensorRandAugment:
    """Batched RandAugment (see the module doc). ``__call__(x, gen)``: ``x`` (N, 3, H, W) float with integer
    values in [0, 255] (or uint8), ``gen`` a CPU ``torch.Generator`` for the draws; returns float32."""

    def __init__(self, config: str = "rand-m9-mstd0.5-inc1", fill: Sequence[int] = (124, 116, 104),
                 prob: float = 0.5):
        self.magnitude, self.num_layers, self.magnitude_std, inc = parse_rand_config(config)
        self.names = INCREASING if inc else ORIGINAL
        self.fill, self.prob = tuple(int(v) for v in fill), float(prob)

    def draw(self, gen: torch.Generator, n: int, hw):
        """``(ops (L, n) int64, apply (L, n) bool, args (L, n) float64, magnitudes (L, n))``."""
        L = self.num_layers
        ops = torch.randint(0, len(self.names), (L, n), generator=gen)
        apply = torch.rand(L, n, generator=gen, dtype=torch.float64) <= self.prob
        mag = self.magnitude + self.magnitude_std * torch.randn(L, n, generator=gen, dtype=torch.float64)
        mag = mag.clamp(0.0, 10.0)
        sign = torch.where(torch.rand(L, n, generator=gen, dtype=torch.float64) > 0.5, -1.0, 1.0).double()
        args = torch.zeros(L, n, dtype=torch.float64)
        for j, name in enumerate(self.names):
            sel = ops == j
            if sel.any():
                args[sel] = level_args(name, mag[sel], sign[sel] if name in _SIGNED else sign[sel] * 0 + 1, hw)
        return ops, apply, args, mag

    def __call__(self, x: torch.Tensor, gen: torch.Generator, params: Optional[tuple] = None,
                 masked: Optional[bool] = None) -> torch.Tensor:
        """``masked`` (default: on CUDA) computes every drawn op on the whole batch and keeps it where drawn
        (``torch.where``): no index tensor travels to the device per op, so nothing waits for the GPU; the
        indexed mode (default on the CPU) computes each op on its samples only. Both give the same result."""
        x = x.float()
        n, _, h, w = x.shape
        ops, apply, args, _ = self.draw(gen, n, (h, w)) if params is None else params
        dev = x.device
        masked = dev.type == "cuda" if masked is None else masked
        for layer in range(ops.shape[0]):
            if masked:
                x = self._layer_masked(x, ops[layer], apply[layer], args[layer], h, w)
                continue
            geo_idx, geo_mats = [], []
            for j, name in enumerate(self.names):
                sel = ((ops[layer] == j) & apply[layer]).nonzero().view(-1)
                if sel.numel() == 0:
                    continue
                if name in GEOMETRIC:
                    geo_idx.append(sel)
                    geo_mats.append(affine_matrices(name, args[layer, sel], h, w))
                    continue
                d = sel.to(dev)
                x[d] = POINT_OPS[name](x[d], args[layer, sel].to(dev))
            if geo_idx:  # all geometric ops of the layer in one resampling
                d = torch.cat(geo_idx).to(dev)
                x[d] = affine(x[d], torch.cat(geo_mats), self.fill)
        return x

    def _layer_masked(self, x, ops, apply, args, h, w):
        n, dev = x.shape[0], x.device
        mats = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64).repeat(n, 1)  # identity
        geo = torch.zeros(n, dtype=torch.bool)
        for j, name in enumerate(self.names):
            sel = (ops == j) & apply
            if name in GEOMETRIC and bool(sel.any()):
                mats[sel] = affine_matrices(name, args[sel], h, w)
                geo |= sel
        # one pinned, non-blocking copy of the layer's parameters
        pack = torch.cat([ops.double().view(-1, 1), apply.double().view(-1, 1), args.view(-1, 1), mats,
                          geo.double().view(-1, 1)], 1)
        pack = (pack.pin_memory() if torch.cuda.is_available() and dev.type == "cuda" else pack).to(dev, non_blocking=True)
        d_ops, d_apply, d_args, d_mats, d_geo = pack[:, 0], pack[:, 1] > 0, pack[:, 2], pack[:, 3:9], pack[:, 9] > 0
        for j, name in enumerate(self.names):
            if name in GEOMETRIC or not bool(((ops == j) & apply).any()):  # the draw is on the CPU: no sync
                continue
            keep = ((d_ops == j) & d_apply).view(-1, 1, 1, 1)
            x = torch.where(keep, POINT_OPS[name](x, d_args), x)
        if bool(geo.any()):
            x = torch.where(d_geo.view(-1, 1, 1, 1), affine(x, d_mats, self.fill), x)
        return x
