import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A tiny synthetic world (all formats) shared by the tests of one session."""
    from pretrain.data.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic")
    generate(root, seed=0, num_classes=4, cls_size=32, seg_size=64, train_per_class=24, val_per_class=8,
             seg_train=24, seg_val=8, coco_train=8, coco_val=4, voc_val=8)
    return root
