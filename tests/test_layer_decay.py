"""One layer-decay function: the MMSeg and MMDet optimizer constructors and the Detectron2 LazyConfig
groups give the same parameter groups (lr scale, weight decay, members) for the same model."""

import pytest
import torch

pytest.importorskip("mmcv.ops", reason="needs mmcv with compiled ops")
pytest.importorskip("mmseg")
pytest.importorskip("mmdet")
pytest.importorskip("detectron2")

from downstream.layer_decay import param_groups_layer_decay  # noqa: E402
from downstream.pyramid import ViTPyramidBackbone  # noqa: E402
from downstream.vit import VisionTransformer  # noqa: E402

BASE_LR, WD, RATE, DEPTH = 1e-3, 0.05, 0.6, 3


class _Model(torch.nn.Module):
    """A backbone plus a head whose names would look like ViT blocks without the prefix rule."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.head = torch.nn.ModuleDict({"blocks": torch.nn.ModuleList([torch.nn.Linear(4, 4)]),
                                         "norm": torch.nn.LayerNorm(4)})


def _segmentation_model():
    return _Model(VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=DEPTH, num_heads=2))


def _detection_model():
    return _Model(ViTPyramidBackbone(img_size=32, patch_size=8, embed_dim=32, depth=DEPTH, num_heads=2, window_size=2,
                                     global_block_indexes=(2,), use_rel_pos=True, out_channels=16))


def _canonical(model, param_groups):
    """[(lr_scale, weight_decay, lr, sorted member names)] in layer order, members found by identity."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    out = [(g["lr_scale"], g["weight_decay"], g["lr"], tuple(sorted(name_of[id(p)] for p in g["params"])))
           for g in param_groups]
    return sorted(out, key=lambda t: (-t[0], t[1], t[3]))


def _mmengine_groups(registry, name, model):
    ctor = registry.get(name)(
        optim_wrapper_cfg=dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=BASE_LR, weight_decay=WD)),
        paramwise_cfg=dict(num_layers=DEPTH, layer_decay_rate=RATE),
    )
    return ctor(model).optimizer.param_groups


@pytest.mark.parametrize("build", [_segmentation_model, _detection_model], ids=["vit", "vitdet"])
def test_mmseg_mmdet_and_detectron2_groups_are_the_same(build):
    import downstream.mmdet  # noqa: F401  (registers the constructors)
    import downstream.mmseg  # noqa: F401
    from mmdet.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMDET_CTORS
    from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMSEG_CTORS

    from downstream.detectron2 import layer_decay_param_groups

    model = build()
    seg = _canonical(model, _mmengine_groups(MMSEG_CTORS, "VitMixLayerDecayOptimizerConstructor", model))
    det = _canonical(model, _mmengine_groups(MMDET_CTORS, "VitMixLayerDecayOptimizerConstructor", model))
    det_old_name = _canonical(model, _mmengine_groups(MMDET_CTORS, "VitMixDetLayerDecayOptimizerConstructor", model))
    d2_opt = torch.optim.AdamW(layer_decay_param_groups(model, base_lr=BASE_LR, weight_decay=WD, layer_decay=RATE,
                                                        num_layers=DEPTH), lr=BASE_LR, weight_decay=WD)
    d2 = _canonical(model, d2_opt.param_groups)
    direct = _canonical(model, param_groups_layer_decay(model, BASE_LR, WD, RATE))
    assert seg == det == det_old_name == d2 == direct

    # every trainable parameter in exactly one group; the frozen (unused) CLS token of ViTDet in none
    members = [n for g in seg for n in g[3]]
    assert sorted(members) == sorted(n for n, p in model.named_parameters() if p.requires_grad)
    # the one no-weight-decay rule: 1-D tensors, biases, pos_embed, cls_token, rel_pos_h/w
    no_wd = {n for g in seg if g[1] == 0.0 for n in g[3]}
    expected = {n for n in members if dict(model.named_parameters())[n].ndim <= 1 or n.endswith(".bias")
                or n.rsplit(".", 1)[-1] in ("pos_embed", "cls_token", "rel_pos_h", "rel_pos_w")}
    vit = "backbone.vit." if build is _detection_model else "backbone."
    assert no_wd == expected and {vit + "pos_embed", vit + "blocks.0.norm1.weight", "head.norm.weight"} <= no_wd
    if build is _detection_model:
        assert vit + "blocks.0.attn.rel_pos_h" in no_wd
    # lr scales: embeddings rate**(L+1), block i rate**(L-i), everything else (norm, pyramid, head) 1
    scale = {n: g[0] for g in seg for n in g[3]}
    assert scale[vit + "pos_embed"] == pytest.approx(RATE ** (DEPTH + 1))
    assert scale[vit + "blocks.0.attn.qkv.weight"] == pytest.approx(RATE**DEPTH)
    assert scale[vit + f"blocks.{DEPTH - 1}.mlp.fc2.weight"] == pytest.approx(RATE)
    assert scale["head.blocks.0.weight"] == 1.0  # not a ViT block: outside the ViT's prefix


def test_num_layers_must_match_the_backbone():
    with pytest.raises(ValueError, match="num_layers=5 but the ViT at 'backbone.vit.' has 3 blocks"):
        param_groups_layer_decay(_detection_model(), BASE_LR, WD, RATE, num_layers=5)
