import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def deterministic_cpu():
    """One intra-op thread for the test (bit-identical CPU runs), deterministic algorithms off afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(False)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A tiny synthetic world (all formats) shared by the tests of one session."""
    from pretrain.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, seed=0, num_classes=4, cls_size=32, seg_size=64, train_per_class=24, val_per_class=8,
             seg_train=24, seg_val=8, coco_train=8, coco_val=4, voc_val=8)
    return root


@pytest.fixture(scope="session")
def tiny_vit():
    """Factory ``tiny_vit(num_classes) -> (state_dict, arch)``: a DeiT-Tiny-width timm ViT (64 px,
    patch 8, 6 blocks) whose weights are moved away from timm's init (so a loaded tensor cannot equal
    a freshly initialised one by chance), and its checkpoint metadata (``vit_arch``). Cached per class
    count; ``pretrain.checkpoint.save_weights(path, *tiny_vit(k))`` writes it in the
    pretraining output format."""
    import torch

    from pretrain.models.vit import create_vit, vit_arch

    cache = {}

    def make(num_classes: int):
        if num_classes not in cache:
            torch.manual_seed(0)
            name = "deit_tiny_patch16_224"
            m = create_vit(name, num_classes, img_size=64, patch_size=8, depth=6)
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(torch.randn_like(p) * 0.02)
            cache[num_classes] = ({k: v.contiguous() for k, v in m.state_dict().items()}, vit_arch(m, name))
        return cache[num_classes]

    return make
