"""Our backbone vs MMSeg's own VisionTransformer; weights-only loading of MMEngine checkpoints;
strict-loading errors through MMEngine's runner."""

import copy
import io
import os
import pickle

import pytest
import torch

pytest.importorskip("mmseg")
from mmengine.config import Config  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module", autouse=True)
def _mmseg_scope():
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    import downstream.mmseg  # noqa: F401


def _pair(**over):
    from mmseg.registry import MODELS

    from downstream.mmseg.compat import mmseg_vit_config, timm_to_mmseg_vit

    cfg = dict(type="VitMixViT", img_size=64, patch_size=8, embed_dims=96, num_layers=3, num_heads=3, **over)
    ours = MODELS.build(cfg)
    torch.manual_seed(0)
    with torch.no_grad():  # move every tensor away from its init so that a wrong mapping shows
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    theirs = MODELS.build(mmseg_vit_config(cfg))
    theirs.load_state_dict(timm_to_mmseg_vit(ours.state_dict()), strict=True)
    return ours, theirs


@pytest.mark.parametrize("size", [(64, 64), (48, 80)])
def test_same_features_as_mmseg_vision_transformer(size):
    """Same weights -> same maps, also where both resize the position embedding (non-square input)."""
    ours, theirs = _pair(out_indices=[0, 2])
    ours.eval()
    theirs.eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert len(a) == len(b) == 2
    for u, v in zip(a, b):
        assert u.shape == v.shape == (2, 96, size[0] // 8, size[1] // 8)
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-5)


def test_same_gradients_as_mmseg_vision_transformer():
    ours, theirs = _pair()
    ours.train()
    theirs.train()
    x = torch.randn(2, 3, 64, 64)
    ours(x)[0].square().mean().backward()
    theirs(x)[0].square().mean().backward()
    from downstream.mmseg.compat import timm_to_mmseg_vit

    grads = timm_to_mmseg_vit({k: p.grad for k, p in ours.named_parameters()})
    for k, p in theirs.named_parameters():
        torch.testing.assert_close(grads[k], p.grad, rtol=1e-3, atol=1e-6, msg=k)


def test_mmengine_checkpoint_loads_weights_only(tmp_path):
    """An iter_*.pth as MMEngine writes it (message hub with HistoryBuffer, numpy) loads with the default
    torch.load(weights_only=True) once the adapter is imported; other globals stay refused."""
    import numpy as np
    from mmengine.logging import MessageHub

    hub = MessageHub.get_instance("compat_test")
    for i in range(3):
        hub.update_scalar("train/loss", 1.0 / (i + 1))
    hub.update_info("iter", 3)
    ckpt = {
        "meta": {"iter": 3, "seed": np.int64(7), "dataset_meta": {"classes": ("a", "b")}},
        "state_dict": {"backbone.w": torch.ones(2)},
        "message_hub": hub.state_dict(),
        "arr": np.arange(4, dtype=np.float32),
    }
    path = tmp_path / "iter_3.pth"
    torch.save(ckpt, path)
    back = torch.load(path, map_location="cpu")  # weights_only=True is torch's default
    assert back["meta"]["seed"] == 7 and back["meta"]["dataset_meta"]["classes"] == ("a", "b")
    buf = back["message_hub"]["log_scalars"]["train/loss"]
    assert buf.current() == pytest.approx(1 / 3) and buf.mean() == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert back["arr"].tolist() == [0.0, 1.0, 2.0, 3.0]

    class GetattrOther:  # getattr on an allow-listed type that is not a HistoryBuffer
        def __reduce__(self):
            return (getattr, (np.ndarray, "tofile"))

    class Eval:
        def __reduce__(self):
            return (eval, ("1 + 1",))

    for evil in (GetattrOther(), Eval()):
        bad = tmp_path / "evil.pth"
        torch.save({"x": evil}, bad)
        with pytest.raises(pickle.UnpicklingError):
            torch.load(bad, map_location="cpu")
    # the restricted getattr refuses anything but HistoryBuffer methods
    from downstream.mmengine.checkpoint import _restricted_getattr

    with pytest.raises(pickle.UnpicklingError, match="only HistoryBuffer methods"):
        _restricted_getattr(io, "open")
    with pytest.raises(pickle.UnpicklingError):
        _restricted_getattr(buf, "__class__")


def test_unconverted_checkpoint_stops_the_runner_with_the_keys(synthetic_root, tmp_path):
    """MMSeg-layout weights (what MMSeg's own ViT would take non-strictly) stop `train()` with the key list."""
    from mmengine.runner import Runner

    from downstream.mmseg.compat import timm_to_mmseg_vit
    from downstream.weights import CheckpointError

    ours, _ = _pair()
    path = str(tmp_path / "mmseg_vit.pth")
    torch.save({"state_dict": {"backbone." + k: v for k, v in timm_to_mmseg_vit(ours.state_dict()).items()}}, path)

    os.environ["VITMIX_SYNTHETIC_DIR"] = str(synthetic_root)
    try:
        cfg = Config.fromfile(os.path.join(REPO, "configs", "mmseg", "linear_synthetic.py"))
    finally:
        os.environ.pop("VITMIX_SYNTHETIC_DIR")
    cfg = copy.deepcopy(cfg)
    cfg.work_dir = str(tmp_path / "work")
    cfg.experiment_name = "unconverted"
    cfg.model.backbone.update(embed_dim=96, depth=3, num_heads=3, pretrained=path)
    cfg.model.decode_head.update(in_channels=96, channels=96)
    for which in ("train", "val", "test"):
        cfg[f"{which}_dataloader"]["num_workers"] = 0
        cfg[f"{which}_dataloader"]["persistent_workers"] = False
    runner = Runner.from_cfg(cfg)
    with pytest.raises(CheckpointError) as e:
        runner.train()
    msg = str(e.value)
    assert path in msg and "blocks.0.attn.qkv.weight" in msg and "layers.0.attn.attn.in_proj_weight" in msg
    assert "MMSeg's own VisionTransformer layout" in msg
