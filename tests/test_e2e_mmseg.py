"""End to end at tiny sizes: synthetic data -> TransMix pretraining -> `mim train mmseg` (Linear and
Segmenter mask heads) -> `mim test mmseg`, single-scale and multi-scale + flip, on MMEngine's own
iter_*.pth (weights-only torch.load, no TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD)."""
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from safetensors.torch import load_file

from downstream.logs import last_scalar, scalar_history
from pretrain.engine.config import load_config
from pretrain.engine.train import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow

ITERS = 8
SMALL = [  # CPU-sized runs: 2 blocks, batch 4, no worker processes
    "model.backbone.depth=2",
    "train_dataloader.batch_size=4", "train_dataloader.num_workers=0", "val_dataloader.num_workers=0",
    "train_dataloader.persistent_workers=False", "val_dataloader.persistent_workers=False",
    "test_dataloader.num_workers=0", "test_dataloader.persistent_workers=False",
]


def _mim():
    mim = shutil.which("mim", path=os.path.dirname(sys.executable)) or shutil.which("mim")
    if mim is None:
        pytest.fail("the `mim` command is missing: run tools/setup.sh")
    return mim


def _run(cmd, synthetic_dir):
    env = dict(os.environ, VITMIX_SYNTHETIC_DIR=str(synthetic_dir), PYTHONPATH=ROOT)
    env.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)  # our adapter makes the weights-only load work
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return log


def mim_train(config, work_dir, synthetic_dir, options):
    return _run([_mim(), "train", "mmseg", config, "--work-dir", str(work_dir), "--cfg-options", *options],
                synthetic_dir)


def mim_test(config, checkpoint, work_dir, synthetic_dir, options, tta=False):
    cmd = [_mim(), "test", "mmseg", config, "--checkpoint", str(checkpoint), "--work-dir", str(work_dir)]
    if tta:
        cmd.append("--tta")
    return _run(cmd + ["--cfg-options", *options], synthetic_dir)


def _test_metric(work_dir, key="mIoU"):
    """The metric a `mim test` run wrote to <work_dir>/<timestamp>/<timestamp>.json (None if absent)."""
    files = sorted(glob.glob(os.path.join(str(work_dir), "*", "*.json")))
    if not files:
        return None
    with open(files[-1]) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    values = [rec[key] for rec in lines if key in rec]
    return float(values[-1]) if values else None


@pytest.fixture(scope="module")
def pretrained(synthetic_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("pretrain")
    cfg = load_config(os.path.join(ROOT, "configs/pretrain/synthetic_transmix.yaml"), [
        f"data.root={synthetic_root}/imagenet", "data.num_classes=4", "data.img_size=32", "data.batch_size=16",
        "data.workers=0", "model.kwargs.img_size=32", "model.kwargs.depth=2", f"train.out_dir={run}",
        "train.epochs=2", "train.log_interval=0"])
    train(cfg)
    return run / "model.safetensors"


@pytest.fixture(scope="module")
def linear_run(pretrained, synthetic_root, tmp_path_factory):
    work = tmp_path_factory.mktemp("seg_linear")
    log = mim_train("configs/mmseg/linear_synthetic.py", work, synthetic_root, [
        f"model.backbone.pretrained={pretrained}", f"train_cfg.max_iters={ITERS}",
        f"train_cfg.val_interval={ITERS}", f"param_scheduler.0.end={ITERS}", *SMALL])
    return work, log


def test_synthetic_to_miou(pretrained, linear_run):
    work, log = linear_run
    # the strict loader ran and reported every key loaded (pos_embed resized 4x4 -> 8x8 for 64x64 crops)
    assert re.search(r"Loaded \d+ tensors from .*model\.safetensors.*: 0 missing, 0 unexpected, 2 dropped, "
                     r"1 resized", log), log[-3000:]
    # when training started (after init_weights and load_from), the backbone still equalled the file
    m = re.search(r"PretrainedCheckHook: (\d+) backbone tensors equal to (\S+) at iteration 0", log)
    assert m, log[-3000:]
    assert int(m.group(1)) == len(load_file(str(pretrained))) - 2 and m.group(2) == str(pretrained)
    miou = last_scalar(str(work), "mIoU")
    assert miou is not None, log[-3000:]
    assert 0.0 <= miou <= 100.0
    # the fine-tuned backbone started from the checkpoint: its patch embedding moved only a little
    saved = load_file(str(pretrained))
    ckpts = sorted(work.glob("iter_*.pth"))
    assert [c.name for c in ckpts] == [f"iter_{ITERS}.pth"]
    tuned = torch.load(ckpts[-1], map_location="cpu", weights_only=False)["state_dict"]
    w0 = saved["patch_embed.proj.weight"]
    w1 = tuned["backbone.patch_embed.proj.weight"]
    assert not torch.equal(w0, w1)
    assert torch.linalg.vector_norm(w1 - w0) < 0.2 * torch.linalg.vector_norm(w0)


def test_single_scale_and_tta_test_on_the_training_checkpoint(linear_run, synthetic_root, tmp_path):
    work, _ = linear_run
    ckpt = work / f"iter_{ITERS}.pth"
    val_miou = scalar_history(str(work), "mIoU")[-1]
    # single scale: the same model and pipeline as the validation at the last iteration -> same mIoU
    ss_work = tmp_path / "ss"
    log = mim_test("configs/mmseg/linear_synthetic.py", ckpt, ss_work, synthetic_root, SMALL)
    assert "Weights only load failed" not in log
    ss = _test_metric(ss_work)
    assert ss == pytest.approx(val_miou, abs=0.011), log[-3000:]
    # multi-scale + flip: MMSeg's SegTTAModel over the config's 6 scales x 2 flips
    ms_work = tmp_path / "ms"
    log = mim_test("configs/mmseg/linear_synthetic.py", ckpt, ms_work, synthetic_root, SMALL, tta=True)
    ms = _test_metric(ms_work)
    assert ms is not None and 0.0 <= ms <= 100.0, log[-3000:]
    dumped = glob.glob(str(ms_work / "*" / "vis_data" / "config.py"))
    assert dumped, "the test run dumped no config"
    ran = Config.fromfile(dumped[0])
    assert ran.model.type == "SegTTAModel"
    tta = ran.test_dataloader.dataset.pipeline[1]
    assert tta.type == "TestTimeAug"
    assert [tuple(t.scale) for t in tta.transforms[0]] == [(s, s) for s in (32, 48, 64, 80, 96, 112)]
    assert [t.prob for t in tta.transforms[1]] == [0.0, 1.0]


def test_segmenter_mask_head_trains_and_tests(pretrained, synthetic_root, tmp_path):
    work = tmp_path / "seg_mask"
    iters = 4
    log = mim_train("configs/mmseg/mask_synthetic.py", work, synthetic_root, [
        f"model.backbone.pretrained={pretrained}", f"train_cfg.max_iters={iters}",
        f"train_cfg.val_interval={iters}", f"param_scheduler.0.end={iters}", "default_hooks.logger.interval=1",
        *SMALL])
    assert "SegmenterMaskTransformerHead" in log
    assert re.search(r"PretrainedCheckHook: \d+ backbone tensors equal", log)
    losses = scalar_history(str(work), "loss")
    assert losses and all(v == v for v in losses)  # logged and finite
    assert last_scalar(str(work), "mIoU") is not None, log[-3000:]
