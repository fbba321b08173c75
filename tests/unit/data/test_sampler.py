"""make_sampler: max_duration, determinism, epochs, rank disjointness, mid-epoch resume."""

from __future__ import annotations

import numpy as np
import pytest
from lhotse import CutSet
from lhotse.testing.dummies import dummy_cut

from speechfm.data.sampler import make_sampler, resolve_distributed


@pytest.fixture(scope="module")
def cuts() -> CutSet:
    rng = np.random.default_rng(0)
    durs = rng.uniform(0.5, 12.0, size=300).round(2)
    return CutSet.from_cuts(
        dummy_cut(i, duration=float(d), recording_duration=float(d)) for i, d in enumerate(durs)
    )


def _ids(batches) -> list[list[str]]:
    return [list(b.ids) for b in batches]


def test_batches_respect_max_duration_and_cover_everything(cuts):
    batches = list(make_sampler(cuts, max_duration=40.0, seed=1))
    assert len(batches) > 5
    for b in batches:
        assert sum(c.duration for c in b) <= 40.0 + 1e-6
    seen = [i for b in _ids(batches) for i in b]
    assert sorted(seen) == sorted(cuts.ids)  # each cut exactly once


def test_deterministic_given_seed_and_epoch(cuts):
    a = _ids(make_sampler(cuts, max_duration=40.0, seed=3))
    b = _ids(make_sampler(cuts, max_duration=40.0, seed=3))
    c = _ids(make_sampler(cuts, max_duration=40.0, seed=4))
    assert a == b and a != c

    s1, s2 = (
        make_sampler(cuts, max_duration=40.0, seed=3),
        make_sampler(cuts, max_duration=40.0, seed=3),
    )
    s1.set_epoch(1)
    s2.set_epoch(1)
    e1 = _ids(s1)
    assert e1 == _ids(s2)  # same epoch, same order
    assert e1 != a  # another epoch, another order
    s1.set_epoch(0)
    assert _ids(s1) == a


@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_see_disjoint_cuts(cuts, drop_last):
    per_rank = [
        [
            i
            for b in make_sampler(
                cuts, max_duration=40.0, seed=5, world_size=3, rank=r, drop_last=drop_last
            )
            for i in b.ids
        ]
        for r in range(3)
    ]
    # Without drop_last, lhotse may copy a few tail cuts (ids marked "_dup") so that every
    # rank gets a last batch; all other cuts are seen by exactly one rank.
    if drop_last:
        assert not any("_dup" in i for ids in per_rank for i in ids)
    sets = [{i for i in ids if "_dup" not in i} for ids in per_rank]
    for r in range(3):
        assert len(sets[r]) == len([i for i in per_rank[r] if "_dup" not in i]) > 0
        for q in range(r + 1, 3):
            assert not sets[r] & sets[q]
    union = set().union(*sets)
    if drop_last:
        assert union < set(cuts.ids) and len(union) > 0.8 * len(cuts)
    else:
        assert union == set(cuts.ids)
    counts = [len(set(ids)) for ids in per_rank]
    assert max(counts) - min(counts) < 0.5 * max(counts)  # batches are shared round-robin


def test_tiny_sets(cuts):
    one = CutSet.from_cuts([dummy_cut(0, duration=2.0)])
    assert _ids(make_sampler(one, max_duration=10.0)) == [["dummy-mono-cut-0000"]]
    three = cuts.subset(first=3)
    assert sorted(i for b in make_sampler(three, max_duration=100.0) for i in b.ids) == sorted(
        three.ids
    )
    assert _ids(make_sampler(CutSet.from_cuts([]), max_duration=10.0)) == []


@pytest.mark.parametrize("epoch,k", [(0, 3), (2, 1)])
def test_resume_mid_epoch(cuts, epoch, k):
    kwargs = dict(max_duration=40.0, seed=7, world_size=2, rank=1)
    full = make_sampler(cuts, **kwargs)
    full.set_epoch(epoch)
    uninterrupted = _ids(full)

    run = make_sampler(cuts, **kwargs)
    run.set_epoch(epoch)
    it = iter(run)
    consumed = [list(next(it).ids) for _ in range(k)]
    state = run.state_dict()

    fresh = make_sampler(cuts, **kwargs)
    fresh.load_state_dict(state)
    remaining = _ids(fresh)
    assert consumed == uninterrupted[:k]
    assert remaining == uninterrupted[k:]
    assert len(remaining) > 0


def test_resolve_distributed(tmp_path):
    import torch.distributed as dist

    assert resolve_distributed(None, None) == (1, 0)
    assert resolve_distributed(4, 3) == (4, 3)
    with pytest.raises(ValueError, match="rank"):
        resolve_distributed(2, 2)
    with pytest.raises(ValueError, match="max_duration"):
        make_sampler(CutSet.from_cuts([dummy_cut(0)]), max_duration=0)
    # With an initialised process group, its size and rank are the defaults.
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", world_size=1, rank=0
    )
    try:
        assert resolve_distributed(None, None) == (1, 0)
        sampler = make_sampler(CutSet.from_cuts([dummy_cut(0)]), max_duration=10.0)
        assert (sampler.world_size, sampler.rank) == (1, 0)
    finally:
        dist.destroy_process_group()
