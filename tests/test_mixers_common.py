"""Properties every mixer must have, external-model loading, bad inputs, and training through the engine."""
import json
import os

import pytest
import timm
import torch

from pretrain.checkpoint import save_weights
from pretrain.mixing import available_mixers, build_mixer, transmix_lambda
from pretrain.mixing.base import mask_to_patches
from pretrain.models.vit import ClsAttentionTap, create_vit, vit_arch

K = 5
CFG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs", "pretrain")


def tiny_vit(hw=(32, 48), patch=8, classes=K, depth=1):
    torch.manual_seed(0)
    return create_vit("deit_tiny_patch16_224", classes, img_size=hw, patch_size=patch, depth=depth)


def tiny_cnn():
    torch.manual_seed(0)
    return timm.create_model("resnet18", pretrained=False, num_classes=K)


def mixer_configs():
    """(id, config) of every registered mixer, plus the variants with external models."""
    ext_vit = tiny_vit(patch=16)
    return [
        ("none", {"name": "none"}),
        ("mixup", {"name": "mixup"}),
        ("cutmix", {"name": "cutmix", "mode": "elem"}),
        ("mixup_cutmix", {"name": "mixup_cutmix", "mode": "pair"}),
        ("transmix", {"name": "transmix", "mode": "elem"}),
        ("transmix_external", {"name": "transmix", "mixup_alpha": 0.0, "attention_source": "external",
                               "external": ext_vit}),
        ("tokenmix_area", {"name": "tokenmix", "mode": "elem", "renormalize": True}),
        ("tokenmix_cnn_teacher", {"name": "tokenmix", "mixup_alpha": 0.0, "target": "teacher", "teacher": tiny_cnn(),
                                  "mode": "elem"}),
        ("tokenmix_vit_teacher", {"name": "tokenmix", "target": "teacher", "teacher": ext_vit}),
        ("saliencymix", {"name": "saliencymix"}),
        ("attentive_cutmix", {"name": "attentive_cutmix", "model": tiny_cnn(), "k": 1}),
        ("puzzlemix", {"name": "puzzlemix"}),
    ]


CONFIGS = mixer_configs()


def test_every_registered_mixer_is_covered():
    assert {c["name"] for _, c in CONFIGS} == set(available_mixers())


@pytest.mark.parametrize("hw", [(32, 48), (48, 32)])
@pytest.mark.parametrize("cid,cfg", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_mixer_properties(cid, cfg, hw):
    model = tiny_vit(hw)
    b = 6
    torch.manual_seed(1)
    x = torch.randn(b, 3, *hw, requires_grad=True)
    y = torch.randint(0, K, (b,))
    mixer = build_mixer(dict(cfg), K, seed=0)
    twin = build_mixer(dict(cfg), K, seed=0)
    for _ in range(2):  # two steps: different draws, same under the same seed
        batch = mixer(x, y, model=model)
        again = twin(x, y, model=model)
        assert torch.equal(batch.images, again.images) and torch.equal(batch.lam, again.lam)
        assert batch.images.shape == x.shape
        assert not batch.lam.requires_grad
        assert bool(((batch.lam >= 0) & (batch.lam <= 1)).all())
        attention = None
        if mixer.needs_attention:
            tap = ClsAttentionTap(model)
            model(batch.images)
            attention = tap.patch_attention().view(b, hw[0] // 8, hw[1] // 8)
            tap.remove()
            attention = attention.detach().requires_grad_(True)
        targets = mixer.targets(batch, attention)
        assert targets.shape == (b, K) and not targets.requires_grad
        if cid.startswith("tokenmix"):  # official smoothing: an image's class gets its score - s/2 + s/K
            assert bool((targets >= -mixer.label_smoothing / 2).all())
        else:
            assert bool((targets >= 0).all())
        if cid.startswith("tokenmix") and "teacher" in cid:
            assert bool((targets.sum(1) <= 2 + 1e-5).all())  # not renormalised (official): w_own, w_partner <= 1
        else:
            torch.testing.assert_close(targets.sum(1), torch.ones(b))
        if batch.mask is not None:
            m = batch.mask.bool().expand_as(x)
            xd = x.detach()
            assert torch.equal(batch.images.detach()[m], xd.flip(0)[m])
            if getattr(mixer, "mixup_alpha", 0) == 0:
                assert torch.equal(batch.images.detach()[~m], xd[~m])
        loss = mixer.loss(model(batch.images.detach()), targets)
        assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="at least 2"):
        mixer(x[:1].detach(), y[:1], model=model)
    with pytest.raises(ValueError, match="labels"):
        mixer(x.detach(), torch.rand(b, K), model=model)
    with pytest.raises(ValueError, match="images must be"):
        mixer(x.detach()[0], y, model=model)


def test_resume_draws_like_an_uninterrupted_run():
    x, y = torch.randn(6, 3, 32, 48), torch.arange(6) % K
    model = tiny_vit()
    for cid, cfg in CONFIGS:
        a = build_mixer(dict(cfg), K, seed=3)
        a(x, y, model=model)
        state = a.state_dict()
        ref = a(x, y, model=model)
        b = build_mixer(dict(cfg), K, seed=99)
        b.load_state_dict(state)
        assert torch.equal(b(x, y, model=model).images, ref.images), cid


def test_unknown_names_and_options_are_named():
    with pytest.raises(ValueError, match="unknown mixer 'cutmixx'"):
        build_mixer({"name": "cutmixx"}, K)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['lam_mod'\] for mixer 'transmix'"):
        build_mixer({"name": "transmix", "lam_mode": "mean", "lam_mod": "x"}, K)
    with pytest.raises(ValueError, match="attention_source"):
        build_mixer({"name": "transmix", "attention_source": "teacher"}, K)


def test_transmix_rejects_models_without_class_token():
    no_cls = create_vit("deit_tiny_patch16_224", K, img_size=32, patch_size=8, depth=1, class_token=False,
                        global_pool="avg")
    mixer = build_mixer({"name": "transmix"}, K, seed=0)
    with pytest.raises(ValueError, match="class token"):
        mixer(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]), model=no_cls)
    with pytest.raises(ValueError, match="must be a ViT"):
        build_mixer({"name": "transmix", "attention_source": "external", "external": tiny_cnn()}, K)


def test_transmix_external_from_checkpoints(tmp_path):
    ext = tiny_vit(patch=16)
    # 1) this project's safetensors: the architecture comes from the metadata
    st = tmp_path / "ext.safetensors"
    save_weights(str(st), ext.state_dict(), vit_arch(ext, "deit_tiny_patch16_224"))
    # 2) a DeiT-style .pth with a 'model' wrapper and DDP prefixes, needing the timm name
    pth = tmp_path / "ext.pth"
    torch.save({"model": {f"module.{k}": v for k, v in ext.state_dict().items()}}, pth)
    x, y = torch.randn(4, 3, 32, 48), torch.arange(4)
    tap = ClsAttentionTap(ext.eval())
    for spec in ({"checkpoint": str(st)},
                 {"name": "deit_tiny_patch16_224", "checkpoint": str(pth),
                  "kwargs": {"img_size": [32, 48], "depth": 1}}):
        mixer = build_mixer({"name": "transmix", "mixup_alpha": 0.0, "attention_source": "external",
                             "external": spec, "lam_mode": "attn", "mode": "elem"}, K, seed=0)
        assert not mixer.needs_attention
        batch = mixer(x, y)
        with torch.no_grad():
            ext(batch.images)
        att = tap.patch_attention()  # B, 2*3
        lam = transmix_lambda(mask_to_patches(batch.mask, (2, 3)), att, batch.lam, "attn")
        ref = lam.view(-1, 1) * torch.eye(K)[y] * 0.9 + (1 - lam.view(-1, 1)) * torch.eye(K)[y.flip(0)] * 0.9 + 0.1 / K
        torch.testing.assert_close(mixer.targets(batch), ref, rtol=1e-5, atol=1e-6)
        assert all(not p.requires_grad for p in mixer.external.model.parameters())
    bad = tmp_path / "bad.pth"
    sd = ext.state_dict()
    sd.pop("norm.weight")
    torch.save(sd, bad)
    with pytest.raises(ValueError, match=r"bad.pth does not match .*missing keys \['norm.weight'\]"):
        build_mixer({"name": "transmix", "attention_source": "external",
                     "external": {"name": "deit_tiny_patch16_224", "checkpoint": str(bad),
                                  "kwargs": {"img_size": [32, 48], "depth": 1}}}, K)
    with pytest.raises(FileNotFoundError, match="nothere.pth"):
        build_mixer({"name": "transmix", "attention_source": "external",
                     "external": {"name": "deit_tiny_patch16_224", "checkpoint": str(tmp_path / "nothere.pth")}}, K)


# ---- through the pretraining engine ---------------------------------------------------------------
ENGINE_CASES = ["mixup", "cutmix", "transmix", "transmix_external", "tokenmix", "tokenmix_label_map",
                "saliencymix", "attentive_cutmix", "puzzlemix"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ENGINE_CASES)
def test_every_mixer_trains_through_the_engine(synthetic_root, tmp_path, name):
    from pretrain.engine.config import load_config
    from pretrain.engine.train import train

    teacher = create_vit("deit_tiny_patch16_224", 4, img_size=32, patch_size=8, depth=1)
    ckpt = tmp_path / "teacher.safetensors"
    save_weights(str(ckpt), teacher.state_dict(), vit_arch(teacher, "deit_tiny_patch16_224"))
    out = tmp_path / "run"
    overrides = [f"data.root={synthetic_root}/imagenet", "data.num_classes=4", "data.img_size=32",
                 "data.batch_size=16", "data.workers=0", "model.kwargs.img_size=32", "model.kwargs.depth=1",
                 f"train.out_dir={out}", "train.epochs=1", "train.log_interval=0"]
    config = name
    if name == "tokenmix":
        overrides.append(f"mixer.teacher={{checkpoint: {ckpt}}}")
    if name == "tokenmix_label_map":  # random maps of the training split; the engine wraps the dataset
        from torchvision.datasets import ImageFolder
        import numpy as np
        root = os.path.join(str(synthetic_root), "imagenet", "train")
        samples = ImageFolder(root).samples
        maps = tmp_path / "maps"
        maps.mkdir()
        np.save(maps / "maps.npy", np.random.default_rng(0).random((len(samples), 8, 8)).astype(np.float16))
        (maps / "index.txt").write_text("".join(os.path.relpath(p, root) + "\n" for p, _ in samples))
        (maps / "meta.json").write_text("{}")
        config = "tokenmix"
        overrides += ["mixer.target=label_map", "mixer.teacher=null", f"mixer.label_maps={maps}",
                      "mixer.mixup_alpha=0.0"]
    if name == "transmix_external":
        overrides.append(f"mixer.external={{checkpoint: {ckpt}}}")
    if name == "puzzlemix":
        overrides.append("mixer.block_counts=[2, 4]")
    cfg = load_config(os.path.join(CFG_DIR, f"synthetic_{config}.yaml"), overrides)
    summary = train(cfg)
    rec = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert len(rec) == 1 and rec[0]["step"] == 6 and rec[0]["skipped_steps"] == 0
    assert torch.isfinite(torch.tensor(rec[0]["train_loss"])) and summary["final"]["val_top1"] >= 0


@pytest.mark.parametrize("arch", ["deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224",
                                  "deit_tiny_distilled_patch16_224"])
def test_attention_mixers_work_with_deit_family(arch):
    """TransMix (tap on the training forward) and TokenMix (patch size from the model) on DeiT-T/S/B widths."""
    torch.manual_seed(0)
    model = create_vit(arch, K, img_size=(32, 64), depth=1)
    x, y = torch.randn(4, 3, 32, 64), torch.arange(4) % K
    for cfg in ({"name": "transmix", "mixup_alpha": 0.0, "lam_mode": "attn"}, {"name": "tokenmix"}):
        mixer = build_mixer(cfg, K, seed=0)
        tap = ClsAttentionTap(model) if mixer.needs_attention else None
        batch = mixer(x, y, model=model)
        logits = model(batch.images)
        attention = tap.patch_attention().view(4, 2, 4) if tap else None
        targets = mixer.targets(batch, attention)
        loss = mixer.loss(logits, targets)
        loss.backward()
        assert torch.isfinite(loss) and targets.shape == (4, K)
        if tap:
            tap.remove()
            # the attention-based lambda differs from the area one for a non-uniform attention map
            assert not torch.allclose(targets, build_mixer({**cfg, "lam_mode": "area"}, K, seed=0).targets(batch))


@pytest.mark.parametrize("cfg,key", [({"name": "mixup_cutmix", "mixup_alpha": "abc"}, "mixer.mixup_alpha"),
                                     ({"name": "transmix", "switch_prob": [0.5]}, "mixer.switch_prob"),
                                     ({"name": "cutmix", "cutmix_alpha": True}, "mixer.cutmix_alpha")])
def test_a_mixer_option_of_the_wrong_type_names_the_key(cfg, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")) as e:
        build_mixer(cfg, 10, seed=0)
    assert repr(cfg[key.split(".")[1]]) in str(e.value)


def test_a_mixer_number_written_as_a_string_is_read_as_a_number():
    m = build_mixer({"name": "mixup_cutmix", "mixup_alpha": "0.8", "cutmix_alpha": "1"}, 10, seed=0)
    assert m.mixup_alpha == 0.8 and m.cutmix_alpha == 1.0 and isinstance(m.mixup_alpha, float)
