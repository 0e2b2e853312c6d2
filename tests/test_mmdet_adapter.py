"""The MMDetection registration: backbone with strict loading, LN2d, checked COCO
dataset and metric, layer-decay constructor, configs."""

import glob
import json
import os
import shutil

import pytest
import torch

pytest.importorskip("mmcv.ops", reason="needs mmcv with compiled ops")
pytest.importorskip("mmdet")
timm = pytest.importorskip("timm")

from mmengine.config import Config  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from downstream.coco_checks import CocoDataError  # noqa: E402
from downstream.weights import CheckpointError  # noqa: E402
from pretrain.checkpoint import save_weights  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG_DIR = os.path.join(REPO, "configs", "mmdet")
SYNTH_CFG = os.path.join(CFG_DIR, "mask-rcnn_vitmix_synthetic.py")


@pytest.fixture(scope="module", autouse=True)
def _scope():
    from mmengine.registry import init_default_scope
    from mmdet.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    init_default_scope("mmdet")
    import downstream.mmdet  # noqa: F401


@pytest.fixture(scope="module")
def pretrained_sd(tiny_vit):
    return tiny_vit(4)[0]


@pytest.fixture
def ckpt(tmp_path, tiny_vit):
    path = str(tmp_path / "model.safetensors")
    save_weights(path, *tiny_vit(4))
    return path


@pytest.fixture
def cfg(synthetic_root, monkeypatch, tmp_path):
    monkeypatch.setenv("VITMIX_SYNTHETIC_DIR", str(synthetic_root))
    monkeypatch.setenv("VITMIX_CACHE_DIR", str(tmp_path / "cache"))
    return Config.fromfile(SYNTH_CFG)


def _build(cfg, **backbone):
    from mmdet.registry import MODELS

    cfg.model.backbone.update(backbone)
    return MODELS.build(cfg.model)


def test_registered():
    import downstream.mmdet as dm
    from mmdet.registry import DATASETS, METRICS, MODELS, OPTIM_WRAPPER_CONSTRUCTORS

    assert MODELS.get("VitMixViTDet") is dm.VitMixViTDet
    assert MODELS.get("VitMixLN2d") is dm.VitMixLN2d
    assert DATASETS.get("VitMixCocoDataset") is dm.VitMixCocoDataset
    assert METRICS.get("VitMixCocoMetric") is dm.VitMixCocoMetric
    assert OPTIM_WRAPPER_CONSTRUCTORS.get("VitMixDetLayerDecayOptimizerConstructor") is dm.VitMixDetLayerDecayOptimizerConstructor


def test_weights_reach_the_backbone_through_init_weights(cfg, ckpt, pretrained_sd):
    model = _build(cfg, pretrained=ckpt)
    vit = model.backbone.vit
    assert not torch.equal(vit.blocks[3].attn.qkv.weight, pretrained_sd["blocks.3.attn.qkv.weight"])
    model.init_weights()
    for k in ("blocks.3.attn.qkv.weight", "patch_embed.proj.weight", "pos_embed"):
        assert torch.equal(vit.state_dict()[k], pretrained_sd[k]), k
    report = model.backbone.load_report
    assert not report.unexpected and set(report.missing) == {f"blocks.{i}.attn.rel_pos_{a}" for i in range(6) for a in "hw"}
    assert not model.with_neck  # the pyramid lives in the backbone
    # heads with the channels-first LayerNorm, 2-conv RPN, 4conv1fc box head
    assert type(model.roi_head.bbox_head.shared_convs[0].norm).__name__ == "VitMixLN2d"
    assert model.rpn_head.num_convs == 2 and len(model.roi_head.bbox_head.shared_convs) == 4


def test_wrong_checkpoints_are_clear_errors(cfg, tmp_path, pretrained_sd):
    # MMSeg/MMDet-style renamed keys (an unconverted checkpoint)
    sd = {k.replace("blocks.", "layers."): v for k, v in pretrained_sd.items()}
    p = str(tmp_path / "renamed.safetensors")
    save_file(sd, p)
    with pytest.raises(CheckpointError) as e:
        _build(cfg, pretrained=p).init_weights()
    assert p in str(e.value) and "blocks.0.attn.qkv.weight" in str(e.value)
    # another architecture (DeiT-S width)
    small = timm.create_model("deit_small_patch16_224", pretrained=False, img_size=64, patch_size=8, depth=6)
    p2 = str(tmp_path / "small.pth")
    torch.save({"model": small.state_dict()}, p2)
    with pytest.raises(CheckpointError, match="embed dim 384 vs backbone embed dim 192"):
        _build(cfg, pretrained=p2).init_weights()
    with pytest.raises(CheckpointError, match="not found"):
        _build(cfg, pretrained=str(tmp_path / "none.safetensors")).init_weights()
    # init_cfg=dict(type='Pretrained') is a synonym of pretrained= (the init_cfg policy shared with MMSeg):
    # our strict loader reads it, so the renamed checkpoint is refused with its keys, never loaded non-strictly
    model = _build(cfg, pretrained=None, init_cfg=dict(type="Pretrained", checkpoint=p))
    assert model.backbone.pretrained == p and model.backbone.init_cfg is None
    with pytest.raises(CheckpointError) as e:
        model.init_weights()
    assert p in str(e.value) and "blocks.0.attn.qkv.weight" in str(e.value)


def test_layer_decay_constructor_groups(cfg):
    from mmengine.optim import build_optim_wrapper

    model = _build(cfg)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    base = cfg.optim_wrapper.optimizer.lr
    rate, n = cfg.optim_wrapper.paramwise_cfg.layer_decay_rate, cfg.optim_wrapper.paramwise_cfg.num_layers
    lr, wd = {}, {}
    for g in wrapper.optimizer.param_groups:
        for name in g["param_names"]:
            lr[name], wd[name] = g["lr"], g["weight_decay"]
    assert lr["backbone.vit.pos_embed"] == pytest.approx(base * rate ** (n + 1)) and wd["backbone.vit.pos_embed"] == 0
    assert lr["backbone.vit.blocks.0.attn.qkv.weight"] == pytest.approx(base * rate**n)
    assert lr["backbone.vit.blocks.5.mlp.fc1.weight"] == pytest.approx(base * rate)
    assert wd["backbone.vit.blocks.5.mlp.fc1.weight"] == cfg.optim_wrapper.optimizer.weight_decay
    assert wd["backbone.vit.blocks.5.attn.rel_pos_h"] == 0 and wd["backbone.vit.blocks.5.norm1.weight"] == 0
    assert lr["backbone.pyramid.stages.0.0.weight"] == base and lr["rpn_head.rpn_conv.0.conv.weight"] == base
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(lr) == trainable  # every trainable parameter exactly once (the unused cls_token is frozen)


def _copy_split(synthetic_root, dst):
    shutil.copytree(synthetic_root / "coco", dst)
    return dst


def test_checked_dataset_skips_missing_images_and_metric_agrees(cfg, synthetic_root, tmp_path):
    from mmdet.registry import DATASETS, METRICS

    root = _copy_split(synthetic_root, tmp_path / "coco")
    first = sorted(glob.glob(str(root / "val" / "*.jpg")))[0]
    os.remove(first)
    ds_cfg = cfg.val_dataloader.dataset.copy()
    ds_cfg.update(data_root=str(root) + "/")
    ds = DATASETS.build(ds_cfg)
    with open(root / "annotations" / "instances_val.json") as f:
        n_images = len(json.load(f)["images"])
    assert len(ds) == n_images - 1 and ds.check_report.skipped == {"image_missing_on_disk": 1}
    assert all(os.path.isfile(d["img_path"]) for d in ds.data_list)
    metric = METRICS.build(dict(type="VitMixCocoMetric", ann_file=str(root / "annotations" / "instances_val.json"),
                                img_dir=str(root / "val"), metric=["bbox", "segm"]))
    assert len(metric._coco_api.getImgIds()) == n_images - 1
    # on_error='raise' refuses the same data, naming the file
    ds_cfg.update(on_error="raise")
    with pytest.raises(CocoDataError, match="instances_val.json"):
        DATASETS.build(ds_cfg)


def test_class_names_not_in_the_file_are_an_error(cfg, synthetic_root):
    from mmdet.registry import DATASETS

    ds_cfg = cfg.val_dataloader.dataset.copy()
    ds_cfg.update(metainfo=dict(classes=("person", "car")))
    with pytest.raises(CocoDataError, match="silently drop"):
        DATASETS.build(ds_cfg)


@pytest.mark.parametrize("size, width, heads", [("t", 192, 3), ("s", 384, 6), ("b", 768, 12)])
def test_coco_configs_parse_with_the_vitdet_recipe(size, width, heads):
    cfg = Config.fromfile(os.path.join(CFG_DIR, f"mask-rcnn_vitmix-deit-{size}_vitdet-100e_coco.py"))
    bb = cfg.model.backbone
    assert (bb.type, bb.embed_dim, bb.num_heads, bb.depth, bb.patch_size) == ("VitMixViTDet", width, heads, 12, 16)
    assert bb.window_size == 14 and list(bb.global_block_indexes) == [2, 5, 8, 11] and bb.use_rel_pos
    assert cfg.model.neck is None and cfg.custom_imports.imports == ["downstream.mmdet"]
    assert cfg.optim_wrapper.optimizer.type == "AdamW" and cfg.optim_wrapper.paramwise_cfg.num_layers == 12
    assert cfg.train_dataloader.dataset.type == "VitMixCocoDataset" and cfg.val_evaluator.type == "VitMixCocoMetric"
    lsj = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == "RandomResize"][0]
    assert tuple(lsj.ratio_range) == (0.1, 2.0) and tuple(lsj.scale) == (1024, 1024)


def test_mask_rcnn_trains_and_predicts_under_bf16_autocast(cfg, ckpt):
    """mmcv 2.1's NMS/RoIAlign have no bf16 kernels: plain MaskRCNN stops under bf16 autocast; ours runs
    the backbone in bf16 and the heads in float32, and equals MaskRCNN without autocast."""
    from mmengine.runner import Runner
    from mmdet.models.detectors import MaskRCNN
    from mmdet.registry import MODELS

    cfg.train_dataloader.update(batch_size=2, num_workers=0, persistent_workers=False)
    batch = next(iter(Runner.build_dataloader(cfg.train_dataloader, seed=0)))
    cfg.model.backbone.pretrained = ckpt
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert type(model).__name__ == "VitMixMaskRCNN"
    data = model.data_preprocessor(batch, True)

    seen = []
    model.backbone.register_forward_hook(lambda m, i, o: seen.append({f.dtype for f in o}))
    head_dtypes = []
    model.rpn_head.register_forward_hook(lambda m, i, o: head_dtypes.append(o[0][0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.loss(data["inputs"], data["data_samples"])
    assert seen[-1] == {torch.bfloat16} and head_dtypes[-1] == torch.float32
    total = sum(_loss_sum(v) for k, v in losses.items() if "loss" in k)
    assert torch.isfinite(total)
    total.backward()
    assert model.backbone.vit.blocks[0].attn.qkv.weight.grad is not None

    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        preds = model.predict(data["inputs"], data["data_samples"])
    assert len(preds) == 2 and preds[0].pred_instances.bboxes.dtype == torch.float32

    # the plain detector with the same weights fails under bf16 (why the subclass exists) ...
    plain = MODELS.build(dict(cfg.model, type="MaskRCNN"))
    assert type(plain) is MaskRCNN
    plain.load_state_dict(model.state_dict())
    plain.train()
    with pytest.raises(RuntimeError, match="BFloat16|bfloat16|BFloat"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            plain.loss(data["inputs"], data["data_samples"])
    # ... and without autocast both give the same losses
    model.train()
    torch.manual_seed(1)
    ours = model.loss(data["inputs"], data["data_samples"])
    torch.manual_seed(1)
    ref = plain.loss(data["inputs"], data["data_samples"])
    assert set(ours) == set(ref)
    for k in ref:
        if "loss" in k:
            torch.testing.assert_close(_loss_sum(ours[k]), _loss_sum(ref[k]))


def _loss_sum(v):
    return sum(x.sum() for x in v) if isinstance(v, (list, tuple)) else v.sum()
