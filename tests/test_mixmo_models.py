"""MixMo networks: the ensemble forward, parameter counts against formulas written from the architecture
definitions, the DeiT variant (shapes, fused attention, bad sizes)."""
import pytest
import torch
import torch.nn.functional as F

from pretrain.mixmo import MixParams, build_mixmo_preact_resnet, build_mixmo_vit, build_mixmo_wrn


def _count(model):
    return sum(p.numel() for p in model.parameters())


def conv(cin, cout, k):
    return cin * cout * k * k


def bn(c):
    return 2 * c  # weight and bias (running statistics are buffers)


def wrn_params(depth, k, classes, members):
    """WRN-depth-k (Zagoruyko & Komodakis): conv3x3(3, 16) stem per member, 3 groups of (depth-4)/6
    pre-activation basic blocks of widths 16k, 32k, 64k, 1x1 projection when the shape changes,
    final BN, one linear head per member."""
    n = (depth - 4) // 6
    total = members * conv(3, 16, 3)
    cin = 16
    for w in (16 * k, 32 * k, 64 * k):
        for i in range(n):
            total += bn(cin) + conv(cin, w, 3) + bn(w) + conv(w, w, 3)
            if cin != w or (i == 0 and w != 16 * k):
                total += conv(cin, w, 1)
            cin = w
    return total + bn(cin) + members * (cin * classes + classes)


def preact18_params(width, classes, members, stem=64, final_bn=False):
    """PreActResNet-18 (He et al. 2016b) with widths 64w..512w: conv3x3 stem (``stem`` channels; the
    official MixMo code: 64 whatever the width) per member, 4 stages of two pre-activation blocks (strides 1,
    2, 2, 2; a 1x1 projection when the shape changes), optionally a final BN, one linear head per member."""
    total = members * conv(3, stem, 3)
    cin = stem
    for stage, w in enumerate((64 * width, 128 * width, 256 * width, 512 * width)):
        for i in range(2):
            total += bn(cin) + conv(cin, w, 3) + bn(w) + conv(w, w, 3)
            if i == 0 and (stage > 0 or cin != w):
                total += conv(cin, w, 1)
            cin = w
    return total + (bn(cin) if final_bn else 0) + members * (cin * classes + classes)


def test_parameter_counts_match_the_architectures():
    with torch.device("meta"):  # no memory for the 36M / 100M parameter nets
        wrn1 = build_mixmo_wrn(100, 1)
        wrn2 = build_mixmo_wrn(100, 2)
        pre = build_mixmo_preact_resnet(10, 1, width=1)
        pre3 = build_mixmo_preact_resnet(200, 2, width=3)
        pre3_ours = build_mixmo_preact_resnet(200, 2, width=3, stem_stride=1, stem_channels=None, final_norm=True)
    assert _count(wrn1) == wrn_params(28, 10, 100, 1)
    assert 36.4e6 < _count(wrn1) < 36.6e6  # the usual "36.5M" of WRN-28-10 on CIFAR-100
    # MixMo adds one stem conv (3*16*9) and one head (640*100 + 100), nothing else
    assert _count(wrn2) - _count(wrn1) == 432 + 64100
    assert _count(wrn2) == wrn_params(28, 10, 100, 2)
    assert _count(pre) == preact18_params(1, 10, 1)
    assert abs(_count(pre) - 11.17e6) < 0.01e6  # PreActResNet-18, 10 classes
    assert _count(pre3) == preact18_params(3, 200, 2)
    assert _count(pre3_ours) == preact18_params(3, 200, 2, stem=192, final_bn=True)
    small = build_mixmo_wrn(7, 3, depth=16, widen_factor=2)
    assert _count(small) == wrn_params(16, 2, 7, 3)


@pytest.mark.parametrize("kind", ["wrn", "preact", "vit"])
def test_inference_is_the_mean_of_the_heads_of_the_summed_encodings(kind):
    torch.manual_seed(0)
    if kind == "wrn":
        net = build_mixmo_wrn(6, 2, depth=10, widen_factor=1)
    elif kind == "preact":
        net = build_mixmo_preact_resnet(6, 3, width=1)
    else:
        net = build_mixmo_vit("deit_tiny_patch16_224", 6, 2, img_size=32, patch_size=8, depth=2, embed_dim=32,
                              num_heads=2)
    net.eval()
    x = torch.randn(3, 3, 32, 32)
    m = net.num_members
    with torch.no_grad():
        out = net(x)
        heads = net.head_logits(x)
        # reference by hand: every encoder sees x, encodings summed, core, each head, mean of the logits
        z = sum(enc(x) for enc in net.encoders)
        feats = net.core(z)
        ref = torch.stack([F.linear(feats, h.weight, h.bias) for h in net.heads])
        # the same as Linear-MixMo with lambda_k = 1/M (coefficients M/M = 1) on M copies of x
        linear = net(x.unsqueeze(0).expand(m, -1, -1, -1, -1), mix=MixParams(torch.ones(m, 3, 1, 1, 1)))
    assert out.shape == (3, 6) and heads.shape == (m, 3, 6)
    torch.testing.assert_close(heads, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out, ref.mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(linear, ref, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(heads[0], heads[1])  # the heads are distinct subnetworks


def test_deit_variant_shapes_fused_attention_and_keys(monkeypatch):
    torch.manual_seed(0)
    net = build_mixmo_vit("deit_small_patch16_224", 10, 2, img_size=64, patch_size=16, depth=2)
    assert net.mix_grid((64, 64)) == (4, 4)
    blocks = net.core.vit.blocks
    assert all(getattr(b.attn, "fused_attn", False) for b in blocks)
    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    from pretrain.mixmo import MixMoTrainer
    tr = MixMoTrainer(2, 10, mixing="cut", cut_prob=1.0, batch_repeat=2, seed=0)
    tr.model = net
    loss, heads = tr.forward_loss(net, torch.randn(3, 3, 64, 64), torch.tensor([0, 1, 2]))
    assert len(calls) == len(blocks)  # one fused attention call per block, no materialised attention
    assert heads.shape == (2,) and torch.isfinite(loss)
    loss.backward()
    for k in range(2):  # both patch embeddings and both heads get gradients
        assert net.encoders[k].proj.weight.grad is not None and net.encoders[k].proj.weight.grad.abs().sum() > 0
        assert net.heads[k].weight.grad.abs().sum() > 0
    assert net(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    keys = set(net.state_dict())
    assert {"encoders.0.proj.weight", "encoders.1.proj.weight", "core.vit.cls_token", "core.vit.pos_embed",
            "heads.0.weight", "heads.1.bias"} <= keys
    assert not any(k.startswith("core.vit.head.") or k.startswith("core.vit.patch_embed") for k in keys)
    assert {"core.vit.pos_embed", "core.vit.cls_token"} <= net.no_weight_decay()
    # the two patch embeddings start different (the second is re-initialised)
    assert not torch.equal(net.encoders[0].proj.weight, net.encoders[1].proj.weight)


def test_bad_sizes_are_clear_errors():
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        build_mixmo_vit("deit_tiny_patch16_224", 10, 2, img_size=60, patch_size=16, depth=1)
    net = build_mixmo_vit("deit_tiny_patch16_224", 10, 2, img_size=32, patch_size=8, depth=1)
    with pytest.raises(ValueError, match="takes 32x32 images"):
        net.mix_grid((64, 64))
    with pytest.raises(ValueError, match="depth must be 6n\\+4"):
        build_mixmo_wrn(10, 2, depth=27)
    with pytest.raises(ValueError, match="must be \\(B, C, H, W\\)"):
        build_mixmo_wrn(10, 2, depth=10, widen_factor=1)(torch.randn(2, 2, 3, 32, 32))
    from pretrain.mixmo import build_mixmo_model
    cfg = {"model": {"arch": "wrn", "kwargs": {"width": 3}, "name": "", "drop_path": 0.0},
           "data": {"num_classes": 10, "img_size": 32}, "mixmo": {"num_members": 2}}
    with pytest.raises(ValueError, match="unknown model.kwargs \\['width'\\] for model.arch=wrn"):
        build_mixmo_model(cfg)


def test_preact_stem_follows_the_official_stride_2_and_its_mixing_grid():
    """Official PreActResNet._make_conv1: 3x3, stride 2, padding 1, 64 channels: 64x64 Tiny ImageNet images are
    mixed on a 32x32 grid (floor((64 + 2 - 3) / 2) + 1 = 32); stride 1 keeps 64x64 (4x the core's compute)."""
    torch.manual_seed(0)
    for hw, stride in [((64, 64), 2), ((32, 32), 2), ((63, 63), 2), ((64, 64), 1)]:
        net = build_mixmo_preact_resnet(10, 2, width=1, stem_stride=stride)
        expect = tuple((v + 2 * 1 - 3) // stride + 1 for v in hw)
        assert net.mix_grid(hw) == expect
        x = torch.randn(2, 3, *hw)
        z = net.encoders[0](x)
        assert tuple(z.shape) == (2, 64, *expect)  # the mixing grid is the encoder's real output
        assert net.arch["stem_stride"] == stride
    assert build_mixmo_preact_resnet(200, 2, width=3).mix_grid((64, 64)) == (32, 32)
    assert build_mixmo_preact_resnet(10, 2, width=3).encoders[0].out_channels == 64  # not 64 * width
    assert build_mixmo_preact_resnet(10, 2, width=3, stem_channels=None).encoders[0].out_channels == 192
    # the recipe builds the official net
    from pretrain.engine.config import load_config
    from pretrain.mixmo import build_mixmo_model
    import os
    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "mixmo",
                                   "tiny_imagenet_preact18x3_cut_mixmo.yaml"), ["model.kwargs.width=1"])
    net = build_mixmo_model(cfg)
    assert net.mix_grid((64, 64)) == (32, 32) and net.core.bn is None
    with pytest.raises(ValueError, match="stem_stride must be 1 or 2"):
        build_mixmo_preact_resnet(10, 2, stem_stride=4)


def test_official_wrn_block_follows_the_mixmo_code():
    """Official WideBasic (mixmo/networks/wrn.py), re-stated with functional ops: out = conv2(pad(relu(bn2(
    conv1(relu(bn1(x))))))) + shortcut(x), conv2 carrying the stride (no padding after a right/bottom pad when
    strided), the 1x1 shortcut on the raw input."""
    from pretrain.mixmo.models import WideBasic
    torch.manual_seed(0)
    for cin, cout, stride in [(16, 32, 2), (32, 32, 1), (16, 24, 1)]:
        blk = WideBasic(cin, cout, stride).eval()
        for bnm in (blk.bn1, blk.bn2):  # non-trivial running statistics
            bnm.running_mean.uniform_(-0.5, 0.5)
            bnm.running_var.uniform_(0.5, 2.0)
            bnm.weight.data.uniform_(0.5, 1.5)
        x = torch.randn(2, cin, 8, 8)  # even sizes, as the official block (32 -> 16 -> 8)

        def bn_eval(t, m):
            return (t - m.running_mean.view(1, -1, 1, 1)) / torch.sqrt(m.running_var.view(1, -1, 1, 1) + m.eps) \
                * m.weight.view(1, -1, 1, 1) + m.bias.view(1, -1, 1, 1)

        o = F.conv2d(F.relu(bn_eval(x, blk.bn1)), blk.conv1.weight, padding=1)
        o = F.relu(bn_eval(o, blk.bn2))
        if stride == 1:
            o = F.conv2d(o, blk.conv2.weight, padding=1)
        else:
            o = F.conv2d(F.pad(o, (0, 1, 0, 1)), blk.conv2.weight, stride=stride)
        sc = x if (stride == 1 and cin == cout) else F.conv2d(x, blk.shortcut.weight, stride=stride)
        with torch.no_grad():
            torch.testing.assert_close(blk(x), o + sc, rtol=1e-5, atol=1e-5)
    with torch.device("meta"):
        off, ours = build_mixmo_wrn(100, 2, block="official"), build_mixmo_wrn(100, 2)
    assert _count(off) == _count(ours) == wrn_params(28, 10, 100, 2)
    net = build_mixmo_wrn(10, 2, depth=10, widen_factor=1, block="official")
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10) and net.arch["block"] == "official"
    with pytest.raises(ValueError, match="WRN block must be one of"):
        build_mixmo_wrn(10, 2, depth=10, block="x")


def test_official_init_is_the_truncated_he_fan_in_normal():
    """Official weights_init_hetruncatednormal: N(0, sqrt(2 / fan_in) / 0.8796) truncated at two of its
    standard deviations for convolutions (and the WRN heads), N(0, 0.01) for the PreActResNet heads."""
    import math
    torch.manual_seed(0)
    net = build_mixmo_wrn(100, 2, depth=10, widen_factor=4, init="official")
    w = net.core.blocks[1].conv1.weight.detach()  # 64 -> 64, 3x3: fan_in 576
    std = math.sqrt(2 / 576) / 0.87962566103423978
    assert float(w.abs().max()) <= 2 * std + 1e-7
    assert abs(float(w.std()) - math.sqrt(2 / 576)) < 0.03 * math.sqrt(2 / 576)  # He's variance kept
    h = net.heads[0].weight.detach()  # fan_in 256
    assert float(h.abs().max()) <= 2 * math.sqrt(2 / 256) / 0.87962566103423978 + 1e-7
    pre = build_mixmo_preact_resnet(200, 2, width=1, init="official")
    hp = pre.heads[0]
    assert abs(float(hp.weight.detach().std()) - 0.01) < 0.001 and float(hp.bias.detach().abs().sum()) == 0
    with pytest.raises(ValueError, match="init must be one of"):
        build_mixmo_wrn(10, 2, depth=10, init="xavier")
