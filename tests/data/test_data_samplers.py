"""Clip-position helpers and the batch-slot-aware streaming sampler."""

from __future__ import annotations

import pytest
import torch

from edgemem.data.samplers import (
    PADDING,
    StreamingBatchSampler,
    consecutive_clip_count,
    multi_clip_starts,
    random_clip_start,
    uniform_clip_starts,
)


def _walk(sampler: StreamingBatchSampler) -> list[list]:
    """Per slot, the sequence of StreamIndex it was given."""
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert all(len(b) == sampler.batch_size for b in batches)
    return [[b[s] for b in batches] for s in range(sampler.batch_size)]


@pytest.mark.parametrize("align_ends", [False, True])
@pytest.mark.parametrize("batch_size", [1, 3, 4])
@pytest.mark.parametrize("shuffle", [False, True])
def test_streaming_sampler_visits_every_clip_in_order(batch_size, shuffle, align_ends):
    clips = [4, 1, 3, 4, 2, 5, 4]
    sampler = StreamingBatchSampler(clips, batch_size, shuffle=shuffle, seed=1, align_ends=align_ends)
    seen = []
    for slot in _walk(sampler):
        current = None
        for item in slot:
            if item.is_padding:
                assert item == PADDING
                current = None
                continue
            if item.first:
                assert item.clip == 0, "a video starts at its first clip"
                assert current is None or current[1] == clips[current[0]] - 1, "previous video was finished"
            else:
                assert current == (item.video, item.clip - 1), "clips of a video follow each other in one slot"
            assert item.last == (item.clip == clips[item.video] - 1)
            current = (item.video, item.clip)
            seen.append((item.video, item.clip))
        if not align_ends:  # greedy dealing pads only at the end of a slot
            pads = [i for i, it in enumerate(slot) if it.is_padding]
            assert pads == list(range(len(slot) - len(pads), len(slot)))
    assert sorted(seen) == [(v, c) for v, n in enumerate(clips) for c in range(n)]


def test_streaming_sampler_balances_slots_and_reshuffles():
    clips = [4] * 10
    s = StreamingBatchSampler(clips, 5, shuffle=True, seed=0)
    assert len(s) == 8  # 40 clips over 5 slots
    first_epoch = [b[0].video for b in s]
    s.set_epoch(1)
    assert [b[0].video for b in s] != first_epoch
    s.set_epoch(0)
    assert [b[0].video for b in s] == first_epoch


def test_streaming_sampler_distributed_ranks_are_disjoint_and_aligned():
    clips = [3, 4, 2, 4, 4, 1, 3]
    samplers = [StreamingBatchSampler(clips, 2, seed=5, num_replicas=2, rank=r) for r in range(2)]
    assert len(samplers[0]) == len(samplers[1])
    videos = [{it.video for b in s for it in b if not it.is_padding} for s in samplers]
    assert not videos[0] & videos[1] and videos[0] | videos[1] == set(range(len(clips)))
    counts = sum(sum(1 for b in s for it in b if not it.is_padding) for s in samplers)
    assert counts == sum(clips)


@pytest.mark.parametrize("replicas", [1, 2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aligned_streams_end_together_so_no_step_cuts_a_video(replicas, seed):
    """With videos of unequal length, greedy dealing ends videos at every few batches, so the
    optimizer step of one slot's video truncates the others' back-propagation through time;
    ``align_ends`` makes every video run from its first clip to its last between two such batches,
    on every rank, and the ranks agree on the batch count."""
    clips = [int(c) for c in torch.randint(2, 7, (37,), generator=torch.Generator().manual_seed(seed))]
    ranks = [
        StreamingBatchSampler(clips, 4, seed=seed, num_replicas=replicas, rank=r, align_ends=True)
        for r in range(replicas)
    ]
    assert len({len(s) for s in ranks}) == 1
    batches = [list(s) for s in ranks]
    ends = {i for bs in batches for i, b in enumerate(bs) if any(it.last for it in b)}
    seen = []
    for bs in batches:
        for slot in range(4):
            start = None
            for i, b in enumerate(bs):
                it = b[slot]
                if it.is_padding:
                    continue
                start = i if it.first else start
                if it.last:
                    assert not any(start <= j < i for j in ends), "a step inside the video cuts its history"
                    seen.append(it.video)
    assert sorted(seen) == list(range(len(clips)))
    greedy = StreamingBatchSampler(clips, 4, seed=seed)
    greedy_ends = [i for i, b in enumerate(greedy) if any(it.last for it in b)]
    assert len(greedy_ends) > len(ends), "the greedy dealing steps more often (and cuts videos)"


@pytest.mark.parametrize("replicas", [1, 2])
@pytest.mark.parametrize("count", [8, 13])
def test_aligned_equals_greedy_on_equal_lengths(replicas, count):
    """Runs on equal-length videos (every synthetic set) are the same with and without ``align_ends``."""
    for r in range(replicas):
        a, g = (
            StreamingBatchSampler([4] * count, 3, seed=2, num_replicas=replicas, rank=r, align_ends=x)
            for x in (True, False)
        )
        a.set_epoch(3)
        g.set_epoch(3)
        assert list(a) == list(g)


def test_aligned_groups_sort_by_length_to_keep_padding_small():
    s = StreamingBatchSampler([3, 6] * 8, 8, seed=0, align_ends=True)
    assert len(s) == 9  # one group of the eight 3-clip videos, one of the eight 6-clip ones: no padding
    assert sum(it.is_padding for b in s for it in b) == 0


def test_streaming_sampler_max_clips_keeps_the_last_clips():
    s = StreamingBatchSampler([4, 2], 1, shuffle=False, max_clips=3)
    got = [(b[0].video, b[0].clip, b[0].first, b[0].last) for b in s]
    assert got == [
        (0, 1, True, False),
        (0, 2, False, False),
        (0, 3, False, True),
        (1, 0, True, False),
        (1, 1, False, True),
    ]


def test_streaming_sampler_subset_of_videos():
    s = StreamingBatchSampler([2, 0, 2], 2, shuffle=False, videos=[0, 2])
    assert {it.video for b in s for it in b} == {0, 2}


def test_multi_clip_starts_cover_the_video():
    gen = torch.Generator().manual_seed(0)
    for length, span, n in [(64, 16, 4), (64, 16, 5), (100, 16, 7), (50, 16, 4), (16, 16, 3), (10, 16, 2)]:
        for g in (None, gen):
            starts = multi_clip_starts(length, span, n, g)
            assert len(starts) == n and starts == sorted(starts)
            covered = set()
            for s in starts:
                covered.update(range(s, min(length, s + span)))
            assert covered == set(range(length)), (length, span, n, starts)
    assert multi_clip_starts(64, 16, 4) == [0, 16, 32, 48]


def test_multi_clip_starts_jitter_stays_inside():
    gen = torch.Generator().manual_seed(0)
    runs = {tuple(multi_clip_starts(200, 16, 4, gen)) for _ in range(20)}
    assert len(runs) > 1
    assert all(0 <= s <= 200 - 16 for r in runs for s in r)


def test_clip_start_helpers():
    gen = torch.Generator().manual_seed(0)
    starts = {random_clip_start(64, 16, gen) for _ in range(200)}
    assert min(starts) == 0 and max(starts) == 48
    assert random_clip_start(10, 16, gen) == 0
    assert uniform_clip_starts(64, 16, 1) == [24]
    assert uniform_clip_starts(64, 16, 3) == [0, 24, 48]
    assert consecutive_clip_count(64, 16) == 4 and consecutive_clip_count(65, 16) == 5  # a partial last clip
    assert consecutive_clip_count(5, 16) == 1
