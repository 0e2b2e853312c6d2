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
    lsj = cfg.dataloader.train.mapper.augmentations[0]
    assert (lsj.min_scale, lsj.max_scale, lsj.target_height) == (0.1, 2.0, 1024)
