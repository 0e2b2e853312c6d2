"""Every pretraining recipe in configs/pretrain/ loads and trains a couple of steps on CPU, shrunk by overrides
(tiny model, 32 px synthetic images); the DeiT recipes carry the papers' hyper-parameters."""
import glob
import json
import os

import numpy as np
import pytest
import torch

from pretrain.checkpoint import save_weights
from pretrain.engine.config import load_config
from pretrain.engine.train import train
from pretrain.mixing import available_mixers
from pretrain.models.vit import create_vit, vit_arch

CFG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "pretrain")
RECIPES = sorted(glob.glob(os.path.join(CFG_DIR, "*.yaml")))
DEIT = [f"deit_{m}_{k}" for m in "tsb" for k in ("deit", "cutmix", "transmix", "tokenmix")]


TINY_KWARGS = "{img_size: 32, patch_size: 8, depth: 1, embed_dim: 32, num_heads: 2}"
TINY_SWIN_KWARGS = "{img_size: 32, patch_size: 2, embed_dim: 16, depths: [1, 1, 1, 2], num_heads: [1, 1, 2, 2], window_size: 2}"


def _shrink(root, out, kwargs=TINY_KWARGS):
    return [f"data.root={root}/imagenet", "data.num_classes=4", "data.img_size=32", "data.batch_size=8",
            "data.workers=0", f"model.kwargs={kwargs}",
            f"train.out_dir={out}", "train.max_steps=2", "train.epochs=2", "train.tensorboard=false",
            "train.log_interval=1", "optim.cooldown_epochs=0"]  # a 2-epoch run has no room for a 10-epoch cooldown


@pytest.fixture(scope="module")
def tiny_assets(synthetic_root, tmp_path_factory):
    """A tiny ViT checkpoint (for configs naming a teacher/external checkpoint) and random label maps of
    the synthetic training split (for TokenMix's label_map target)."""
    d = tmp_path_factory.mktemp("assets")
    torch.manual_seed(0)
    vit = create_vit("deit_tiny_patch16_224", 4, img_size=32, patch_size=8, depth=1, embed_dim=32, num_heads=2)
    ckpt = str(d / "tiny.safetensors")
    save_weights(ckpt, vit.state_dict(), vit_arch(vit, "deit_tiny_patch16_224"))
    from torchvision.datasets import ImageFolder
    train_root = os.path.join(str(synthetic_root), "imagenet", "train")
    samples = ImageFolder(train_root).samples
    maps = d / "label_maps"
    maps.mkdir()
    rng = np.random.default_rng(0)
    np.save(maps / "maps.npy", rng.random((len(samples), 4, 4)).astype(np.float16))
    (maps / "index.txt").write_text("".join(os.path.relpath(p, train_root) + "\n" for p, _ in samples))
    (maps / "meta.json").write_text(json.dumps({"teacher": "random", "map": "test"}))
    return ckpt, str(maps)


def _replace_checkpoints(node, ckpt):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "checkpoint" and isinstance(v, str):
                node[k] = ckpt
            else:
                _replace_checkpoints(v, ckpt)


# What the official code runs, per method, typed from the sources (docs/mixers.md lists them): DeiT main.py
# (facebookresearch/deit), Beckschen/TransMix configs/deit_{s,b}_transmix.yaml + train.py defaults, Sense-X/TokenMix
# exp/deit_small/run.sh + main.py defaults. (total batch, lr at that batch, wd, warm-up, random erasing,
# repeated-augmentation copies, switch prob; the epochs the loop runs, of them at min_lr, the lr's epoch lag,
# training interpolation: tests/test_lr_schedule.py re-states the schedules)
_DEIT_LOOP = dict(epochs=300, cooldown=0, lag=1, interp=None)
_TRANSMIX_LOOP = dict(epochs=310, cooldown=10, lag=0, interp="random")
OFFICIAL = {
    "deit": dict(total=1024, lr=5e-4 * 1024 / 512, wd=0.05, warmup=5, re_prob=0.25, repeats=3, switch=0.5,
                 **_DEIT_LOOP),
    "cutmix": dict(total=1024, lr=5e-4 * 1024 / 512, wd=0.05, warmup=5, re_prob=0.25, repeats=3, switch=None,
                   **_DEIT_LOOP),
    "transmix": dict(total=1024, lr=1e-3, wd=0.03, warmup=20, re_prob=0.0, repeats=1, switch=0.8, **_TRANSMIX_LOOP),
    "transmix_b": dict(total=256, lr=1e-3, wd=0.05, warmup=5, re_prob=0.0, repeats=1, switch=0.8, **_TRANSMIX_LOOP),
    "tokenmix": dict(total=1024, lr=5e-4 * 1024 / 512, wd=0.05, warmup=5, re_prob=0.25, repeats=1, switch=0.5,
                     epochs=310, cooldown=10, lag=1, interp=None),
}


def test_the_deit_recipes_exist_with_the_official_hyper_parameters():
    names = {os.path.splitext(os.path.basename(p))[0] for p in RECIPES}
    assert set(DEIT) <= names
    for name in DEIT:
        cfg = load_config(os.path.join(CFG_DIR, name + ".yaml"))
        m, d, o, t, mx = cfg["model"], cfg["data"], cfg["optim"], cfg["train"], cfg["mixer"]
        size, kind = name.split("_")[1], name.split("_")[2]
        want = OFFICIAL["transmix_b" if name == "deit_b_transmix" else kind]
        assert m["name"] == {"t": "deit_tiny_patch16_224", "s": "deit_small_patch16_224",
                             "b": "deit_base_patch16_224"}[size]
        assert m["drop_path"] == 0.1 and m["ema"] and m["ema_decay"] == 0.99996
        assert (d["img_size"], d["num_classes"], d["auto_augment"]) == (224, 1000, "rand-m9-mstd0.5-inc1")
        total = 8 * d["batch_size"]  # the recipes count 8 processes
        assert total == want["total"], name
        # the engine's lr at the official total batch: lr x total / lr_base_batch
        assert o["lr"] * total / o["lr_base_batch"] == pytest.approx(want["lr"]), name
        assert (o["weight_decay"], o["warmup_epochs"], o["warmup_lr"], o["min_lr"]) == \
            (want["wd"], want["warmup"], 1e-6, 1e-5), name
        assert (d["re_prob"], d["repeated_aug"]) == (want["re_prob"], want["repeats"]), name
        assert t["epochs"] == want["epochs"] and mx["label_smoothing"] == 0.1, name
        assert (o["lr_unit"], o["cooldown_epochs"], o["lr_epoch_lag"]) == ("epoch", want["cooldown"], want["lag"]), name
        assert d["train_interpolation"] == want["interp"] and d["interpolation"] == "bicubic", name
        expected = {"deit": ("mixup_cutmix", 0.8, 1.0), "cutmix": ("cutmix", 0.0, 1.0),
                    "transmix": ("transmix", 0.8, 1.0), "tokenmix": ("tokenmix", 0.8, None)}[kind]
        assert mx["name"] == expected[0] and mx.get("mixup_alpha") == expected[1]
        if expected[2] is not None:
            assert mx["cutmix_alpha"] == expected[2]
        if want["switch"] is not None:
            assert mx["switch_prob"] == want["switch"], name
        if kind in ("deit", "cutmix", "transmix"):  # timm 0.3.2 / 0.5.0 boxes, timm's default correct_lam
            assert mx["box_rule"] == "timm054" and mx["correct_lam"] is True and mx["mode"] == "batch"
        if kind == "transmix":
            assert mx["lam_mode"] == "mean" and d["eval_crop_pct"] == 0.9  # the timm model cfg's crop_pct
        else:
            assert d["eval_crop_pct"] == 0.875  # DeiT / TokenMix datasets.py: resize 256, crop 224
        if kind == "tokenmix":
            assert (mx["mask_ratio"], mx["extra_tokens"], mx["loss"], mx["mode"]) == (0.5, 14, "bce", "batch")
            assert (mx["smoothing_rule"], mx["bce_clamp"], mx["zero_map"], mx["renormalize"]) == \
                ("official", False, "zero", False)


def test_every_mixer_option_in_the_recipes_is_accepted():
    """Each ImageNet recipe's mixer block builds (label maps and checkpoints are only read at run time)."""
    from pretrain.mixing import build_mixer
    for name in DEIT:
        mx = dict(load_config(os.path.join(CFG_DIR, name + ".yaml"))["mixer"])
        build_mixer(mx, 1000, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("path", RECIPES, ids=[os.path.basename(p) for p in RECIPES])
def test_recipe_trains_two_steps_on_cpu(path, synthetic_root, tiny_assets, tmp_path):
    ckpt, label_maps = tiny_assets
    name = os.path.splitext(os.path.basename(path))[0]
    extra = []
    if "tokenmix" in name:
        if "tokenmix" not in available_mixers():
            pytest.skip("mixer 'tokenmix' is not registered in pretrain.mixing yet")
        cfg0 = load_config(path)
        if cfg0["mixer"].get("target") == "label_map":
            extra.append(f"mixer.label_maps={label_maps}")
    kwargs = TINY_SWIN_KWARGS if "swin" in name else TINY_KWARGS
    cfg = load_config(path, _shrink(synthetic_root, tmp_path / name, kwargs) + extra)
    if cfg["mixer"]["name"] == "attentive_cutmix":  # needs a CNN: a random-weight ResNet-18 stands in for it
        cfg["mixer"]["model"] = {"name": "resnet18", "random_init": True}
        cfg["mixer"]["k"] = 1
    _replace_checkpoints(cfg["mixer"], ckpt)
    summary = train(cfg)
    assert summary["steps"] == 2 and summary["skipped_steps"] == 0
    steps = [json.loads(x) for x in open(tmp_path / name / "steps.jsonl")]
    assert [r["step"] for r in steps] == [1, 2] and all(np.isfinite(r["loss"]) for r in steps)
    final = summary["final"]
    assert final["partial_epoch"] and final["val_images"] == 32 and 0.0 <= final["val_top1"] <= 100.0
    assert os.path.isfile(tmp_path / name / "model.safetensors")
    if name.startswith(("xcit", "cait", "ca_swin")):  # class-attention families: their tap served TransMix
        from pretrain.checkpoint import read_checkpoint
        meta = read_checkpoint(str(tmp_path / name / "model.safetensors"), expect=None)[1]
        assert meta["format"] == "vitmix-timm" and meta["arch"]["model"] == cfg["model"]["name"]
