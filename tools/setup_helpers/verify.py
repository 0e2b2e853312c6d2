"""Import the whole stack and print versions; exit non-zero naming what failed.

With FORCE_CUDA=1 (a CUDA set-up) it also checks that mmcv's compiled ops contain the CUDA kernels
(``mmcv.ops.get_compiling_cuda_version()``), which needs no GPU: a CPU-only mmcv wheel in a CUDA
set-up is an error, not a silent fallback.
"""
import importlib
import importlib.metadata
import os
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
        if os.environ.get("FORCE_CUDA", "0") == "1":
            from mmcv.ops import get_compiling_cuda_version

            cuda = get_compiling_cuda_version()
            if cuda in ("", "not available"):
                failed.append("mmcv.ops (CUDA)")
                print(f"  {name:<12} FAILED: FORCE_CUDA=1 but mmcv's ops were compiled without CUDA")
                continue
            version = f"compiled ops ok, CUDA ops built with CUDA {cuda}"
    print(f"  {name:<12} {version}")
if failed:
    sys.exit(f"setup verification failed: {', '.join(failed)}")
