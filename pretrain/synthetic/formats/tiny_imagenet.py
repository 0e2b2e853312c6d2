"""The Tiny ImageNet layout (``tiny-imagenet-200.zip``).

``wnids.txt`` (not sorted, as in the real file), ``words.txt``, ``train/<wnid>/images/<wnid>_<i>.JPEG``
with ``train/<wnid>/<wnid>_boxes.txt`` and ``val/images/val_<i>.JPEG`` with
``val/val_annotations.txt`` (``file<TAB>wnid<TAB>x0<TAB>y0<TAB>x1<TAB>y1``). The boxes are the
inclusive pixel boxes of the labelled object's visible part. A few files are grayscale JPEGs,
as in the real set.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

from PIL import Image

from ...data.small_layout import TINY_IMAGENET_WNIDS
from ..masks import tight_box
from ..render import Scene
from ..splits import ClassificationSplit

__all__ = ["write_tiny_imagenet"]


def _box(scene: Scene) -> tuple[int, int, int, int]:
    """Inclusive ``(x0, y0, x1, y1)`` of the labelled object's visible pixels (the whole image if none)."""
    box = tight_box(scene.visible[scene.main])
    w, h = scene.size
    return box if box is not None else (0, 0, w - 1, h - 1)


def write_tiny_imagenet(out: Path, wnids: List[str], words: List[str], order: Sequence[int],
                        train: ClassificationSplit, val: ClassificationSplit, *,
                        jpeg_quality: int = 92, gray_every: int = 20) -> None:
    """Write ``train`` (class-major) and ``val`` into ``out``.

    ``wnids[c]`` and ``words[c]`` name class ``c``; ``wnids.txt`` lists them in ``order``. Image
    ``k`` of a split (counted over the split) is saved as grayscale when ``k % gray_every == 7``.
    """
    out = Path(out)
    (out / TINY_IMAGENET_WNIDS).write_text("".join(f"{wnids[i]}\n" for i in order))
    (out / "words.txt").write_text("".join(f"{w}\t{d}\n" for w, d in zip(wnids, words)))

    def save(scene: Scene, path: Path, k: int) -> None:
        im = Image.fromarray(scene.image, "RGB")
        if k % gray_every == 7:
            im = im.convert("L")
        im.save(path, "JPEG", quality=int(jpeg_quality))

    boxes: dict = {}
    for k, sc in enumerate(train.scenes()):
        c, i = int(train.labels[k]), int(train.index[k])
        idir = out / "train" / wnids[c] / "images"
        idir.mkdir(parents=True, exist_ok=True)
        name = f"{wnids[c]}_{i}.JPEG"
        save(sc, idir / name, k)
        x0, y0, x1, y1 = _box(sc)
        boxes.setdefault(c, []).append(f"{name}\t{x0}\t{y0}\t{x1}\t{y1}\n")
    for c, lines in boxes.items():
        (out / "train" / wnids[c] / f"{wnids[c]}_boxes.txt").write_text("".join(lines))

    vdir = out / "val" / "images"
    vdir.mkdir(parents=True)
    lines = []
    for k, sc in enumerate(val.scenes()):
        name = f"val_{k}.JPEG"
        save(sc, vdir / name, k)
        x0, y0, x1, y1 = _box(sc)
        lines.append(f"{name}\t{wnids[int(val.labels[k])]}\t{x0}\t{y0}\t{x1}\t{y1}\n")
    (out / "val" / "val_annotations.txt").write_text("".join(lines))
