"""End to end: a pretraining checkpoint fine-tuned a few iterations as a Mask R-CNN
backbone on the synthetic COCO set, in MMDetection (``mim train mmdet``) and in
Detectron2 (``tools/train_d2.py``), each evaluated by its own COCO evaluator
(pycocotools) to box and mask AP."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("mmcv.ops", reason="needs mmcv with compiled ops")
pytest.importorskip("mmdet")
pytest.importorskip("detectron2")

from downstream.logs import last_scalar, scalar_history  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ITERS = 6


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A checkpoint written by the pretraining engine's own writer (safetensors + arch metadata)."""
    from pretrain.checkpoint import save_weights
    from pretrain.models.vit import create_vit, vit_arch

    torch.manual_seed(0)
    m = create_vit("deit_tiny_patch16_224", num_classes=4, img_size=64, patch_size=8, depth=6)
    path = str(tmp_path_factory.mktemp("pre") / "model.safetensors")
    save_weights(path, m.state_dict(), vit_arch(m, "deit_tiny_patch16_224"))
    return path


def _env(synthetic_root, tmp_path):
    env = dict(os.environ, VITMIX_SYNTHETIC_DIR=str(synthetic_root), VITMIX_CACHE_DIR=str(tmp_path / "cache"),
               OMP_NUM_THREADS="1", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


@pytest.mark.slow
def test_mim_train_mmdet_gives_box_and_mask_ap(synthetic_root, pretrained, tmp_path):
    work = tmp_path / "work"
    cmd = [
        sys.executable, "-m", "mim", "train", "mmdet", "configs/mmdet/mask-rcnn_vitmix_synthetic.py",
        "--work-dir", str(work), "--cfg-options", f"model.backbone.pretrained={pretrained}",
        f"train_cfg.max_iters={ITERS}", f"train_cfg.val_interval={ITERS}", "default_hooks.logger.interval=1",
    ]
    r = subprocess.run(cmd, cwd=REPO, env=_env(synthetic_root, tmp_path), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = r.stdout + r.stderr
    assert "VitMixViTDet: Loaded 76 tensors from " + pretrained in log  # strict load of the pretrained ViT
    assert "COCO check of" in log  # the dataset was checked when it was built
    losses = scalar_history(str(work), "loss")
    assert len(losses) == ITERS and all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    for key in ("coco/bbox_mAP", "coco/segm_mAP", "coco/bbox_mAP_50", "coco/segm_mAP_50"):
        v = last_scalar(str(work), key)
        assert v is not None and 0.0 <= v <= 1.0, key


@pytest.mark.slow
def test_detectron2_train_script_gives_box_and_mask_ap(synthetic_root, pretrained, tmp_path):
    out = tmp_path / "d2"
    cmd = [
        sys.executable, "tools/train_d2.py", "--config-file", "configs/detectron2/mask_rcnn_vitmix_synthetic.py",
        f"model.backbone.pretrained={pretrained}", f"train.output_dir={out}", f"train.max_iter={ITERS}",
        f"train.eval_period={ITERS}", "train.log_period=1",
    ]
    r = subprocess.run(cmd, cwd=REPO, env=_env(synthetic_root, tmp_path), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = r.stdout + r.stderr
    assert "VitMixViTDet: Loaded 76 tensors from " + pretrained in log
    assert "COCO check of" in log
    with open(out / "metrics.json") as f:
        losses = [rec["total_loss"] for rec in map(json.loads, f) if "total_loss" in rec]
    assert len(losses) == ITERS and all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    with open(out / "metrics_eval.json") as f:
        res = json.load(f)
    for task in ("bbox", "segm"):
        for key in ("AP", "AP50", "AP75"):
            assert 0.0 <= res[task][key] <= 100.0, (task, key)
    assert os.path.isfile(out / "inference" / "coco_instances_results.json")
