"""Epoch samplers for one or many processes: shuffling, repeated augmentation, exact mid-epoch resume.

:class:`EpochSampler` gives each process (rank) its share of an epoch's sample order, like
``torch.utils.data.DistributedSampler`` (``repeats=1``) or timm's ``RepeatAugSampler`` (``repeats=3``,
DeiT's repeated augmentation: every image appears ``repeats`` times per epoch, its copies going to
different ranks, and each rank keeps about ``len(dataset) / world`` samples so an epoch costs the
same as without repetition). Index sequences are identical to those two classes for the same seed,
epoch and world size.

Each element it yields is a tuple ``(index, epoch, position)``: ``position`` is the sample's place in
the epoch's global order, the same whichever rank or loader worker handles it. :class:`KeyedDataset`
(``pretrain.data.robust``) seeds the random augmentations from ``(seed, epoch, position)``, which makes
an epoch's augmented batches independent of worker scheduling, and :meth:`EpochSampler.set_start`
skips the samples a resumed run already trained on.
"""
from __future__ import annotations

import math
from typing import Iterator, List, Tuple

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler):
    """Per-rank sample order of one epoch.

    Args:
        size: number of samples in the dataset.
        num_replicas: number of processes (world size).
        rank: this process's rank.
        shuffle: shuffle with ``torch.randperm`` seeded by ``seed + epoch`` (else dataset order).
        seed: shuffling seed (the same on every rank).
        repeats: repeated-augmentation count; 1 = plain distributed sampling.
        selected_round: with ``repeats > 1``, each rank keeps ``floor(size // selected_round *
            selected_round / num_replicas)`` samples (timm/DeiT); when ``size < selected_round`` (tiny
            sets) it keeps ``ceil(size / num_replicas)``.
        pad: with ``repeats == 1``, pad the order by wrapping around so every rank gets the same count
            (training); ``False`` gives ranks ``size`` samples in total without duplicates (evaluation).
    """

    def __init__(self, size: int, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0,
                 repeats: int = 1, selected_round: int = 256, pad: bool = True):
        if size <= 0:
            raise ValueError("EpochSampler needs a non-empty dataset")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"invalid rank {rank} for {num_replicas} replicas")
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.size, self.num_replicas, self.rank = int(size), int(num_replicas), int(rank)
        self.shuffle, self.seed, self.repeats = bool(shuffle), int(seed), int(repeats)
        self.pad = bool(pad) or self.repeats > 1
        self.epoch = 0
        self.start = 0
        if self.repeats > 1:
            self.total_size = int(math.ceil(self.size * self.repeats / self.num_replicas)) * self.num_replicas
            if selected_round and self.size >= selected_round:
                keep = int(math.floor(self.size // selected_round * selected_round / self.num_replicas))
            else:
                keep = int(math.ceil(self.size / self.num_replicas))
            self.num_samples = min(keep, self.total_size // self.num_replicas)
        elif self.pad:
            self.num_samples = int(math.ceil(self.size / self.num_replicas))
            self.total_size = self.num_samples * self.num_replicas
        else:
            self.total_size = self.size
            self.num_samples = len(range(self.rank, self.size, self.num_replicas))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (reshuffles) and clear any resume offset."""
        self.epoch = int(epoch)
        self.start = 0

    def set_start(self, start: int) -> None:
        """Skip the first ``start`` samples of this rank in the current epoch (mid-epoch resume)."""
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"start {start} outside this rank's {self.num_samples} samples")
        self.start = int(start)

    def order(self) -> List[int]:
        """The epoch's global index order before it is split between ranks (repeats included)."""
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            idx = torch.randperm(self.size, generator=g)
        else:
            idx = torch.arange(self.size)
        if self.repeats > 1:
            idx = torch.repeat_interleave(idx, self.repeats)
        return idx.tolist()

    def positions(self) -> range:
        """Global positions (into the padded order) that this rank trains on this epoch, in order."""
        return range(self.rank, self.total_size, self.num_replicas)[:self.num_samples]

    def __iter__(self) -> Iterator[Tuple[int, int, int]]:
        order = self.order()
        n = len(order)
        for pos in self.positions()[self.start:]:
            yield order[pos % n], self.epoch, pos

    def __len__(self) -> int:
        return self.num_samples - self.start
