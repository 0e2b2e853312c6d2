"""Datasets and loaders of a pretraining config: the splits, their checks, samplers and ``DataLoader``s.

* :func:`build_dataset`: one split of ``data.format`` (an ImageNet-style folder, :mod:`pretrain.data.folders`,
  or CIFAR-10/100 / Tiny ImageNet, :mod:`pretrain.data.small`);
* :func:`build_data`: everything a training run reads (layout checked before anything trains; the
  objective's dataset wrapper; per-sample keyed seeding, :class:`pretrain.data.robust.KeyedDataset`; the
  repeated-augmentation :class:`pretrain.data.samplers.EpochSampler`; loaders with their own generators);
* :func:`build_val_loader`: the validation split alone in one process (MixMo's evaluation CLI).

Every loader batch is ``(images (B, 3, H, W) float, labels (B,) int64[, extras])`` (``data.pipeline=fast|fast_device|gpu``:
training images ``(B, H, W, 3)`` uint8, or for ``gpu`` an ``EncodedBatch`` of JPEG bytes, made float by
``Data.device_transform`` on the device); validation batches whose
samples were all unreadable are None (``collate_skip_none``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import torch
from torch.utils.data import DataLoader

from .folders import build_folder_dataset, check_same_classes
from .robust import KeyedDataset, collate_skip_none
from .samplers import EpochSampler


@dataclass
class Data:
    """What a training run reads: the (wrapped) training set, the validation set, the training sampler
    (``set_epoch``/``set_start`` for exact resume), both loaders and this rank's unreadable-image log."""

    train_set: Any
    val_set: Any
    train_sampler: EpochSampler
    train_loader: DataLoader
    val_loader: DataLoader
    bad_log: str
    # data.pipeline=fast: uint8 training batches; ``device_transform(images, epoch, batch)`` on the device
    # normalizes and erases them (:class:`pretrain.data.fast.device.DeviceAugment`); None for float batches
    device_transform: Optional[Callable[..., torch.Tensor]] = None


def build_dataset(cfg: Dict[str, Any], split: str, train: bool):
    """One split (``"train"`` | ``"val"``) of the config's dataset: ``data.format`` folder (ImageNet layout,
    ``data.train_split``/``data.val_split`` under ``data.root``), or cifar10 | cifar100 | tiny_imagenet in
    their published layouts (:mod:`pretrain.data.small`; their own augmentation, ``data.img_size`` output)."""
    dc = cfg["data"]
    fmt = dc.get("format", "folder")
    if fmt == "folder" and train and split == "train" and dc.get("pipeline", "timm") == "gpu":
        from .fast.gpu import EncodedFolder
        return EncodedFolder(build_folder_dataset(dc, dc["train_split"], train=False))
    if fmt == "folder" and train and split == "train" and dc.get("pipeline", "timm") != "timm":
        from .fast.dataset import build_fast_dataset
        return build_fast_dataset(dc, dc["train_split"])
    if fmt == "folder":
        return build_folder_dataset(dc, dc["train_split"] if split == "train" else dc["val_split"], train=train)
    from .small import build_small_dataset
    return build_small_dataset(fmt, dc["root"], split, train=train, img_size=int(dc["img_size"]),
                               num_classes=int(dc["num_classes"]))


def build_data(cfg: Dict[str, Any], rank: int, world: int, out_dir: str,
               wrap_train: Optional[Callable[[Any], Any]] = None,
               worker_init_fn: Optional[Callable[[int], None]] = None) -> Data:
    """Datasets (layout checked before anything trains), samplers and loaders of this rank.

    Args:
        cfg: the run config (``data`` and ``train.seed``).
        rank, world: this process and the number of processes.
        out_dir: run folder (the unreadable-image log goes there).
        wrap_train: the objective's training-set wrapper (per-sample side information such as label
            maps), applied before keying; identity when None.
        worker_init_fn: run in every loader worker (the engine's: ignore the stop signals).
    """
    dc, tc = cfg["data"], cfg["train"]
    seed = int(tc["seed"])
    train_set = build_dataset(cfg, "train", train=True)
    val_set = build_dataset(cfg, "val", train=False)
    if dc.get("format", "folder") == "folder":
        check_same_classes(train_set, val_set)
    else:
        from .small import check_small_splits
        check_small_splits(train_set, val_set)
    if wrap_train is not None:
        train_set = wrap_train(train_set)
        from .label_maps import LabelMapDataset
        if dc.get("pipeline", "timm") != "timm" and isinstance(train_set, LabelMapDataset):
            raise ValueError(f"data.pipeline={dc['pipeline']} draws the crops outside timm's transform, so "
                             "precomputed label maps (mixer.target=label_map) cannot follow them: use "
                             "data.pipeline=timm with label maps")
    bad_log = os.path.join(out_dir, "bad_images.tsv" if world == 1 else f"bad_images.rank{rank}.tsv")
    tries = int(dc["bad_image_tries"])
    train_keyed = KeyedDataset(train_set, seed, bad_log, "train", replace=True, max_tries=tries)
    val_keyed = KeyedDataset(val_set, seed, bad_log, "val", replace=False, max_tries=tries)
    bs, workers = int(dc["batch_size"]), int(dc["workers"])
    sampler = EpochSampler(len(train_set), world, rank, shuffle=True, seed=seed, repeats=int(dc["repeated_aug"]))
    if sampler.num_samples < bs:
        where = os.path.join(dc["root"], dc["train_split"]) if dc.get("format", "folder") == "folder" else dc["root"]
        raise ValueError(f"{where}: {len(train_set)} training images give each of {world} process(es) "
                         f"{sampler.num_samples} samples per epoch, fewer than one batch of {bs}")
    val_sampler = EpochSampler(len(val_set), world, rank, shuffle=False, pad=False)
    common = dict(num_workers=workers, pin_memory=torch.cuda.is_available())
    if workers > 0:
        common.update(prefetch_factor=4, worker_init_fn=worker_init_fn)
    # own generators: starting a loader iterator must not draw from the global torch stream (exact resume);
    # worker seeds do not matter otherwise, augmentations are seeded per sample
    gens = [torch.Generator(), torch.Generator()]
    for k, g in enumerate(gens):
        g.manual_seed(seed * 7 + 2 * rank + k)
    if dc.get("pipeline", "timm") == "gpu":  # lists of encoded JPEGs, decoded on the device
        from .fast.gpu import collate_encoded
        common["collate_fn"] = collate_encoded
    train_loader = DataLoader(train_keyed, batch_size=bs, sampler=sampler, drop_last=True,
                              persistent_workers=workers > 0, generator=gens[0], **common)
    common.pop("collate_fn", None)
    val_loader = DataLoader(val_keyed, batch_size=bs, sampler=val_sampler, collate_fn=collate_skip_none,
                            generator=gens[1], **common)
    device_transform = None
    if dc.get("pipeline", "timm") == "gpu":
        from .fast.gpu import build_gpu_augment
        device_transform = build_gpu_augment(dc, seed, rank)
    elif dc.get("pipeline", "timm") != "timm":
        from .fast.device import build_device_augment
        device_transform = build_device_augment(dc, seed, rank)
    return Data(train_set, val_set, sampler, train_loader, val_loader, bad_log, device_transform)


def build_val_loader(cfg: Dict[str, Any], workers: Optional[int] = None):
    """``(val_set, loader)``: the validation split of a config (any ``data.format``) in one process, in order,
    unreadable samples left out; ``workers`` overrides ``data.workers``."""
    dc = cfg["data"]
    val_set = build_dataset(cfg, "val", train=False)
    keyed = KeyedDataset(val_set, int(cfg["train"]["seed"]), None, "val", replace=False,
                         max_tries=int(dc["bad_image_tries"]))
    w = int(dc["workers"]) if workers is None else int(workers)
    loader = DataLoader(keyed, batch_size=int(dc["batch_size"]), shuffle=False, num_workers=w,
                        collate_fn=collate_skip_none, pin_memory=torch.cuda.is_available())
    return val_set, loader
