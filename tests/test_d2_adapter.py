"""The Detectron2 registration: Backbone with output_shape and strict loading,
yacs/BACKBONE_REGISTRY path, checked COCO registration, layer-decay groups, configs."""

import glob
import json
import os
import shutil

import pytest
import torch

pytest.importorskip("detectron2")

from downstream.coco_checks import CocoDataError  # noqa: E402
from downstream.weights import CheckpointError  # noqa: E402
from pretrain.checkpoint import save_weights  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG_DIR = os.path.join(REPO, "configs", "detectron2")
SYNTH_CFG = os.path.join(CFG_DIR, "mask_rcnn_vitmix_synthetic.py")


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
    from detectron2.config import LazyConfig

    monkeypatch.setenv("VITMIX_SYNTHETIC_DIR", str(synthetic_root))
    monkeypatch.setenv("VITMIX_CACHE_DIR", str(tmp_path / "cache"))
    return LazyConfig.load(SYNTH_CFG)


def test_backbone_output_shape_and_forward():
    from detectron2.modeling import Backbone

    from downstream.detectron2 import VitMixViTDet

    bb = VitMixViTDet(img_size=32, patch_size=16, embed_dim=32, depth=2, num_heads=2, window_size=2,
                      global_block_indexes=[1], out_channels=8).eval()
    assert isinstance(bb, Backbone) and bb.size_divisibility == 32
    shapes = bb.output_shape()
    assert list(shapes) == ["p2", "p3", "p4", "p5", "p6"]
    assert [(s.channels, s.stride) for s in shapes.values()] == [(8, 4), (8, 8), (8, 16), (8, 32), (8, 64)]
    out = bb(torch.randn(2, 3, 64, 128))
    for name, t in out.items():
        s = shapes[name].stride
        assert t.shape == (2, 8, 64 // s, 128 // s), name


def test_weights_reach_the_backbone_from_the_lazy_config(cfg, ckpt, pretrained_sd):
    from detectron2.config import instantiate

    cfg.model.backbone.pretrained = ckpt
    model = instantiate(cfg.model)
    vit = model.backbone.vit.state_dict()
    for k in ("blocks.4.mlp.fc1.weight", "patch_embed.proj.weight", "pos_embed"):
        assert torch.equal(vit[k], pretrained_sd[k]), k
    assert not model.backbone.load_report.unexpected
    assert model.input_format == "RGB" and model.backbone.size_divisibility == 32
    assert model.roi_heads.box_head.conv1.norm.__class__.__name__ == "LayerNorm2d"


def test_wrong_checkpoint_fails_when_the_model_is_built(cfg, tmp_path, pretrained_sd, tiny_vit):
    from detectron2.config import instantiate

    sd = {k: v for k, v in pretrained_sd.items() if not k.startswith("blocks.5.")}
    p = str(tmp_path / "short.safetensors")
    save_weights(p, sd, dict(tiny_vit(4)[1], depth=5))
    cfg.model.backbone.pretrained = p
    with pytest.raises(CheckpointError) as e:
        instantiate(cfg.model)
    assert p in str(e.value) and "checkpoint has 5 blocks, backbone has 6" in str(e.value)


def test_yacs_registry_path(ckpt, pretrained_sd):
    from detectron2.config import get_cfg
    from detectron2.modeling import BACKBONE_REGISTRY, build_backbone

    from downstream.detectron2 import add_vitmix_vitdet_config, build_vitmix_vitdet_backbone

    assert BACKBONE_REGISTRY.get("build_vitmix_vitdet_backbone") is build_vitmix_vitdet_backbone
    c = get_cfg()
    add_vitmix_vitdet_config(c)
    c.MODEL.BACKBONE.NAME = "build_vitmix_vitdet_backbone"
    c.MODEL.VITMIX.merge_from_list(["IMG_SIZE", 64, "PATCH_SIZE", 8, "EMBED_DIM", 192, "DEPTH", 6, "NUM_HEADS", 3,
                                    "WINDOW_SIZE", 4, "GLOBAL_BLOCK_INDEXES", [2, 5], "PRETRAINED", ckpt])
    bb = build_backbone(c)
    assert torch.equal(bb.vit.blocks[2].attn.proj.weight, pretrained_sd["blocks.2.attn.proj.weight"])
    # the official square pad by default, applied by the registered meta architecture
    from detectron2.modeling import META_ARCH_REGISTRY

    from downstream.detectron2 import VitMixGeneralizedRCNN

    assert bb.square_pad == 1024 and bb.padding_constraints["square_size"] == 1024
    assert META_ARCH_REGISTRY.get("VitMixGeneralizedRCNN") is VitMixGeneralizedRCNN
    assert [bb.vit.blocks[i].window_size for i in range(6)] == [4, 4, 0, 4, 4, 0]


def test_register_checked_coco_instances(synthetic_root, tmp_path, monkeypatch):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from downstream.detectron2 import register_checked_coco_instances

    monkeypatch.setenv("VITMIX_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "coco"
    shutil.copytree(synthetic_root / "coco", root)
    ann = str(root / "annotations" / "instances_val.json")
    n_images = len(json.load(open(ann))["images"])
    os.remove(sorted(glob.glob(str(root / "val" / "*.jpg")))[-1])
    report = register_checked_coco_instances("vitmix_test_val", ann, str(root / "val"))
    assert report.skipped == {"image_missing_on_disk": 1}
    meta = MetadataCatalog.get("vitmix_test_val")
    assert meta.original_json_file == ann and meta.json_file != ann  # the evaluator reads the checked copy
    dicts = DatasetCatalog.get("vitmix_test_val")
    assert len(dicts) == n_images - 1 and all(os.path.isfile(d["file_name"]) for d in dicts)
    assert meta.thing_classes == json.load(open(synthetic_root / "classes.json"))
    # registering again replaces; on_error="raise" refuses
    register_checked_coco_instances("vitmix_test_val", ann, str(root / "val"))
    with pytest.raises(CocoDataError, match="image_missing_on_disk"):
        register_checked_coco_instances("vitmix_test_val2", ann, str(root / "val"), on_error="raise")
    DatasetCatalog.remove("vitmix_test_val")
    MetadataCatalog.remove("vitmix_test_val")


def test_layer_decay_optimizer_from_the_lazy_config(cfg):
    from detectron2.config import instantiate

    model = instantiate(cfg.model)
    cfg.optimizer.params.model = model
    opt = instantiate(cfg.optimizer)
    base, rate, n = cfg.optimizer.lr, cfg.optimizer.params.layer_decay, cfg.optimizer.params.num_layers
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert by_param[id(named["backbone.vit.pos_embed"])]["lr"] == pytest.approx(base * rate ** (n + 1))
    assert by_param[id(named["backbone.vit.blocks.0.attn.qkv.weight"])]["lr"] == pytest.approx(base * rate**n)
    assert by_param[id(named["backbone.vit.blocks.0.attn.qkv.weight"])]["weight_decay"] == cfg.optimizer.weight_decay
    assert by_param[id(named["backbone.vit.blocks.0.norm1.weight"])]["weight_decay"] == 0
    assert by_param[id(named["roi_heads.box_predictor.cls_score.weight"])]["lr"] == base
    assert len(by_param) == sum(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("size, width, heads", [("t", 192, 3), ("s", 384, 6), ("b", 768, 12)])
def test_coco_configs_load_with_the_vitdet_recipe(size, width, heads):
    from detectron2.config import LazyConfig

    cfg = LazyConfig.load(os.path.join(CFG_DIR, f"mask_rcnn_vitmix_deit_{size}_100ep.py"))
    bb = cfg.model.backbone
    assert (bb.embed_dim, bb.num_heads, bb.depth, bb.window_size, list(bb.global_block_indexes)) == (
        width, heads, 12, 14, [2, 5, 8, 11])
    assert cfg.dataloader.evaluator.use_fast_impl is False and cfg.dataloader.train.mapper.image_format == "RGB"
    assert cfg.optimizer.params.num_layers == 12 and cfg.train.init_checkpoint == ""
    assert set(cfg.datasets) == {"vitmix_coco_2017_train", "vitmix_coco_2017_val"}
    flip, lsj, crop = cfg.dataloader.train.mapper.augmentations  # the official order: flip first
    assert flip.horizontal and (lsj.min_scale, lsj.max_scale, lsj.target_height) == (0.1, 2.0, 1024)
    assert crop.pad is False  # the model pads (to the square), not the mapper
    test_resize = cfg.dataloader.test.mapper.augmentations[0]
    assert bb.square_pad == tuple(crop.crop_size)[0] == tuple(crop.crop_size)[1] == test_resize.max_size == 1024
    assert cfg.model._target_.__name__ == "VitMixGeneralizedRCNN"


# --- the ViTDet square pad (official configs/common/models/mask_rcnn_vitdet.py: square_pad=1024, which
# GeneralizedRCNN.preprocess_image applies after normalising; projects/ViTDet/configs/common/
# coco_loader_lsj.py: flip, ResizeScale, FixedSizeCrop(pad=False)) --------------------------------


def _test_image(path, h=192, w=256, seed=0):
    """A lossless non-square RGB image with structure (coarse blobs) and per-pixel noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = np.asarray(Image.fromarray(rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)).resize(
        (w, h), Image.BICUBIC))
    img = np.clip(coarse.astype(np.int16) + rng.integers(-20, 21, (h, w, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(str(path))
    return img


def _square(cfg):
    """The config's image size (the test resize's long side); the model must pad to it."""
    size = cfg.dataloader.test.mapper.augmentations[0].max_size
    assert size == 128
    return size


def _normalise(cfg, chw):
    mean = torch.tensor(list(cfg.model.pixel_mean)).view(3, 1, 1)
    std = torch.tensor(list(cfg.model.pixel_std)).view(3, 1, 1)
    return (chw.float() - mean) / std


@pytest.fixture
def detector(cfg):
    from detectron2.config import instantiate

    cfg.model.roi_heads.box_predictor.test_score_thresh = 0.0  # random heads: keep every detection
    torch.manual_seed(0)
    return instantiate(cfg.model).eval()


def _test_input(cfg, path, hw):
    from detectron2.config import instantiate

    return instantiate(cfg.dataloader.test.mapper)({"file_name": str(path), "height": hw[0], "width": hw[1],
                                                    "image_id": 0})


def test_a_non_square_test_image_reaches_the_backbone_as_the_square(cfg, detector, tmp_path):
    path = tmp_path / "img.png"
    rgb = _test_image(path)
    square = _square(cfg)
    d = _test_input(cfg, path, rgb.shape[:2])
    h, w = d["image"].shape[-2:]
    assert (h, w) == (96, 128)  # long side 128: not square
    seen = []
    detector.backbone.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    with torch.no_grad():
        detector([d])
    # restated: normalise, then 0 (= the pixel mean) at the bottom and the right up to the square
    expected = torch.zeros(3, square, square)
    expected[:, :h, :w] = _normalise(cfg, d["image"])
    assert seen[0].shape == (1, 3, square, square)
    torch.testing.assert_close(seen[0][0], expected, rtol=0, atol=0)
    # a plain GeneralizedRCNN of Detectron2 0.6 would hand the backbone the 96 x 128 batch: refused
    with pytest.raises(ValueError, match="square"):
        detector.backbone(expected[None, :, :h, :w])


def test_detections_are_the_same_whether_the_image_comes_padded_or_not(cfg, detector, tmp_path):
    """The model's pad is the official one (bottom/right, 0 after normalisation, to the square; the
    image keeps its real size) and predictions come back in the original frame: the detector run on the
    image pre-padded by the test, at its real size, gives the same detections scaled by the resize."""
    from detectron2.modeling.postprocessing import detector_postprocess
    from detectron2.structures import ImageList

    path = tmp_path / "img.png"
    rgb = _test_image(path)
    d = _test_input(cfg, path, rgb.shape[:2])
    h, w = d["image"].shape[-2:]
    square = _square(cfg)
    padded = torch.zeros(3, square, square)
    padded[:, :h, :w] = d["image"].float()
    padded[:, h:, :] = torch.tensor(list(cfg.model.pixel_mean)).view(3, 1, 1)  # the pad: the mean pixel
    padded[:, :, w:] = torch.tensor(list(cfg.model.pixel_mean)).view(3, 1, 1)
    with torch.no_grad():
        a = detector([d])[0]["instances"]
        images = ImageList(_normalise(cfg, padded)[None], [(h, w)])
        feats = detector.backbone(images.tensor)
        proposals, _ = detector.proposal_generator(images, feats, None)
        b, _ = detector.roi_heads(images, feats, proposals, None)
    b = b[0]  # in the 96 x 128 frame of the resized image
    assert len(a) > 10 and a.image_size == rgb.shape[:2] and a.pred_masks.shape[-2:] == rgb.shape[:2]
    sy, sx = rgb.shape[0] / h, rgb.shape[1] / w
    assert (sy, sx) == (2.0, 2.0)
    torch.testing.assert_close(a.scores, b.scores)
    assert torch.equal(a.pred_classes, b.pred_classes)
    torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor * torch.tensor([sx, sy, sx, sy]))
    # boxes were clipped to the real image, not to the padded square
    assert float(b.pred_boxes.tensor[:, 3].max()) <= h and float(b.pred_boxes.tensor[:, 2].max()) <= w
    assert torch.equal(a.pred_masks, detector_postprocess(b, *rgb.shape[:2]).pred_masks)  # (scales b in place)


def test_training_augmentations_follow_the_official_order_and_pad(cfg, detector, tmp_path):
    """Official order (flip, LSJ resize, crop without pad; the model pads to the square with 0 after
    normalising): with the flip forced and the scale fixed, the batch is the flipped, resized image at
    the top left and the pixel mean elsewhere."""
    import numpy as np
    from detectron2.config import instantiate
    from detectron2.data import transforms as T
    from detectron2.structures import BoxMode
    from PIL import Image

    path = tmp_path / "img.png"
    rgb = _test_image(path)
    square = _square(cfg)
    augs = cfg.dataloader.train.mapper.augmentations
    augs[0].prob = 1.0
    augs[1].update(min_scale=0.5, max_scale=0.5)  # 128 x 0.5 = 64: 192 x 256 -> 48 x 64
    mapper = instantiate(cfg.dataloader.train.mapper)
    assert [type(a) for a in mapper.augmentations.augs] == [T.RandomFlip, T.ResizeScale, T.FixedSizeCrop]
    x1, y1, x2, y2 = 40.0, 60.0, 120.0, 100.0
    ann = {"bbox": [x1, y1, x2, y2], "bbox_mode": BoxMode.XYXY_ABS, "category_id": 1, "iscrowd": 0,
           "segmentation": [[x1, y1, x2, y1, x2, y2, x1, y2]]}
    d = mapper({"file_name": str(path), "height": rgb.shape[0], "width": rgb.shape[1], "image_id": 0,
                "annotations": [ann]})
    s = min(square * 0.5 / rgb.shape[0], square * 0.5 / rgb.shape[1])
    h, w = round(rgb.shape[0] * s), round(rgb.shape[1] * s)
    flipped_then_resized = np.asarray(Image.fromarray(np.ascontiguousarray(rgb[:, ::-1])).resize((w, h), Image.BILINEAR))
    assert (h, w) == (48, 64) and tuple(d["image"].shape) == (3, h, w)  # no pad in the mapper
    assert torch.equal(d["image"], torch.from_numpy(flipped_then_resized.copy()).permute(2, 0, 1))
    W = rgb.shape[1]  # the box is mirrored, then scaled (recomputed from the rasterised mask: +-1 px)
    torch.testing.assert_close(d["instances"].gt_boxes.tensor[0], torch.tensor([W - x2, y1, W - x1, y2]) * s,
                               rtol=0, atol=1.0)
    detector.train()
    images = detector.preprocess_image([d])
    expected = torch.zeros(3, square, square)
    expected[:, :h, :w] = _normalise(cfg, d["image"])
    assert images.image_sizes == [(h, w)] and images.tensor.shape == (1, 3, square, square)
    torch.testing.assert_close(images.tensor[0], expected, rtol=0, atol=0)


def test_pad_images_refuses_an_image_larger_than_the_square():
    from downstream.detectron2 import pad_images

    il = pad_images([torch.ones(3, 20, 30), torch.ones(3, 40, 10)], size_divisibility=32, square_size=64)
    assert il.tensor.shape == (2, 3, 64, 64) and il.image_sizes == [(20, 30), (40, 10)]
    assert float(il.tensor[0, :, 20:].abs().sum() + il.tensor[0, :, :, 30:].abs().sum()) == 0
    assert pad_images([torch.ones(3, 20, 30)], size_divisibility=32).tensor.shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="larger than the 64x64 square"):
        pad_images([torch.ones(3, 65, 10)], square_size=64)
