"""The MMSeg adapter: registration, strict loading through init_weights, configs."""

import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("mmcv.ops", reason="needs mmcv with compiled ops")
pytest.importorskip("mmseg")

from mmengine.config import Config  # noqa: E402

import downstream.mmseg as dm  # noqa: E402
from downstream.weights import CheckpointError  # noqa: E402
from pretrain.checkpoint import save_weights  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTH_CFG = os.path.join(REPO, "configs", "mmseg", "linear_synthetic.py")


@pytest.fixture(scope="module", autouse=True)
def _mmseg_scope():
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)


@pytest.fixture(scope="module")
def pretrained_sd(tiny_vit):
    return tiny_vit(10)[0]


@pytest.fixture
def ckpt(tmp_path, tiny_vit):
    path = str(tmp_path / "model.safetensors")
    save_weights(path, *tiny_vit(10))
    return path


def _build(**backbone):
    """The synthetic config's segmentor; the backbone grid defaults to the checkpoint's (64 px / 8)."""
    from mmseg.registry import MODELS

    cfg = Config.fromfile(SYNTH_CFG)
    backbone.setdefault("img_size", 64)
    cfg.model.backbone.update(backbone)
    return MODELS.build(cfg.model)


def test_registered_and_import_is_idempotent():
    from mmseg.registry import MODELS

    assert MODELS.get("VitMixViT") is dm.VitMixViT
    # a second execution of the module (reload) must not fail; done in a
    # subprocess so this session keeps its class objects
    code = (
        "import importlib, sys, downstream.mmseg as m\n"
        "assert 'mmseg.models' not in sys.modules, 'importing the adapter pulled in mmseg.models'\n"
        "importlib.reload(m)\n"
        "from mmseg.registry import MODELS\n"
        "assert MODELS.get('VitMixViT') is m.VitMixViT\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr


def test_segmentor_init_weights_loads_every_backbone_tensor(ckpt, pretrained_sd):
    seg = _build(pretrained=ckpt)
    seg.init_weights()
    backbone_sd = seg.backbone.state_dict()
    assert set(backbone_sd) == {k for k in pretrained_sd if not k.startswith("head.")}
    for k, v in backbone_sd.items():
        assert torch.equal(v, pretrained_sd[k]), k
    report = seg.backbone.load_report
    assert report is not None and report.clean and set(report.dropped) == {"head.weight", "head.bias"}
    # the full segmentor runs on a non-square input
    seg.eval()
    with torch.no_grad():
        out = seg(torch.randn(1, 3, 64, 96), mode="tensor")
    assert out.shape[:2] == (1, seg.decode_head.num_classes)


def test_init_cfg_does_not_overwrite_pretrained(ckpt, pretrained_sd):
    seg = _build(pretrained=ckpt, init_cfg=[dict(type="Constant", val=0.5, layer="Linear")])
    seg.init_weights()
    assert torch.equal(seg.backbone.blocks[3].mlp.fc1.weight, pretrained_sd["blocks.3.mlp.fc1.weight"])
    # the Pretrained init_cfg spelling goes through the same strict loader
    seg = _build(init_cfg=dict(type="Pretrained", checkpoint=ckpt))
    assert seg.backbone.pretrained == ckpt and seg.backbone.init_cfg is None
    seg.init_weights()
    assert torch.equal(seg.backbone.pos_embed, pretrained_sd["pos_embed"])


def test_unconverted_checkpoint_fails_init_weights(tmp_path, pretrained_sd):
    # keys as in MMSeg's own VisionTransformer: must not silently give a random backbone
    renamed = {}
    for k, v in pretrained_sd.items():
        k = k.replace("blocks.", "layers.").replace(".norm1.", ".ln1.").replace(".norm2.", ".ln2.")
        renamed[k] = v
    path = str(tmp_path / "mmseg_layout.pth")
    torch.save({"state_dict": renamed}, path)
    seg = _build(pretrained=path)
    with pytest.raises(CheckpointError) as e:
        seg.init_weights()
    msg = str(e.value)
    assert path in msg and "blocks.0.norm1.weight" in msg and "layers.0.ln1.weight" in msg

    # explicit opt-outs
    seg = _build(pretrained=path, strict=False)
    seg.init_weights()
    assert "blocks.0.norm1.weight" in seg.backbone.load_report.missing
    seg = _build(pretrained=path, allow_missing=["blocks.*"], allow_unexpected=["layers.*"])
    seg.init_weights()
    assert seg.backbone.load_report.allowed_unexpected


def test_missing_block_and_patch_size_mismatch(tmp_path, ckpt):
    seg = _build(pretrained=ckpt, depth=7)
    with pytest.raises(CheckpointError, match="checkpoint has 6 blocks, backbone has 7"):
        seg.init_weights()
    seg = _build(pretrained=ckpt, patch_size=16)
    with pytest.raises(CheckpointError) as e:
        seg.init_weights()
    assert ckpt in str(e.value) and "patch size 8 vs backbone patch size 16" in str(e.value)


def test_converted_checkpoint_works_as_load_from_and_pretrained(tmp_path, ckpt, pretrained_sd):
    from mmengine.runner import load_checkpoint

    out = str(tmp_path / "backbone_mmseg.pth")
    tool = os.path.join(REPO, "tools", "convert_checkpoint.py")
    r = subprocess.run([sys.executable, tool, ckpt, out], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # MMSeg's load_from path (MMEngine loader, torch.load with weights_only default)
    seg = _build()
    load_checkpoint(seg, out, map_location="cpu", strict=False)
    for k, v in seg.backbone.state_dict().items():
        assert torch.equal(v, pretrained_sd[k]), k
    # and our strict path
    seg = _build(pretrained=out)
    seg.init_weights()
    assert seg.backbone.load_report.clean
    for k, v in seg.backbone.state_dict().items():
        assert torch.equal(v, pretrained_sd[k]), k


def test_configs_parse_and_build():
    from mmseg.registry import MODELS

    widths = {"t": (192, 3), "s": (384, 6), "b": (768, 12)}
    names = [f"{h}_deit-{a}_ade20k-512x512.py" for h in ("linear", "mask") for a in widths]
    for name in names + ["linear_synthetic.py", "mask_synthetic.py"]:
        cfg = Config.fromfile(os.path.join(REPO, "configs", "mmseg", name))
        assert cfg.model.backbone.type == "VitMixViT"
        assert cfg.custom_imports.imports == ["downstream.mmseg"]
        assert cfg.custom_hooks == [dict(type="PretrainedCheckHook")]
        cfg.model.backbone.pretrained = None
        depth = cfg.model.backbone.depth
        cfg.model.backbone.depth = 1  # the build checks wiring; 12 DeiT-B blocks only cost time
        seg = MODELS.build(cfg.model)
        assert seg.backbone.strict is True
        head = type(seg.decode_head).__name__
        assert head == ("FCNHead" if name.startswith("linear") else "SegmenterMaskTransformerHead"), name
        if "ade20k" not in name:
            continue
        dim, heads = widths[name.split("deit-")[1][0]]
        assert (seg.backbone.embed_dim, seg.backbone.num_heads, depth) == (dim, heads, 12)
        assert seg.backbone.grid_size == (32, 32) and seg.backbone.patch_size == 16
        assert seg.decode_head.in_channels == dim and seg.decode_head.num_classes == 150
        if head == "FCNHead":
            # Segmenter's Linear decoder: no conv layers, one 1x1 conv to the classes
            assert isinstance(seg.decode_head.convs, torch.nn.Identity)
            assert seg.decode_head.conv_seg.kernel_size == (1, 1)
        else:
            assert cfg.model.decode_head.num_heads == heads and cfg.model.decode_head.num_layers == 2
        # Segmenter recipe
        assert cfg.optim_wrapper.optimizer == dict(type="SGD", lr=1e-3, momentum=0.9, weight_decay=0.0)
        assert cfg.param_scheduler[0].type == "PolyLR" and cfg.param_scheduler[0].end == 160000
        assert cfg.train_cfg.max_iters == 160000 and cfg.train_dataloader.batch_size == 8
        assert cfg.model.backbone.drop_path_rate == 0.1 and cfg.model.test_cfg.mode == "slide"
        size = {"t": "tiny", "s": "small", "b": "base"}[name.split("deit-")[1][0]]
        assert cfg.pretrained.startswith(f"checkpoints/deit_{size}_patch16_224")


def test_layer_decay_optimizer_constructor():
    from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS

    seg = _build()
    ctor = OPTIM_WRAPPER_CONSTRUCTORS.build(
        dict(
            type="VitMixLayerDecayOptimizerConstructor",
            optim_wrapper_cfg=dict(type="OptimWrapper", optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.05)),
            paramwise_cfg=dict(num_layers=6, layer_decay_rate=0.5),
        )
    )
    groups = ctor(seg).optimizer.param_groups
    lr_of = {n: g["lr"] for g in groups for n in g["param_names"]}
    wd_of = {n: g["weight_decay"] for g in groups for n in g["param_names"]}
    assert lr_of["backbone.pos_embed"] == pytest.approx(1e-3 * 0.5**7)
    assert lr_of["backbone.blocks.5.mlp.fc1.weight"] == pytest.approx(1e-3 * 0.5)
    assert lr_of["decode_head.conv_seg.weight"] == pytest.approx(1e-3)
    assert wd_of["backbone.blocks.0.attn.qkv.weight"] == 0.05 and wd_of["backbone.blocks.0.norm1.weight"] == 0.0
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in seg.parameters() if p.requires_grad)


def test_pos_embed_resized_to_the_crop_grid_like_timm(ckpt, pretrained_sd):
    """img_size=128 (the crop): pos_embed goes 8x8 -> 16x16 once, when loading; the rest is untouched."""
    from timm.layers import resample_abs_pos_embed

    seg = _build(pretrained=ckpt, img_size=128)
    seg.init_weights()
    expected = resample_abs_pos_embed(
        pretrained_sd["pos_embed"], new_size=(16, 16), old_size=(8, 8), num_prefix_tokens=1,
        interpolation="bicubic", antialias=False,
    )
    assert seg.backbone.pos_embed.shape == (1, 1 + 16 * 16, 192)
    torch.testing.assert_close(seg.backbone.pos_embed.detach(), expected, rtol=1e-5, atol=1e-6)
    assert seg.backbone.load_report.resized["pos_embed"] == ((1, 65, 192), (1, 257, 192))
    for k, v in seg.backbone.state_dict().items():
        if k != "pos_embed":
            assert torch.equal(v, pretrained_sd[k]), k


def test_embed_dim_mismatch_names_the_file(ckpt):
    seg = _build(pretrained=ckpt, embed_dim=384, num_heads=6)
    with pytest.raises(CheckpointError) as e:
        seg.init_weights()
    assert ckpt in str(e.value) and "embed dim 192 vs backbone embed dim 384" in str(e.value)


class _StubRunner:
    def __init__(self, model, load_from=None, resume=False, it=0):
        self.model, self._load_from, self._resume, self.iter = model, load_from, resume, it


def test_pretrained_check_hook(ckpt, pretrained_sd):
    from downstream.mmengine.hooks import PretrainedCheckHook

    seg = _build(pretrained=ckpt, img_size=128)
    seg.init_weights()
    hook = PretrainedCheckHook()
    hook.before_train(_StubRunner(seg))
    equal, different = hook.result
    assert different == [] and sorted(equal) == sorted(seg.backbone.state_dict())
    # something overwrote a tensor after init_weights: an error naming it
    with torch.no_grad():
        seg.backbone.blocks[1].attn.proj.weight[0, 0] += 1e-3
    with pytest.raises(CheckpointError) as e:
        hook.before_train(_StubRunner(seg))
    assert "blocks.1.attn.proj.weight" in str(e.value) and "1 of " in str(e.value) and ckpt in str(e.value)
    # explained by load_from: reported, not raised; a resumed run is not compared
    PretrainedCheckHook().before_train(_StubRunner(seg, load_from="seg.pth"))
    h = PretrainedCheckHook()
    h.before_train(_StubRunner(seg, resume=True, it=100))
    assert h.result is None
    # a random backbone (pretrained=None) is not compared either
    h = PretrainedCheckHook()
    h.before_train(_StubRunner(_build()))
    assert h.result is None


def test_timm_argument_names_and_mmseg_aliases():
    """The backbone takes timm's names (as the MMDet/Detectron2 backbones); MMSeg's are aliases, not both."""
    from mmseg.registry import MODELS

    timm_names = MODELS.build(dict(type="VitMixViT", img_size=32, patch_size=8, in_chans=3, embed_dim=48, depth=2,
                                   num_heads=3))
    aliases = MODELS.build(dict(type="VitMixViT", img_size=32, patch_size=8, in_channels=3, embed_dims=48,
                                num_layers=2, num_heads=3))
    assert (timm_names.embed_dim, timm_names.depth) == (aliases.embed_dim, aliases.depth) == (48, 2)
    assert {k: v.shape for k, v in timm_names.state_dict().items()} == {k: v.shape for k, v in aliases.state_dict().items()}
    with pytest.raises(ValueError, match="both depth=2 and its MMSeg alias num_layers=3"):
        MODELS.build(dict(type="VitMixViT", img_size=32, patch_size=8, depth=2, num_layers=3, num_heads=3))
