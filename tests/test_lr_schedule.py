"""The engine's lr schedules against an independent, slow re-statement of what the official training loops
run: timm's CosineLRScheduler as create_scheduler builds it (timm 0.3.2 for DeiT, 0.5.0/0.5.4 for TransMix and
TokenMix: t_in_epochs=True, warmup_prefix=False, one cycle, cooldown epochs at min_lr), stepped the way each
official main loop steps it (DeiT/TokenMix main.py: ``step(epoch)`` after the epoch; TransMix train.py:
``step(epoch + 1)`` after it). The defaults keep the per-step schedule of every earlier run bit for bit."""
import math
import os

import pytest

from pretrain.data.folders import build_transforms
from pretrain.engine.config import load_config
from pretrain.engine.optim import build_schedule, lr_at

CFG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs", "pretrain")


class OfficialCosine:
    """A re-statement of timm's epoch scheduler: the optimizer's lr is a state, set to ``warmup_lr`` when the
    scheduler is built, then to ``value(t)`` by each ``step(t)``; value(t) is the cycle formula with cycle
    index ``i = t // t_initial``, one cycle allowed (i >= 1: lr_min)."""

    def __init__(self, base_lr, t_initial, warmup_t, warmup_lr, lr_min):
        self.base, self.T, self.W, self.w0, self.lo = base_lr, t_initial, warmup_t, warmup_lr, lr_min
        self.lr = warmup_lr if warmup_t else base_lr

    def value(self, t):
        if t < self.W:
            return self.w0 + t * ((self.base - self.w0) / self.W)
        i = t // self.T
        if i >= 1:
            return self.lo
        t_curr = t - self.T * i
        return self.lo + 0.5 * (self.base - self.lo) * (1 + math.cos(math.pi * t_curr / self.T))

    def step(self, t):
        self.lr = self.value(t)


def official_epoch_lrs(loop, base_lr, epochs, warmup, cooldown, warmup_lr=1e-6, min_lr=1e-5):
    """The lr each epoch of the official loop trains at. ``loop``: ``deit`` (facebookresearch/deit main.py: the
    loop runs --epochs, ``step(epoch)`` after each), ``tokenmix`` (Sense-X/TokenMix main.py: the loop runs
    create_scheduler's epochs + cooldown, ``step(epoch)`` after each), ``transmix`` (Beckschen/TransMix train.py:
    epochs + cooldown, ``step(epoch + 1)`` after each)."""
    sched = OfficialCosine(base_lr, epochs, warmup, warmup_lr, min_lr)
    n = epochs if loop == "deit" else epochs + cooldown
    out = []
    for epoch in range(n):
        out.append(sched.lr)  # train_one_epoch reads the optimizer's lr
        sched.step(epoch + 1 if loop == "transmix" else epoch)
    return out


def ours_per_epoch(cfg, spe=5):
    total_batch = 8 * int(cfg["data"]["batch_size"])
    base = float(cfg["optim"]["lr"]) * total_batch / float(cfg["optim"]["lr_base_batch"])
    epochs = int(cfg["train"]["epochs"])
    fn = build_schedule(cfg["optim"], base, spe, epochs * spe)
    lrs = []
    for e in range(epochs):
        within = {fn(e * spe + k) for k in range(spe)} | {fn(e * spe, e)}
        assert len(within) == 1, f"epoch {e}: the lr changes within the epoch {within}"
        lrs.append(within.pop())
    return base, lrs


@pytest.mark.parametrize("name,loop,epochs,warmup,cooldown", [
    ("deit_s_deit", "deit", 300, 5, 10), ("deit_b_cutmix", "deit", 300, 5, 10),
    ("deit_s_saliencymix", "deit", 300, 5, 10),
    ("deit_s_transmix", "transmix", 300, 20, 10), ("deit_t_transmix", "transmix", 300, 20, 10),
    ("deit_b_transmix", "transmix", 300, 5, 10),
    ("deit_s_tokenmix", "tokenmix", 300, 5, 10), ("deit_b_tokenmix", "tokenmix", 300, 5, 10),
])
def test_recipe_schedule_is_the_official_one(name, loop, epochs, warmup, cooldown):
    cfg = load_config(os.path.join(CFG_DIR, name + ".yaml"))
    base, ours = ours_per_epoch(cfg)
    want = official_epoch_lrs(loop, base, epochs, warmup, cooldown)
    assert len(ours) == len(want), (name, len(ours), len(want))
    for e, (a, b) in enumerate(zip(ours, want)):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-15), (name, e, a, b)
    # a few epochs by hand (base = 1e-3 for every recipe at its official total batch)
    assert base == pytest.approx(1e-3)
    assert ours[0] == 1e-6
    if loop == "transmix":
        assert ours[1] == pytest.approx(1e-6 + (1e-3 - 1e-6) / warmup)
        # first epoch after the warm-up: the cosine at t = warmup, not base_lr (warmup_prefix=False)
        assert ours[warmup] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * warmup / 300)))
        assert ours[299] > 1e-5 and ours[300:] == [1e-5] * 10
    else:  # DeiT's main.py loop: one epoch late, epochs 0 and 1 both at warmup_lr
        assert ours[1] == 1e-6 and ours[2] == pytest.approx(1e-6 + (1e-3 - 1e-6) / warmup)
        assert ours[warmup + 1] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * warmup / 300)))
        assert ours[299] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 298 / 300)))
        if loop == "tokenmix":
            assert ours[300] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 299 / 300)))
            assert ours[301:] == [1e-5] * 9


def test_the_defaults_keep_the_per_step_schedule_bit_for_bit():
    cfg = load_config(os.path.join(CFG_DIR, "synthetic_deit.yaml"))
    oc = cfg["optim"]
    assert (oc["lr_unit"], oc["cooldown_epochs"], oc["lr_epoch_lag"]) == ("step", 0, 0)
    spe, epochs = 7, int(cfg["train"]["epochs"])
    fn = build_schedule(oc, 1e-3, spe, epochs * spe)
    warm = int(round(float(oc["warmup_epochs"]) * spe))
    for s in range(epochs * spe + 1):
        assert fn(s) == lr_at(s, epochs * spe, warm, 1e-3, float(oc["warmup_lr"]), float(oc["min_lr"]))
        assert fn(s, s // spe) == fn(s)


def test_per_step_cooldown_and_bad_values():
    oc = dict(load_config(os.path.join(CFG_DIR, "synthetic_deit.yaml"))["optim"], warmup_epochs=1,
              cooldown_epochs=2)
    fn = build_schedule(oc, 1.0, 10, 100)  # 10 epochs: cosine over steps 0..80, then min_lr
    assert fn(80) == pytest.approx(oc["min_lr"]) and fn(95) == fn(80)
    assert fn(40) == pytest.approx(lr_at(40, 80, 10, 1.0, oc["warmup_lr"], oc["min_lr"]))
    with pytest.raises(ValueError, match="cooldown_epochs"):
        build_schedule(dict(oc, cooldown_epochs=10), 1.0, 10, 100)
    with pytest.raises(ValueError, match="lr_epoch_lag"):
        build_schedule(dict(oc, lr_epoch_lag=1), 1.0, 10, 100)
    with pytest.raises(ValueError, match="lr_unit"):
        build_schedule(dict(oc, lr_unit="batch"), 1.0, 10, 100)


def test_epoch_unit_takes_the_loop_epoch_over_the_step_count():
    """Skipped (non-finite) steps do not shift the epoch: the engine passes the loop's epoch."""
    oc = dict(load_config(os.path.join(CFG_DIR, "deit_s_transmix.yaml"))["optim"])
    fn = build_schedule(oc, 1e-3, 10, 3100)
    assert fn(29, 3) == fn(30) != fn(29)


def test_train_interpolation_reaches_the_training_transform_only():
    cfg = load_config(os.path.join(CFG_DIR, "deit_s_transmix.yaml"))
    d = cfg["data"]
    assert (d["train_interpolation"], d["interpolation"]) == ("random", "bicubic")
    crop = build_transforms(d, train=True).transforms[0]
    assert isinstance(crop.interpolation, (tuple, list)) and len(crop.interpolation) == 2  # bilinear, bicubic
    assert "bicubic" in str(build_transforms(d, train=False).transforms[0]).lower()
    deit = load_config(os.path.join(CFG_DIR, "deit_s_deit.yaml"))["data"]
    assert deit["train_interpolation"] is None
    assert "bicubic" in str(build_transforms(deit, train=True).transforms[0].interpolation).lower()


def test_gradual_warmup_is_the_official_mixmo_rule_at_any_scale():
    """warmup_lr: gradual = base_lr / (W + 1) for W warm-up steps: the official GradualWarmupScheduler (step s at
    lr (s + 1) / 3128 on CIFAR MixMo, 3125 steps per epoch), bit for bit the number the recipe stated before, and
    still lr (s + 1) / W' when the warm-up is scaled (0.01 epochs: 31 steps, W' = 32)."""
    path = os.path.join(CFG_DIR, "..", "mixmo", "cifar100_wrn28_10_cut_mixmo.yaml")
    if not os.path.isfile(path):
        pytest.skip("configs/mixmo not in this tree")
    oc = load_config(path)["optim"]
    assert oc["warmup_lr"] == "gradual" and oc["lr"] == 0.0125
    spe, total = 3125, 300 * 3125
    fn = build_schedule(oc, 0.0125, spe, total)
    before = build_schedule(dict(oc, warmup_lr=3.996163682864451e-06), 0.0125, spe, total)  # 0.0125 / 3128
    for s in list(range(0, 3129, 17)) + [3126, 3127, 3128, 10 ** 5]:
        assert fn(s) == before(s)
        want = 0.0125 * (s + 1) / 3128 if s < 3128 else 0.0125 * 0.1 ** sum(s >= m * spe for m in (100, 200, 225))
        assert fn(s) == pytest.approx(want, rel=1e-12)
    short = build_schedule(dict(oc, warmup_epochs=0.01, milestones=[1, 2, 2.25]), 0.0125, spe, 3 * spe)
    for s in range(32):
        assert short(s) == pytest.approx(0.0125 * (s + 1) / 32, rel=1e-12)
    with pytest.raises(ValueError, match="warmup_lr"):
        build_schedule(dict(oc, warmup_lr="fast"), 0.0125, spe, total)
    assert build_schedule(dict(oc, warmup_lr="1e-6"), 0.0125, spe, total)(0) == 1e-6  # YAML's 1e-6 is text


def test_the_engine_trains_each_epoch_at_one_lr_with_lr_unit_epoch(synthetic_root, tmp_path):
    """A real (tiny) run: with the TransMix recipe's schedule keys the logged lr is constant within an epoch and
    follows the official per-epoch values (warm-up 1 epoch, cosine over 2, 1 cooldown epoch at min_lr)."""
    import json

    from pretrain.engine.train import train
    out = tmp_path / "run"
    cfg = load_config(os.path.join(CFG_DIR, "synthetic_transmix.yaml"), [
        f"data.root={synthetic_root}/imagenet", "data.num_classes=4", "data.img_size=32", "data.batch_size=16",
        "data.workers=0", "model.kwargs.img_size=32", "model.kwargs.depth=1", f"train.out_dir={out}",
        "train.epochs=3", "train.log_interval=1", "train.tensorboard=false", "optim.lr_unit=epoch",
        "optim.cooldown_epochs=1", "optim.warmup_epochs=1", "optim.lr=1e-3", "optim.lr_base_batch=16"])
    train(cfg)
    recs = [json.loads(x) for x in open(out / "steps.jsonl")]
    by_epoch = {}
    for r in recs:
        by_epoch.setdefault(r["epoch"], set()).add(r["lr"])
    assert sorted(by_epoch) == [0, 1, 2] and all(len(v) == 1 for v in by_epoch.values())
    lo, w0 = float(cfg["optim"]["min_lr"]), float(cfg["optim"]["warmup_lr"])
    want = [w0, lo + 0.5 * (1e-3 - lo) * (1 + math.cos(math.pi * 1 / 2)), lo]
    assert [by_epoch[e].pop() for e in range(3)] == pytest.approx(want, rel=1e-9)
