"""Gradient accumulation (``train.accum_steps``) and activation checkpointing (``train.grad_checkpointing``):
the same update as one big batch, the same loss and gradients, the TransMix tap under both, the engine run."""
import contextlib
import copy
import json
import os

import pytest
import timm
import torch

import pretrain.models.ca_swin  # noqa: F401 - registers ca_swin_*
from pretrain.engine.config import load_config
from pretrain.engine.step import TrainStep
from pretrain.engine.train import train
from pretrain.mixing import build_mixer
from pretrain.objectives.classification import ClassificationObjective

CFG = os.path.join(os.path.dirname(__file__), "..", "configs", "pretrain", "synthetic_transmix.yaml")


def tiny_deit(**kw):
    torch.manual_seed(0)
    return timm.create_model("deit_tiny_patch16_224", num_classes=4, img_size=32, patch_size=8, embed_dim=32,
                             depth=2, num_heads=2, **kw)


def _sgd(model):
    # SGD: the update is linear in the gradient (Adam's first step, g / (|g| + eps), would magnify float noise of
    # near-zero gradients into lr-sized differences)
    return torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9, weight_decay=0.05)


class CountingNet(torch.nn.Module):
    """``model`` with a DDP-like ``no_sync`` that counts its uses."""

    def __init__(self, model):
        super().__init__()
        self.model, self.no_sync_calls = model, 0

    def forward(self, x):
        return self.model(x)

    @contextlib.contextmanager
    def no_sync(self):
        self.no_sync_calls += 1
        yield


@pytest.mark.parametrize("k", [2, 4])
def test_k_micro_batches_give_the_update_of_one_batch(k):
    model = tiny_deit()
    ref = copy.deepcopy(model)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 4, (8,))
    objective = ClassificationObjective(build_mixer({"name": "none", "label_smoothing": 0.0}, 4, seed=0))
    objective.bind(model)
    calls = []
    objective.mixer = _Counting(objective.mixer, calls)
    net = CountingNet(model)
    step = TrainStep(model, net, objective, _sgd(model), torch.amp.GradScaler("cpu", enabled=False),
                     clip_grad=0.5, accum_steps=k)
    res = step(x, y, None, lr=1e-2)
    assert calls == [8 // k] * k  # the mixer draws once per micro-batch, on b/k images
    assert net.no_sync_calls == k - 1  # gradients sync on the last micro-batch only
    # independent reference: one plain step on the whole batch
    opt = _sgd(ref)
    loss = torch.nn.functional.cross_entropy(ref(x), y)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
    opt.step()
    assert res.loss == pytest.approx(loss.item(), rel=1e-5)
    assert res.grad_norm == pytest.approx(norm.item(), rel=1e-4)
    assert norm.item() > 0.5  # clipping was active, after accumulation
    for (name, a), b in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-7, msg=name)  # the clipped gradients
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=name)


class _Counting:
    def __init__(self, mixer, calls):
        self.inner, self.calls = mixer, calls

    def __call__(self, images, labels, **kw):
        self.calls.append(images.shape[0])
        return self.inner(images, labels, **kw)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_accum_steps_must_divide_the_batch():
    with pytest.raises(ValueError, match="train.accum_steps must be >= 1 and divide data.batch_size=64"):
        load_config(CFG, ["train.accum_steps=3"])


@pytest.mark.parametrize("name,kw", [
    ("deit_tiny_patch16_224", dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)),
    ("xcit_nano_12_p16_224", dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, cls_attn_layers=2)),
    ("cait_xxs24_224", dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, depth_token_only=2)),
    ("ca_swin_tiny_patch4_window7_224", dict(img_size=32, patch_size=2, embed_dim=16, depths=(1, 1, 1, 2),
                                             num_heads=(1, 1, 2, 2), window_size=2)),
])
def test_checkpointing_gives_the_same_transmix_loss_and_gradients(name, kw):
    torch.manual_seed(0)
    plain = timm.create_model(name, num_classes=4, drop_path_rate=0.1, **kw)
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing(True)
    x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 4, (6,))
    losses, grads = [], []
    for model in (plain, ckpt):
        objective = ClassificationObjective(build_mixer({"name": "transmix", "mixup_alpha": 0.0}, 4, seed=3))
        objective.bind(model)
        assert objective.tap is not None
        first = dict(model.named_modules()).get("blocks.0") or dict(model.named_modules())["layers.0.blocks.0"]
        calls = []
        hook = first.register_forward_pre_hook(lambda *a: calls.append(1))  # (a recompute may stop early)
        torch.manual_seed(1)  # same drop-path draws
        loss, _ = objective.forward_loss(model, x, y)
        n_forward = len(calls)
        loss.backward()
        hook.remove()
        assert len(calls) == n_forward * (2 if model is ckpt else 1)  # checkpointing really recomputes
        losses.append(loss.item())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        objective.close()
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)  # lambda from the same attention under checkpointing
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-5, atol=1e-7, msg=n)


def test_engine_runs_with_accumulation_and_checkpointing(synthetic_root, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(CFG, [f"data.root={synthetic_root}/imagenet", "data.num_classes=4", "data.img_size=32",
                            "data.batch_size=8", "data.workers=0", "model.kwargs.img_size=32", "model.kwargs.depth=2",
                            f"train.out_dir={out}", "train.epochs=1", "train.max_steps=2", "train.log_interval=1",
                            "train.tensorboard=false", "train.accum_steps=2", "train.grad_checkpointing=true"])
    summary = train(cfg)
    assert summary["steps"] == 2
    steps = [json.loads(x) for x in open(out / "steps.jsonl")]
    assert [r["step"] for r in steps] == [1, 2] and all(r["loss"] > 0 for r in steps)
