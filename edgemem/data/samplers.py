"""Where clips start in a video, and the batch-slot-aware sampler for streaming (MeMViT) training.

Positions are in *target-rate frames* (the model's ``target_fps``); a clip spans ``span =
frames * sampling_rate`` of them. ``datasets.py`` maps them to source frames.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch


def random_clip_start(length: int, span: int, gen: torch.Generator | None = None) -> int:
    """A uniformly random start (temporal jitter) of a clip inside a video of ``length`` frames."""
    room = max(0, length - span)
    return int(torch.randint(room + 1, (1,), generator=gen))


def uniform_clip_starts(length: int, span: int, n: int) -> list[int]:
    """``n`` starts spread evenly from the first to the last possible position (n = 1: centred)."""
    room = max(0, length - span)
    if n == 1:
        return [room // 2]
    return [round(i * room / (n - 1)) for i in range(n)]


def multi_clip_starts(length: int, span: int, n: int, gen: torch.Generator | None = None) -> list[int]:
    """Starts of ``n`` clips covering the video in order (CM's N clips per video).

    The first clip starts at 0 and the last ends at the video's end; the clips together cover every
    frame when ``n * span >= length``. With a generator, clips that do not touch their neighbours
    are jittered within the gap between them (training).
    """
    if n == 1:
        return [random_clip_start(length, span, gen)] if gen is not None else uniform_clip_starts(length, span, 1)
    starts = uniform_clip_starts(length, span, n)
    room = max(0, length - span)
    gap = room / (n - 1) - span
    if gen is None or gap <= 0:
        return starts
    jitter = (torch.rand(n, generator=gen) - 0.5) * gap
    return [min(room, max(0, round(s + float(j)))) for s, j in zip(starts, jitter, strict=True)]


def consecutive_clip_count(length: int, span: int) -> int:
    """Consecutive clips covering a video from frame 0 (at least one): a partial last clip counts, so
    every frame is streamed (``consecutive_clip_start`` says where it starts)."""
    return max(1, -(-length // span))


def consecutive_clip_start(clip: int, length: int, frames: int, sampling_rate: int) -> int:
    """Start (target-rate frame) of consecutive clip ``clip`` of a ``length``-frame video: ``clip x
    span``, except that a partial last clip is moved back to end at the video's last sample, over
    part of the clip before it, so that the clip a video is classified by is whole real frames. A
    video shorter than one clip starts at 0 (its missing samples repeat its last one)."""
    last = max(0, ((length - 1) // sampling_rate - frames + 1) * sampling_rate)
    return min(clip * frames * sampling_rate, last)


class StreamIndex(NamedTuple):
    """One clip of a streamed video, as the streaming sampler hands it to the dataset.

    ``first``: the slot's memory must be reset before this clip (a new video starts);
    ``last``: the video ends with this clip (classify it). ``video = -1`` marks padding.
    """

    video: int
    clip: int
    first: bool
    last: bool

    @property
    def is_padding(self) -> bool:
        return self.video < 0


PADDING = StreamIndex(-1, 0, True, False)


class StreamingBatchSampler:
    """Batches of ``batch_size`` slots; each slot walks its own videos' clips in order.

    Batch ``i``, slot ``s`` is the next clip of the video that slot ``s`` is streaming, so a model
    carrying state per slot across batches sees every video from its first clip to its last, with
    ``first`` set where a new video starts (reset) and ``last`` where it ends. Videos are dealt to
    slots (shuffled per epoch when ``shuffle``) so that slots get about the same number of clips;
    slots that run out early are padded with ``PADDING`` (mask them out). With ``num_replicas > 1``
    each rank streams a disjoint share of the videos and every rank yields the same number of
    batches (as DDP needs). ``max_clips`` keeps only the last ``max_clips`` clips of each video
    (a shorter-video curriculum). Call ``set_epoch`` before each epoch.

    ``align_ends``: the videos are dealt in groups of ``batch_size x num_replicas`` that *end on the
    same batch* (each shorter video starts late, after padding), so no video of a group ends, and no
    optimizer step cuts the others' back-propagation through time, before they all end. Groups are
    formed from the shuffled order sorted by length (little padding) and taken in a random order.
    On equal-length videos this yields exactly the batches of the greedy dealing.
    """

    def __init__(
        self,
        clips_per_video: Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        max_clips: int | None = None,
        videos: Sequence[int] | None = None,
        align_ends: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} not in [0, {num_replicas})")
        self.clips = list(clips_per_video)
        self.videos = list(range(len(self.clips))) if videos is None else list(videos)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.max_clips = max_clips
        self.align_ends = align_ends
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _n(self, video: int) -> int:
        n = self.clips[video]
        return min(n, self.max_clips) if self.max_clips else n

    def _order(self) -> list[int]:
        order = list(self.videos)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = [order[i] for i in torch.randperm(len(order), generator=g).tolist()]
        return order

    def _slots(self, rank: int) -> list[list[int]]:
        """Videos of each slot of ``rank``, in streaming order (greedy dealing)."""
        slots: list[list[int]] = [[] for _ in range(self.batch_size)]
        load = [0] * self.batch_size
        for v in self._order()[rank :: self.num_replicas]:  # the least loaded slot takes the next video
            s = min(range(self.batch_size), key=lambda i: (load[i], i))
            slots[s].append(v)
            load[s] += self._n(v)
        return slots

    def _groups(self) -> list[list[int]]:
        """``align_ends``: groups of ``batch_size x num_replicas`` videos, each streamed to its end together."""
        order = self._order()
        size = self.batch_size * self.num_replicas
        if len({self._n(v) for v in order}) <= 1:
            return [order[i : i + size] for i in range(0, len(order), size)]
        order.sort(key=self._n)  # stable: the shuffle decides within a length
        groups = [order[i : i + size] for i in range(0, len(order), size)]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch + 7_919)
        return [groups[i] for i in torch.randperm(len(groups), generator=g).tolist()]

    def _streams(self, rank: int) -> list[list[StreamIndex]]:
        """Each slot's sequence of ``StreamIndex`` for ``rank``; slots may differ in length."""
        streams: list[list[StreamIndex]] = [[] for _ in range(self.batch_size)]
        if not self.align_ends:
            for seq, vs in zip(streams, self._slots(rank), strict=True):
                for v in vs:
                    seq.extend(self._clips(v))
            return streams
        for group in self._groups():
            steps = max(self._n(v) for v in group)
            mine = group[rank :: self.num_replicas]
            for s, seq in enumerate(streams):
                clips = self._clips(mine[s]) if s < len(mine) else []
                seq.extend([PADDING] * (steps - len(clips)) + clips)
        return streams

    def _clips(self, video: int) -> list[StreamIndex]:
        n_all, n = self.clips[video], self._n(video)
        return [StreamIndex(video, n_all - n + k, k == 0, k == n - 1) for k in range(n)]

    def __len__(self) -> int:
        if self.align_ends:
            return sum(max(self._n(v) for v in group) for group in self._groups())
        return max(
            max((sum(self._n(v) for v in vs) for vs in self._slots(r)), default=0) for r in range(self.num_replicas)
        )

    def __iter__(self) -> Iterator[list[StreamIndex]]:
        streams = self._streams(self.rank)
        for i in range(len(self)):
            yield [seq[i] if i < len(seq) else PADDING for seq in streams]
