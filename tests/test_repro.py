"""The reproduction tables (downstream/repro, run by tools/repro/*.py and vitmix-repro): schedule
scaling, dry-run commands accepted by the real config loaders, tables collected from run folders in
the tools' real formats, and one real synthetic pretraining row end to end."""
import importlib
import importlib.util
import json
import os
import shlex

import pytest
import yaml

from downstream.repro.configs import d2_config, mm_check_options
from downstream.repro.errors import ReproError
from downstream.repro.paths import DATA
from downstream.repro.rows import Row, select_rows
from downstream.repro.scaling import d2_scaled_overrides, scale_epochs, scale_iters

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script(name):
    """The table module behind ``tools/repro/<name>.py`` and ``vitmix-repro <name>``."""
    return importlib.import_module(f"downstream.repro.tables.{name}")


def table_json(out, stem="table"):
    with open(os.path.join(out, f"{stem}.json")) as f:
        return json.load(f)


def entry(tab, row_id, metric):
    hits = [e for e in tab["entries"] if e["row_id"] == row_id and e["metric"] == metric]
    assert len(hits) == 1, (row_id, metric, [(e["row_id"], e["metric"]) for e in tab["entries"]])
    return hits[0]


# ------------------------------------------------------------------------------------ scaling
def test_scale_epochs_by_hand():
    assert scale_epochs(300, 5, 1.0) == (300, 5.0)           # the paper's schedule unchanged
    assert scale_epochs(300, 5, 0.01) == (3, 0.05)           # 3 epochs, warm-up 5/300 of them
    assert scale_epochs(300, 5, 0.001) == (1, 0.0167)        # never below one epoch; 5/300 = 0.01667
    assert scale_epochs(8, 1, 0.125) == (1, 0.125)
    assert scale_epochs(300, 0, 0.5) == (150, 0.0)
    assert scale_epochs(300, 5, 0.005) == (2, 0.0333)        # round half up: 1.5 -> 2
    with pytest.raises(ReproError):
        scale_epochs(300, 5, 0.0)


def test_scale_iters_by_hand():
    # ViTDet 100-epoch schedule at 1 %: 1843.75 -> 1844 iterations, r = 1844 / 184375
    s = scale_iters(184375, 0.01, warmup=250, milestones=[163889, 177546],
                    intervals={"val": 46093, "ckpt": 5000})
    assert s["iters"] == 1844
    assert s["warmup"] == 3                 # 250 r = 2.5003
    assert s["milestones"] == [1639, 1776]  # 1639.13, 1775.70
    assert s["val"] == 461 and s["ckpt"] == 50   # 460.998, 50.008
    # Segmenter's 160k at 1 %
    s = scale_iters(160000, 0.01, intervals={"val": 16000})
    assert (s["iters"], s["val"], s["milestones"]) == (1600, 160, [])
    # absurdly small: still a valid multi-step schedule (0 < m1 < m2 < iters), warm-up kept
    s = scale_iters(184375, 1e-6, warmup=250, milestones=[163889, 177546])
    assert s == {"iters": 3, "warmup": 1, "milestones": [1, 2]}
    assert scale_iters(300, 1.0, warmup=10, milestones=[270], intervals={"v": 300}) == \
        {"iters": 300, "warmup": 10, "milestones": [270], "v": 300}


def test_scaled_d2_schedule_builds_with_fvcore():
    """At a tiny scale the Detectron2 overrides still instantiate a valid multi-step scheduler."""
    pytest.importorskip("detectron2")
    from detectron2.config import instantiate

    cfg_file = os.path.join(REPO, "configs/detectron2/mask_rcnn_vitmix_deit_s_100ep.py")
    ov, sched = d2_scaled_overrides(d2_config(cfg_file), 1e-5)
    cfg = d2_config(cfg_file, ov)
    lr = instantiate(cfg.lr_multiplier)  # fvcore raises on milestones outside (0, num_updates)
    assert cfg.train.max_iter == sched["iters"] == 3
    assert list(cfg.lr_multiplier.scheduler.milestones) == [1, 2]
    assert lr(0.0) < lr(0.5)  # warm-up then the first plateau


# ------------------------------------------------------------------------------ dry runs
def _pretrain_cmd(argv):
    i = argv.index(os.path.join(REPO, "tools", "pretrain.sh"))
    rest = argv[i + 1:]
    if rest and rest[0] == "--nproc":
        rest = rest[2:]
    return rest[0], [a for a in rest[1:] if a != "--resume" and a != "auto"]


def _cfg_options(argv):
    return argv[argv.index("--cfg-options") + 1:]


def test_dry_run_imagenet_and_peers_configs_load(tmp_path, capsys):
    from pretrain.engine.config import load_config

    im = script("imagenet")
    args, rows, _ = im.parse(["--scale", "0.01", "--out", str(tmp_path / "imagenet"), "--nproc", "8"])
    assert len(rows) == 12
    for row in rows:
        cfg_file, ov = _pretrain_cmd(row.steps[0].argv)
        cfg = load_config(cfg_file, ov)  # the real loader accepts every override
        recipe = load_config(cfg_file)  # each recipe's own warm-up (TransMix DeiT-S/T: 20), scaled like the epochs
        assert cfg["train"]["epochs"] == 3
        e0 = recipe["train"]["epochs"]  # 300, or 310 with the official 10 cooldown epochs (TransMix, TokenMix)
        assert cfg["optim"]["warmup_epochs"] == pytest.approx(recipe["optim"]["warmup_epochs"] * 3 / e0, abs=1e-4)
        assert cfg["optim"]["cooldown_epochs"] == pytest.approx(recipe["optim"]["cooldown_epochs"] * 3 / e0, abs=1e-4)
        assert cfg["train"]["out_dir"] == str(tmp_path / "imagenet" / "runs" / row.id)
        assert cfg["data"]["root"] == DATA["imagenet"]
        assert row.steps[0].argv[row.steps[0].argv.index("--nproc") + 1] == "8"
    # the run folder's resume command continues with --resume auto
    assert "--resume auto" in rows[0].steps[0].command(resume=True)

    pe = script("peers")
    args, rows, _ = pe.parse(["--scale", "0.01", "--out", str(tmp_path / "peers")])
    by = {r.id: r for r in rows}
    assert set(by) == {"deit_s_deit", "deit_s_cutmix", "deit_s_saliencymix", "deit_s_attentive_cutmix",
                       "deit_s_puzzlemix", "deit_s_transmix", "throughput"}
    for rid in ("deit_s_saliencymix", "deit_s_attentive_cutmix", "deit_s_puzzlemix"):
        cfg_file, ov = _pretrain_cmd(by[rid].steps[0].argv)
        cfg = load_config(cfg_file, ov)
        assert cfg["mixer"]["name"] == rid[len("deit_s_"):]
        assert cfg["model"]["name"] == "deit_small_patch16_224"
        assert "cutmix_alpha" not in cfg["mixer"]  # the peer replaced the DeiT mixer, not merged into it
        from pretrain.mixing import build_mixer
        if rid != "deit_s_attentive_cutmix":  # (needs its CNN checkpoint file)
            build_mixer(cfg["mixer"], 1000)
    # the shared rows are the imagenet table's run folders
    assert by["deit_s_transmix"].dir == str(tmp_path / "imagenet" / "runs" / "deit_s_transmix")
    bench = script_module_bench()
    mixers = by["throughput"].steps[0].argv[by["throughput"].steps[0].argv.index("--mixers") + 1].split(",")
    assert set(mixers) <= set(bench.ALL)

    # --dry-run prints the exact commands and creates nothing
    assert im.main(["--dry-run", "--scale", "0.01", "--out", str(tmp_path / "dry"), "--only", "deit_s_*"]) == 0
    out = capsys.readouterr().out
    cmds = [line for line in out.splitlines() if line.startswith("bash ")]
    assert len(cmds) == 4 and all("train.epochs=3" in c for c in cmds)
    assert shlex.split(cmds[0])[2].endswith("configs/pretrain/deit_s_deit.yaml")
    assert not (tmp_path / "dry").exists()


def test_shim_and_console_script_print_the_same_plan(tmp_path, capsys):
    """``python tools/repro/imagenet.py`` (the documented command, a shim) and ``vitmix-repro imagenet``
    (downstream.repro.cli) print the same dry-run plan; unknown tables are refused."""
    import subprocess
    import sys

    from downstream.repro.cli import TABLES, main

    argv = ["--dry-run", "--scale", "0.01", "--out", str(tmp_path / "im"), "--only", "deit_s_*"]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    shim = subprocess.run([sys.executable, os.path.join(REPO, "tools", "repro", "imagenet.py"), *argv],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert shim.returncode == 0, shim.stderr
    assert main(["imagenet", *argv]) == 0
    assert capsys.readouterr().out == shim.stdout and shim.stdout.count("\nbash ") == 4
    assert set(TABLES) == {os.path.basename(f)[:-3] for f in os.listdir(os.path.join(REPO, "tools", "repro"))
                           if f.endswith(".py")}
    assert main(["nosuch"]) == 2 and "unknown table" in capsys.readouterr().err
    assert main(["--list"]) == 0 and "mixmo_cifar100" in capsys.readouterr().out


def script_module_bench():
    spec = importlib.util.spec_from_file_location("bench_mixers", os.path.join(REPO, "tools", "bench_mixers.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_dry_run_mmseg_mmdet_options_accepted(tmp_path):
    pytest.importorskip("mmseg")
    pytest.importorskip("mmdet")
    ade = script("ade20k")
    args, rows, _ = ade.parse(["--scale", "0.01", "--out", str(tmp_path / "ade20k")])
    assert len(rows) == 12
    row = next(r for r in rows if r.id == "mask_deit_s_transmix")
    train, ss, ms = row.steps
    cfg = mm_check_options(train.argv[3], _cfg_options(train.argv))  # every key exists, then merged
    assert cfg.train_cfg.max_iters == 1600 and cfg.train_cfg.val_interval == 160
    assert cfg.default_hooks.checkpoint.interval == 160 and cfg.param_scheduler[0].end == 1600
    assert cfg.model.backbone.pretrained == str(tmp_path / "imagenet" / "runs" / "deit_s_transmix" / "best.safetensors")
    assert cfg.test_dataloader.dataset.data_root == DATA["ade"]
    for test in (ss, ms):
        tcfg = mm_check_options(test.argv[3], _cfg_options(test.argv))
        assert tcfg.model.backbone.pretrained is None
        assert test.argv[test.argv.index("--checkpoint") + 1].endswith("train/iter_1600.pth")
    assert "--tta" in ms.argv and "--tta" not in ss.argv and "tta_model" in cfg

    coco = script("coco")
    args, rows, _ = coco.parse(["--scale", "0.01", "--framework", "mmdet", "--out", str(tmp_path / "coco"),
                                "--nproc", "8"])
    row = next(r for r in rows if r.id == "maskrcnn_deit_b_transmix")
    train, test = row.steps
    assert train.argv[train.argv.index("--gpus") + 1] == "8"
    cfg = mm_check_options(train.argv[3], _cfg_options(train.argv))
    assert cfg.train_cfg.max_iters == 1844 and cfg.param_scheduler[0].end == 3
    assert cfg.param_scheduler[1].milestones == [1639, 1776] and cfg.param_scheduler[1].end == 1844
    assert cfg.val_evaluator.ann_file == "/data/coco/annotations/instances_val2017.json"
    tcfg = mm_check_options(test.argv[3], _cfg_options(test.argv))
    assert tcfg.test_evaluator.img_dir == "/data/coco/val2017/"
    with pytest.raises(ReproError, match="does not exist"):
        mm_check_options(train.argv[3], ["train_cfg.max_iter=5"])  # a typo is refused, not added


def test_dry_run_detectron2_and_synthetic_overrides_accepted(tmp_path, synthetic_root, monkeypatch):
    pytest.importorskip("detectron2")
    coco = script("coco")
    args, rows, _ = coco.parse(["--scale", "0.01", "--framework", "detectron2", "--out", str(tmp_path / "c")])
    train, test = next(r for r in rows if r.id == "maskrcnn_deit_t_cutmix").steps
    cf = train.argv[train.argv.index("--config-file") + 1]
    ov = train.argv[train.argv.index("--config-file") + 2:]
    cfg = d2_config(cf, ov)
    assert cfg.train.max_iter == 1844 and list(cfg.lr_multiplier.scheduler.milestones) == [1639, 1776]
    assert cfg.datasets.vitmix_coco_2017_val.json_file == "/data/coco/annotations/instances_val2017.json"
    tov = [a for a in test.argv[test.argv.index("--config-file") + 2:] if a != "--eval-only"]
    tcfg = d2_config(cf, tov)
    assert tcfg.train.init_checkpoint.endswith("train/model_final.pth") and tcfg.model.backbone.pretrained is None
    # synthetic variants read the world through VITMIX_SYNTHETIC_DIR
    monkeypatch.setenv("VITMIX_SYNTHETIC_DIR", str(synthetic_root))
    args, rows, _ = coco.parse(["--synthetic", "--data", str(synthetic_root), "--scale", "0.5",
                                "--framework", "detectron2", "--out", str(tmp_path / "s")])
    train = rows[0].steps[0]
    assert train.env == {"VITMIX_SYNTHETIC_DIR": str(synthetic_root)}
    cfg = d2_config(train.argv[train.argv.index("--config-file") + 1], train.argv[train.argv.index("--config-file") + 2:])
    assert cfg.train.max_iter == 30 and cfg.model.roi_heads.num_classes == 4


def test_dry_run_analysis_and_mixmo_commands_parse(tmp_path, synthetic_root):
    from pretrain.analysis.cli import build_parser

    parser = build_parser()
    rob = script("robustness")
    args, rows, _ = rob.parse(["--scale", "0.5", "--out", str(tmp_path / "rob"), "--methods", "deit", "transmix",
                               "--amp", "bf16"])
    for row in rows:
        argv = row.steps[0].argv
        ns = parser.parse_args(argv[argv.index(os.path.join(REPO, "tools", "analyze.py")) + 1:])
        assert ns.amp == "bf16" and len(ns.ckpt) == 2
        # nominal sizes (no /data here): ceil(50000/128) = 391 batches, half 195.5 -> 196;
        # ImageNet-A ceil(7500/128) = 59, half 29.5 -> 30
        assert ns.max_batches == (30 if ns.study == "natural-adversarial" else 196)
    att = script("attention")
    args, rows, _ = att.parse(["--synthetic", "--data", str(synthetic_root), "--out", str(tmp_path / "att"),
                               "--keep-mass", "0.5", "0.6"])
    for row in rows:
        argv = row.steps[0].argv
        ns = parser.parse_args(argv[argv.index(os.path.join(REPO, "tools", "analyze.py")) + 1:])
        assert ns.keep_mass == [0.5, 0.6] and ns.max_batches is None  # scale 1: the whole set
    mm = script("mixmo_cifar100")
    args, rows, _ = mm.parse(["--scale", "0.01", "--out", str(tmp_path / "mm")])
    assert [r.id for r in rows] == ["vanilla", "cutmix", "linear_mixmo", "cut_mixmo", "cut_mixmo_cutmix"]
    present = [r for r in rows if r.steps]
    if not present:
        pytest.skip("configs/mixmo/cifar100_wrn28_10_*.yaml not in this tree")
    from pretrain.engine.config import load_config
    for row in present:
        cfg_file, ov = _pretrain_cmd(row.steps[-1].argv)
        cfg = load_config(cfg_file, ov)
        e0 = load_config(cfg_file)["train"]["epochs"]
        assert cfg["train"]["epochs"] == max(1, int(e0 * 0.01 + 0.5)) and cfg["data"]["root"] == DATA["cifar100"]


def test_only_patterns():
    rows = [Row(i, i, "/x", []) for i in ("deit_s_cutmix", "deit_s_transmix", "deit_b_transmix")]
    assert [r.id for r in select_rows(rows, ["*_transmix"])] == ["deit_s_transmix", "deit_b_transmix"]
    assert [r.id for r in select_rows(rows, ["deit_s_cutmix"])] == ["deit_s_cutmix"]
    with pytest.raises(ReproError, match="no such row"):
        select_rows(rows, ["deit_x"])


# --------------------------------------------------------------------------------- collect
def _row_meta(d, scale, synthetic=False):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "repro_row.json"), "w") as f:
        json.dump({"scale": scale, "synthetic": synthetic}, f)


def _pretrain_run(d, epochs, best, final, ema=None, speeds=(100.0, 300.0, 320.0, 310.0), stopped=None, scale=0.01):
    """A run folder as pretrain/engine/train.py writes it."""
    _row_meta(d, scale)
    with open(os.path.join(d, "config.yaml"), "w") as f:
        yaml.safe_dump({"train": {"epochs": epochs}}, f)
    with open(os.path.join(d, "metrics.jsonl"), "w") as f:
        for e, s in enumerate(speeds):
            f.write(json.dumps({"epoch": e, "step": 10 * (e + 1), "train_loss": 3.0, "img_per_s": s,
                                "val_top1": final - 1, "val_top5": 90.0}) + "\n")
    with open(os.path.join(d, "summary.json"), "w") as f:
        json.dump({"out_dir": d, "best_top1": best, "best_ema_top1": ema, "steps": 40, "skipped_steps": 0,
                   "bad_images": 0, "stopped": stopped,
                   "final": {"epoch": epochs - 1, "val_top1": final, "img_per_s": speeds[-1]}}, f)


def test_collect_imagenet_and_peers(tmp_path):
    out = tmp_path / "imagenet"
    runs = out / "runs"
    _pretrain_run(str(runs / "deit_s_deit"), 3, best=70.0, final=69.5, ema=70.4)
    _pretrain_run(str(runs / "deit_s_transmix"), 3, best=72.5, final=72.0)
    _pretrain_run(str(runs / "deit_b_deit"), 3, best=60.0, final=60.0, stopped="signal SIGTERM")  # interrupted
    _pretrain_run(str(runs / "deit_t_deit"), 3, best=50.0, final=50.0, scale=0.5)  # another scale
    im = script("imagenet")
    assert im.main(["--collect", "--scale", "0.01", "--out", str(out)]) == 0
    tab = table_json(str(out))
    assert tab["scale"] == 0.01 and tab["smoke"] is True
    e = entry(tab, "deit_s_transmix", "top-1 (best epoch)")
    assert e["ours"] == 72.5 and e["paper"] == 80.7 and e["diff"] == pytest.approx(72.5 - 80.7)
    e = entry(tab, "deit_s_deit", "top-1 (best epoch)")
    assert e["ours"] == 70.0 and e["paper"] == 79.8
    assert entry(tab, "deit_s_cutmix", "top-1 (best epoch)")["ours"] is None
    assert entry(tab, "deit_s_cutmix", "top-1 (best epoch)")["missing"].startswith("not run")
    assert entry(tab, "deit_t_cutmix", "top-1 (best epoch)")["paper"] is None  # no paper number quoted
    b = entry(tab, "deit_b_deit", "top-1 (best epoch)")
    assert b["ours"] is None and "unfinished" in b["missing"]
    t = entry(tab, "deit_t_deit", "top-1 (best epoch)")
    assert t["ours"] is None and "scale 0.5" in t["missing"]
    gain = [g for g in tab["gains"] if g["row"] == "DeiT-S: TransMix − DeiT"][0]
    assert gain["ours"] == pytest.approx(2.5) and gain["paper"] == 0.9
    md = (out / "table.md").read_text()
    assert "SMOKE RUN" in md and "| DeiT-S + CutMix | top-1 (best epoch) | — (not run" in md

    # peers: shares the imagenet runs; run throughput = median over epochs after the first
    pout = tmp_path / "peers"
    _pretrain_run(str(pout / "runs" / "deit_s_puzzlemix"), 3, best=65.0, final=64.0, speeds=(50.0, 90.0, 110.0, 100.0))
    bench = pout / "runs" / "throughput"
    _row_meta(str(bench), 0.01)
    with open(bench / "bench_mixers.json", "w") as f:
        json.dump({"device": "cpu", "torch": "x", "timm": "y",
                   "rows": [{"mixer": "cutmix", "img_per_s": 500.0}, {"mixer": "transmix", "img_per_s": 480.0},
                            {"mixer": "puzzlemix", "img_per_s": 200.0}]}, f)
    pe = script("peers")
    assert pe.main(["--collect", "--scale", "0.01", "--out", str(pout)]) == 0
    tab = table_json(str(pout))
    assert entry(tab, "deit_s_puzzlemix", "top-1 (best epoch)")["ours"] == 65.0
    assert entry(tab, "deit_s_puzzlemix", "train img/s (run, median epoch)")["ours"] == 100.0  # median(90,110,100)
    assert entry(tab, "deit_s_puzzlemix", "train img/s (bench_mixers, one step)")["ours"] == 200.0
    assert entry(tab, "deit_s_transmix", "top-1 (best epoch)")["ours"] == 72.5  # the imagenet table's run
    assert entry(tab, "deit_s_transmix", "train img/s (bench_mixers, one step)")["ours"] == 480.0
    assert entry(tab, "deit_s_saliencymix", "train img/s (bench_mixers, one step)")["ours"] is None
    assert entry(tab, "deit_s_deit", "train img/s (bench_mixers, one step)")["ours"] is None


def _mm_test_result(work_dir, metrics, ts="20261123_101010"):
    d = os.path.join(work_dir, ts)
    os.makedirs(os.path.join(d, "vis_data"), exist_ok=True)
    with open(os.path.join(d, f"{ts}.json"), "w") as f:  # MMEngine LoggerHook.after_test_epoch
        json.dump(metrics, f)


def test_collect_ade20k_and_coco(tmp_path):
    out = tmp_path / "ade20k"
    for rid, ss, ms in (("mask_deit_s_deit", 40.0, 41.5), ("mask_deit_s_transmix", 41.2, 42.0)):
        _row_meta(str(out / "runs" / rid), 1.0)
        _mm_test_result(str(out / "runs" / rid / "test_ss"), {"aAcc": 80.0, "mIoU": ss, "mAcc": 50.0})
        _mm_test_result(str(out / "runs" / rid / "test_ms"), {"aAcc": 81.0, "mIoU": ms, "mAcc": 51.0})
    _row_meta(str(out / "runs" / "linear_deit_s_deit"), 1.0)  # started, no test yet
    ade = script("ade20k")
    assert ade.main(["--collect", "--out", str(out), "--only", "*_deit_s_*"]) == 0
    tab = table_json(str(out))
    assert tab["smoke"] is False
    assert entry(tab, "mask_deit_s_transmix", "mIoU ms")["ours"] == 42.0
    assert entry(tab, "mask_deit_s_deit", "mIoU ss")["ours"] == 40.0
    miss = entry(tab, "linear_deit_s_deit", "mIoU ss")
    assert miss["ours"] is None and "unfinished" in miss["missing"]
    g = [g for g in tab["gains"] if g["row"] == "DeiT-S Segmenter: TransMix − DeiT"][0]
    assert g["ours"] == pytest.approx(1.2) and g["paper"] == 0.9 and g["diff"] == pytest.approx(0.3)

    coco = script("coco")
    out = tmp_path / "coco"
    for rid, box, mask in (("maskrcnn_deit_s_cutmix", 0.441, 0.392), ("maskrcnn_deit_s_transmix", 0.447, 0.399)):
        _row_meta(str(out / "runs" / "mmdet" / rid), 1.0)
        _mm_test_result(str(out / "runs" / "mmdet" / rid / "test"), {"coco/bbox_mAP": box, "coco/segm_mAP": mask,
                                                                    "coco/bbox_mAP_50": 0.6})
    assert coco.main(["--collect", "--framework", "mmdet", "--out", str(out), "--only", "maskrcnn_deit_s_*"]) == 0
    tab = table_json(str(out), "table_mmdet")
    assert entry(tab, "maskrcnn_deit_s_transmix", "box AP")["ours"] == pytest.approx(44.7)
    assert entry(tab, "maskrcnn_deit_s_cutmix", "mask AP")["ours"] == pytest.approx(39.2)
    box_gain = [g for g in tab["gains"] if g["metric"] == "box AP"][0]
    assert box_gain["ours"] == pytest.approx(0.6) and box_gain["paper"] == 0.5
    # Detectron2: metrics_eval.json of the eval-only run; a train-only row falls back to nothing
    rid = "maskrcnn_deit_s_transmix"
    d = out / "runs" / "detectron2" / rid / "test"
    _row_meta(str(d.parent), 1.0)
    d.mkdir(parents=True)
    (d / "metrics_eval.json").write_text(json.dumps({"bbox": {"AP": 45.25, "AP50": 66.0}, "segm": {"AP": 40.5}}))
    d2 = out / "runs" / "detectron2" / "maskrcnn_deit_s_cutmix" / "test"
    _row_meta(str(d2.parent), 1.0)
    d2.mkdir(parents=True)
    with open(d2 / "metrics.json", "w") as f:  # Detectron2's JSONWriter lines
        f.write(json.dumps({"iteration": 9, "total_loss": 1.0}) + "\n")
        f.write(json.dumps({"iteration": 19, "bbox/AP": 43.0, "segm/AP": 38.0}) + "\n")
    assert coco.main(["--collect", "--framework", "detectron2", "--out", str(out), "--only", "maskrcnn_deit_s_*"]) == 0
    tab = table_json(str(out), "table_detectron2")
    assert entry(tab, rid, "box AP")["ours"] == 45.25 and entry(tab, rid, "mask AP")["ours"] == 40.5
    assert entry(tab, "maskrcnn_deit_s_cutmix", "mask AP")["ours"] == 38.0


def test_a_detector_without_detections_is_reported_not_failed(tmp_path):
    """Early in training a detector scores background everywhere: MMDet's CocoMetric returns nothing and
    logs that the results are empty, Detectron2 reports NaN AP. The test step counts as done and the table
    says why there is no AP."""
    coco = script("coco")
    out = tmp_path / "coco"
    rid = "maskrcnn_deit_s_transmix"
    test = out / "runs" / "mmdet" / rid / "test"
    _row_meta(str(test.parent), 1.0)
    _mm_test_result(str(test), {})  # LoggerHook wrote no metric
    ts = "20261123_101010"
    (test / ts / f"{ts}.log").write_text("Evaluating bbox...\nERROR - compute_metrics - 465 - "
                                         "The testing results of the whole dataset is empty.\n")
    args, rows, _ = coco.parse(["--framework", "mmdet", "--out", str(out), "--only", rid])
    row = [r for r in rows if r.id == rid][0]
    assert row.steps[-1].name == "test" and row.steps[-1].done()
    assert coco.main(["--collect", "--framework", "mmdet", "--out", str(out), "--only", rid]) == 0
    e = entry(table_json(str(out), "table_mmdet"), rid, "box AP")
    assert e["ours"] is None and "no detections" in e["missing"]
    # without that log line the result is simply missing, and the test step is not done
    (test / ts / f"{ts}.log").write_text("Evaluating bbox...\n")
    assert not row.steps[-1].done()
    # Detectron2: NaN AP from COCOEvaluator
    d = out / "runs" / "detectron2" / rid / "test"
    _row_meta(str(d.parent), 1.0)
    d.mkdir(parents=True)
    (d / "metrics_eval.json").write_text(json.dumps({"bbox": {"AP": float("nan")}, "segm": {"AP": float("nan")}}))
    args, rows, _ = coco.parse(["--framework", "detectron2", "--out", str(out), "--only", rid])
    assert [r for r in rows if r.id == rid][0].steps[-1].done()
    assert coco.main(["--collect", "--framework", "detectron2", "--out", str(out), "--only", rid]) == 0
    e = entry(table_json(str(out), "table_detectron2"), rid, "mask AP")
    assert e["ours"] is None and "no detections" in e["missing"]


def test_collect_analysis_and_mixmo(tmp_path):
    from pretrain.analysis.common import write_results

    out = tmp_path / "rob"
    names = ["deit_s_deit", "deit_s_transmix"]
    occ = [{"checkpoint": n, "mode": m, "ratio": r, "dropped_patches": int(r * 196), "num_patches": 196,
            "top1": 80.0 - 50 * r - (0 if n.endswith("transmix") else 5) - (10 if m == "salient" else 0),
            "correct": 1, "images": 10, "saliency": "self"}
           for n in names for m in ("random", "salient", "nonsalient") for r in (0.0, 0.5, 0.9)]
    shf = [{"checkpoint": n, "grid_size": g, "piece_px": 1, "top1": v, "correct": 1, "images": 10}
           for n, vals in zip(names, ([70.0, 60.0, 45.0], [72.0, 64.0, 52.0]))
           for g, v in zip([1, 4, "mean"], vals)]
    for rid, study, rows in (("occlusion", "occlusion", occ), ("shuffle", "shuffle", shf)):
        _row_meta(str(out / "runs" / rid), 1.0)
        write_results(str(out / "runs" / rid), study, rows, {"checkpoints": {}})  # the analysis writer
    rob = script("robustness")
    assert rob.main(["--collect", "--out", str(out)]) == 0
    tab = table_json(str(out))
    assert entry(tab, "deit_s_transmix", "shuffle average")["ours"] == 52.0
    e = entry(tab, "deit_s_deit", "shuffle average")
    assert e["ours"] == 45.0 and e["paper"] == 58.4 and e["diff"] == pytest.approx(45.0 - 58.4)
    assert entry(tab, "deit_s_transmix", "occlusion salient 0.5")["ours"] == pytest.approx(80 - 25 - 10)
    assert entry(tab, "deit_s_deit", "occlusion random 0.9")["ours"] == pytest.approx(80 - 45 - 5)
    assert entry(tab, "deit_s_deit", "imagenet-a top-1")["ours"] is None
    assert "| DeiT-S · TransMix | random | 80.0 | 55.0 | 35.0 |" in (out / "table.md").read_text()

    out = tmp_path / "att"
    att_rows = [{"checkpoint": n, "keep_mass": 0.6, "jaccard": j, "jaccard_dataset": j + 1, "mask_area": 30.0,
                 "seg_images": 5} for n, j in zip(names, (40.0, 44.0))]
    _row_meta(str(out / "runs" / "voc_jaccard"), 1.0)
    write_results(str(out / "runs" / "voc_jaccard"), "attention", att_rows, {})
    att = script("attention")
    assert att.main(["--collect", "--out", str(out)]) == 0
    tab = table_json(str(out))
    assert entry(tab, "deit_s_transmix", "Jaccard (mean per image), keep mass 0.6")["ours"] == 44.0
    assert entry(tab, "deit_s_deit", "WSOL GT-known loc. (IoU ≥ 0.5), keep mass 0.6")["ours"] is None

    out = tmp_path / "mixmo"
    for rid, top1 in (("cut_mixmo", 85.7), ("vanilla", 81.0)):
        d = out / "runs" / rid
        _row_meta(str(d), 1.0)
        (d / "eval.json").write_text(json.dumps({"ensemble": {"top1": top1, "nll": 0.6, "ece": 0.02, "n": 10000},
                                                 "heads": [{"top1": top1 - 1}, {"top1": top1 - 1.2}], "epoch": 299}))
    mm = script("mixmo_cifar100")
    assert mm.main(["--collect", "--out", str(out)]) == 0
    tab = table_json(str(out))
    e = entry(tab, "cut_mixmo", "ensemble top-1")
    assert e["ours"] == 85.7 and e["paper"] == [85.5, 85.6] and e["diff"] == pytest.approx(0.1)  # above the range
    e = entry(tab, "vanilla", "ensemble top-1")
    assert e["paper"] == 81.8 and e["diff"] == pytest.approx(-0.8)
    assert entry(tab, "linear_mixmo", "ensemble top-1")["paper"] is None
    assert entry(tab, "cutmix", "ensemble top-1")["ours"] is None


# ---------------------------------------------------------------------------- a real smoke
@pytest.mark.slow
def test_synthetic_imagenet_row_end_to_end(tmp_path, synthetic_root, capsys):
    """One real pretraining row through tools/pretrain.sh on the tiny synthetic world; the table's
    number is the run's summary.json; a second call skips the finished row."""
    im = script("imagenet")
    out = tmp_path / "imagenet"
    argv = ["--synthetic", "--data", str(synthetic_root), "--out", str(out), "--scale", "0.125",
            "--only", "synthetic_cutmix"]
    assert im.main(argv) == 0
    run = out / "runs" / "synthetic_cutmix"
    summary = json.loads((run / "summary.json").read_text())
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["train"]["epochs"] == 1 and cfg["data"]["num_classes"] == 4 and cfg["optim"]["warmup_epochs"] == 0.125
    tab = table_json(str(out))
    assert tab["synthetic"] is True and tab["smoke"] is True
    e = entry(tab, "synthetic_cutmix", "top-1 (best epoch)")
    assert e["ours"] == pytest.approx(summary["best_top1"]) and 0.0 <= e["ours"] <= 100.0
    assert "SYNTHETIC" in (out / "table.md").read_text()
    mtime = (run / "summary.json").stat().st_mtime
    capsys.readouterr()
    assert im.main(argv) == 0
    assert "done, skipped" in capsys.readouterr().out
    assert (run / "summary.json").stat().st_mtime == mtime
    # another scale into the same folder is refused rather than mixed
    other = ["--synthetic", "--data", str(synthetic_root), "--out", str(out), "--scale", "0.25",
             "--only", "synthetic_cutmix"]
    assert im.main(other) == 2
    assert "holds a run started at scale 0.125" in capsys.readouterr().err
