"""End to end at tiny sizes: synthetic data -> TransMix pretraining -> `mim train mmseg` -> mIoU."""
import os
import re
import shutil
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from downstream.logs import last_scalar
from pretrain.engine.config import load_config
from pretrain.engine.train import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow


def mim_train(config, work_dir, synthetic_dir, options):
    mim = shutil.which("mim", path=os.path.dirname(sys.executable)) or shutil.which("mim")
    if mim is None:
        pytest.fail("the `mim` command is missing: run tools/setup.sh")
    env = dict(os.environ, VITMIX_SYNTHETIC_DIR=str(synthetic_dir), PYTHONPATH=ROOT)
    cmd = [mim, "train", "mmseg", config, "--work-dir", str(work_dir), "--cfg-options", *options]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return log


def test_synthetic_to_miou(synthetic_root, tmp_path):
    run = tmp_path / "pretrain"
    cfg = load_config(os.path.join(ROOT, "configs/pretrain/synthetic_transmix.yaml"), [
        f"data.root={synthetic_root}/imagenet", "data.num_classes=4", "data.img_size=32", "data.batch_size=16",
        "data.workers=0", "model.kwargs.img_size=32", "model.kwargs.depth=2", f"train.out_dir={run}",
        "train.epochs=2", "train.log_interval=0"])
    train(cfg)
    ckpt = run / "model.safetensors"
    work = tmp_path / "seg"
    iters = 8
    log = mim_train("configs/mmseg/linear_synthetic.py", work, synthetic_root, [
        f"model.backbone.pretrained={ckpt}", "model.backbone.num_layers=2", "model.backbone.img_size=32",
        f"train_cfg.max_iters={iters}", f"train_cfg.val_interval={iters}", f"param_scheduler.0.end={iters}",
        "train_dataloader.batch_size=4", "train_dataloader.num_workers=0", "val_dataloader.num_workers=0",
        "train_dataloader.persistent_workers=False", "val_dataloader.persistent_workers=False",
        "test_dataloader.num_workers=0", "test_dataloader.persistent_workers=False"])
    # the strict loader ran and reported every key loaded
    assert re.search(r"Loaded \d+ tensors from .*model\.safetensors.*: 0 missing, 0 unexpected", log), log[-3000:]
    miou = last_scalar(str(work), "mIoU")
    assert miou is not None, log[-3000:]
    assert 0.0 <= miou <= 100.0
    # the fine-tuned backbone started from the checkpoint: its patch embedding moved only a little
    import torch
    saved = load_file(str(ckpt))
    ckpts = sorted(work.glob("iter_*.pth"))
    assert ckpts, "mmengine wrote no checkpoint"
    tuned = torch.load(ckpts[-1], map_location="cpu", weights_only=False)["state_dict"]
    w0 = saved["patch_embed.proj.weight"]
    w1 = tuned["backbone.patch_embed.proj.weight"]
    assert torch.linalg.vector_norm(w1 - w0) < 0.2 * torch.linalg.vector_norm(w0)
