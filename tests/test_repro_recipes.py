"""The reproduction tables' recipes: the dry-run plan's ``# recipe:`` lines read from the configs, the number the
ImageNet table compares with the paper (as each method's official code reports it), and the scaled pretraining
schedule (cooldown, milestones). Helpers are test_repro's."""
import os

import pytest

from test_repro import REPO, _pretrain_run, entry, script, table_json


def test_scaled_pretrain_schedule_keeps_milestones_increasing_and_scales_the_cooldown():
    """MixMo's 100/200/225 of 300 epochs at 0.01 (3 epochs): fractional milestones at their share of the run
    instead of [1, 2, 2]; TransMix's cooldown (10 of 310 epochs) scales like the warm-up; lr levels stay."""
    from downstream.repro.scaling import pretrain_scaled_overrides
    cfg = {"train": {"epochs": 300}, "optim": {"warmup_epochs": 1.0006, "milestones": [100, 200, 225],
                                               "warmup_lr": 1e-6, "lr": 0.0125}}
    ov, s = pretrain_scaled_overrides(cfg, 0.01)
    assert s["milestones"] == [1, 2, 2.25] and "optim.milestones=[1,2,2.25]" in ov
    assert all(a < b for a, b in zip(s["milestones"], s["milestones"][1:])) and s["notes"]
    assert not any(o.startswith(("optim.warmup_lr", "optim.lr=")) for o in ov)
    ov, s = pretrain_scaled_overrides(cfg, 0.1)  # 30 epochs hold them as whole epochs
    assert s["milestones"] == [10, 20, 23] and not s["notes"]
    assert pretrain_scaled_overrides(cfg, 1.0)[1]["milestones"] == [100, 200, 225]
    tm = {"train": {"epochs": 310}, "optim": {"warmup_epochs": 20, "cooldown_epochs": 10}}
    assert pretrain_scaled_overrides(tm, 1.0)[0] == ["train.epochs=310", "optim.warmup_epochs=20.0",
                                                      "optim.cooldown_epochs=10"]
    ov, s = pretrain_scaled_overrides(tm, 0.1)
    assert (s["epochs"], s["warmup_epochs"], s["cooldown_epochs"]) == (31, 2.0, 1)
    ov, s = pretrain_scaled_overrides(tm, 0.01)
    assert (s["epochs"], s["cooldown_epochs"]) == (3, 0.0968)  # 10 x 3 / 310
    # the engine takes fractional milestones (in steps) and the scaled cooldown
    from pretrain.engine.optim import build_schedule
    fn = build_schedule({"schedule": "multistep", "milestones": [1, 2, 2.25], "gamma": 0.1, "warmup_epochs": 0,
                         "warmup_lr": 0.0}, 1.0, 100, 300)
    assert [fn(s) for s in (99, 100, 200, 224, 225)] == pytest.approx([1.0, 0.1, 0.01, 0.01, 0.001])


def _plan_block(out, row_id):
    lines = out.splitlines()
    start = lines.index(next(x for x in lines if x.startswith(f"# --- {row_id}:")))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("# --- ")), len(lines))
    return "\n".join(lines[start:end])


def test_dry_run_plan_shows_each_rows_recipe(tmp_path, capsys):
    """The plan's ``# recipe:`` lines carry the values the row's run will use, read here from the configs."""
    from downstream.repro.recipe import fmt
    from pretrain.engine.config import load_config

    tm = load_config(os.path.join(REPO, "configs", "pretrain", "deit_s_transmix.yaml"))
    assert script("imagenet").main(["--dry-run", "--out", str(tmp_path / "im"), "--only", "deit_s_transmix",
                                    "--nproc", "8"]) == 0
    block = _plan_block(capsys.readouterr().out, "deit_s_transmix")
    o = tm["optim"]
    assert (o["warmup_epochs"], o["cooldown_epochs"]) == (20, 10)  # the official config's, at scale 1
    assert f"warm-up {fmt(float(o['warmup_epochs']))} epochs" in block
    assert f"epochs {tm['train']['epochs']} ({fmt(300.0)} cosine + {fmt(float(o['cooldown_epochs']))} cooldown" in block
    assert f"total batch {8 * tm['data']['batch_size']} " in block and "train interpolation random" in block
    assert "reported the EMA's best" in block
    # DeiT-B TransMix: its own total batch (256), not DeiT's 1024
    assert script("imagenet").main(["--dry-run", "--out", str(tmp_path / "im"), "--only", "deit_b_transmix"]) == 0
    assert "total batch 256 (32/process x 8" in _plan_block(capsys.readouterr().out, "deit_b_transmix")

    mm = script("mixmo_cifar100")
    cfg_file = os.path.join(REPO, "configs", "mixmo", "cifar100_wrn28_10_cut_mixmo.yaml")
    if not os.path.isfile(cfg_file):
        pytest.skip("configs/mixmo not in this tree")
    mc = load_config(cfg_file)
    assert (mc["optim"]["lr"], mc["mixmo"]["l2_reg"]) == (0.0125, 3e-4)  # the official CIFAR recipe
    assert mm.main(["--dry-run", "--scale", "0.01", "--out", str(tmp_path / "mm"), "--only", "cut_mixmo"]) == 0
    block = _plan_block(capsys.readouterr().out, "cut_mixmo")
    assert f"lr {fmt(mc['optim']['lr'])} " in block and f"L2 {fmt(mc['mixmo']['l2_reg'])};" in block
    assert f"{mc['data']['batch_size']} images x {mc['mixmo']['batch_repeat']} repetitions" in block
    assert "milestones [1,2,2.25]" in block and "# note: optim.milestones" in block  # scaled 100/200/225 of 300
    assert f"per {mc['mixmo']['anneal_unit']}" in block


def test_imagenet_table_compares_the_number_the_official_code_reports(tmp_path):
    """DeiT/CutMix: the model's best (DeiT main.py evaluates the model only); TransMix: the EMA's best (train.py
    eval_metrics = ema_eval_metrics); TokenMix: max over the model and its EMA (main.py max_accuracy)."""
    out = tmp_path / "imagenet"
    runs = out / "runs"
    _pretrain_run(str(runs / "deit_s_deit"), 3, best=70.0, final=69.5, ema=70.4)
    _pretrain_run(str(runs / "deit_s_transmix"), 3, best=72.5, final=72.0, ema=71.0)
    _pretrain_run(str(runs / "deit_s_tokenmix"), 3, best=71.0, final=70.0, ema=71.6)
    _pretrain_run(str(runs / "deit_t_tokenmix"), 3, best=61.0, final=60.0, ema=60.5)
    assert script("imagenet").main(["--collect", "--scale", "0.01", "--out", str(out)]) == 0
    tab = table_json(str(out))
    got = {r: entry(tab, r, "top-1 (best epoch)")["ours"]
           for r in ("deit_s_deit", "deit_s_transmix", "deit_s_tokenmix", "deit_t_tokenmix")}
    assert got == {"deit_s_deit": 70.0, "deit_s_transmix": 71.0, "deit_s_tokenmix": 71.6, "deit_t_tokenmix": 61.0}
    md = (out / "table.md").read_text()
    assert "71.00: the EMA's best | 72.50 |" in md and "the EMA's best" in " ".join(tab["notes"])
    assert "1024 for deit_t_deit" in tab["context"]["batch"] and "256 for deit_b_transmix" in tab["context"]["batch"]
