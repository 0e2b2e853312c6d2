"""The pretraining engine end to end on a tiny synthetic folder, and its bad-input errors."""
import json
import os

import pytest
import torch
from safetensors import safe_open

from pretrain.engine.config import load_config
from pretrain.engine.optim import lr_at
from pretrain.engine.train import train
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
    assert (out / "config.yaml").exists() and (out / "best.safetensors").exists()
    assert (out / "checkpoints" / "latest").read_text().strip() == f"step_{summary['steps']:09d}"
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(out / "tb"))
    # the run folder is a timm local-dir model: same network, same weights, the classes' names
    import timm
    loaded = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert json.load(open(out / "config.json"))["label_names"] == sorted(os.listdir(synthetic_root / "imagenet" / "val"))


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
    # class folders holding no image files, and train/val splits naming different classes
    import shutil
    odd = tmp_path / "odd"
    shutil.copytree(synthetic_root / "imagenet", odd)
    cls = sorted(os.listdir(odd / "val"))
    for f in os.listdir(odd / "val" / cls[0]):
        os.rename(odd / "val" / cls[0] / f, odd / "val" / cls[0] / (f + ".txt"))
    with pytest.raises(ValueError, match=f"class folders without image files.*{cls[0]}"):
        train(load_config(CFG, tiny_overrides(tmp_path, tmp_path / "e", [f"data.root={odd}"])))
    shutil.rmtree(odd / "val" / cls[0])
    shutil.copytree(odd / "val" / cls[1], odd / "val" / "zz_other")
    with pytest.raises(ValueError, match="class folders differ.*only in train.*only in val.*zz_other"):
        train(load_config(CFG, tiny_overrides(tmp_path, tmp_path / "f", [f"data.root={odd}"])))
    with pytest.raises(ValueError, match="96 training images give each of 1 process.*fewer than one batch of 200"):
        train(load_config(CFG, tiny_overrides(synthetic_root, tmp_path / "h", ["data.batch_size=200"])))
    # bad values are named
    for item, msg in [("data.repeated_aug=0", "data.repeated_aug"), ("train.amp=fp8", "train.amp"),
                      ("optim.clip_grad=-1", "optim.clip_grad"), ("model.ema_decay=1.5", "model.ema_decay"),
                      ("train.resume=3", "train.resume")]:
        with pytest.raises(ValueError, match=msg):
            load_config(CFG, [item])
    with pytest.raises(FileNotFoundError, match="train.resume"):
        train(load_config(CFG, tiny_overrides(synthetic_root, tmp_path / "g", [f"train.resume={tmp_path}/none"])))


def _with_loss(monkeypatch, make_loss):
    """Make every mixer built by the engine (its classification objective) use ``make_loss(original_loss)``
    as its loss."""
    import pretrain.objectives.classification as classification
    original_build = classification.build_mixer

    def build(*args, **kwargs):
        mixer = original_build(*args, **kwargs)
        mixer.loss = make_loss(mixer.loss)
        return mixer

    monkeypatch.setattr(classification, "build_mixer", build)


def test_nan_loss_stops_with_clear_message(synthetic_root, tmp_path, monkeypatch):
    import pretrain.engine.train as engine

    _with_loss(monkeypatch, lambda loss: (lambda logits, t: loss(logits, t) * float("nan")))
    cfg = load_config(CFG, tiny_overrides(synthetic_root, tmp_path / "nan", ["train.max_bad_steps=2"]))
    with pytest.raises(RuntimeError, match="2 non-finite losses in a row"):
        engine.train(cfg)


@pytest.mark.slow
def test_isolated_nonfinite_steps_are_skipped_and_counted(synthetic_root, tmp_path, monkeypatch):
    import pretrain.engine.train as engine
    calls = []

    def make_loss(loss):
        def bad_every_third(logits, targets):
            calls.append(1)
            value = loss(logits, targets)
            return value * float("inf") if len(calls) % 3 == 0 else value
        return bad_every_third

    _with_loss(monkeypatch, make_loss)
    out = tmp_path / "inf"
    summary = engine.train(load_config(CFG, tiny_overrides(synthetic_root, out, ["train.max_bad_steps=2",
                                                                                 "train.log_interval=1"])))
    batches = 3 * 6  # 3 epochs of 96 images / 16
    assert len(calls) == batches and summary["skipped_steps"] == batches // 3
    assert summary["steps"] == batches - batches // 3
    steps = [json.loads(x) for x in open(out / "steps.jsonl")]
    assert [r["step"] for r in steps] == list(range(1, summary["steps"] + 1))
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in steps)
    from safetensors.torch import load_file
    assert all(torch.isfinite(v).all() for v in load_file(str(out / "model.safetensors")).values())
    assert json.loads(open(out / "metrics.jsonl").readlines()[-1])["skipped_steps"] == batches // 3


def test_train_step_uses_the_mixer_loss_and_updates_the_ema():
    from timm.utils import ModelEmaV3

    from pretrain.engine.optim import build_optimizer
    from pretrain.engine.step import TrainStep
    from pretrain.mixing import build_mixer
    from pretrain.objectives.classification import ClassificationObjective

    torch.manual_seed(0)
    model = create_vit("deit_tiny_patch16_224", 4, img_size=32, patch_size=8, depth=1)
    mixer = build_mixer({"name": "transmix"}, 4, seed=0)
    seen = []
    base_loss = mixer.loss
    mixer.loss = lambda logits, t: seen.append((logits.shape, t.shape)) or base_loss(logits, t)
    opt = build_optimizer(model, {"weight_decay": 0.05, "betas": [0.9, 0.999], "eps": 1e-8}, 1e-3,
                          torch.device("cpu"))
    ema = ModelEmaV3(model, decay=0.9)
    before_ema = {k: v.clone() for k, v in ema.module.state_dict().items()}
    objective = ClassificationObjective(mixer)
    objective.bind(model)
    step = TrainStep(model, model, objective, opt, torch.amp.GradScaler("cpu", enabled=False), clip_grad=1.0,
                     ema=ema)
    assert objective.tap is not None  # TransMix wants the CLS attention
    res = step(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]), lr=1e-3)
    assert not res.skipped and seen == [(torch.Size([4, 4]), torch.Size([4, 4]))]
    assert res.grad_norm is not None and res.grad_norm > 0
    # EMA after one step: 0.9 * old + 0.1 * new weights
    after = model.state_dict()
    for k, v in ema.module.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.9 * before_ema[k] + 0.1 * after[k], rtol=1e-5, atol=1e-6)
    assert opt.param_groups[0]["lr"] == 1e-3
    step.close()
