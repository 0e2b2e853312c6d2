"""Make the pb1-detectron2 0.6 sdist build and run with current torch/numpy/Pillow.

Usage: python patch_detectron2.py SRC_DIR

The sdist carries detectron2 v0.6's Python files but none of its C++/CUDA sources,
so the `_C` extension is built empty: rotated-box ops and the fast COCO evaluator are
unavailable (use `COCOEvaluator(..., use_fast_impl=False)`). Also:
  * model-zoo configs are copied to the top-level `configs/` that setup.py packages,
  * `Image.LINEAR` (removed in Pillow 10) becomes `Image.BILINEAR`,
  * the removed numpy aliases np.int/np.float/np.object/np.bool become builtins.
"""
import pathlib
import re
import shutil
import sys

EMPTY_EXT = """#include <torch/extension.h>

// Built without detectron2's C++/CUDA operators (the sdist does not ship them).
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {}
"""
NP_ALIAS = re.compile(r"\bnp\.(int|float|object|bool)\b(?!\d|_)")


def main() -> None:
    src = pathlib.Path(sys.argv[1])
    pkg = src / "detectron2"
    if not pkg.is_dir():
        raise SystemExit(f"not a detectron2 source tree: {src}")

    csrc = pkg / "layers" / "csrc"
    csrc.mkdir(parents=True, exist_ok=True)
    (csrc / "vision.cpp").write_text(EMPTY_EXT)

    zoo = pkg / "model_zoo" / "configs"
    top = src / "configs"
    if zoo.is_dir() and not top.exists():
        shutil.copytree(zoo, top)

    changed = 0
    for py in pkg.rglob("*.py"):
        text = py.read_text()
        new = text.replace("Image.LINEAR", "Image.BILINEAR")
        new = NP_ALIAS.sub(lambda m: m.group(1), new)
        if new != text:
            py.write_text(new)
            changed += 1
    print(f"patched {changed} files; empty _C extension at {csrc / 'vision.cpp'}")


if __name__ == "__main__":
    main()
