"""FSDP2 (``train.parallel: fsdp``) with two CPU processes on gloo: the same losses as DDP on the same seed
(TransMix, so the CLS-attention tap runs under FSDP, and EMA on), exact resume after SIGKILL through the sharded
``torch.distributed.checkpoint`` state, the exported ``model.safetensors`` in the canonical full layout, and the
errors (a bad ``train.parallel``, a damaged shard)."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from pretrain.checkpoint import read_metadata
from pretrain.checkpoint.resume import CheckpointDamaged, find_intact_checkpoint
from pretrain.engine.config import load_config
from test_pretrain_resume import CFG, _steps, resume_overrides
from test_taps import TINY

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
KILL_AFTER = 4  # TrainStep's ``step``: the 5th step (batch 5 of 6) runs, then both ranks die


def overrides(root, out, parallel):
    # test_pretrain_resume's run (RandAugment, erasing, repeated augmentation, TransMix, drop path, EMA,
    # checkpoints every 2 steps) at 8 images per process and one epoch: 6 steps, evaluation and checkpoint
    return resume_overrides(root, out, workers=0) + ["data.batch_size=8", "train.epochs=1",
                                                     f"train.parallel={parallel}"]


def torchrun(tmp_path, args, kill_after=None, name="driver.py"):
    """``pretrain.train`` under torchrun with 2 processes; with ``kill_after`` both ranks SIGKILL themselves
    right after the step that follows ``kill_after`` done steps."""
    driver = tmp_path / name
    driver.write_text(textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {ROOT!r})
        import pretrain.engine.train as engine
        from pretrain.train import main
        original = engine.TrainStep.__call__
        def call(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            if kwargs.get("step") == {kill_after!r}:
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        engine.TrainStep.__call__ = call
        sys.exit(main(["--config", {CFG!r}, *{args!r}]))
    """))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
                           "--nproc-per-node=2", str(driver)], env=ENV, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


@pytest.fixture(scope="module")
def runs(synthetic_root, tmp_path_factory):
    """The same run under DDP and under FSDP (uninterrupted; one after the other in the same two processes,
    which saves a launch), with their log."""
    base = tmp_path_factory.mktemp("fsdp_runs")
    driver = base / "both.py"
    driver.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {ROOT!r})
        from pretrain.engine.config import load_config
        from pretrain.engine.train import train
        for args in {[overrides(synthetic_root, base / p, p) for p in ("ddp", "fsdp")]!r}:
            train(load_config({CFG!r}, args))
    """))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
                           "--nproc-per-node=2", str(driver)], env=ENV, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {p: (base / p, proc.stderr) for p in ("ddp", "fsdp")}


def _losses(run):
    return torch.tensor([r["loss"] for r in _steps(run / "steps.jsonl")], dtype=torch.float64)


@pytest.mark.slow
def test_fsdp_repeats_the_ddp_losses_with_the_transmix_tap_and_ema(runs):
    (ddp, _), (fsdp, log) = runs["ddp"], runs["fsdp"]
    assert "fsdp over 2 processes, 2 units + root" in log and "CLS attention from the same forward pass" in log
    ref, got = _losses(ddp), _losses(fsdp)
    assert len(ref) == 6 and float(ref.std()) > 1e-3  # the losses vary: not a comparison of constants
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(_steps(ddp / "metrics.jsonl"), _steps(fsdp / "metrics.jsonl")):
        for key in ("train_loss", "val_loss", "ema_val_loss"):
            assert abs(a[key] - b[key]) < 1e-4, key
    for name in ("model", "ema"):  # reduce-scatter vs all-reduce: equal up to float rounding
        wa, wb = load_file(str(ddp / f"{name}.safetensors")), load_file(str(fsdp / f"{name}.safetensors"))
        assert wa.keys() == wb.keys()
        for k in wa:
            torch.testing.assert_close(wb[k], wa[k], rtol=1e-3, atol=2e-4, msg=f"{name} {k}")


@pytest.mark.slow
def test_sigkill_then_resume_auto_repeats_the_uninterrupted_fsdp_run(runs, synthetic_root, tmp_path):
    ref = runs["fsdp"][0]
    run = tmp_path / "run"
    proc = torchrun(tmp_path, overrides(synthetic_root, run, "fsdp"), kill_after=KILL_AFTER)
    assert proc.returncode != 0 and not (run / "summary.json").exists(), proc.stderr[-3000:]
    assert [r["step"] for r in _steps(run / "steps.jsonl")] == list(range(1, 5))
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_000000004"  # mid-epoch, batch 4
    assert sorted(os.listdir(run / "checkpoints" / "step_000000004" / "sharded")) == [
        ".metadata", "__0_0.distcp", "__1_0.distcp"]

    proc = torchrun(tmp_path, overrides(synthetic_root, run, "fsdp") + ["train.resume=auto"], name="resume.py")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "resumed from" in proc.stderr and "step 4, epoch 0, batch 4" in proc.stderr
    assert [r["step"] for r in _steps(run / "steps.jsonl")] == list(range(1, 7))
    torch.testing.assert_close(_losses(run), _losses(ref), rtol=1e-6, atol=1e-7)
    for a, b in zip(_steps(ref / "metrics.jsonl"), _steps(run / "metrics.jsonl")):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-6 and abs(a["ema_val_loss"] - b["ema_val_loss"]) < 1e-5
    for name in ("model", "ema"):
        wa, wb = load_file(str(ref / f"{name}.safetensors")), load_file(str(run / f"{name}.safetensors"))
        for k in wa:
            torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-6, msg=f"{name} {k}")


@pytest.mark.slow
def test_exported_weights_are_the_full_state_dict_in_the_ddp_format(runs, synthetic_root):
    import torch.distributed.checkpoint as dcp

    from pretrain.objectives.classification import build_vit
    (ddp, _), (fsdp, _) = runs["ddp"], runs["fsdp"]
    exported = load_file(str(fsdp / "model.safetensors"))
    model = build_vit(load_config(CFG, overrides(synthetic_root, fsdp, "fsdp")))
    model.load_state_dict(exported, strict=True)  # the plain timm model takes it as it is
    # the run's own shards, read back whole in this one process (DCP reshards on load), are the export
    ckpt = fsdp / "checkpoints" / (fsdp / "checkpoints" / "latest").read_text().strip()
    gathered = {"model": {k: torch.empty_like(v) for k, v in model.state_dict().items()}}
    dcp.load(gathered, checkpoint_id=str(ckpt / "sharded"), no_dist=True)
    assert gathered["model"].keys() == exported.keys()
    for k, v in exported.items():
        assert torch.equal(gathered["model"][k], v), k
    # the same file format as the DDP run's (metadata: format tag, architecture)
    meta_fsdp, meta_ddp = read_metadata(str(fsdp / "model.safetensors")), read_metadata(str(ddp / "model.safetensors"))
    assert meta_fsdp.keys() == meta_ddp.keys()
    assert meta_fsdp["format"] == meta_ddp["format"] and meta_fsdp["arch"] == meta_ddp["arch"]


def test_bad_parallel_value_is_a_clear_error(synthetic_root, tmp_path):
    with pytest.raises(ValueError, match="train.parallel must be ddp\\|fsdp, got 'zero'"):
        load_config(CFG, overrides(synthetic_root, tmp_path, "zero"))


@pytest.mark.slow
def test_a_damaged_shard_is_named_and_passed_over(runs, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(runs["fsdp"][0], run)
    newest = run / "checkpoints" / "step_000000006"
    shard = newest / "sharded" / "__1_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    ckpt, damaged = find_intact_checkpoint(str(run))  # what --resume auto chooses
    assert ckpt.endswith("step_000000004")  # the previous one (keep_checkpoints 2)
    assert len(damaged) == 1 and "__1_0.distcp does not match its sha256" in damaged[0]
    with pytest.raises(CheckpointDamaged, match="sharded/__1_0.distcp does not match its sha256"):
        find_intact_checkpoint(str(newest))
    (newest / "sharded" / ".metadata").write_bytes(b"")  # a truncated metadata file
    with pytest.raises(CheckpointDamaged, match=r"\.metadata has 0 bytes, its manifest says \d+ \(truncated\)"):
        find_intact_checkpoint(str(newest))


UNIT = """
import copy, json, os, sys
import torch, torch.distributed as dist
sys.path.insert(0, {root!r})
from pretrain.checkpoint.sharded import full_weights
from pretrain.engine.optim import build_optimizer
from pretrain.engine.parallel import Parallel
from pretrain.engine.step import TrainStep
from pretrain.mixing import build_mixer
from pretrain.models.taps import build_tap
from pretrain.models.vit import create_vit
from pretrain.objectives.classification import ClassificationObjective, evaluate
dist.init_process_group("gloo")
rank, world, cpu = dist.get_rank(), dist.get_world_size(), torch.device("cpu")
torch.manual_seed(rank)  # each rank its own init: the shards must be cut from rank 0's weights
plain = create_vit("deit_tiny_patch16_224", 4, img_size=32, patch_size=8, depth=2)
ref = copy.deepcopy(plain)
for t in ref.parameters():
    dist.broadcast(t.data, 0)
par = Parallel("fsdp", cpu, world, None, sample_shape=(3, 32, 32))
sharded = par.shard(copy.deepcopy(plain))
x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(7))
out = {{}}
tap_ref, tap_fsdp = build_tap(ref), build_tap(sharded)
with torch.no_grad():
    out["logits"] = (ref(x) - sharded(x)).abs().max().item()
out["tap"] = (tap_ref.patch_attention() - tap_fsdp.patch_attention()).abs().max().item()
out["tap_spread"] = tap_ref.patch_attention().std().item()
# train.amp=bf16: FSDP's MixedPrecisionPolicy gathers bf16 weights for compute, the shards stay float32
half = Parallel("fsdp", cpu, world, torch.bfloat16).shard(copy.deepcopy(plain))
seen = []
half.blocks[0].attn.qkv.register_forward_pre_hook(lambda m, i: seen.append(str(m.weight.dtype)))
with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
    out["bf16"] = [(ref(x).float() - half(x).float()).abs().max().item(), seen[0],
                   str(half.blocks[0].attn.qkv.weight.dtype), ref(x).float().abs().max().item()]
# uneven validation shards (rank 0: two batches and an unreadable one, rank 1: one batch)
data = [(x[:2], torch.tensor([0, 1])), None, (x[2:4], torch.tensor([2, 3]))] if rank == 0 else \\
    [(x[4:6], torch.tensor([1, 1]))]
out["eval"] = [evaluate(sharded, par.eval_loader(data, sharded), cpu, None), evaluate(ref, data, cpu, None)]
def one_step(k):  # SGD: the update is linear in the gradient
    m = par.shard(copy.deepcopy(plain))
    obj = ClassificationObjective(build_mixer({{"name": "none"}}, 4, seed=0))
    obj.bind(m)
    opt = build_optimizer(m, {{"name": "sgd", "weight_decay": 0.05, "momentum": 0.9}}, 0.1, cpu)
    step = TrainStep(m, m, obj, opt, torch.amp.GradScaler("cpu", enabled=False), None, 1.0, None, accum_steps=k)
    r = step(x[:4], torch.tensor([0, 1, 2, 3]), None, lr=0.1)
    return r, full_weights(m)
(r1, w1), (r2, w2) = one_step(1), one_step(2)
out["accum"] = [r1.loss, r2.loss, r1.grad_norm, r2.grad_norm]
out["accum_weights"] = max((w1[k] - w2[k]).abs().max().item() for k in w1) if rank == 0 else 0.0
out["moved"] = max((w1[k] - v).abs().max().item() for k, v in ref.state_dict().items()) if rank == 0 else 1.0
# across modes: a DDP state (full weights, positional AdamW state) into a sharded model, and sharded DCP state
# into a plain model; then one more step of each against the source's own next step
from pretrain.checkpoint.sharded import load_sharded, save_sharded
from pretrain.engine.resume import load_full_state
adamw = {{"name": "adamw", "weight_decay": 0.05, "betas": [0.9, 0.999], "eps": 1e-8}}
def runner(m):
    obj = ClassificationObjective(build_mixer({{"name": "none"}}, 4, seed=0))
    obj.bind(m)
    opt = build_optimizer(m, adamw, 1e-3, cpu)
    return opt, TrainStep(m, m, obj, opt, torch.amp.GradScaler("cpu", enabled=False), None, None, None)
y = torch.tensor([0, 1, 2, 3])
src = copy.deepcopy(ref)
opt_src, step_src = runner(src)
for _ in range(2):
    step_src(x[:4], y, None, lr=1e-3)
dst = par.shard(copy.deepcopy(plain))
opt_dst, step_dst = runner(dst)
load_full_state(dst, opt_dst, src.state_dict(), opt_src.state_dict())
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
def moments(m, opt):  # name -> (step, exp_avg, exp_avg_sq), whole tensors
    st = get_optimizer_state_dict(m, opt, options=StateDictOptions(full_state_dict=True))["state"]
    return {{k: [v["step"], v["exp_avg"], v["exp_avg_sq"]] for k, v in st.items()}}
def differ(a, b):  # the largest difference between two moments() (inf when the names differ)
    if a.keys() != b.keys():
        return float("inf")
    return max((u.float() - v.float()).abs().max().item() for k in a for u, v in zip(a[k], b[k]))
ms = moments(src, opt_src)
out["ddp_to_fsdp_state"] = [differ(ms, moments(dst, opt_dst)), min(v[1].abs().max().item() for v in ms.values())]
wd = full_weights(dst)
out["ddp_to_fsdp_weights"] = max((wd[k] - v).abs().max().item() for k, v in src.state_dict().items()) if rank == 0 else 0.0
a, b = step_src(x[2:6], y, None, lr=1e-3), step_dst(x[2:6], y, None, lr=1e-3)
out["ddp_to_fsdp_next"] = [a.loss, b.loss]
folder = {folder!r}
save_sharded(folder, dst, opt_dst)
back = copy.deepcopy(plain)
opt_back, step_back = runner(back)
load_sharded(folder, back, opt_back)
out["fsdp_to_ddp_state"] = differ(moments(dst, opt_dst), moments(back, opt_back))
wd = full_weights(dst)
out["fsdp_to_ddp_weights"] = max((wd[k] - v).abs().max().item() for k, v in back.state_dict().items()) if rank == 0 else 0.0
a, b = step_dst(x[:4], y, None, lr=1e-3), step_back(x[:4], y, None, lr=1e-3)
out["fsdp_to_ddp_next"] = [a.loss, b.loss]
# every tap family: its blocks / stages are the FSDP units; forward, tap and one SGD step match the plain model
import timm
import pretrain.models.ca_swin  # noqa: F401
from pretrain.engine.parallel import shard_units
out["families"] = {{}}
for fam, (name, kw) in {tiny!r}.items():
    torch.manual_seed(0)
    base = timm.create_model(name, num_classes=3, **kw)
    flat, cut = copy.deepcopy(base).eval(), par.shard(copy.deepcopy(base)).eval()  # eval: no drop path draws
    taps = [build_tap(flat), build_tap(cut)]
    opts = [torch.optim.SGD(m.parameters(), lr=0.5) for m in (flat, cut)]
    losses = []
    for m, o in zip((flat, cut), opts):
        loss = torch.nn.functional.cross_entropy(m(x), torch.tensor([0, 1, 2, 0, 1, 2]))
        loss.backward()
        o.step()
        losses.append(loss.item())
    wc = full_weights(cut)
    out["families"][fam] = [len(shard_units(base)), abs(losses[0] - losses[1]),
                            (taps[0].patch_attention() - taps[1].patch_attention()).abs().max().item(),
                            max((wc[k] - v).abs().max().item() for k, v in flat.state_dict().items()) if rank == 0
                            else 0.0, max((v - w).abs().max().item() for v, w in zip(flat.state_dict().values(),
                                                                                   base.state_dict().values()))]
# activation checkpointing (timm's set_grad_checkpointing) on the sharded ViT: the plain model's step
torch.manual_seed(0)
base = create_vit("deit_tiny_patch16_224", 4, img_size=32, patch_size=8, depth=2)
flat, cut = copy.deepcopy(base), par.shard(copy.deepcopy(base))
cut.set_grad_checkpointing(True)
recomputed = []
cut.blocks[0].register_forward_pre_hook(lambda m, i: recomputed.append(torch.is_grad_enabled()))
for m in (flat, cut):
    torch.nn.functional.cross_entropy(m(x), torch.tensor([0, 1, 2, 3, 0, 1])).backward()
    torch.optim.SGD(m.parameters(), lr=0.5).step()
wc = full_weights(cut)
out["grad_ckpt"] = [len(recomputed), max((wc[k] - v).abs().max().item() for k, v in flat.state_dict().items())
                    if rank == 0 else 0.0]
# one file per rank: two ranks' long lines on one shared stdout pipe can interleave
with open(os.path.join({results!r}, f"result{{rank}}.json"), "w") as f:
    json.dump(out, f)
"""


@pytest.mark.slow
def test_units_tap_evaluation_accumulation_and_cross_mode_state_under_fsdp(tmp_path):
    """The CLS-attention tap of a sharded ViT records the unsharded model's attention, and for every tap family
    (ViT, XCiT, CaiT, CA-Swin) the blocks / stages are the FSDP units and a step matches the plain model's;
    bf16 mixed precision computes in bf16 over float32 shards; an evaluation over uneven validation shards (one
    rank a batch fewer, a batch of unreadable images) completes with the unsharded result; accumulation (FSDP2's
    set_requires_gradient_sync) gives the update of one batch, and so does activation checkpointing; weights
    and AdamW state cross between a DDP state and FSDP shards, both ways, exactly."""
    script = tmp_path / "unit.py"
    script.write_text(UNIT.format(root=ROOT, folder=str(tmp_path / "dcp"), tiny=TINY, results=str(tmp_path)))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
                           "--nproc-per-node=2", str(script)], env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("result*.json"))]
    assert len(results) == 2
    for out in results:
        assert out["logits"] < 1e-5 and out["tap"] < 1e-6 and out["tap_spread"] > 1e-4
        sharded, ref = out["eval"]
        assert sharded["images"] == ref["images"] == 6 and sharded["loss"] == pytest.approx(ref["loss"], rel=1e-6)
        assert out["accum"][0] == pytest.approx(out["accum"][1], rel=1e-6)
        assert out["accum"][2] == pytest.approx(out["accum"][3], rel=1e-5)
        assert out["accum_weights"] < 1e-6 and out["moved"] > 1e-4
        diff, compute_dtype, shard_dtype, scale = out["bf16"]
        assert compute_dtype == "torch.bfloat16" and shard_dtype == "torch.float32" and diff < 0.05 * scale
        # weights and AdamW state (step, moments, by parameter name) cross over exactly, both ways
        state_diff, smallest_moment = out["ddp_to_fsdp_state"]
        assert state_diff == 0.0 and smallest_moment > 0 and out["ddp_to_fsdp_weights"] == 0.0
        assert out["fsdp_to_ddp_state"] == 0.0 and out["fsdp_to_ddp_weights"] == 0.0
        for key in ("ddp_to_fsdp_next", "fsdp_to_ddp_next"):
            assert out[key][1] == pytest.approx(out[key][0], rel=1e-6), key
        # units: ViT blocks; XCiT / CaiT blocks + class-attention blocks; CA-Swin's 4 stages + its CA block
        assert {f: v[0] for f, v in out["families"].items()} == {"vit": 2, "xcit": 4, "cait": 4, "ca_swin": 5}
        for fam, (_, loss_diff, tap_diff, weight_diff, moved) in out["families"].items():
            assert loss_diff < 1e-5 and tap_diff < 1e-5 and weight_diff < 1e-5 and moved > 1e-3, fam
        calls, weight_diff = out["grad_ckpt"]
        assert calls == 2 and weight_diff < 1e-5  # the block ran again in backward; the same update
