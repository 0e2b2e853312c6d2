"""Import the whole stack and print versions; exit non-zero naming what failed."""
import importlib
import importlib.metadata
import sys

MODULES = ["torch", "torchvision", "timm", "mmengine", "mmcv", "mmcv.ops", "mmseg", "mmdet",
           "detectron2", "pycocotools", "safetensors", "mim", "pretrain", "downstream"]

DISTRIBUTIONS = {"pycocotools": "pycocotools", "mim": "openmim", "pretrain": "vitmix", "downstream": "vitmix",
                 "detectron2": "pb1-detectron2"}

failed = []
for name in MODULES:
    try:
        mod = importlib.import_module(name)
    except Exception as exc:  # report every failure, not just the first
        failed.append(name)
        print(f"  {name:<12} FAILED: {type(exc).__name__}: {exc}")
        continue
    version = getattr(mod, "__version__", "")
    if not version and name in DISTRIBUTIONS:
        version = importlib.metadata.version(DISTRIBUTIONS[name])
    if name == "mmcv.ops":
        from mmcv.ops import nms  # noqa: F401  compiled extension is importable
        version = "compiled ops ok"
    print(f"  {name:<12} {version}")
if failed:
    sys.exit(f"setup verification failed: could not import {', '.join(failed)}")
