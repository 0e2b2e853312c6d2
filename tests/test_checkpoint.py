"""The one checkpoint module (pretrain.checkpoint): format tags, the reader, the architecture
inference and its head-count rule, the position-embedding resize, strict loading into timm models, the
timm config.json of a run folder, and that every consumer reads through it."""

import json

import pytest
import torch
import torch.nn.functional as F

timm = pytest.importorskip("timm")

from pretrain import checkpoint as ck  # noqa: E402
from pretrain.models.vit import create_vit, vit_arch  # noqa: E402

NAME = "deit_tiny_patch16_224"


def _vit(num_classes=5, seed=0, **kw):
    torch.manual_seed(seed)
    kw = {"img_size": 32, "patch_size": 8, "depth": 2, **kw}
    m = create_vit(NAME, num_classes, **kw)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return m.eval()


# ------------------------------------------------------------------------------- reading
def test_format_tags_are_checked_by_name(tmp_path):
    m = _vit()
    vit_file, mixmo_file = str(tmp_path / "vit.safetensors"), str(tmp_path / "mixmo.safetensors")
    ck.save_weights(vit_file, m.state_dict(), vit_arch(m, NAME))
    ck.save_weights(mixmo_file, m.state_dict(), {"num_members": 2}, fmt=ck.MIXMO)
    sd, meta = ck.read_checkpoint(vit_file)
    assert meta["format"] == ck.VIT and meta["arch"]["embed_dim"] == 192 and set(sd) == set(m.state_dict())
    with pytest.raises(ck.CheckpointError, match=r"mixmo.safetensors is a MixMo network"):
        ck.read_checkpoint(mixmo_file)
    with pytest.raises(ck.CheckpointError, match=r"vit.safetensors is not a MixMo checkpoint"):
        ck.read_checkpoint(vit_file, expect=ck.MIXMO)
    assert ck.read_checkpoint(mixmo_file, expect=ck.MIXMO)[1]["format"] == ck.MIXMO
    assert ck.read_checkpoint(mixmo_file, expect=None)[1]["format"] == ck.MIXMO


def test_wrappers_and_prefixes_are_removed_the_same_way_for_every_reader(tmp_path):
    sd = _vit().state_dict()
    wrapped = {"model_ema": {"module._orig_mod." + k: v for k, v in sd.items()}, "epoch": 3}
    p = tmp_path / "w.pth"
    torch.save(wrapped, p)
    raw, meta = ck.read_checkpoint(str(p))
    assert meta["_notes"] == ["weights taken from the 'model_ema' entry"]
    stripped, removed = ck.strip_prefixes(raw)
    assert removed == ["module.", "_orig_mod."] and stripped.keys() == sd.keys()
    assert all(torch.equal(stripped[k], v) for k, v in sd.items())
    # a prefix only some keys share is kept
    partial, removed = ck.strip_prefixes({"module.a": torch.ones(1), "b": torch.ones(1)})
    assert removed == [] and set(partial) == {"module.a", "b"}


def test_unreadable_files_are_named(tmp_path):
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\"")
    with pytest.raises(ck.CheckpointError, match="truncated.safetensors"):
        ck.read_checkpoint(str(bad))
    with pytest.raises(ck.CheckpointError, match="nothing.pth"):
        ck.read_checkpoint(str(tmp_path / "nothing.pth"))
    torch.save({"epoch": 1, "args": {"lr": 0.1}}, tmp_path / "no_tensors.pth")
    with pytest.raises(ck.CheckpointError, match="no tensors found"):
        ck.read_checkpoint(str(tmp_path / "no_tensors.pth"))


def _first_bytes_kind(path):
    """An independent statement of what a file is, from the formats' published first bytes."""
    data = open(path, "rb").read()
    if not data:
        return "empty"
    if len(data) > 8 and data[8:9] == b"{" and 0 < int.from_bytes(data[:8], "little") < 1 << 30:
        return "safetensors"
    if data[:4] == b"PK\x03\x04":
        return "zip"
    if data[:1] == b"\x80" and 2 <= data[1] <= 5:
        return "pickle"
    return "other"


def test_bad_files_are_told_apart(tmp_path, monkeypatch):
    """Empty, not a checkpoint at all, truncated, and a pickle with objects each get their own message; only
    the last says how to opt in to full unpickling, and trusting garbage is still a CheckpointError."""
    import argparse
    import os
    import warnings

    monkeypatch.delenv(ck.TRUST_PICKLE_ENV, raising=False)
    sd = _vit().state_dict()
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    rand = tmp_path / "random.pth"
    rand.write_bytes(bytes(__import__("random").Random(0).randrange(256) for _ in range(4096)))
    if rand.read_bytes()[:1] == b"\x80":  # keep the random file clear of the pickle magic
        rand.write_bytes(b"\x00" + rand.read_bytes()[1:])
    good = tmp_path / "good.pth"
    torch.save(sd, good)
    trunc = tmp_path / "truncated.pth"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    objects = tmp_path / "objects.pth"
    torch.save({"model": sd, "args": argparse.Namespace(lr=1)}, objects)
    st = tmp_path / "w.safetensors"
    ck.save_weights(str(st), sd, {})
    st_trunc = tmp_path / "cut.safetensors"
    st_trunc.write_bytes(st.read_bytes()[:-1000])
    kinds = {p.name: _first_bytes_kind(p) for p in (empty, rand, trunc, objects, st_trunc)}
    assert kinds == {"empty.pth": "empty", "random.pth": "other", "truncated.pth": "zip", "objects.pth": "zip",
                     "cut.safetensors": "safetensors"}

    def message(path, **kw):
        with pytest.raises(ck.CheckpointError) as e:
            ck.read_checkpoint(str(path), **kw)
        msg = str(e.value)
        assert str(path) in msg
        return msg

    assert "empty file, 0 bytes" in message(empty)
    m = message(rand)
    assert "is not a checkpoint" in m and "Python objects" not in m and "trust" not in m.replace(str(rand), "").lower()
    m = message(trunc)
    assert "truncated or damaged" in m and f"{os.path.getsize(trunc)} bytes" in m
    assert "trust" not in m.replace(str(trunc), "").lower()
    m = message(st_trunc)
    assert "truncated" in m and str(st_trunc.stat().st_size) in m
    m = message(objects)
    assert "Python objects" in m and "argparse.Namespace" in m and ck.TRUST_PICKLE_ENV in m
    npz = tmp_path / "arrays.npz"
    __import__("numpy").savez(npz, x=__import__("numpy").ones(3))
    assert "is a zip archive but not a torch checkpoint" in message(npz)
    # trusting does not turn garbage into a checkpoint: the same named errors, no traceback from pickle
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert "is not a checkpoint" in message(rand, trust_pickle=True)
        assert "truncated or damaged" in message(trunc, trust_pickle=True)
        assert "empty file" in message(empty, trust_pickle=True)
        monkeypatch.setenv(ck.TRUST_PICKLE_ENV, "1")
        assert "is not a checkpoint" in message(rand)
        assert set(ck.read_checkpoint(str(objects))[0]) == set(sd)


# ------------------------------------------------------------------------ architecture
def test_one_arch_inference_with_the_head_count_rule(tmp_path):
    m = _vit(embed_dim=128, num_heads=4)
    p = tmp_path / "plain.pth"
    torch.save({"model": {"module." + k: v for k, v in m.state_dict().items()}}, p)
    arch = ck.arch_from_checkpoint(str(p))
    assert arch["arch_source"] == "shapes" and arch["num_heads"] is None
    assert (arch["embed_dim"], arch["depth"], arch["patch_size"], arch["img_size"], arch["num_classes"]) == \
        (128, 2, 8, [32, 32], 5)
    assert ck.num_heads_of(arch) == 2                  # 64 channels per head without metadata
    assert ck.num_heads_of(arch, num_heads=4) == 4     # the caller's value wins
    with pytest.raises(ck.CheckpointError, match="not divisible by num_heads 3"):
        ck.num_heads_of(arch, num_heads=3)
    f = str(tmp_path / "ours.safetensors")
    ck.save_weights(f, m.state_dict(), vit_arch(m, NAME))
    arch = ck.arch_from_checkpoint(f)
    assert arch["arch_source"] == "metadata" and ck.num_heads_of(arch) == 4
    bad = str(tmp_path / "lies.safetensors")
    ck.save_weights(bad, m.state_dict(), dict(vit_arch(m, NAME), depth=3))
    with pytest.raises(ck.CheckpointError, match="metadata says depth=3 but the tensors say depth=2"):
        ck.arch_from_checkpoint(bad)


def test_timm_vit_kwargs_rebuild_the_same_network(tmp_path):
    m = _vit()
    f = str(tmp_path / "m.safetensors")
    ck.save_weights(f, m.state_dict(), vit_arch(m, NAME))
    name, kwargs = ck.timm_vit_kwargs(ck.arch_from_checkpoint(f))
    rebuilt = create_vit(name, 5, **kwargs).eval()
    rebuilt.load_state_dict(m.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), m(x))


# ----------------------------------------------------------------------- pos_embed resize
def _slow_resize(pe, src, dst, prefix, antialias=False):
    """Each channel resized on its own as a 2-D image, then the rows put back in order."""
    out = [pe[0, :prefix]]
    grid = pe[0, prefix:].float()
    rows = []
    for c in range(pe.shape[-1]):
        img = grid[:, c].reshape(1, 1, *src)
        rows.append(F.interpolate(img, size=dst, mode="bicubic", align_corners=False, antialias=antialias).reshape(-1))
    out.append(torch.stack(rows, dim=1).to(pe.dtype))
    return torch.cat(out, dim=0)[None]


def test_resize_pos_embed_matches_a_per_channel_reference_and_keeps_prefix_rows():
    torch.manual_seed(0)
    pe = torch.randn(1, 2 + 4 * 6, 8)
    out = ck.resize_pos_embed(pe, (4, 6), (7, 5), num_prefix_tokens=2)
    assert out.shape == (1, 2 + 35, 8) and torch.equal(out[:, :2], pe[:, :2])
    torch.testing.assert_close(out, _slow_resize(pe, (4, 6), (7, 5), 2), rtol=0, atol=1e-6)
    # antialias is off: the antialiased kernel gives other values
    assert (out - _slow_resize(pe, (4, 6), (7, 5), 2, antialias=True)).abs().max() > 1e-3
    assert ck.resize_pos_embed(pe, (4, 6), (4, 6), 2) is pe
    with pytest.raises(ValueError, match="does not match 1 prefix"):
        ck.resize_pos_embed(pe, (4, 6), (5, 5), num_prefix_tokens=1)


# ------------------------------------------------------------------------ strict loading
def test_load_into_a_timm_classifier_at_another_size(tmp_path):
    m = _vit()
    f = str(tmp_path / "m.safetensors")
    ck.save_weights(f, m.state_dict(), vit_arch(m, NAME))
    big = create_vit(NAME, 5, img_size=48, patch_size=8, depth=2)
    report = ck.load_pretrained(big, f)
    assert report.clean and report.resized["pos_embed"] == ((1, 17, 192), (1, 37, 192))
    ref = ck.resize_pos_embed(m.pos_embed.detach(), (4, 4), (6, 6))
    assert torch.equal(big.pos_embed.detach(), ref)
    short = create_vit(NAME, 5, img_size=32, patch_size=8, depth=3)
    before = short.blocks[0].attn.qkv.weight.clone()
    with pytest.raises(ck.CheckpointError, match=r"m.safetensors does not match.*\n.*blocks.2.attn.qkv.weight"):
        ck.load_pretrained(short, f)
    assert torch.equal(short.blocks[0].attn.qkv.weight, before)  # nothing loaded on error


def test_every_consumer_reads_through_the_one_module(tmp_path):
    """A DDP-wrapped distilled DeiT .pth without metadata: the downstream backbone, the analysis
    loader and the teacher builder all accept it and hold the same tensors."""
    pytest.importorskip("safetensors")
    from downstream.weights import build_backbone_from_checkpoint
    from pretrain.analysis.common import load_classifier
    from pretrain.mixing.teachers import build_network

    torch.manual_seed(1)
    d = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, img_size=32, patch_size=8,
                          depth=2, num_classes=5).eval()
    p = str(tmp_path / "distilled.pth")
    torch.save({"model": {"module." + k: v for k, v in d.state_dict().items()}}, p)
    backbone, report = build_backbone_from_checkpoint(p)
    assert report.clean and backbone.num_heads == 3 and "dist_token" in report.dropped
    assert torch.equal(backbone.blocks[1].mlp.fc2.weight, d.blocks[1].mlp.fc2.weight)
    clf = load_classifier(p)
    teacher = build_network({"name": "deit_tiny_distilled_patch16_224", "checkpoint": p, "num_classes": 5,
                             "kwargs": {"img_size": 32, "patch_size": 8, "depth": 2}})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = d(x)
        torch.testing.assert_close(clf.forward(x), ref, rtol=0, atol=1e-6)
        torch.testing.assert_close(teacher.eval()(x), ref, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------- timm config
def test_run_folder_is_a_timm_local_dir_model(tmp_path):
    m = _vit()
    ck.save_weights(str(tmp_path / "model.safetensors"), m.state_dict(), vit_arch(m, NAME))
    path = ck.write_timm_config(str(tmp_path), vit_arch(m, NAME), crop_pct=1.0,
                                label_names=[f"c{i}" for i in range(5)])
    cfg = json.load(open(path))
    assert cfg["architecture"] == NAME and cfg["num_classes"] == 5
    assert cfg["pretrained_cfg"]["input_size"] == [3, 32, 32] and cfg["label_names"][4] == "c4"
    loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), m(x))
    assert loaded.pretrained_cfg["crop_pct"] == 1.0
