"""The pretraining engine end to end on a tiny synthetic folder, and its bad-input errors."""
import json
import os

import pytest
import torch
from safetensors import safe_open

from pretrain.engine.config import load_config
from pretrain.engine.train import lr_at, train
from pretrain.models.vit import create_vit

CFG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs", "pretrain")
CFG = os.path.join(CFG_DIR, "synthetic_transmix.yaml")


def tiny_overrides(root, out, extra=()):
    return [f"data.root={root}/imagenet", "data.num_classes=4", "data.img_size=32", "data.batch_size=16",
            "data.workers=0", "model.kwargs.img_size=32", "model.kwargs.depth=2", f"train.out_dir={out}",
            "train.epochs=3", "train.log_interval=0", "optim.lr=2e-3", *extra]


@pytest.mark.parametrize("mixer", ["transmix", "cutmix"])
def test_pretraining_writes_a_loadable_checkpoint_and_learns(synthetic_root, tmp_path, mixer):
    out = tmp_path / mixer
    cfg = load_config(os.path.join(CFG_DIR, f"synthetic_{mixer}.yaml"), tiny_overrides(synthetic_root, out))
    summary = train(cfg)
    lines = [json.loads(x) for x in open(out / "metrics.jsonl")]
    assert [r["epoch"] for r in lines] == [0, 1, 2]
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    assert summary["final"]["val_top1"] > 25.0  # 4 classes: chance is 25 %
    # the checkpoint has timm's keys and the architecture in its metadata, and loads strictly
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    arch = json.loads(meta["arch"])
    assert meta["format"] == "vitmix-vit" and arch["patch_size"] == 8 and arch["depth"] == 2
    model = create_vit("deit_tiny_patch16_224", 4, img_size=32, patch_size=8, depth=2)
    assert keys == set(model.state_dict())
    from safetensors.torch import load_file
    model.load_state_dict(load_file(str(out / "model.safetensors")), strict=True)
    assert (out / "config.yaml").exists() and (out / "state.pt").exists()


def test_lr_schedule_shape():
    lrs = [lr_at(s, 100, 10, 1.0, 0.0, 0.01) for s in range(101)]
    assert lrs[0] == 0.0 and abs(lrs[10] - 1.0) < 1e-12
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:11]))       # warm-up increases
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))        # cosine decreases
    assert abs(lrs[100] - 0.01) < 1e-12


def test_bad_inputs_fail_before_training(synthetic_root, tmp_path):
    with pytest.raises(KeyError, match="unknown config key 'optim.lrr'"):
        load_config(CFG, ["optim.lrr=1"])
    with pytest.raises(ValueError, match="batch_size"):
        load_config(CFG, ["data.batch_size=1"])
    with pytest.raises(FileNotFoundError, match="dataset split not found"):
        train(load_config(CFG, tiny_overrides(tmp_path / "missing", tmp_path / "a")))
    with pytest.raises(ValueError, match="4 class folders but data.num_classes = 10"):
        train(load_config(CFG, tiny_overrides(synthetic_root, tmp_path / "b", ["data.num_classes=10"])))
    with pytest.raises(ValueError, match="unknown mixer"):
        train(load_config(CFG, tiny_overrides(synthetic_root, tmp_path / "c", ["mixer.name=foo"])))
    empty = tmp_path / "empty"
    (empty / "train" / "a").mkdir(parents=True)
    (empty / "val" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="empty class folders"):
        train(load_config(CFG, [f"data.root={empty}", f"train.out_dir={tmp_path / 'd'}"]))


def test_nan_loss_stops_with_clear_message(synthetic_root, tmp_path, monkeypatch):
    import pretrain.engine.train as engine

    monkeypatch.setattr(engine, "soft_target_cross_entropy", lambda logits, t: logits.sum() * float("nan"))
    cfg = load_config(CFG, tiny_overrides(synthetic_root, tmp_path / "nan", ["train.max_bad_steps=2"]))
    with pytest.raises(RuntimeError, match="2 non-finite losses in a row"):
        engine.train(cfg)
