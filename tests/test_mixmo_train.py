"""MixMo through the pretraining engine on synthetic CIFAR-layout data: every head learns, eval.json and
metrics, exact resume of the MixMo randomness, the evaluation CLI, the recipes, and bad input."""
import glob
import json
import os

import pytest
import torch

from pretrain.engine.config import load_config
from pretrain.engine.train import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG_DIR = os.path.join(ROOT, "configs", "mixmo")
CUT = os.path.join(CFG_DIR, "synthetic_cut_mixmo_cutmix.yaml")


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    """A 4-class synthetic CIFAR-100-layout set (32 train / 8 val images per class) and its Tiny ImageNet twin."""
    from pretrain.synthetic import write_synthetic_small
    root = tmp_path_factory.mktemp("small")
    write_synthetic_small(str(root), "cifar100", num_classes=4, train_per_class=32, val_per_class=8, seed=0)
    write_synthetic_small(str(root), "tiny_imagenet", num_classes=4, train_per_class=8, val_per_class=4, seed=0)
    return str(root)


def tiny(root, out, extra=()):
    return [f"data.root={root}", "data.num_classes=4", "data.batch_size=16", "data.workers=0",
            "model.kwargs={depth: 10, widen_factor: 1, dropout: 0.0}", f"train.out_dir={out}",
            "train.tensorboard=false", "train.log_interval=1", *extra]


def _jsonl(path):
    return [json.loads(x) for x in open(path)]


@pytest.mark.slow
def test_cut_mixmo_training_improves_every_head_and_writes_eval_json(cifar_root, tmp_path, capsys):
    out = tmp_path / "run"
    cfg = load_config(CUT, tiny(cifar_root, out, ["train.epochs=8", "optim.lr=0.05"]))
    summary = train(cfg)
    rows = _jsonl(out / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == list(range(8))
    # each subnetwork's own cross-entropy goes down (by 20 % for both heads in 8 epochs, measured on the
    # world of generator version 2, whose classes take more than one patch to tell apart)
    for k in (0, 1):
        assert rows[-1][f"train_head{k}_loss"] < 0.9 * rows[0][f"train_head{k}_loss"], k
        assert f"val_head{k}_top1" in rows[-1] and f"val_head{k}_ece" in rows[-1]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert summary["final"]["val_top1"] > 40.0  # 4 classes: chance is 25 %
    steps = _jsonl(out / "steps.jsonl")
    assert len(steps) == 8 * 8 and all(len(r["head_losses"]) == 2 for r in steps)
    ev = json.load(open(out / "eval.json"))
    assert set(ev) >= {"ensemble", "heads", "checkpoint", "epoch"}
    assert ev["epoch"] == 8 and len(ev["heads"]) == 2 and ev["ensemble"]["n"] == 32
    assert ev["checkpoint"].endswith("model.safetensors") and os.path.isfile(ev["checkpoint"])
    assert ev["ensemble"]["top1"] == rows[-1]["val_top1"] and 0 <= ev["ensemble"]["ece"] <= 100
    # the checkpoint is a MixMo file with its architecture, and the evaluation CLI reproduces eval.json
    from safetensors import safe_open
    with safe_open(ev["checkpoint"], "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "vitmix-mixmo" and json.loads(meta["arch"])["num_members"] == 2
    from pretrain.mixmo.evaluate import main
    cli_out = tmp_path / "cli.json"
    assert main(["--config", CUT, "--checkpoint", str(out), "--out", str(cli_out), "--device", "cpu",
                 *tiny(cifar_root, out)]) == 0
    cli = json.load(open(cli_out))
    assert cli["epoch"] == 8
    assert abs(cli["ensemble"]["top1"] - ev["ensemble"]["top1"]) < 1e-9
    assert abs(cli["ensemble"]["nll"] - ev["ensemble"]["nll"]) < 1e-4
    for a, b in zip(cli["heads"], ev["heads"]):
        assert abs(a["top1"] - b["top1"]) < 1e-9
    # a checkpoint of another architecture is refused with the file named; so are bad model options
    vit_cfg = os.path.join(CFG_DIR, "synthetic_vit_cut_mixmo.yaml")
    common = ["--checkpoint", str(out), "--device", "cpu", f"data.root={cifar_root}", "data.num_classes=4",
              f"train.out_dir={tmp_path / 'x'}"]
    assert main(["--config", vit_cfg, *common]) == 2
    assert "does not fit the configured MixMo network" in capsys.readouterr().err
    assert main(["--config", vit_cfg, *common, "model.kwargs.widen_factor=2"]) == 2
    assert "do not fit timm model" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_repeats_the_mixmo_randomness_exactly(cifar_root, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        common = ["train.epochs=2", "train.deterministic=true", "train.checkpoint_steps=3"]
        ref = train(load_config(CUT, tiny(cifar_root, tmp_path / "ref", common)))
        stopped = train(load_config(CUT, tiny(cifar_root, tmp_path / "run", common + ["train.max_steps=5"])))
        assert stopped["steps"] == 5
        resumed = train(load_config(CUT, tiny(cifar_root, tmp_path / "run", common + ["train.resume=auto"])))
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
    assert ref["steps"] == resumed["steps"] == 16
    a, b = _jsonl(tmp_path / "ref" / "steps.jsonl"), _jsonl(tmp_path / "run" / "steps.jsonl")
    assert [r["step"] for r in b] == list(range(1, 17))
    la = torch.tensor([[r["loss"]] + r["head_losses"] for r in a], dtype=torch.float64)
    lb = torch.tensor([[r["loss"]] + r["head_losses"] for r in b], dtype=torch.float64)
    torch.testing.assert_close(lb, la, rtol=1e-6, atol=1e-7)
    assert float(la[:, 0].std()) > 1e-3
    ea, eb = json.load(open(tmp_path / "ref" / "eval.json")), json.load(open(tmp_path / "run" / "eval.json"))
    assert abs(ea["ensemble"]["nll"] - eb["ensemble"]["nll"]) < 1e-5


def test_mixmo_config_and_data_errors(cifar_root, tmp_path):
    with pytest.raises(KeyError, match="unknown config key 'mixmo.foo'"):
        load_config(CUT, ["mixmo.foo=1"])
    with pytest.raises(ValueError, match="Cut-MixMo .*num_members=2, got 1"):
        load_config(CUT, ["mixmo.num_members=1"])
    with pytest.raises(ValueError, match="got 3 .*linear"):
        load_config(CUT, ["mixmo.num_members=3"])
    with pytest.raises(ValueError, match="mixer.name .* must be one of .*transmix"):
        load_config(CUT, ["mixer={name: transmix}"])
    with pytest.raises(ValueError, match="model.arch=wrn trains through MixMo"):
        load_config(CUT, ["mixmo.enabled=false"])
    with pytest.raises(ValueError, match="data.format must be"):
        load_config(CUT, ["data.format=cifar"])
    with pytest.raises(ValueError, match="optim.schedule"):
        load_config(CUT, ["optim.schedule=poly"])
    # data missing or in the wrong layout: the expected layout is named, nothing is downloaded
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        train(load_config(CUT, tiny(tmp_path / "nothing", tmp_path / "a")))
    with pytest.raises(FileNotFoundError, match="CIFAR-10 not found.*cifar-10-batches-py"):
        train(load_config(CUT, tiny(cifar_root, tmp_path / "b", ["data.format=cifar10"])))
    with pytest.raises(ValueError, match="names 4 classes but 10 are expected"):
        train(load_config(CUT, tiny(cifar_root, tmp_path / "c", ["data.num_classes=10"])))
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        train(load_config(os.path.join(CFG_DIR, "synthetic_vit_cut_mixmo.yaml"),
                          [f"data.root={cifar_root}", "data.num_classes=4", "data.img_size=30",
                           "model.kwargs.img_size=30", f"train.out_dir={tmp_path / 'd'}"]))


PAPER_RECIPES = ([f"{d}_wrn28_10_{v}" for d in ("cifar100", "cifar10")
                  for v in ("vanilla", "cutmix", "linear_mixmo", "cut_mixmo", "cut_mixmo_cutmix")]
                 + [f"tiny_imagenet_preact18x3_{v}" for v in ("vanilla", "cutmix", "cut_mixmo")] + ["deit_s_cut_mixmo"])


def test_recipes_exist_with_the_papers_values():
    names = {os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(CFG_DIR, "*.yaml"))}
    assert set(PAPER_RECIPES) <= names
    for name in PAPER_RECIPES:
        cfg = load_config(os.path.join(CFG_DIR, name + ".yaml"))
        x, m, d, mx = cfg["mixmo"], cfg["model"], cfg["data"], cfg["mixer"]
        assert x["enabled"]
        variant = name.split("_", 3)[-1] if not name.startswith("deit") else "cut_mixmo"
        if name.startswith("tiny"):
            variant = name.split("preact18x3_")[1]
            assert (m["arch"], m["kwargs"]["width"], d["format"], d["num_classes"]) == \
                ("preact_resnet", 3, "tiny_imagenet", 200)
        elif name.startswith("cifar"):
            variant = name.split("wrn28_10_")[1]
            assert (m["arch"], m["kwargs"]["depth"], m["kwargs"]["widen_factor"]) == ("wrn", 28, 10)
            assert d["format"] == name.split("_")[0] and d["num_classes"] == (100 if "100" in name else 10)
            # the official batch of 64 counts the batch repetitions: 64 samples per step
            assert d["batch_size"] * x["batch_repeat"] == 64
            assert cfg["optim"]["name"] == "sgd" and cfg["optim"]["nesterov"]
        else:
            assert (m["arch"], m["name"], d["img_size"]) == ("vit", "deit_small_patch16_224", 224)
        if "mixmo" in variant:
            assert (x["num_members"], x["alpha"], x["weight_root"]) == (2, 2.0, 3.0)
            assert 2 <= x["batch_repeat"] <= 4
            assert x["mixing"] == ("linear" if variant == "linear_mixmo" else "cut")
            if x["mixing"] == "cut":
                assert x["cut_prob"] == 0.5 and x["cut_prob_final"] == 0.0
                assert (x["anneal_start"], x["anneal_end"], x["anneal_unit"]) == (11 / 12, 1.0, "epoch")
                assert (x["draw"], x["box_rule"]) == ("batch", "even")
        else:
            assert (x["num_members"], x["mixing"], x["batch_repeat"]) == (1, "none", 1)
        assert mx["name"] == "none"  # input CutMix is the official per-sample one (mixmo.cutmix_prob)
        assert x["cutmix_prob"] == (0.5 if variant.endswith("cutmix") else 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["synthetic_vit_cut_mixmo", "synthetic_preact_cut_mixmo", "synthetic_vanilla"])
def test_synthetic_recipes_train_two_steps(name, cifar_root, tmp_path):
    extra = ["model.kwargs.depth=1"] if "vit" in name else []
    if "preact" in name:
        extra = ["data.img_size=32"]  # 64 px Tiny-ImageNet images resized: keeps the step cheap
    cfg = load_config(os.path.join(CFG_DIR, name + ".yaml"),
                      [f"data.root={cifar_root}", "data.num_classes=4", "data.batch_size=8", "data.workers=0",
                       f"train.out_dir={tmp_path}", "train.max_steps=2", "train.tensorboard=false",
                       "train.log_interval=1", *extra])
    summary = train(cfg)
    assert summary["steps"] == 2 and summary["skipped_steps"] == 0
    ev = json.load(open(tmp_path / "eval.json"))
    assert len(ev["heads"]) == cfg["mixmo"]["num_members"] and ev["ensemble"]["n"] > 0


@pytest.mark.slow
def test_two_process_ddp_run_reduces_the_evaluation_over_ranks(cifar_root, tmp_path):
    import subprocess
    import sys
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
                           "--nproc-per-node=2", "-m", "pretrain.train", "--config", CUT,
                           *tiny(cifar_root, out, ["train.epochs=1", "data.batch_size=8"])],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.load(open(out / "summary.json"))
    assert summary["steps"] == 8 and summary["skipped_steps"] == 0  # 128 images / 2 ranks / batch 8
    ev = json.load(open(out / "eval.json"))
    assert ev["ensemble"]["n"] == 32 and all(h["n"] == 32 for h in ev["heads"])  # both ranks' shards summed
    from pretrain.checkpoint import find_checkpoint, load_checkpoint
    _, state = load_checkpoint(find_checkpoint(str(out)))
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    a, b = (r["mixer"]["numpy"]["state"]["state"] for r in state["ranks"])
    assert a != b  # each rank draws its own MixMo mixing


def test_sgd_multistep_and_weight_decay_options_of_the_engine():
    from pretrain.engine.optim import build_optimizer, multistep_lr_at
    lrs = [multistep_lr_at(s, 10, 0.1, 0.01, [30, 60], 0.1) for s in range(80)]
    assert lrs[0] == 0.01 and abs(lrs[5] - 0.055) < 1e-12  # linear warm-up
    assert lrs[10] == lrs[29] == 0.1
    assert abs(lrs[30] - 0.01) < 1e-12 and abs(lrs[59] - 0.01) < 1e-12 and abs(lrs[60] - 0.001) < 1e-12
    from pretrain.mixmo import build_mixmo_wrn
    net = build_mixmo_wrn(10, 2, depth=10, widen_factor=1)
    oc = {"name": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "no_decay_1d": False,
          "fused": False}
    opt = build_optimizer(net, oc, 0.1, torch.device("cpu"))
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["nesterov"]
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 5e-4
    assert sum(p.numel() for p in opt.param_groups[0]["params"]) == sum(p.numel() for p in net.parameters())
    opt = build_optimizer(net, {**oc, "no_decay_1d": True}, 0.1, torch.device("cpu"))
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0]
    assert all(p.ndim <= 1 for p in opt.param_groups[1]["params"])


def official_lr(step: int, steps_per_epoch: int, base: float, warmup_period: int, milestones) -> float:
    """The official lr of optimizer step ``step`` (from 0), re-stated: GradualWarmupScheduler sets
    base * t / warmup_period for the t-th batch (t from 1) while t <= warmup_period, MultiGammaStepLR multiplies
    by 0.1 when the 1-based epoch reaches a milestone (mixmo/core/scheduler.py, mixmo/learners/learner.py)."""
    t = step + 1
    if t <= warmup_period:
        return base * t / warmup_period
    epoch1 = step // steps_per_epoch + 1
    return base * 0.1 ** sum(1 for m in milestones if epoch1 >= m)


@pytest.mark.parametrize("name, n_train, base, warmup, milestones", [
    ("cifar100_wrn28_10_cut_mixmo", 50000, 0.0125, 3128, (101, 201, 226)),
    ("cifar10_wrn28_10_cut_mixmo_cutmix", 50000, 0.0125, 3128, (101, 201, 226)),
    ("cifar100_wrn28_10_vanilla", 50000, 0.05, 782, (101, 201, 226)),
    ("tiny_imagenet_preact18x3_cut_mixmo", 100000, 0.05, 4000, (600, 900)),
    ("tiny_imagenet_preact18x3_vanilla", 100000, 0.2, 1000, (600, 900)),
])
def test_official_batch_counting_and_lr_schedule(name, n_train, base, warmup, milestones):
    from pretrain.engine.optim import build_schedule
    cfg = load_config(os.path.join(CFG_DIR, name + ".yaml"))
    d, o, x = cfg["data"], cfg["optim"], cfg["mixmo"]
    official_batch = 64 if name.startswith("cifar") else 100  # batch_size of the official configs
    assert d["batch_size"] * x["batch_repeat"] == official_batch
    spe = n_train // d["batch_size"]  # official: drop_last batches of official_batch repeated entries
    assert spe == n_train * x["batch_repeat"] // official_batch
    lr0 = float(o["lr"]) * d["batch_size"] / float(o["lr_base_batch"])  # one process
    assert lr0 == pytest.approx(base, rel=1e-12)
    epochs = int(cfg["train"]["epochs"])
    lr_fn = build_schedule(o, lr0, spe, epochs * spe)
    probe = [0, 1, 2, warmup // 2, warmup - 2, warmup - 1, warmup, warmup + 1]
    for m in milestones:
        probe += [(m - 1) * spe - 1, (m - 1) * spe, (m - 1) * spe + 1]
    probe += [epochs * spe - 1]
    for step in probe:
        assert lr_fn(step) == pytest.approx(official_lr(step, spe, base, warmup, milestones), rel=1e-9, abs=1e-15), step
    assert o["weight_decay"] == (0.0 if name.startswith("cifar") else 1e-4)
    assert x["l2_reg"] == (3e-4 if name.startswith("cifar") else 0.0)


def test_l2_term_is_the_official_sum_of_squares_and_matches_weight_decay_twice_as_large():
    """Official WrapperLoss: loss + l2_reg * sum over every parameter of sum(W ** 2) (no factor 1/2); its
    gradient 2 l2_reg W makes the step of SGD with weight_decay = 2 l2_reg."""
    import copy
    from pretrain.mixmo import MixMoTrainer, build_mixmo_wrn
    torch.manual_seed(0)
    net = build_mixmo_wrn(5, 2, depth=10, widen_factor=1)
    images, labels = torch.randn(4, 3, 32, 32), torch.randint(0, 5, (4,))

    def loss_of(model, l2):
        tr = MixMoTrainer(2, 5, mixing="cut", cut_prob=0.5, batch_repeat=2, l2_reg=l2, seed=3)
        tr.model = model
        return tr.forward_loss(model, images, labels)[0]

    c = 3e-4
    net_a, net_b = copy.deepcopy(net), copy.deepcopy(net)
    la, lb = loss_of(net_a, c), loss_of(net_b, 0.0)
    sq = 0.0
    for p in net.parameters():  # every parameter: convolutions, BN weights and biases, heads
        sq += sum(float(v) ** 2 for v in p.detach().double().flatten())
    assert float((la - lb).detach()) == pytest.approx(c * sq, rel=1e-5)
    opt_a = torch.optim.SGD(net_a.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.0)
    opt_b = torch.optim.SGD(net_b.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=2 * c)
    for opt, loss in ((opt_a, la), (opt_b, lb)):
        opt.zero_grad()
        loss.backward()
        opt.step()
    for pa, pb in zip(net_a.parameters(), net_b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-7)
    assert not torch.equal(next(net_a.parameters()), next(net.parameters()))


def test_repro_plan_runs_the_official_recipes(tmp_path, capsys):
    """tools/repro/mixmo_cifar100.py: every row trains its configs/mixmo recipe, and the dry-run plan shows
    the official schedule (0-based milestones 100/200/225, the warm-up of W - 1 steps)."""
    from downstream.repro.tables.mixmo_cifar100 import main, parse
    assert main(["--dry-run", "--out", str(tmp_path / "plan")]) == 0
    plan = capsys.readouterr().out
    assert plan.count("'optim.milestones=[100,200,225]'") == 5
    assert plan.count("optim.warmup_epochs=1.0006 ") == 3 and plan.count("optim.warmup_epochs=1.0 ") == 2
    _, rows, _ = parse(["--out", str(tmp_path / "plan")])
    for row in rows:
        argv = row.steps[-1].argv
        i = next(j for j, a in enumerate(argv) if a.endswith(".yaml"))
        cfg = load_config(argv[i], [a for a in argv[i + 1:] if "=" in a])
        x, o, d = cfg["mixmo"], cfg["optim"], cfg["data"]
        mixmo = row.id.endswith("mixmo") or row.id.endswith("mixmo_cutmix")
        assert d["batch_size"] * x["batch_repeat"] == 64
        assert (o["lr"], o["weight_decay"], x["l2_reg"]) == ((0.0125 if mixmo else 0.05), 0.0, 3e-4)
        spe = 50000 // d["batch_size"]
        w = int(round(float(o["warmup_epochs"]) * spe))
        assert w == (3127 if mixmo else 781)  # official warmup_period 3128 / 782, see the recipes
        assert x["cutmix_prob"] == (0.5 if row.id.endswith("cutmix") else 0.0)
