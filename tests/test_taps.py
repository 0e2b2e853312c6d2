"""CLS-attention taps of every model family (DeiT, XCiT, CaiT, CA-Swin) against a materialised reference,
a two-step TransMix run per family through the engine, and downstream's refusal of their weights."""
import json
import os

import pytest
import timm
import torch

import pretrain.models.ca_swin  # noqa: F401 - registers ca_swin_*
from pretrain.checkpoint import CheckpointError, read_checkpoint
from pretrain.engine.config import load_config
from pretrain.engine.train import train
from pretrain.models.taps import build_tap, family

CFG = os.path.join(os.path.dirname(__file__), "..", "configs", "pretrain", "synthetic_transmix.yaml")

# tiny widths; images 32 x 32
TINY = {
    "vit": ("deit_tiny_patch16_224", dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)),
    "xcit": ("xcit_nano_12_p16_224", dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                                          cls_attn_layers=2)),
    "cait": ("cait_xxs24_224", dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                                    depth_token_only=2)),
    "ca_swin": ("ca_swin_tiny_patch4_window7_224", dict(img_size=32, patch_size=2, embed_dim=16, depths=(1, 1, 1, 2),
                                                        num_heads=(1, 1, 2, 2), window_size=2)),
}
GRID = {"vit": (4, 4), "xcit": (4, 4), "cait": (4, 4), "ca_swin": (2, 2)}


def _observed(model, fam):
    if fam == "vit":
        return model.blocks[-1].attn
    if fam == "xcit":
        return model.cls_attn_blocks[-1].attn
    return model.blocks_token_only[-1].attn


def _reference(attn, x, fam):
    """Full softmax(Q K^T / sqrt(d)) (B, h, N, N) of the observed module's input ``x``; the CLS row, mean over
    heads, patch entries. Functional linears: the modules' hooks (the tap's) are not called."""
    lin = torch.nn.functional.linear
    b, n, c = x.shape
    h = attn.num_heads
    if fam == "vit":
        assert isinstance(attn.q_norm, torch.nn.Identity) and isinstance(attn.k_norm, torch.nn.Identity)
        q, k, _ = lin(x, attn.qkv.weight, attn.qkv.bias).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
    else:  # timm ClassAttn: its q/k linears on every token
        q = lin(x, attn.q.weight, attn.q.bias).reshape(b, n, h, c // h).transpose(1, 2)
        k = lin(x, attn.k.weight, attn.k.bias).reshape(b, n, h, c // h).transpose(1, 2)
    full = torch.softmax(q @ k.transpose(-2, -1) / (c // h) ** 0.5, dim=-1)  # B, h, N, N
    return full[:, :, 0, 1:].mean(1)


@pytest.mark.parametrize("fam", list(TINY))
@pytest.mark.parametrize("checkpointing", [False, True])
def test_tap_equals_materialised_attention(fam, checkpointing):
    torch.manual_seed(0)
    name, kw = TINY[fam]
    model = timm.create_model(name, num_classes=3, **kw)
    assert family(model) == fam
    model.set_grad_checkpointing(checkpointing)
    tap = build_tap(model)
    seen = []
    hook = _observed(model, fam).register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    x = torch.randn(3, 3, 32, 32)
    logits = model(x)
    got = tap.patch_attention().clone()
    assert got.shape == (3, GRID[fam][0] * GRID[fam][1]) and tap.grid(32, 32) == GRID[fam]
    assert not got.requires_grad
    with torch.no_grad():
        want = _reference(_observed(model, fam), seen[0], fam)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # a backward that recomputes the checkpointed blocks leaves the forward's record in place (not recomputed)
    recorded = tap.token_attention()
    logits.sum().backward()
    assert tap.token_attention() is recorded
    if checkpointing and fam in ("vit", "xcit"):  # their observed block is checkpointed: recomputed in backward
        assert len(seen) == 2
    assert torch.equal(tap.patch_attention(), got)
    # and differs from another input's attention (the tap is not constant)
    model(torch.randn(3, 3, 32, 32))
    assert not torch.allclose(tap.patch_attention(), got)
    hook.remove()
    tap.remove()


def _cfg(fam, root, out, extra=()):
    name, kw = TINY[fam]
    cfg = load_config(CFG, [f"data.root={root}/imagenet", "data.num_classes=4", "data.img_size=32",
                            "data.batch_size=8", "data.workers=0", f"model.name={name}", "model.kwargs.img_size=32", f"train.out_dir={out}",
                            "train.epochs=1", "train.max_steps=2", "train.log_interval=1", "train.tensorboard=false",
                            *extra])
    cfg["model"]["kwargs"] = dict(kw)
    return cfg


@pytest.mark.parametrize("fam", ["xcit", "cait", "ca_swin"])
def test_two_step_transmix_run_per_family_and_downstream_refuses_it(fam, synthetic_root, tmp_path):
    out = tmp_path / fam
    summary = train(_cfg(fam, synthetic_root, out))
    assert summary["steps"] == 2
    steps = [json.loads(x) for x in open(out / "steps.jsonl")]
    assert len(steps) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in steps)
    files = sorted(out.glob("*.safetensors"))
    assert files, os.listdir(out)
    sd, meta = read_checkpoint(str(files[0]), expect=None)
    assert meta["format"] == "vitmix-timm" and meta["arch"]["family"] == fam
    assert not (out / "config.json").exists()  # not a timm local-dir ViT
    with pytest.raises(CheckpointError, match=f"{files[0].name} holds a {fam} model .*not a plain ViT"):
        read_checkpoint(str(files[0]))
    from downstream.weights import build_backbone_from_checkpoint, load_pretrained
    with pytest.raises(CheckpointError, match=f"holds a {fam} model"):
        build_backbone_from_checkpoint(str(files[0]))
    # what the MMSeg / MMDet / Detectron2 backbones call to load their ViT
    vit = timm.create_model("deit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=8, depth=2)
    with pytest.raises(CheckpointError, match=f"holds a {fam} model .*not a plain ViT"):
        load_pretrained(vit, str(files[0]))


def test_untagged_class_attention_weights_are_refused_by_family(tmp_path):
    from safetensors.torch import save_file
    for fam, label in (("xcit", "xcit"), ("cait", "cait or ca_swin")):
        name, kw = TINY[fam]
        sd = {k: v.contiguous() for k, v in timm.create_model(name, num_classes=3, **kw).state_dict().items()}
        path = tmp_path / f"{fam}.safetensors"
        save_file(sd, str(path))
        with pytest.raises(CheckpointError, match=f"{fam}.safetensors holds a {label} model"):
            read_checkpoint(str(path))


@pytest.mark.parametrize("fam", list(TINY))
def test_transmix_targets_from_each_familys_attention(fam):
    """Through the objective: own-label weight (lam_area + lam_attn) / 2 with lam_attn from the materialised
    attention and the paste mask pooled (nearest) to the family's grid (2 x 2 for CA-Swin here, 7 x 7 at 224)."""
    from pretrain.mixing import build_mixer
    from pretrain.objectives.classification import ClassificationObjective
    torch.manual_seed(0)
    name, kw = TINY[fam]
    model = timm.create_model(name, num_classes=4, **kw)
    objective = ClassificationObjective(build_mixer({"name": "transmix", "mixup_alpha": 0.0, "label_smoothing": 0.0},
                                                    4, seed=5))
    objective.bind(model)
    seen, got = [], {}
    hook = _observed(model, fam).register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    targets = objective.mixer.targets

    def spy(batch, attention):
        got.update(batch=batch, attention=attention, targets=targets(batch, attention))
        return got["targets"]
    objective.mixer.targets = spy
    labels = torch.arange(4)
    objective.forward_loss(model, torch.randn(4, 3, 32, 32), labels)
    hook.remove()
    batch = got["batch"]
    assert got["attention"].shape == (4, *GRID[fam]) and batch.cut.all()
    with torch.no_grad():
        a = _reference(_observed(model, fam), seen[0], fam)
    m = torch.nn.functional.interpolate(batch.mask.float(), size=GRID[fam], mode="nearest").flatten(1)
    lam_attn = ((1 - m) * a).sum(1) / a.sum(1)
    want = 0.5 * (batch.aux["lam_area"] + lam_attn)
    torch.testing.assert_close(got["targets"][torch.arange(4), labels], want, rtol=1e-5, atol=1e-6)


def test_vit_family_tap_is_bit_identical_to_cls_attention_tap():
    from pretrain.models.vit import ClsAttentionTap
    name, kw = TINY["vit"]
    model = timm.create_model(name, num_classes=3, **kw)
    old, new = ClsAttentionTap(model), build_tap(model)
    model(torch.randn(2, 3, 32, 32))
    assert torch.equal(old.patch_attention(), new.patch_attention())
    old.remove()
    new.remove()


def test_class_attention_run_resumes(synthetic_root, tmp_path):
    """A CaiT TransMix run stopped after 2 steps and resumed to 3 repeats the uninterrupted run's third loss."""
    full, part = tmp_path / "full", tmp_path / "part"
    det = ["train.deterministic=true", "train.checkpoint_steps=1"]
    train(_cfg("cait", synthetic_root, full, det + ["train.max_steps=3"]))
    train(_cfg("cait", synthetic_root, part, det))
    train(_cfg("cait", synthetic_root, part, det + ["train.max_steps=3", "train.resume=auto"]))
    losses = [[json.loads(x)["loss"] for x in open(d / "steps.jsonl")] for d in (full, part)]
    assert len(losses[0]) == 3 and losses[1][-1] == losses[0][-1]


@pytest.mark.parametrize("fam", ["xcit", "ca_swin"])
def test_two_step_tokenmix_run_per_family(fam, synthetic_root, tmp_path):
    """TokenMix (area targets: no teacher) on a class-attention model; its token grid is the model's patch grid
    (CA-Swin: mixer.patch_size names the token size, here its 16 px final-stage tokens at 32 px input)."""
    extra = ["mixer={name: tokenmix, mixup_alpha: 0.0, target: area, loss: bce}"]
    if fam == "ca_swin":
        extra.append("mixer.patch_size=16")
    summary = train(_cfg(fam, synthetic_root, tmp_path / fam, extra))
    assert summary["steps"] == 2 and summary["skipped_steps"] == 0


def test_ca_swin_t_has_swin_t_parameters_and_a_7x7_grid():
    model = timm.create_model("ca_swin_tiny_patch4_window7_224", num_classes=1000)
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - 28.3) < 0.05  # the TransMix paper's 28.3M
    assert build_tap(model).grid(224, 224) == (7, 7) and model.reduction == 32
