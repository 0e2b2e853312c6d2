"""GPU smoke suite (``pytest -m gpu``): the CUDA build and the mixed-precision paths, on a real GPU.

* mmcv's compiled CUDA ops against independent implementations (torchvision's CUDA ``nms`` and
  ``roi_align``) and against mmcv's own CPU kernels;
* one training step in bf16 and in fp16 of every downstream model, built from the project's
  synthetic configs with the project's adapters and a pretraining checkpoint (the ``tiny_vit``
  fixture written by the engine's ``save_weights``): MMSeg Linear and Segmenter mask heads
  (``configs/mmseg/{linear,mask}_synthetic.py``), MMDet Mask R-CNN
  (``configs/mmdet/mask-rcnn_vitmix_synthetic.py``) and Detectron2 Mask R-CNN
  (``configs/detectron2/mask_rcnn_vitmix_synthetic.py``): weights loaded, loss finite, parameters
  updated;
* a short TransMix pretraining run (``pretrain.engine.train.train``) under bf16 and fp16 autocast
  whose training loss decreases.

The whole module is skipped without CUDA. The builders below run no step and need no GPU: the CPU
suite builds every model and batch with them (tests/test_docker.py), so a broken config or adapter
shows up before a GPU run.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
from typing import Any, Dict, Iterator

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 4  # the synthetic_root fixture's world

# name -> (framework, config)
DOWNSTREAM = {
    "mmseg-linear": ("mmseg", "configs/mmseg/linear_synthetic.py"),
    "mmseg-segmenter": ("mmseg", "configs/mmseg/mask_synthetic.py"),
    "mmdet-mask-rcnn": ("mmdet", "configs/mmdet/mask-rcnn_vitmix_synthetic.py"),
    "d2-mask-rcnn": ("detectron2", "configs/detectron2/mask_rcnn_vitmix_synthetic.py"),
}
AMP = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Tensors of the checkpoint that must arrive unchanged in the backbone (checked before any step).
CHECKED_KEYS = ("patch_embed.proj.weight", "blocks.3.attn.qkv.weight", "blocks.5.mlp.fc2.weight")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="GPU smoke suite: needs CUDA (torch.cuda.is_available() is False); "
                              "run on a GPU machine: pytest -m gpu, or tools/gpu_validate.sh"),
]


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    """Set environment variables for the duration of the block (the synthetic configs read
    ``VITMIX_SYNTHETIC_DIR`` when they are parsed; the COCO checks cache under ``VITMIX_CACHE_DIR``)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def backbone_tensor(model: torch.nn.Module, key: str) -> torch.Tensor:
    """The backbone parameter whose name ends with the timm key ``key`` (``backbone.<key>`` in MMSeg,
    ``backbone.vit.<key>`` in MMDet and Detectron2); an error naming the candidates otherwise."""
    sd = model.state_dict()
    hits = [k for k in sd if k.startswith("backbone.") and (k.endswith("." + key))]
    if len(hits) != 1:
        raise KeyError(f"{key}: expected one backbone tensor, found {hits}")
    return sd[hits[0]]


def build_downstream(name: str, synthetic_root, ckpt: str, cache_dir, batch_size: int = 2) -> Dict[str, Any]:
    """Build a downstream model from the project's synthetic config, load ``ckpt`` through the
    project's adapter (``init_weights`` for MMSeg/MMDet, at instantiation for Detectron2) and read
    one training batch with the config's own dataset and pipeline. No step, no GPU.

    Returns ``{"framework", "cfg", "model", "batch"}``: an MMEngine data batch (dict of lists of
    ``inputs`` (3, H, W) uint8 tensors and data samples) or a Detectron2 list of dataset dicts with
    ``image`` (3, H, W).
    """
    framework, config = DOWNSTREAM[name]
    path = os.path.join(REPO, config)
    with environ(VITMIX_SYNTHETIC_DIR=str(synthetic_root), VITMIX_CACHE_DIR=str(cache_dir)):
        if framework == "detectron2":
            from detectron2.config import LazyConfig, instantiate

            import downstream.detectron2  # noqa: F401  registers the backbone
            from downstream.detectron2 import register_checked_coco_instances

            cfg = LazyConfig.load(path)
            for ds_name, d in cfg.datasets.items():
                register_checked_coco_instances(ds_name, d["json_file"], d["image_root"],
                                                on_error=d.get("on_error", "skip"))
            cfg.model.backbone.pretrained = ckpt
            cfg.dataloader.train.total_batch_size = batch_size
            cfg.dataloader.train.num_workers = 0
            model = instantiate(cfg.model)  # loads the checkpoint strictly
            batch = next(iter(instantiate(cfg.dataloader.train)))
            return {"framework": framework, "cfg": cfg, "model": model, "batch": batch}

        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        from mmengine.runner import Runner

        if framework == "mmseg":
            from mmseg.registry import MODELS
            from mmseg.utils import register_all_modules
        else:
            from mmdet.registry import MODELS
            from mmdet.utils import register_all_modules
        register_all_modules(init_default_scope=False)
        init_default_scope(framework)
        cfg = Config.fromfile(path)  # imports the adapter through custom_imports
        cfg.model.backbone.pretrained = ckpt
        cfg.train_dataloader.update(batch_size=batch_size, num_workers=0, persistent_workers=False)
        model = MODELS.build(cfg.model)
        model.init_weights()
        batch = next(iter(Runner.build_dataloader(cfg.train_dataloader, seed=0)))
        return {"framework": framework, "cfg": cfg, "model": model, "batch": batch}


def build_optimizer(built: Dict[str, Any], amp: str = "none"):
    """The config's own optimizer (layer-decay constructors included) for ``built["model"]``:
    an MMEngine optimizer wrapper (``AmpOptimWrapper`` with ``amp`` = bf16/fp16, which needs CUDA) or,
    for Detectron2, ``(optimizer, GradScaler)``."""
    model, cfg = built["model"], built["cfg"]
    if built["framework"] == "detectron2":
        from detectron2.config import instantiate

        cfg.optimizer.params.model = model
        scaler = torch.amp.GradScaler("cuda", init_scale=2.0**10, enabled=amp == "fp16")
        return instantiate(cfg.optimizer), scaler
    from mmengine.optim import build_optim_wrapper

    ow = copy.deepcopy(cfg.optim_wrapper)
    if amp != "none":
        ow.update(type="AmpOptimWrapper", dtype={"bf16": "bfloat16", "fp16": "float16"}[amp],
                  loss_scale=dict(init_scale=2.0**10))
    return build_optim_wrapper(model, ow)


def train_step(built: Dict[str, Any], optim, amp: str) -> Dict[str, float]:
    """One training step (preprocessing, forward with losses under autocast, backward, optimizer
    step) with the framework's own step function; returns the logged losses as floats."""
    model = built["model"]
    if built["framework"] == "detectron2":
        from detectron2.utils.events import EventStorage

        opt, scaler = optim
        with EventStorage(0):
            with torch.autocast("cuda", dtype=AMP[amp]):
                losses = model(built["batch"])
            total = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            scaler.step(opt)
            scaler.update()
        out = {k: float(v) for k, v in losses.items()}
        out["loss"] = float(total)
        return out
    log_vars = model.train_step(copy.deepcopy(built["batch"]), optim)
    return {k: float(v) for k, v in log_vars.items()}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_vit) -> str:
    from pretrain.checkpoint import save_weights

    path = str(tmp_path_factory.mktemp("pretrained") / "model.safetensors")
    save_weights(path, *tiny_vit(NUM_CLASSES))
    return path


def test_mmcv_cuda_ops_match_independent_implementations():
    import torchvision
    from mmcv.ops import get_compiling_cuda_version, nms, roi_align

    assert get_compiling_cuda_version() not in ("", "not available"), "mmcv's ops were built without CUDA"
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(800, 2, generator=g) * 300
    boxes = torch.cat([xy, xy + torch.rand(800, 2, generator=g) * 80 + 2], 1)
    scores = torch.rand(800, generator=g)
    _, keep_gpu = nms(boxes.cuda(), scores.cuda(), 0.5)
    _, keep_cpu = nms(boxes, scores, 0.5)
    ref = torchvision.ops.nms(boxes.cuda(), scores.cuda(), 0.5)
    assert 0 < keep_gpu.numel() < 800
    assert torch.equal(keep_gpu.cpu(), ref.cpu()) and torch.equal(keep_cpu, ref.cpu())

    feats = torch.randn(2, 8, 40, 40, generator=g)
    rois = torch.cat([torch.randint(0, 2, (100, 1), generator=g).float(), boxes[:100] / 8], 1)
    out = roi_align(feats.cuda(), rois.cuda(), (7, 7), 1.0, 2, "avg", True)
    ref = torchvision.ops.roi_align(feats.cuda(), rois.cuda(), (7, 7), spatial_scale=1.0, sampling_ratio=2,
                                    aligned=True)
    cpu = roi_align(feats, rois, (7, 7), 1.0, 2, "avg", True)
    assert out.shape == (100, 8, 7, 7)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.cpu(), cpu, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
@pytest.mark.parametrize("name", list(DOWNSTREAM))
def test_downstream_training_step(name, amp, synthetic_root, ckpt, tmp_path, tiny_vit):
    torch.manual_seed(0)
    built = build_downstream(name, synthetic_root, ckpt, tmp_path / "cache")
    model = built["model"]
    sd = tiny_vit(NUM_CLASSES)[0]
    for key in CHECKED_KEYS:  # the adapter loaded the pretraining checkpoint
        assert torch.equal(backbone_tensor(model, key), sd[key]), key
    model.cuda().train()
    optim = build_optimizer(built, amp)
    before = backbone_tensor(model, "blocks.5.mlp.fc2.weight").clone()
    losses = {}
    for _ in range(3):  # fp16: a first step may be skipped by the loss scaler (overflow); at most 3 tries
        # MMDet in bf16: VitMixMaskRCNN keeps its heads in float32 (mmcv 2.1 has no bf16 RoIAlign)
        losses = train_step(built, optim, amp)
        assert losses and all(math.isfinite(v) for v in losses.values()), (name, amp, losses)
        if not torch.equal(backbone_tensor(model, "blocks.5.mlp.fc2.weight"), before):
            break
    else:
        pytest.fail(f"{name} {amp}: three steps left the backbone unchanged (losses {losses})")
    assert losses["loss"] > 0
    p = next(model.parameters())
    assert p.is_cuda and p.dtype == torch.float32  # autocast: master weights stay fp32


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_transmix_pretraining_learns_on_the_gpu(amp, synthetic_root, tmp_path):
    from pretrain.engine.config import load_config
    from pretrain.engine.train import train

    out = tmp_path / "run"
    cfg = load_config(os.path.join(REPO, "configs/pretrain/synthetic_transmix.yaml"), [
        f"data.root={synthetic_root}/imagenet", f"data.num_classes={NUM_CLASSES}", "data.img_size=32",
        "data.batch_size=16", "data.workers=2", "model.kwargs.img_size=32", "model.kwargs.depth=2",
        f"train.out_dir={out}", "train.epochs=4", "train.log_interval=1", "optim.lr=2e-3", f"train.amp={amp}"])
    summary = train(cfg)
    epochs = [json.loads(x) for x in open(out / "metrics.jsonl")]
    assert [r["epoch"] for r in epochs] == [0, 1, 2, 3]
    losses = [r["train_loss"] for r in epochs]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0], losses
    steps = [json.loads(x) for x in open(out / "steps.jsonl")]
    assert steps and all(math.isfinite(r["loss"]) for r in steps)
    assert summary["steps"] >= len(steps) and summary["skipped_steps"] <= 2  # fp16: a scaler skip or two at most
    assert (out / "model.safetensors").exists()


# ---- the training data paths on the GPU (no mmcv needed) ----

@pytest.mark.parametrize("pipeline", ["fast", "fast_device", "gpu"])
def test_data_pipeline_trains_on_the_gpu(pipeline, synthetic_root, tmp_path):
    """A short bf16 run with each device-side data path: finite, decreasing loss."""
    from pretrain.engine.config import load_config
    from pretrain.engine.train import train

    out = tmp_path / "run"
    cfg = load_config(os.path.join(REPO, "configs/pretrain/synthetic_transmix.yaml"), [
        f"data.root={synthetic_root}/imagenet", f"data.num_classes={NUM_CLASSES}", "data.img_size=32",
        "data.batch_size=16", "data.workers=2", f"data.pipeline={pipeline}", "model.kwargs.img_size=32",
        "model.kwargs.depth=2", f"train.out_dir={out}", "train.epochs=4", "train.log_interval=1", "optim.lr=2e-3",
        "train.amp=bf16"])
    train(cfg)
    losses = [json.loads(x)["train_loss"] for x in open(out / "metrics.jsonl")]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0], losses


def test_device_augment_on_cuda_equals_the_cpu(synthetic_root):
    """The same batch through fast_device's device stages and through the gpu path's decode + crop + resize,
    on CUDA and on the CPU: the same draws (CPU generators) and the same arithmetic up to float rounding."""
    from pretrain.data.fast.device import build_device_augment
    from pretrain.data.fast.gpu import build_gpu_augment, collate_encoded, read_encoded

    cfg = {"img_size": 32, "auto_augment": "rand-m9-mstd0.5-inc1", "re_prob": 0.0, "re_mode": "pixel",
           "re_count": 1, "pipeline": "fast_device"}
    x = torch.randint(0, 256, (64, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    aug = build_device_augment(cfg, seed=0, rank=0)
    cpu, gpu = aug(x, 1, 2), aug(x.cuda(), 1, 2).cpu()
    diff = (cpu - gpu).abs()
    # a float64 cos/sin or bicubic sum in the last bit can flip a truncation: one grey level (0.018) at a few pixels
    assert (diff > 1e-4).float().mean() < 1e-3 and diff.max() < 0.1, (diff.max(), (diff > 1e-4).float().mean())
    erase = build_device_augment({**cfg, "re_prob": 1.0}, seed=0, rank=0)(x.cuda(), 1, 2)
    assert erase.is_cuda and torch.isfinite(erase).all() and not torch.equal(erase.cpu(), gpu)
    paths = sorted(str(p) for p in (synthetic_root / "imagenet" / "train").rglob("*.JPEG"))[:32]
    batch = collate_encoded([(read_encoded(p), 0) for p in paths])[0]
    g = build_gpu_augment({**cfg, "pipeline": "gpu", "re_prob": 0.0, "interpolation": "bicubic"}, 0, 0)
    a, b = g(batch.to("cpu"), 0, 0), g(batch.to("cuda"), 0, 0).cpu()
    assert a.shape == b.shape == (32, 3, 32, 32)
    assert (a - b).abs().mean() < 0.05  # nvjpeg vs libjpeg-turbo IDCT and rounding: a grey level here and there
