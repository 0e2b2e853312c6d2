"""EpochSampler against torch's DistributedSampler and timm's RepeatAugSampler, plus resume offsets."""
import pytest
from timm.data.distributed_sampler import RepeatAugSampler
from torch.utils.data import DistributedSampler

from pretrain.data.samplers import EpochSampler


class _Sized:
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n


@pytest.mark.parametrize("size,world,seed,epoch", [(10, 1, 0, 0), (10, 3, 5, 2), (7, 4, 1, 1), (3, 8, 0, 4),
                                                   (1000, 8, 42, 3)])
def test_plain_sampling_matches_distributed_sampler(size, world, seed, epoch):
    for rank in range(world):
        ref = DistributedSampler(_Sized(size), num_replicas=world, rank=rank, shuffle=True, seed=seed)
        ref.set_epoch(epoch)
        ours = EpochSampler(size, world, rank, shuffle=True, seed=seed)
        ours.set_epoch(epoch)
        assert [i for i, _, _ in ours] == list(ref) and len(ours) == len(ref)


@pytest.mark.parametrize("size,world,epoch", [(1000, 8, 0), (1000, 3, 2), (300, 2, 1), (100, 4, 0), (50, 1, 3)])
def test_repeated_augmentation_matches_timm(size, world, epoch):
    seen = []
    for rank in range(world):
        ref = RepeatAugSampler(_Sized(size), num_replicas=world, rank=rank, shuffle=True, num_repeats=3)
        ref.set_epoch(epoch)
        ours = EpochSampler(size, world, rank, shuffle=True, seed=0, repeats=3)  # timm seeds with the epoch only
        ours.set_epoch(epoch)
        idx = [i for i, _, _ in ours]
        assert idx == list(ref) and len(ours) == len(ref)
        seen += idx
    if size >= 256 and world > 1:
        # each rank gets about size / world samples; copies of an image go to different ranks
        assert len(seen) == world * (size // 256 * 256 // world)


def test_positions_are_unique_across_ranks_and_resume_skips_exactly():
    world, size = 3, 20
    samplers = [EpochSampler(size, world, r, seed=1, repeats=3) for r in range(world)]
    for s in samplers:
        s.set_epoch(4)
    items = [list(s) for s in samplers]
    positions = [p for it in items for _, _, p in it]
    assert len(positions) == len(set(positions))
    assert all(e == 4 for it in items for _, e, _ in it)
    s = samplers[1]
    s.set_start(5)
    assert list(s) == items[1][5:] and len(s) == len(items[1]) - 5
    s.set_epoch(5)  # a new epoch clears the offset
    assert len(s) == s.num_samples
    with pytest.raises(ValueError):
        s.set_start(s.num_samples + 1)


def test_unpadded_evaluation_split_covers_every_sample_once():
    for size, world in [(10, 3), (5, 8), (32, 4)]:
        idx = [i for r in range(world) for i, _, _ in EpochSampler(size, world, r, shuffle=False, pad=False)]
        assert sorted(idx) == list(range(size))


def test_bad_arguments():
    with pytest.raises(ValueError, match="non-empty"):
        EpochSampler(0)
    with pytest.raises(ValueError, match="rank"):
        EpochSampler(10, 2, 2)
    with pytest.raises(ValueError, match="repeats"):
        EpochSampler(10, repeats=0)
