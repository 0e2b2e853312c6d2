"""The MMDetection and Detectron2 registrations are one backbone: the same
checkpoint reaches both, their state dicts have the same keys, and for the same
weights and the same image each framework's preprocessing and backbone give
identical feature pyramids."""

import os

import numpy as np
import pytest
import torch

pytest.importorskip("mmcv.ops", reason="needs mmcv with compiled ops")
pytest.importorskip("mmdet")
pytest.importorskip("detectron2")
timm = pytest.importorskip("timm")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MMDET_CFG = os.path.join(REPO, "configs", "mmdet", "mask-rcnn_vitmix_synthetic.py")
D2_CFG = os.path.join(REPO, "configs", "detectron2", "mask_rcnn_vitmix_synthetic.py")


def test_same_checkpoint_same_pyramid_in_both_frameworks(tmp_path, synthetic_root, monkeypatch, tiny_vit):
    import cv2
    from detectron2.config import LazyConfig, instantiate
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmdet.utils import register_all_modules

    monkeypatch.setenv("VITMIX_SYNTHETIC_DIR", str(synthetic_root))
    monkeypatch.setenv("VITMIX_CACHE_DIR", str(tmp_path / "cache"))
    from pretrain.checkpoint import save_weights

    sd = tiny_vit(4)[0]  # a synthetic-pretraining checkpoint with the configs' architecture
    ckpt = str(tmp_path / "model.safetensors")
    save_weights(ckpt, *tiny_vit(4))

    register_all_modules(init_default_scope=False)
    init_default_scope("mmdet")
    import downstream.mmdet  # noqa: F401
    from mmdet.registry import MODELS

    cfg = Config.fromfile(MMDET_CFG)
    cfg.model.backbone.pretrained = ckpt
    mm = MODELS.build(cfg.model)
    mm.init_weights()
    mm.eval()

    d2cfg = LazyConfig.load(D2_CFG)
    d2cfg.model.backbone.pretrained = ckpt
    d2 = instantiate(d2cfg.model).eval()

    # the checkpoint reached both ViTs (CLS pos entry, patch embedding, every block)
    for model in (mm, d2):
        vit = model.backbone.vit.state_dict()
        for k in ("pos_embed", "patch_embed.proj.weight", "blocks.5.mlp.fc2.weight", "blocks.0.attn.qkv.bias"):
            assert torch.equal(vit[k], sd[k]), k
        assert model.backbone.load_report.loaded and not model.backbone.load_report.unexpected

    # one module: same keys and shapes; copy the (randomly initialised) pyramid across
    mm_sd = mm.backbone.state_dict()
    assert {k: v.shape for k, v in mm_sd.items()} == {k: v.shape for k, v in d2.backbone.state_dict().items()}
    d2.backbone.load_state_dict(mm_sd)

    # same image file through each framework's own preprocessing: MMDet reads BGR and
    # converts (bgr_to_rgb), Detectron2's mapper reads RGB (input_format "RGB"). The image is
    # brought to the configs' square first: a smaller one is padded to it with each framework's
    # official ViTDet pad value (MMDet 114 before normalising, Detectron2 its pixel mean), which
    # differ by design (tests/test_mmdet_adapter.py, tests/test_d2_adapter.py test each)
    img_path = sorted((synthetic_root / "coco" / "val").glob("*.jpg"))[0]
    square = d2cfg.model.backbone.square_pad
    assert (square, square) == tuple(cfg.image_size)
    bgr = cv2.resize(cv2.imread(str(img_path)), (square, square), interpolation=cv2.INTER_LINEAR)
    with torch.no_grad():
        mm_in = mm.data_preprocessor({"inputs": [torch.from_numpy(bgr).permute(2, 0, 1)], "data_samples": None}, False)[
            "inputs"
        ]
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        d2_in = d2.preprocess_image([{"image": torch.from_numpy(rgb).permute(2, 0, 1)}]).tensor
        torch.testing.assert_close(mm_in, d2_in)
        mm_feats = mm.extract_feat(mm_in)
        d2_feats = d2.backbone(d2_in)
    assert list(d2_feats) == ["p2", "p3", "p4", "p5", "p6"] and len(mm_feats) == 5
    h, w = mm_in.shape[-2:]
    for (name, b), a, s in zip(d2_feats.items(), mm_feats, (4, 8, 16, 32, 64)):
        assert a.shape == (1, 64, h // s, w // s), name
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    # the heads see the pyramid at the strides they were configured for
    assert list(cfg.model.rpn_head.anchor_generator.strides) == [4, 8, 16, 32, 64]
    assert [d2.backbone.output_shape()[f].stride for f in d2.proposal_generator.in_features] == [4, 8, 16, 32, 64]
