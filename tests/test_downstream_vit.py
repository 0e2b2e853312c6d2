"""Framework-free backbone and checkpoint loading (downstream.vit, downstream.layer_decay,
downstream.weights, tools/convert_checkpoint.py); the detection parts: test_downstream_vitdet.py."""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

timm = pytest.importorskip("timm")
from safetensors.torch import save_file  # noqa: E402

from downstream.layer_decay import get_layer_id, param_groups_layer_decay  # noqa: E402
from downstream.vit import VisionTransformer, resize_pos_embed  # noqa: E402
from downstream.weights import (  # noqa: E402
    CheckpointError,
    LoadReport,
    arch_from_checkpoint,
    build_backbone_from_checkpoint,
    load_pretrained,
    read_checkpoint,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPTH = 2
ARCH = {
    "model": "deit_tiny_patch16_224",
    "img_size": [64, 64],
    "patch_size": 8,
    "embed_dim": 192,
    "depth": DEPTH,
    "num_heads": 3,
    "mlp_ratio": 4.0,
    "qkv_bias": True,
    "num_prefix_tokens": 1,
    "num_classes": 10,
}


def _timm_vit(img_size=64, depth=DEPTH, **kw):
    torch.manual_seed(0)
    m = timm.create_model(
        "deit_tiny_patch16_224", pretrained=False, img_size=img_size, patch_size=8, depth=depth, num_classes=10, **kw
    )
    # non-trivial values everywhere (timm zero-inits biases, ones-inits norms)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return m.eval()


def _backbone(img_size=64, depth=DEPTH, **kw):
    return VisionTransformer(img_size=img_size, patch_size=8, embed_dim=192, depth=depth, num_heads=3, **kw).eval()


def _save_safetensors(path, sd, arch=ARCH):
    save_file(
        {k: v.contiguous() for k, v in sd.items()},
        str(path),
        metadata={"format": "vitmix-vit", "arch": json.dumps(arch)},
    )
    return str(path)


@pytest.fixture(scope="module")
def timm_model():
    return _timm_vit()


@pytest.fixture
def ckpt(tmp_path, timm_model):
    return _save_safetensors(tmp_path / "model.safetensors", timm_model.state_dict())


# ------------------------------------------------------------------ backbone
def test_state_dict_keys_are_timm_keys(timm_model):
    ours = set(_backbone().state_dict())
    theirs = {k for k in timm_model.state_dict() if not k.startswith("head.")}
    assert ours == theirs


def test_matches_timm_forward_features(ckpt, timm_model):
    m = _backbone()
    report = load_pretrained(m, ckpt)
    assert report.missing == [] and report.unexpected == []
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = timm_model.forward_features(x)[:, 1:]  # (B, P, C), final norm applied
        (out,) = m(x)
    assert out.shape == (2, 192, 8, 8)
    ours = out.flatten(2).transpose(1, 2)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_intermediate_blocks_unnormalised(ckpt, timm_model):
    m = _backbone(out_indices=(0, -1))
    load_pretrained(m, ckpt)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        b0, last = m(x)
        t = timm_model.patch_embed(x)
        t = timm_model._pos_embed(t)
        t = timm_model.blocks[0](t)
    assert len(m(x)) == 2
    torch.testing.assert_close(b0.flatten(2).transpose(1, 2), t[:, 1:], atol=1e-5, rtol=1e-5)
    assert last.shape == b0.shape


def test_larger_and_non_square_inputs_use_interpolated_pos_embed(ckpt, timm_model):
    m = _backbone()
    load_pretrained(m, ckpt)
    for h, w in [(128, 128), (64, 96)]:
        # reference: timm ViT built for (h, w) whose pos_embed is the bicubic
        # resize of the pretrained one, computed directly with F.interpolate
        ref_model = _timm_vit(img_size=(h, w))
        sd = dict(timm_model.state_dict())
        pe = timm_model.pos_embed.detach()
        grid = pe[:, 1:].reshape(1, 8, 8, 192).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h // 8, w // 8), mode="bicubic", align_corners=False)
        sd["pos_embed"] = torch.cat([pe[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, 192)], dim=1)
        ref_model.load_state_dict(sd)
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            ref = ref_model.forward_features(x)[:, 1:]
            (out,) = m(x)
        assert out.shape == (1, 192, h // 8, w // 8)
        torch.testing.assert_close(out.flatten(2).transpose(1, 2), ref, atol=1e-5, rtol=1e-5)


def test_resize_pos_embed_matches_interpolate_reference():
    torch.manual_seed(1)
    pe = torch.randn(1, 1 + 4 * 6, 16)
    out = resize_pos_embed(pe, (4, 6), (8, 5), num_prefix_tokens=1)
    ref = F.interpolate(
        pe[:, 1:].reshape(1, 4, 6, 16).permute(0, 3, 1, 2), size=(8, 5), mode="bicubic", align_corners=False
    )
    ref = torch.cat([pe[:, :1], ref.permute(0, 2, 3, 1).reshape(1, 40, 16)], dim=1)
    assert out.shape == (1, 41, 16)
    torch.testing.assert_close(out, ref)
    assert torch.equal(out[:, 0], pe[:, 0])  # CLS entry kept apart
    assert resize_pos_embed(pe, (4, 6), (4, 6)) is pe
    with pytest.raises(ValueError):
        resize_pos_embed(pe, (5, 5), (8, 8))


def test_input_not_divisible_by_patch_size_is_an_error():
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        _backbone()(torch.randn(1, 3, 60, 64))


def test_attention_is_fused(monkeypatch):
    calls = []
    real = F.scaled_dot_product_attention

    def spy(*a, **k):
        calls.append(a[0].shape)
        return real(*a, **k)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    _backbone()(torch.randn(1, 3, 64, 64))
    assert len(calls) == DEPTH and calls[0] == (1, 3, 65, 64)


def test_drop_path_linear_and_final_norm_switch():
    m = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=5, num_heads=2, drop_path_rate=0.2)
    rates = [getattr(b.drop_path1, "drop_prob", 0.0) for b in m.blocks]  # timm's Block: drop_path1/2
    assert rates == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
    m.train()
    out = m(torch.randn(2, 3, 32, 32))
    assert out[0].shape == (2, 32, 4, 4)
    no_norm = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, final_norm=False)
    assert not any(k.startswith("norm.") for k in no_norm.state_dict())
    with pytest.raises(ValueError):
        VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, out_indices=(2,))


def test_layer_decay_groups():
    m = _backbone()
    assert get_layer_id("cls_token", DEPTH) == 0
    assert get_layer_id("backbone.patch_embed.proj.weight", DEPTH) == 0
    assert get_layer_id("blocks.1.attn.qkv.weight", DEPTH) == 2
    assert get_layer_id("norm.weight", DEPTH) == DEPTH + 1
    groups = param_groups_layer_decay(m, base_lr=1.0, weight_decay=0.05, layer_decay=0.5)
    by_name = {n: g for g in groups for n in g["param_names"]}
    assert by_name["pos_embed"]["lr"] == pytest.approx(0.5 ** (DEPTH + 1))
    assert by_name["pos_embed"]["weight_decay"] == 0.0
    assert by_name["blocks.0.attn.qkv.weight"]["lr"] == pytest.approx(0.5**DEPTH)
    assert by_name["blocks.0.attn.qkv.weight"]["weight_decay"] == 0.05
    assert by_name["blocks.0.attn.qkv.bias"]["weight_decay"] == 0.0
    assert by_name["norm.weight"]["lr"] == pytest.approx(1.0)
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))


# ------------------------------------------------------------------- weights
def test_arch_from_metadata_and_from_shapes(tmp_path, ckpt, timm_model):
    arch = arch_from_checkpoint(ckpt)
    assert arch["arch_source"] == "metadata" and arch["num_heads"] == 3 and arch["img_size"] == [64, 64]
    p = tmp_path / "plain.pth"
    torch.save({"model": timm_model.state_dict()}, p)
    arch = arch_from_checkpoint(str(p))
    assert arch["arch_source"] == "shapes"
    assert (arch["embed_dim"], arch["depth"], arch["patch_size"], arch["img_size"]) == (192, DEPTH, 8, [64, 64])
    assert arch["num_heads"] is None
    bad = _save_safetensors(tmp_path / "bad.safetensors", timm_model.state_dict(), dict(ARCH, embed_dim=384))
    with pytest.raises(CheckpointError, match="embed_dim"):
        arch_from_checkpoint(bad)


def test_containers_and_prefixes(tmp_path, timm_model):
    sd = timm_model.state_dict()
    variants = {
        "plain.pth": sd,
        "model.pth": {"model": sd},
        "state_dict.pth": {"state_dict": sd},
        "ddp.pth": {"model": {"module." + k: v for k, v in sd.items()}},
        "segmentor.pth": {"state_dict": {**{"backbone." + k: v for k, v in sd.items()}, "decode_head.w": torch.ones(1)}},
    }
    for name, obj in variants.items():
        p = tmp_path / name
        torch.save(obj, p)
        m = _backbone()
        report = load_pretrained(m, str(p))
        assert report.clean, name
        assert torch.equal(m.blocks[1].mlp.fc2.weight, sd["blocks.1.mlp.fc2.weight"]), name
    assert "decode_head.w" in report.dropped


def test_mmseg_style_keys_fail_loudly_with_key_names(tmp_path, timm_model):
    sd = dict(timm_model.state_dict())
    for i in range(DEPTH):
        sd[f"layers.{i}.ln1.weight"] = sd.pop(f"blocks.{i}.norm1.weight")
        sd[f"layers.{i}.ln1.bias"] = sd.pop(f"blocks.{i}.norm1.bias")
    p = tmp_path / "renamed.pth"
    torch.save(sd, p)
    m = _backbone()
    before = m.blocks[0].attn.qkv.weight.clone()
    with pytest.raises(CheckpointError) as e:
        load_pretrained(m, str(p))
    msg = str(e.value)
    assert str(p) in msg
    assert "blocks.0.norm1.weight" in msg and "layers.0.ln1.weight" in msg
    assert "MMSeg" in msg
    assert torch.equal(m.blocks[0].attn.qkv.weight, before)  # nothing loaded on error

    # opting out: strict=False loads the rest and reports
    report = load_pretrained(m, str(p), strict=False)
    assert "blocks.0.norm1.weight" in report.missing and "layers.0.ln1.weight" in report.unexpected
    assert torch.equal(m.blocks[0].attn.qkv.weight, sd["blocks.0.attn.qkv.weight"])
    assert "missing" in report.summary()

    # allow-lists: every missing/unexpected key must be covered
    report = load_pretrained(m, str(p), allow_missing=["blocks.*.norm1.*"], allow_unexpected=["layers.*"])
    assert report.allowed_missing == report.missing and len(report.missing) == 2 * DEPTH
    with pytest.raises(CheckpointError, match="layers.1.ln1.bias"):
        load_pretrained(m, str(p), allow_missing=["blocks.*.norm1.*"], allow_unexpected=["layers.0.*"])


def test_missing_block_fails_with_depth_hint(tmp_path, timm_model):
    sd = {k: v for k, v in timm_model.state_dict().items() if not k.startswith("blocks.1.")}
    p = _save_safetensors(tmp_path / "short.safetensors", sd, dict(ARCH, depth=1))
    with pytest.raises(CheckpointError) as e:
        load_pretrained(_backbone(), p)
    msg = str(e.value)
    assert p in msg and "blocks.1.attn.qkv.weight" in msg
    assert "checkpoint has 1 blocks, backbone has 2" in msg
    report = load_pretrained(_backbone(), p, allow_missing=["blocks.1.*"])
    assert len(report.missing) == 12


def test_patch_size_mismatch_names_the_file(tmp_path):
    big = timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=64, depth=DEPTH, num_classes=10)
    p = _save_safetensors(
        tmp_path / "p16.safetensors", big.state_dict(), dict(ARCH, patch_size=16)
    )
    with pytest.raises(CheckpointError) as e:
        load_pretrained(_backbone(), p)
    assert p in str(e.value)
    assert "patch size 16 vs backbone patch size 8" in str(e.value)
    with pytest.raises(CheckpointError, match="patch size 16"):
        load_pretrained(_backbone(), p, strict=False)  # shapes never load


def test_embed_dim_mismatch_names_the_file(tmp_path):
    small = timm.create_model("deit_small_patch16_224", pretrained=False, img_size=64, patch_size=8, depth=DEPTH)
    p = tmp_path / "s.pth"
    torch.save({"model": small.state_dict()}, p)
    with pytest.raises(CheckpointError) as e:
        load_pretrained(_backbone(), str(p))
    assert str(p) in str(e.value) and "embed dim 384 vs backbone embed dim 192" in str(e.value)


def test_distilled_deit_drops_dist_token_and_its_pos_row(tmp_path):
    torch.manual_seed(0)
    d = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=64, patch_size=8, depth=DEPTH)
    p = tmp_path / "distilled.pth"
    torch.save({"model": d.state_dict()}, p)
    m = _backbone()
    report = load_pretrained(m, str(p))
    assert {"dist_token", "head_dist.weight", "head.weight"} <= set(report.dropped)
    assert any("distillation" in n for n in report.notes)
    assert torch.equal(m.pos_embed[:, :1], d.pos_embed[:, :1])
    assert torch.equal(m.pos_embed[:, 1:], d.pos_embed[:, 2:])


def test_pos_embed_resized_to_backbone_grid_when_loading(ckpt, timm_model):
    m = _backbone(img_size=96)
    report = load_pretrained(m, ckpt)
    assert report.resized["pos_embed"] == ((1, 65, 192), (1, 145, 192))
    ref = resize_pos_embed(timm_model.pos_embed.detach(), (8, 8), (12, 12))
    torch.testing.assert_close(m.pos_embed.detach(), ref)


def test_final_norm_off_drops_norm_and_fc_norm_only_if_absent(tmp_path, ckpt):
    report = load_pretrained(_backbone(final_norm=False), ckpt)
    assert report.dropped["norm.weight"].startswith("final norm disabled")
    assert report.clean
    # avg-pool ViT (fc_norm, no final norm): fc_norm is dropped, a backbone that
    # wants a final norm finds it missing
    pooled = _timm_vit(global_pool="avg", fc_norm=True)
    p = tmp_path / "pooled.pth"
    torch.save(pooled.state_dict(), p)
    with pytest.raises(CheckpointError, match="norm.weight"):
        load_pretrained(_backbone(), str(p))
    report = load_pretrained(_backbone(final_norm=False), str(p))
    assert report.clean and "fc_norm.weight" in report.dropped


def test_pickle_refused_unless_trusted(tmp_path, timm_model):
    import argparse

    p = tmp_path / "full.pth"
    torch.save({"model": timm_model.state_dict(), "args": argparse.Namespace(lr=1)}, p)
    with pytest.raises(CheckpointError, match="trust_pickle=True"):
        read_checkpoint(str(p), trust_pickle=False)
    with pytest.warns(UserWarning, match="full unpickling"):
        report = load_pretrained(_backbone(), str(p), trust_pickle=True)
    assert isinstance(report, LoadReport) and report.clean


def test_missing_file_is_named():
    with pytest.raises(CheckpointError, match="nope.safetensors"):
        load_pretrained(_backbone(), "/nonexistent/nope.safetensors")


def test_build_backbone_from_checkpoint(ckpt):
    m, report = build_backbone_from_checkpoint(ckpt, out_indices=(0, 1))
    assert m.depth == DEPTH and m.num_heads == 3 and report.clean
    assert len(m(torch.randn(1, 3, 64, 64))) == 2


def test_convert_tool_round_trip(tmp_path, ckpt, timm_model):
    out = tmp_path / "mmseg_backbone.pth"
    r = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "convert_checkpoint.py"), ckpt, str(out), "--img-size", "128"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    obj = torch.load(out, map_location="cpu", weights_only=True)
    assert all(k.startswith("backbone.") for k in obj["state_dict"])
    assert obj["state_dict"]["backbone.pos_embed"].shape == (1, 257, 192)
    assert json.loads(obj["meta"]["arch"])["img_size"] == [128, 128]
    m = _backbone(img_size=128)
    report = load_pretrained(m, str(out))
    assert report.clean and not report.resized
    ref = _backbone(img_size=128)
    load_pretrained(ref, ckpt)
    for k, v in ref.state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k
    # a bad input makes the tool fail with the message on stderr
    r = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "convert_checkpoint.py"), str(tmp_path / "none.pth"), str(out)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "none.pth" in r.stderr


def test_package_import_is_framework_free():
    code = (
        "import sys, downstream, downstream.vit, downstream.weights\n"
        "downstream.VisionTransformer, downstream.load_pretrained\n"
        "bad = [m for m in ('mmseg', 'mmcv', 'mmdet', 'detectron2') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr


def test_frozen_stages():
    m = _backbone(frozen_stages=1, drop_path_rate=0.1).train()
    frozen = {n for n, p in m.named_parameters() if not p.requires_grad}
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.attn.qkv.weight"} <= frozen
    assert not any(n.startswith(("blocks.1.", "norm.")) for n in frozen)
    assert not m.blocks[0].training and m.blocks[1].training
    m = _backbone(frozen_stages=DEPTH)
    assert all(not p.requires_grad for p in m.parameters())


def test_no_cls_token_drops_cls_pos_entry_and_keeps_key_layout(ckpt, timm_model):
    m = _backbone(use_cls_token=False, final_norm=False)
    report = load_pretrained(m, ckpt)
    assert report.clean and "cls_token" in report.loaded
    assert not m.cls_token.requires_grad
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        (out,) = m(x)
        t = timm_model.patch_embed(x) + timm_model.pos_embed[:, 1:]  # no CLS in the sequence
        for blk in timm_model.blocks:
            t = blk(t)
    torch.testing.assert_close(out.flatten(2).transpose(1, 2), t, atol=1e-5, rtol=1e-5)


def test_rel_pos_tables_are_new_parameters_allowed_missing(ckpt):
    m = _backbone(use_cls_token=False, window_size=4, global_block_indexes=(1,), use_rel_pos=True)
    report = load_pretrained(m, ckpt)
    assert sorted(report.missing) == sorted(f"blocks.{i}.attn.rel_pos_{a}" for i in range(DEPTH) for a in "hw")
    assert any("initial values" in n for n in report.notes)
    assert torch.count_nonzero(m.blocks[0].attn.rel_pos_h) == 0
    # the allowance covers the new tables only: other missing keys are still refused
    sd, _ = read_checkpoint(ckpt)
    p = os.path.join(os.path.dirname(ckpt), "nonorm.safetensors")
    save_file({k: v for k, v in sd.items() if not k.startswith("norm.")}, p,
              metadata={"format": "vitmix-vit", "arch": json.dumps(ARCH)})
    with pytest.raises(CheckpointError, match="norm.weight"):
        load_pretrained(_backbone(use_cls_token=False, use_rel_pos=True), p)


def test_mixmo_checkpoint_is_refused_with_its_kind(tmp_path):
    from pretrain.checkpoint import MIXMO as MIXMO_FORMAT, save_weights
    from pretrain.mixmo.models import build_mixmo_vit

    net = build_mixmo_vit("deit_tiny_patch16_224", 4, img_size=32, patch_size=8, depth=1, embed_dim=32, num_heads=2)
    path = str(tmp_path / "mixmo.safetensors")
    save_weights(path, net.state_dict(), {"model": "deit_tiny_patch16_224"}, fmt=MIXMO_FORMAT)
    with pytest.raises(CheckpointError, match="MixMo network"):
        load_pretrained(_backbone(), path)
