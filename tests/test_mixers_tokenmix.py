"""TokenMix: batched block masks, scores, teacher maps and label maps against slow references."""
import math
import os

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from pretrain.mixing import build_mixer
from pretrain.mixing.tokenmix import block_mask_randoms, block_token_masks, token_scores
from pretrain.models.vit import create_vit


def slow_block_masks(num_tokens, grid, randoms, min_block=1, max_block=None, min_aspect=0.3):
    """BEiT's masking generator, one sample at a time with plain Python, reading the same random numbers."""
    gh, gw = grid
    rounds, n, attempts, _ = randoms.shape
    out = []
    for s in range(n):
        mask = [[0] * gw for _ in range(gh)]
        count, target = 0, min(int(num_tokens[s]), gh * gw)
        for r in range(rounds):
            if count >= target:
                break
            max_new = min(target - count, max_block or gh * gw)
            delta = 0
            for a in range(attempts):
                u = [float(v) for v in randoms[r, s, a]]
                area = 1.0 * min_block + u[0] * (max_new - min_block)
                aspect = math.exp(math.log(min_aspect) + u[1] * (math.log(1 / min_aspect) - math.log(min_aspect)))
                # float32 like the batched version (rounding of sqrt can differ in the last bit otherwise)
                area, aspect = np.float32(area), np.float32(aspect)
                h = int(np.round(np.sqrt(np.float32(area * aspect))))
                w = int(np.round(np.sqrt(np.float32(area / aspect))))
                if not (h < gh and w < gw):
                    continue
                top = int(np.float32(u[2]) * (gh - h + 1))
                left = int(np.float32(u[3]) * (gw - w + 1))
                new = sum(1 for i in range(top, top + h) for j in range(left, left + w) if not mask[i][j])
                if 0 < new <= max_new:
                    for i in range(top, top + h):
                        for j in range(left, left + w):
                            mask[i][j] = 1
                    delta = new
                    break
            if delta == 0:
                break
            count += delta
        out.append(mask)
    return torch.tensor(out, dtype=torch.bool)


@pytest.mark.parametrize("grid,min_block", [((14, 14), 1), ((6, 10), 1), ((8, 8), 4)])
def test_block_masks_match_slow_beit_reference(grid, min_block):
    g = torch.Generator().manual_seed(0)
    n = 12
    num = torch.randint(1, grid[0] * grid[1] + 1, (n,), generator=g)
    randoms = block_mask_randoms(64, n, 10, g)
    fast = block_token_masks(num, grid, randoms, min_block_tokens=min_block)
    slow = slow_block_masks(num, grid, randoms, min_block=min_block)
    assert torch.equal(fast, slow)
    counts = fast.flatten(1).sum(1)
    assert bool((counts <= num).all())
    assert (counts == num).float().mean() > 0.5  # most samples reach their token count exactly


def test_block_masks_are_multi_part_and_reach_the_official_count():
    """Official setting (14x14, lam 0.5, +14 tokens): 112 tokens in several blocks, not one rectangle."""
    g = torch.Generator().manual_seed(1)
    num = torch.full((64,), 112)
    masks = block_token_masks(num, (14, 14), block_mask_randoms(64, 64, 10, g))
    counts = masks.flatten(1).sum(1)
    assert (counts == 112).float().mean() > 0.9
    rect = 0
    for m in masks:
        ys, xs = torch.nonzero(m, as_tuple=True)
        rect += int((ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)) == int(m.sum())
    assert rect < 32


def slow_targets(pm, maps, y, k, smoothing, renorm, rule="official"):
    """Token-mixed targets, one entry at a time.

    ``official`` restates Sense-X/TokenMix ``Mixup.__call__``: off value ``s/K``; two rows, each with
    ``off/2`` everywhere and ``score - s/2 + off/2`` at its image's class, summed. ``onehot`` smooths each
    one-hot the timm way (``1 - s + s/K`` / ``s/K``) and weights it by the score."""
    b, p = pm.shape
    out = torch.zeros(b, k)
    off = smoothing / k
    for i in range(b):
        j = b - 1 - i
        w_own = sum(float(maps[i, t]) for t in range(p) if pm[i, t] == 0)
        w_par = sum(float(maps[j, t]) for t in range(p) if pm[i, t] == 1)
        if renorm:
            w_own, w_par = w_own / (w_own + w_par), w_par / (w_own + w_par)
        for c in range(k):
            if rule == "official":
                row1 = (w_own - smoothing / 2 + off / 2) if c == y[i] else off / 2
                row2 = (w_par - smoothing / 2 + off / 2) if c == y[j] else off / 2
                out[i, c] = row1 + row2
            else:
                yo = (1 - smoothing + off) if c == y[i] else off
                yp = (1 - smoothing + off) if c == y[j] else off
                out[i, c] = w_own * yo + w_par * yp
    return out


@pytest.mark.parametrize("rule", ["official", "onehot"])
@pytest.mark.parametrize("renorm", [False, True])
@pytest.mark.parametrize("mode", ["batch", "elem"])
def test_label_map_targets_match_slow_reference(mode, renorm, rule):
    torch.manual_seed(0)
    b, k, hw, p = 6, 5, (32, 48), 8
    mixer = build_mixer({"name": "tokenmix", "mixup_alpha": 0.0, "mode": mode, "patch_size": p,
                         "target": "label_map", "label_maps": "unused-here", "renormalize": renorm,
                         "smoothing_rule": rule}, k, seed=3)
    x = torch.randn(b, 3, *hw)
    y = torch.randint(0, k, (b,))
    maps = torch.rand(b, 4, 6) ** 4  # already on the 4x6 token grid
    batch = mixer(x, y, extras=maps)
    t = mixer.targets(batch)
    norm = maps.flatten(1) / maps.flatten(1).sum(1, keepdim=True)
    ref = slow_targets(batch.aux["patch_mask"], norm, y, k, 0.1, renorm, rule)
    torch.testing.assert_close(t, ref, rtol=1e-5, atol=1e-6)
    s_own, s_par = token_scores(batch.aux["patch_mask"], norm)
    assert bool(((s_own >= 0) & (s_own <= 1) & (s_par >= 0) & (s_par <= 1)).all())
    if renorm:
        torch.testing.assert_close(t.sum(1), torch.ones(b))
    # pixels: partner exactly where the token mask says, own elsewhere; the mask is constant per patch
    m = batch.mask.bool().expand_as(x)
    assert torch.equal(batch.images[m], x.flip(0)[m]) and torch.equal(batch.images[~m], x[~m])
    pm = batch.aux["patch_mask"].view(b, 4, 6)
    torch.testing.assert_close(batch.mask[:, 0], pm.repeat_interleave(p, 1).repeat_interleave(p, 2))
    torch.testing.assert_close(batch.lam, 1 - pm.flatten(1).mean(1))


def test_area_targets_sum_to_one_and_bce_loss():
    mixer = build_mixer({"name": "tokenmix", "mixup_alpha": 0.0, "patch_size": 8, "mode": "elem"}, 4, seed=0)
    x, y = torch.randn(4, 3, 16, 24), torch.tensor([0, 1, 2, 3])
    batch = mixer(x, y)
    t = mixer.targets(batch)
    torch.testing.assert_close(t.sum(1), torch.ones(4))
    logits = torch.randn(4, 4)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(logits, t)
    torch.testing.assert_close(mixer.loss(logits, t), ref)


def test_official_smoothing_of_a_hidden_object_is_negative():
    """Sense-X/TokenMix: an image whose activation lies entirely under the partner's tokens has score 0, and
    its class gets 0 - s/2 + s/K (negative); rows sum to the two scores; ``onehot`` never goes negative."""
    k, s, p = 10, 0.1, 8
    x, y = torch.randn(2, 3, 16, 16), torch.tensor([3, 7])
    cfg = {"name": "tokenmix", "mixup_alpha": 0.0, "patch_size": p, "target": "label_map", "label_maps": "unused"}
    pm = build_mixer(cfg, k, seed=0)(x, y, extras=torch.ones(2, 2, 2)).aux["patch_mask"][0]  # batch mode
    assert 0 < int(pm.sum()) < 4
    # the same seed draws the same mask: sample 0's activation under the pasted tokens, sample 1's on the kept
    maps = torch.stack([pm.view(2, 2), (1 - pm).view(2, 2)])
    own, par = [0.0, 1.0], [0.0, 1.0]  # sample 0 keeps none of its map and gets none of sample 1's; sample 1 all
    for rule in ("official", "onehot"):
        mixer = build_mixer({**cfg, "smoothing_rule": rule}, k, seed=0)
        batch = mixer(x, y, extras=maps)
        assert torch.equal(batch.aux["patch_mask"][0], pm)
        t = mixer.targets(batch)
        for i in range(2):
            for c in range(k):
                is_own, is_par = float(c == int(y[i])), float(c == int(y[1 - i]))
                if rule == "official":
                    want = s / k + (own[i] - s / 2) * is_own + (par[i] - s / 2) * is_par
                else:
                    want = own[i] * ((1 - s) * is_own + s / k) + par[i] * ((1 - s) * is_par + s / k)
                assert float(t[i, c]) == pytest.approx(want, abs=1e-6), (rule, i, c)
        torch.testing.assert_close(t.sum(1), torch.tensor([own[0] + par[0], own[1] + par[1]]))
        if rule == "official":
            assert float(t[0, 3]) == pytest.approx(-s / 2 + s / k) and float(t[0, 7]) < 0
        else:
            assert float(t.min()) >= 0


def test_bce_is_timm054_binary_cross_entropy_without_clamp():
    """timm 0.5.4 ``BinaryCrossEntropy()`` on dense targets: mean over B x K of log(1 + e^x) - x t with the
    targets as given (negative or above 1 too); ``bce_clamp`` clamps them to [0, 1] first."""
    torch.manual_seed(0)
    logits = torch.randn(3, 4) * 3
    t = torch.tensor([[-0.05, 0.01, 1.2, 0.3], [0.5, 0.5, -0.2, 0.0], [1.0, 0.0, 0.0, 0.9]])

    def slow(tt):
        vals = [math.log1p(math.exp(float(logits[i, c]))) - float(logits[i, c]) * float(tt[i, c])
                for i in range(3) for c in range(4)]
        return sum(vals) / len(vals)

    plain = build_mixer({"name": "tokenmix", "patch_size": 8}, 4, seed=0)
    clamped = build_mixer({"name": "tokenmix", "patch_size": 8, "bce_clamp": True}, 4, seed=0)
    assert float(plain.loss(logits, t)) == pytest.approx(slow(t), rel=1e-5)
    assert float(clamped.loss(logits, t)) == pytest.approx(slow(t.clamp(0, 1)), rel=1e-5)
    assert abs(slow(t) - slow(t.clamp(0, 1))) > 1e-3  # the two really differ on these targets
    ce = build_mixer({"name": "tokenmix", "patch_size": 8, "loss": "ce"}, 4, seed=0)
    want = -sum(float(t[i, c]) * float(torch.log_softmax(logits[i], 0)[c]) for i in range(3) for c in range(4)) / 3
    assert float(ce.loss(logits, t)) == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("zero_map", ["zero", "uniform"])
def test_all_zero_map_gives_weight_zero_as_official(zero_map):
    """An all-zero label map: weight 0 for that image (official ``map / (sum + 1e-8)``), or the area share
    with ``zero_map: uniform``."""
    k, s, p = 6, 0.1, 8
    x, y = torch.randn(4, 3, 16, 32), torch.tensor([0, 1, 2, 3])
    mixer = build_mixer({"name": "tokenmix", "mixup_alpha": 0.0, "patch_size": p, "target": "label_map",
                         "label_maps": "unused-here", "zero_map": zero_map}, k, seed=2)
    maps = torch.rand(4, 2, 4) + 0.1
    maps[1] = 0.0
    batch = mixer(x, y, extras=maps)
    t = mixer.targets(batch)
    pm = batch.aux["patch_mask"]
    kept = float((1 - pm[1]).sum()) / pm.shape[1]  # sample 1's own-token share
    w1 = 0.0 if zero_map == "zero" else kept
    # sample 1's own class; sample 2 has sample 1 as partner (flip), its partner class is 1
    assert float(t[1, 1]) == pytest.approx(s / k + w1 - s / 2, abs=1e-6)
    w2_partner = 0.0 if zero_map == "zero" else float(pm[2].sum()) / pm.shape[1]
    assert float(t[2, 1]) == pytest.approx(s / k + w2_partner - s / 2, abs=1e-6)


def test_cnn_teacher_cam_of_the_label_matches_manual_cam():
    torch.manual_seed(0)
    cnn = timm.create_model("resnet18", pretrained=False, num_classes=5).eval()
    mixer = build_mixer({"name": "tokenmix", "mixup_alpha": 0.0, "patch_size": 16, "target": "teacher",
                         "teacher": cnn, "mode": "elem"}, 5, seed=0)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 3, 4, 1])
    batch = mixer(x, y)
    with torch.no_grad():
        f = cnn.forward_features(x)  # 4, 512, 2, 2
    ref = torch.zeros(4, 4 * 4)
    for i in range(4):
        cam = torch.zeros(2, 2)
        for c in range(f.shape[1]):
            cam += cnn.fc.weight[y[i], c] * f[i, c]
        cam = (cam + cnn.fc.bias[y[i]]).clamp_min(0)
        up = torch.nn.functional.interpolate(cam[None, None], size=(4, 4), mode="bilinear", align_corners=False)
        up = up.flatten().clamp_min(0)
        ref[i] = up / up.sum() if up.sum() > 0 else torch.zeros(16)  # official: an all-zero map stays zero
    torch.testing.assert_close(batch.aux["maps"], ref, rtol=1e-4, atol=1e-6)
    assert not any(p.requires_grad for p in cnn.parameters())
    with pytest.raises(ValueError, match="same label space"):
        build_mixer({"name": "tokenmix", "target": "teacher", "teacher": cnn}, 7)


def test_vit_teacher_uses_cls_attention_and_any_grid():
    torch.manual_seed(0)
    teacher = create_vit("deit_tiny_patch16_224", 3, img_size=(32, 48), patch_size=16, depth=1).eval()
    mixer = build_mixer({"name": "tokenmix", "mixup_alpha": 0.0, "target": "teacher", "teacher": teacher}, 7, seed=0)
    student = create_vit("deit_tiny_patch16_224", 7, img_size=(32, 48), patch_size=8, depth=1)
    x, y = torch.randn(4, 3, 32, 48), torch.arange(4)
    batch = mixer(x, y, model=student)  # patch size from the student: a 4x6 grid
    assert batch.aux["maps"].shape == (4, 24)
    torch.testing.assert_close(batch.aux["maps"].sum(1), torch.ones(4))
    t = mixer.targets(batch)
    assert bool((t.sum(1) <= 2 + 1e-6).all()) and bool((t >= 0).all())


def test_determinism_and_resume_state():
    cfg = {"name": "tokenmix", "patch_size": 8, "mode": "elem"}
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 3
    a, b = build_mixer(cfg, 3, seed=5), build_mixer(cfg, 3, seed=5)
    for _ in range(3):
        ba, bb = a(x, y), b(x, y)
        assert torch.equal(ba.images, bb.images) and torch.equal(ba.lam, bb.lam)
    state = a.state_dict()
    nxt = a(x, y)
    b.load_state_dict(state)
    assert torch.equal(b(x, y).images, nxt.images)
    c = build_mixer(cfg, 3, seed=6)
    assert not all(torch.equal(c(x, y).images, a(x, y).images) for _ in range(3))


def test_bad_inputs_are_named():
    mixer = build_mixer({"name": "tokenmix", "patch_size": 16}, 4, seed=0)
    with pytest.raises(ValueError, match="not divisible by the patch size 16"):
        mixer(torch.randn(2, 3, 40, 32), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="at least 2"):
        mixer(torch.randn(1, 3, 32, 32), torch.tensor([0]))
    with pytest.raises(ValueError, match="patch size"):
        build_mixer({"name": "tokenmix"}, 4)(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    lm = build_mixer({"name": "tokenmix", "mixup_alpha": 0.0, "patch_size": 8, "target": "label_map",
                      "label_maps": "x"}, 4, seed=0)
    with pytest.raises(ValueError, match="wrap_dataset"):
        lm(torch.randn(2, 3, 16, 16), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"label maps must be \(B, h, w\)"):
        lm(torch.randn(2, 3, 16, 16), torch.tensor([0, 1]), extras=torch.rand(3, 2, 2))
    with pytest.raises(ValueError, match="unknown TokenMix target"):
        build_mixer({"name": "tokenmix", "target": "cam"}, 4)
    with pytest.raises(ValueError, match="smoothing_rule"):
        build_mixer({"name": "tokenmix", "smoothing_rule": "timm"}, 4)
    with pytest.raises(ValueError, match="zero_map"):
        build_mixer({"name": "tokenmix", "zero_map": "area"}, 4)
    with pytest.raises(ValueError, match="checkpoint' is required"):
        build_mixer({"name": "tokenmix", "target": "teacher", "teacher": {"name": "resnet18"}}, 4)


# ---- precomputed label maps on disk -------------------------------------------------------------
def _ramp_folder(root, n_per_class=3, size=(40, 56)):
    """Images whose red channel is a horizontal ramp and green a vertical one."""
    h, w = size
    xs = np.tile(np.linspace(0, 255, w), (h, 1))
    ys = np.tile(np.linspace(0, 255, h)[:, None], (1, w))
    img = np.stack([xs, ys, np.zeros_like(xs)], -1).astype(np.uint8)
    for c in ("a", "b"):
        os.makedirs(root / c, exist_ok=True)
        for i in range(n_per_class):
            Image.fromarray(img).save(root / c / f"{i}.png")
    return img


def test_label_map_dataset_follows_crop_and_flip(tmp_path):
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder
    from pretrain.data.label_maps import LabelMapDataset

    img = _ramp_folder(tmp_path / "train")
    ds = ImageFolder(str(tmp_path / "train"), transform=T.Compose([
        T.RandomResizedCrop(32, scale=(0.2, 0.6)), T.RandomHorizontalFlip(), T.ToTensor()]))
    # the stored map of every image: its red ramp at 1/4 resolution (0..1)
    red = torch.from_numpy(img[..., 0].astype(np.float32) / 255.0)
    small = torch.nn.functional.avg_pool2d(red[None, None], 4)[0, 0]  # 10 x 14
    out = tmp_path / "maps"
    out.mkdir()
    np.save(out / "maps.npy", np.stack([small.numpy().astype(np.float16)] * len(ds)))
    (out / "index.txt").write_text("".join(os.path.relpath(p, ds.root) + "\n" for p, _ in ds.samples))
    (out / "meta.json").write_text("{}")
    wrapped = LabelMapDataset(ds, str(out), out_size=(4, 4))
    assert wrapped.root == ds.root and wrapped.classes == ds.classes and len(wrapped) == len(ds)
    torch.manual_seed(0)
    flips = 0
    for i in range(12):
        image, label, m = wrapped[i % len(ds)]
        assert m.shape == (4, 4) and label == ds.samples[i % len(ds)][1]
        ref = torch.nn.functional.adaptive_avg_pool2d(image[0][None, None], (4, 4))[0, 0]
        torch.testing.assert_close(m, ref, atol=0.05, rtol=0)  # the map moved with the pixels
        flips += bool(m[:, 0].mean() > m[:, -1].mean())
    assert 0 < flips < 12  # both flipped and unflipped views were checked
    bad = tmp_path / "bad"
    bad.mkdir()
    np.save(bad / "maps.npy", np.zeros((len(ds), 2, 2), np.float16))
    (bad / "index.txt").write_text("".join(f"x/{i}.png\n" for i in range(len(ds))))
    (bad / "meta.json").write_text("{}")
    with pytest.raises(ValueError, match="index.txt line 1"):
        LabelMapDataset(ds, str(bad))
    with pytest.raises(FileNotFoundError, match="maps.npy"):
        LabelMapDataset(ds, str(tmp_path / "missing"))


def _run_label_maps_tool(tmp_path):
    """vitmix-make-label-maps on ``tmp_path/train`` with a 1-block 32 px teacher: (teacher, maps folder)."""
    from pretrain.mixing import label_maps_cli as make_label_maps  # tools/make_label_maps.py's main
    from pretrain.checkpoint import save_weights
    from pretrain.models.vit import vit_arch

    teacher = create_vit("deit_tiny_patch16_224", 2, img_size=32, patch_size=8, depth=1)
    ckpt = tmp_path / "teacher.safetensors"
    save_weights(str(ckpt), teacher.state_dict(), vit_arch(teacher, "deit_tiny_patch16_224"))
    out = tmp_path / "maps"
    assert make_label_maps.main(["--data", str(tmp_path / "train"), "--out", str(out), "--teacher-checkpoint",
                                 str(ckpt), "--workers", "0", "--batch-size", "3", "--device", "cpu"]) == 0
    return teacher, out


def test_make_label_maps_tool_and_training_batch(tmp_path):
    from torch.utils.data import DataLoader
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder

    _ramp_folder(tmp_path / "train", n_per_class=4)
    teacher, out = _run_label_maps_tool(tmp_path)
    maps = np.load(out / "maps.npy")
    assert maps.shape == (8, 4, 4) and maps.dtype == np.float16
    # the stored maps are the teacher's CLS attention on the resized whole image
    ds_plain = ImageFolder(str(tmp_path / "train"), transform=T.Compose([
        T.Resize((32, 32), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(),
        T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]))
    from pretrain.models.vit import ClsAttentionTap
    tap = ClsAttentionTap(teacher.eval())
    with torch.no_grad():
        teacher(ds_plain[5][0][None])
    torch.testing.assert_close(torch.from_numpy(maps[5].astype(np.float32)), tap.patch_attention().view(4, 4),
                               atol=2e-3, rtol=1e-2)
    # training side: wrap, load a batch, mix, targets
    mixer = build_mixer({"name": "tokenmix", "mixup_alpha": 0.0, "patch_size": 8, "target": "label_map",
                         "label_maps": str(out), "mode": "elem"}, 2, seed=0)
    train = ImageFolder(str(tmp_path / "train"), transform=T.Compose([
        T.RandomResizedCrop(32), T.RandomHorizontalFlip(), T.ToTensor()]))
    loader = DataLoader(mixer.wrap_dataset(train), batch_size=4, shuffle=True, drop_last=True)
    images, labels, extras = next(iter(loader))
    assert extras.shape == (4, 4, 4)
    batch = mixer(images, labels, extras=extras)
    t = mixer.targets(batch)
    assert t.shape == (4, 2) and bool((t >= 0).all()) and bool((t.sum(1) <= 2 + 1e-5).all())


def test_make_label_maps_skips_hidden_folders_like_the_training_dataset(tmp_path):
    """A ``.ipynb_checkpoints/`` in the split is no class for the label-map tool either: its index and
    labels line up with the engine's dataset (torchvision's ImageFolder would make it class 0)."""
    from pretrain.data.folders import RobustImageFolder

    img = _ramp_folder(tmp_path / "train", n_per_class=2)
    os.makedirs(tmp_path / "train" / ".ipynb_checkpoints")
    Image.fromarray(img).save(tmp_path / "train" / ".ipynb_checkpoints" / "0-checkpoint.png")
    _, out = _run_label_maps_tool(tmp_path)
    index = (out / "index.txt").read_text().split()
    engine = RobustImageFolder(str(tmp_path / "train"))
    assert index == [os.path.relpath(p, tmp_path / "train") for p, _ in engine.samples]
    assert len(index) == 4 and not any(".ipynb" in p for p in index)
    assert np.load(out / "maps.npy").shape[0] == 4


def test_mask_ratio_null_from_a_config_draws_the_share_per_batch():
    """mixer.mask_ratio: null (YAML) reaches the class as None: the pasted share is drawn from
    Beta(cutmix_alpha, cutmix_alpha) per batch instead of the official constant 0.5; a None for an option
    that does not take one is still an error naming the key."""
    x, y = torch.randn(4, 3, 32, 32), torch.arange(4)
    fixed = build_mixer({"name": "tokenmix", "mixup_alpha": 0.0, "patch_size": 4}, 4, seed=0)
    drawn = build_mixer({"name": "tokenmix", "mixup_alpha": 0.0, "patch_size": 4, "mask_ratio": None}, 4, seed=0)
    assert drawn.mask_ratio is None
    n_fixed = {int(fixed(x, y).aux["patch_mask"][0].sum()) for _ in range(6)}
    n_drawn = {int(drawn(x, y).aux["patch_mask"][0].sum()) for _ in range(6)}
    assert n_fixed == {int(0.5 * 64) + round(64 / 14)} and len(n_drawn) > 1
    with pytest.raises(ValueError, match=r"mixer\.mixup_alpha .* must be a number"):
        build_mixer({"name": "tokenmix", "mixup_alpha": None}, 4)
