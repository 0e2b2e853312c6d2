"""Two CPU processes under torchrun (gloo): DDP training, a non-finite loss on one rank skipped by both,
and the per-rank checkpoint state."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(ROOT, "configs", "pretrain", "synthetic_deit.yaml")


@pytest.mark.slow
def test_two_processes_agree_on_skipping_a_step_one_rank_found_bad(synthetic_root, tmp_path):
    out = tmp_path / "ddp"
    overrides = [f"data.root={synthetic_root}/imagenet", "data.num_classes=4", "data.img_size=32",
                 "data.batch_size=8", "data.workers=0", "data.repeated_aug=3", "model.kwargs.img_size=32",
                 "model.kwargs.depth=1", f"train.out_dir={out}", "train.epochs=1", "train.log_interval=1",
                 "train.tensorboard=false", "train.max_bad_steps=2"]
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {ROOT!r})
        import torch
        import pretrain.objectives.classification as classification
        from pretrain.train import main
        rank = int(os.environ["RANK"])
        original_build = classification.build_mixer
        def build(*args, **kwargs):
            mixer = original_build(*args, **kwargs)
            loss, calls = mixer.loss, []
            def poisoned(logits, targets):  # rank 1 only, its third batch
                calls.append(1)
                value = loss(logits, targets)
                return value * float("nan") if rank == 1 and len(calls) == 3 else value
            mixer.loss = poisoned
            return mixer
        classification.build_mixer = build
        sys.exit(main(["--config", {CFG!r}, *{overrides!r}]))
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
                           "--nproc-per-node=2", str(driver)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.load(open(out / "summary.json"))
    # 96 images, 3 repeats, 2 ranks: 48 samples per rank per epoch = 6 batches of 8; one skipped on both ranks
    assert summary["skipped_steps"] == 1 and summary["steps"] == 5
    steps = [json.loads(x) for x in open(out / "steps.jsonl")]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5] and [r["batch"] for r in steps] == [1, 2, 4, 5, 6]
    assert summary["final"]["val_images"] == 32  # the two ranks' evaluation shards add up to the val split
    from pretrain.checkpoint import find_checkpoint, load_checkpoint
    weights, state = load_checkpoint(find_checkpoint(str(out)))
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    # each rank has its own generators (seeded seed + rank) and they were saved separately
    assert not torch.equal(state["ranks"][0]["rng"]["torch"], state["ranks"][1]["rng"]["torch"])
    assert all(torch.isfinite(v).all() for v in load_file(str(out / "model.safetensors")).values())


@pytest.mark.slow
def test_accumulation_under_ddp_gives_the_update_of_whole_batches(synthetic_root, tmp_path):
    """2 gloo processes, batch 8 per process: accum_steps 2 (micro-batches of 4, DDP's no_sync on the first)
    ends with the weights and losses of accum_steps 1, within float tolerance (no mixing, so the same draws)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    losses, weights = [], []
    for k in (1, 2):
        out = tmp_path / f"accum{k}"
        overrides = [f"data.root={synthetic_root}/imagenet", "data.num_classes=4", "data.img_size=32",
                     "data.batch_size=8", "data.workers=0", "model.kwargs.img_size=32", "model.kwargs.depth=1",
                     f"train.out_dir={out}", "train.epochs=1", "train.max_steps=3", "train.log_interval=1",
                     "train.tensorboard=false", "train.deterministic=true", "mixer={name: none}",
                     "optim.clip_grad=1.0", f"train.accum_steps={k}"]
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
                               "--nproc-per-node=2", "-m", "pretrain.train", "--config", CFG, *overrides],
                              env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-4000:]
        losses.append([json.loads(x)["loss"] for x in open(out / "steps.jsonl")])
        weights.append(load_file(str(out / "model.safetensors")))
    assert len(losses[0]) == 3 and losses[0] == pytest.approx(losses[1], rel=1e-5)
    for key, v in weights[0].items():
        torch.testing.assert_close(weights[1][key], v, rtol=1e-4, atol=1e-5, msg=key)
