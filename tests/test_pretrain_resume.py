"""Exact resume: a run SIGKILLed mid-epoch and resumed repeats the uninterrupted run's losses and weights;
checkpoints are atomic (a write killed half-way leaves the previous checkpoint usable)."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from pretrain.checkpoint import resume as ck
from pretrain.engine.config import load_config
from pretrain.engine.train import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CFG = os.path.join(ROOT, "configs", "pretrain", "synthetic_transmix.yaml")


def resume_overrides(root, out, workers):
    # everything random is on: RandAugment, random erasing, repeated augmentation, TransMix (Mixup/CutMix
    # switch), drop path, EMA; mid-epoch checkpoints every 2 steps (6 steps per epoch)
    return [f"data.root={root}/imagenet", "data.num_classes=4", "data.img_size=32", "data.batch_size=16",
            f"data.workers={workers}", "data.repeated_aug=3", "data.auto_augment=rand-m9-mstd0.5-inc1",
            "data.re_prob=0.25", "model.kwargs.img_size=32", "model.kwargs.depth=2", "model.drop_path=0.1",
            "model.ema=true", "model.ema_decay=0.9", "mixer.mixup_alpha=0.8", "mixer.switch_prob=0.5",
            f"train.out_dir={out}", "train.epochs=2", "train.log_interval=1", "train.checkpoint_steps=2",
            "train.deterministic=true", "train.tensorboard=false", "optim.lr=2e-3", "optim.clip_grad=5.0"]


def _steps(path):
    return [json.loads(x) for x in open(path)]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_repeats_the_uninterrupted_run(synthetic_root, tmp_path, deterministic_cpu):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref = train(load_config(CFG, resume_overrides(synthetic_root, ref_dir, workers=0)))
    assert ref["steps"] == 12 and ref["skipped_steps"] == 0

    # the same run in a subprocess (two loader workers this time), killed with SIGKILL right after
    # computing step 9 (epoch 1, batch 3); its last checkpoint is the one after step 8
    kill_after = 8  # TrainStep's ``step`` argument: optimizer steps done before this one
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {ROOT!r})
        import torch
        torch.set_num_threads(1)
        import pretrain.engine.train as engine
        from pretrain.engine.config import load_config
        original = engine.TrainStep.__call__
        def call(self, *args, **kwargs):
            result = original(self, *args, **kwargs)
            if kwargs.get("step") == {kill_after}:
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        engine.TrainStep.__call__ = call
        engine.train(load_config({CFG!r}, {resume_overrides(synthetic_root, run_dir, workers=2)!r}))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    killed_steps = _steps(run_dir / "steps.jsonl")
    assert [r["step"] for r in killed_steps] == list(range(1, 9))  # step 9 ran but was never logged
    with open(run_dir / "checkpoints" / "latest") as f:
        assert f.read().strip() == "step_000000008"
    assert not (run_dir / "summary.json").exists()

    # resume in this process (no workers): continues from step 8 = epoch 1, batch 2
    resumed = train(load_config(CFG, resume_overrides(synthetic_root, run_dir, workers=0) + ["train.resume=auto"]))
    assert resumed["steps"] == 12

    ref_steps, run_steps = _steps(ref_dir / "steps.jsonl"), _steps(run_dir / "steps.jsonl")
    assert [r["step"] for r in run_steps] == list(range(1, 13))
    ref_loss = torch.tensor([r["loss"] for r in ref_steps], dtype=torch.float64)
    run_loss = torch.tensor([r["loss"] for r in run_steps], dtype=torch.float64)
    torch.testing.assert_close(run_loss, ref_loss, rtol=1e-6, atol=1e-7)
    # the losses actually vary from step to step (the comparison is not between constants)
    assert float(ref_loss.std()) > 1e-3
    # epoch metrics, final weights and EMA weights agree too
    for a, b in zip(_steps(ref_dir / "metrics.jsonl"), _steps(run_dir / "metrics.jsonl")):
        assert a["epoch"] == b["epoch"]
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-6
        assert abs(a["val_loss"] - b["val_loss"]) < 1e-5
    for name in ("model", "ema"):
        wa, wb = load_file(str(ref_dir / f"{name}.safetensors")), load_file(str(run_dir / f"{name}.safetensors"))
        assert wa.keys() == wb.keys()
        for k in wa:
            torch.testing.assert_close(wb[k], wa[k], rtol=1e-5, atol=1e-6)


def test_checkpoint_write_killed_half_way_keeps_the_previous_one(tmp_path, monkeypatch):
    arch = {"model": "x"}
    w1 = {"model": {"a": torch.ones(3)}, "ema": {"a": torch.zeros(3)}}
    ck.save_checkpoint(str(tmp_path), 4, w1, {"epoch": 0, "batch": 4}, arch)
    assert ck.find_checkpoint(str(tmp_path)).endswith("step_000000004")

    def crash(*args, **kwargs):  # the state file write dies after the weights were written
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(ck, "save_state", crash)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(str(tmp_path), 6, {"model": {"a": torch.full((3,), 6.0)}}, {"epoch": 0, "batch": 6}, arch)
    monkeypatch.undo()
    found = ck.find_checkpoint(str(tmp_path))
    assert found.endswith("step_000000004")
    weights, state = ck.load_checkpoint(found)
    assert state["batch"] == 4 and state["step"] == 4
    assert torch.equal(weights["model"]["a"], torch.ones(3)) and torch.equal(weights["ema"]["a"], torch.zeros(3))
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["latest", "step_000000004"]  # no half-written folder

    # a later complete checkpoint replaces it and prunes the old folder
    ck.save_checkpoint(str(tmp_path), 8, {"model": {"a": torch.full((3,), 8.0)}}, {"epoch": 1, "batch": 0}, arch)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["latest", "step_000000008"]
    weights, state = ck.load_checkpoint(ck.find_checkpoint(str(tmp_path)))
    assert state["step"] == 8 and float(weights["model"]["a"][0]) == 8.0


def test_resume_errors_are_clear(tmp_path, synthetic_root):
    from pretrain.engine.resume import resume_source
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resume_source(str(tmp_path / "nope"), str(tmp_path))
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        resume_source(str(tmp_path / "empty_run"), str(tmp_path))
    assert resume_source("auto", str(tmp_path / "fresh")) is None  # auto without a checkpoint: start fresh
    (tmp_path / "broken" / "checkpoints").mkdir(parents=True)
    (tmp_path / "broken" / "checkpoints" / "latest").write_text("step_000000003\n")
    with pytest.raises(FileNotFoundError, match="state.pt is missing"):
        resume_source("auto", str(tmp_path / "broken"))


@pytest.mark.slow
def test_sigterm_checkpoints_after_the_step_and_exits_75(synthetic_root, tmp_path):
    """A pre-empted job (SIGTERM from torchrun/SLURM) finishes its step, writes a checkpoint and exits with 75."""
    out = tmp_path / "run"
    overrides = resume_overrides(synthetic_root, out, workers=1) + ["train.checkpoint_steps=0"]
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {ROOT!r})
        import pretrain.engine.train as engine
        from pretrain.train import main
        original = engine.TrainStep.__call__
        def call(self, *args, **kwargs):
            if kwargs.get("step") == 3:
                os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of step 4
            return original(self, *args, **kwargs)
        engine.TrainStep.__call__ = call
        sys.exit(main(["--config", {CFG!r}, *{overrides!r}]))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 75, proc.stderr[-3000:]
    assert "SIGTERM received" in proc.stderr
    assert (out / "checkpoints" / "latest").read_text().strip() == "step_000000004"
    _, state = ck.load_checkpoint(str(out / "checkpoints" / "step_000000004"))
    assert (state["epoch"], state["batch"]) == (0, 4)
    summary = json.load(open(out / "summary.json"))
    assert summary["stopped"] == "signal SIGTERM" and summary["steps"] == 4


def test_resuming_into_another_architecture_is_a_clear_error(synthetic_root, tmp_path, deterministic_cpu):
    from pretrain.models.vit import create_vit, vit_arch
    other = create_vit("deit_tiny_patch16_224", 4, img_size=32, patch_size=8, depth=3)
    out = tmp_path / "run"
    ck.save_checkpoint(str(out), 5, {"model": other.state_dict()}, {"epoch": 0, "batch": 5},
                       vit_arch(other, "deit_tiny_patch16_224"))
    cfg = load_config(CFG, resume_overrides(synthetic_root, out, workers=0) + ["train.resume=auto"])
    with pytest.raises(ValueError, match="cannot resume from .*step_000000005: its weights do not fit"):
        train(cfg)
