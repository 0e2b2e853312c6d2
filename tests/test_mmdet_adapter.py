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


# --- the ViTDet square pad (official projects/ViTDet/configs/lsj-100e_coco-instance.py: Pad to
# image_size with 114 in both pipelines, after flip/resize/crop) -----------------------------------

MEAN = (123.675, 116.28, 103.53)  # the configs' RGB normalisation
STD = (58.395, 57.12, 57.375)


def _test_image(path, h=192, w=256, seed=0):
    """A lossless non-square BGR image with structure (coarse blobs) and per-pixel noise."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    coarse = cv2.resize(rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8), (w, h),
                        interpolation=cv2.INTER_CUBIC)
    img = np.clip(coarse.astype(np.int16) + rng.integers(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)
    cv2.imwrite(str(path), img)
    return img


def _normalise_bgr(bgr):
    """(H, W, 3) uint8 BGR -> (3, H, W) float32, RGB, (x - mean) / std: MMDet's preprocessing restated."""
    import numpy as np

    rgb = torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1])).permute(2, 0, 1).float()
    return (rgb - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


def _square(cfg):
    """The config's image size (w, h; square): both pipelines must pad to it."""
    assert tuple(cfg.image_size) == (128, 128)
    return tuple(cfg.image_size)


@pytest.fixture
def detector(cfg):
    from mmdet.registry import MODELS

    cfg.model.test_cfg.rcnn.score_thr = 0.0  # random heads: keep every detection
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.eval()


def _pipeline_batch(cfg, path, key="test_pipeline", instances=()):
    from mmcv.transforms import Compose
    from mmengine.dataset import pseudo_collate

    info = dict(img_path=str(path), img_id=0, instances=list(instances))
    return pseudo_collate([Compose(cfg[key])(info)])


def test_configs_pad_every_image_to_the_config_square():
    """Both pipelines of every COCO config end with the square pad of the config's image size."""
    for size in ("t", "s", "b"):
        cfg = Config.fromfile(os.path.join(CFG_DIR, f"mask-rcnn_vitmix-deit-{size}_vitdet-100e_coco.py"))
        for key in ("train_pipeline", "test_pipeline"):
            pads = [t for t in cfg[key] if t.type == "VitMixPad"]
            assert len(pads) == 1 and tuple(pads[0].size) == tuple(cfg.image_size) == (1024, 1024), key
            assert tuple(pads[0].pad_val["img"]) == (114, 114, 114), key
        assert cfg.val_dataloader.dataset.pipeline == cfg.test_pipeline


def test_a_non_square_test_image_reaches_the_backbone_as_the_square(cfg, detector, tmp_path):
    import cv2

    path = tmp_path / "img.png"
    bgr = _test_image(path)  # 192 x 256 -> resized to 96 x 128, then padded to 128 x 128
    sh, sw = _square(cfg)
    seen = []
    detector.backbone.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    with torch.no_grad():
        detector.test_step(_pipeline_batch(cfg, path))
    # restated: cv2 bilinear resize to the long side, 114 at the bottom/right, RGB, normalise
    s = min(sh / bgr.shape[0], sw / bgr.shape[1])
    h, w = round(bgr.shape[0] * s), round(bgr.shape[1] * s)
    expected = torch.full((3, sh, sw), 0.0)
    padded = cv2.copyMakeBorder(cv2.resize(bgr, (w, h), interpolation=cv2.INTER_LINEAR), 0, sh - h, 0, sw - w,
                                cv2.BORDER_CONSTANT, value=(114, 114, 114))
    expected = _normalise_bgr(padded)
    assert (h, w) == (96, 128) and seen[0].shape == (1, 3, sh, sw)
    torch.testing.assert_close(seen[0][0], expected)


def test_detections_are_the_same_whether_the_image_comes_padded_or_not(cfg, detector, tmp_path):
    """The pipeline's pad is the pad of the official recipe (bottom/right, 114, to the square) and the
    predictions come back in the original frame: the same detector fed the image pre-padded by the test
    (declared at its real size, scale 1) gives the same detections, scaled by the resize factor."""
    import cv2
    from mmdet.structures import DetDataSample

    path = tmp_path / "img.png"
    bgr = _test_image(path)
    sh, sw = _square(cfg)
    h, w = bgr.shape[0] // 2, bgr.shape[1] // 2  # the test resize: factor exactly 1/2
    small = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_LINEAR)
    padded = cv2.copyMakeBorder(small, 0, sh - h, 0, sw - w, cv2.BORDER_CONSTANT, value=(114, 114, 114))

    def pre_padded(ori_shape, scale):
        sample = DetDataSample(metainfo=dict(img_id=0, img_path=str(path), img_shape=(h, w), ori_shape=ori_shape,
                                             scale_factor=(scale, scale)))
        return {"inputs": [torch.from_numpy(padded).permute(2, 0, 1).contiguous()], "data_samples": [sample]}

    with torch.no_grad():
        a = detector.test_step(_pipeline_batch(cfg, path))[0].pred_instances
        b = detector.test_step(pre_padded((h, w), 1.0))[0].pred_instances  # in the resized frame
        b_full = detector.test_step(pre_padded(bgr.shape[:2], 0.5))[0].pred_instances
    assert len(a) > 10 and a.masks.shape[-2:] == bgr.shape[:2]
    torch.testing.assert_close(a.scores, b.scores)
    assert torch.equal(a.labels, b.labels)
    torch.testing.assert_close(a.bboxes, b.bboxes * 2.0)  # 256 / 128 and 192 / 96
    assert torch.equal(a.masks, b_full.masks)
    # boxes are clipped to the real (resized) image, not to the padded square
    assert float(b.bboxes[:, 3].max()) <= h and float(b.bboxes[:, 2].max()) <= w


def test_training_pipeline_follows_the_official_order_and_pad(cfg, tmp_path):
    """Official order (flip, LSJ resize, crop, filter, pad 114 to the square): with the flip forced and
    the resize fixed at 1/4, the image is the flipped, resized image at the top left, 114 elsewhere,
    and a box is mirrored."""
    import cv2
    import numpy as np

    types = [t.type for t in cfg.train_pipeline]
    assert types == ["LoadImageFromFile", "LoadAnnotations", "RandomFlip", "RandomResize", "RandomCrop",
                     "FilterAnnotations", "VitMixPad", "PackDetInputs"]
    sh, sw = _square(cfg)
    assert tuple(cfg.train_pipeline[6].size) == tuple(cfg.train_pipeline[4].crop_size) == (sw, sh)
    path = tmp_path / "img.png"
    bgr = _test_image(path)
    cfg.train_pipeline[2].prob = 1.0
    ratio = 0.5  # RandomResize scale (128, 128) x 0.5 -> fit into 64 x 64: 192 x 256 -> 48 x 64
    cfg.train_pipeline[3].ratio_range = (ratio, ratio)
    x1, y1, x2, y2 = 40.0, 60.0, 120.0, 100.0
    inst = dict(bbox=[x1, y1, x2, y2], bbox_label=1, ignore_flag=0,
                mask=[[x1, y1, x2, y1, x2, y2, x1, y2]])
    out = _pipeline_batch(cfg, path, "train_pipeline", [inst])
    img, sample = out["inputs"][0], out["data_samples"][0]
    s = min(sh * ratio / bgr.shape[0], sw * ratio / bgr.shape[1])
    h, w = round(bgr.shape[0] * s), round(bgr.shape[1] * s)
    expected = np.full((sh, sw, 3), 114, np.uint8)
    expected[:h, :w] = cv2.resize(bgr[:, ::-1], (w, h), interpolation=cv2.INTER_LINEAR)  # flip, then resize
    assert (h, w) == (48, 64) and img.shape == (3, sh, sw)
    assert torch.equal(img, torch.from_numpy(expected).permute(2, 0, 1))
    W = bgr.shape[1]
    torch.testing.assert_close(sample.gt_instances.bboxes.tensor[0],
                               torch.tensor([W - x2, y1, W - x1, y2]) * s)
    assert sample.img_shape == (h, w) and sample.flip  # the real size is kept; the pad is not image
