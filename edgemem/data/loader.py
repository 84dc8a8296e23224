"""DataLoaders for the datasets: the right sampler per dataset kind, multi-worker, distributed."""

from __future__ import annotations

from typing import Any

from torch.utils.data import DataLoader, Dataset, DistributedSampler

from edgemem.data.datasets import StreamingDataset, stack_batch
from edgemem.data.samplers import StreamingBatchSampler


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    workers: int = 0,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
    max_clips: int | None = None,
    align_ends: bool = False,
) -> DataLoader:
    """A DataLoader over ``dataset``.

    StreamingDataset: batches from ``StreamingBatchSampler`` (each slot streams its videos' clips in
    order; ``max_clips`` for a shorter-video curriculum; ``align_ends`` so that videos end together,
    for back-propagation through time). Others: shuffled or sequential, split
    across ranks by ``DistributedSampler`` (with ``world_size > 1`` it repeats a few items to
    even out ranks: deduplicate eval results by ``video``). Call ``set_epoch(loader, epoch)`` at the
    start of every epoch.
    """
    common: dict[str, Any] = {"num_workers": workers, "collate_fn": stack_batch, "persistent_workers": False}
    if isinstance(dataset, StreamingDataset):
        sampler = StreamingBatchSampler(
            dataset.clips_per_video,
            batch_size,
            shuffle=shuffle,
            seed=seed,
            num_replicas=world_size,
            rank=rank,
            max_clips=max_clips,
            videos=dataset.readable_videos,
            align_ends=align_ends,
        )
        return DataLoader(dataset, batch_sampler=sampler, **common)
    s: DistributedSampler = DistributedSampler(
        dataset, world_size, rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    return DataLoader(dataset, batch_size=batch_size, sampler=s, drop_last=drop_last, **common)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Re-seed the sampler's shuffling and the dataset's augmentation for ``epoch``."""
    for obj in (loader.batch_sampler, loader.sampler, loader.dataset):
        set_obj_epoch = getattr(obj, "set_epoch", None)
        if set_obj_epoch is not None:
            set_obj_epoch(epoch)
