"""Duration-bucketed, distributed-aware, resumable batch sampling (lhotse's).

:func:`make_sampler` builds lhotse's ``DynamicBucketingSampler``: cuts are grouped into
buckets of similar duration and each batch holds at most ``max_duration`` seconds of audio,
so padding stays small and batches have a near-constant cost. It yields lhotse CutSets, one
per batch, meant for a map-style dataset such as :class:`speechfm.data.dataset.AsrDataset`::

    sampler = make_sampler(cuts, max_duration=200, seed=42)
    loader = torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None,
                                         num_workers=2)
    for epoch in range(num_epochs):
        sampler.set_epoch(epoch)  # a new, reproducible order per epoch
        for batch in loader: ...

Determinism: the order depends only on (cuts, seed, epoch, world_size, rank). Ranks take
every world_size-th batch of one shared sequence, so they see disjoint cuts (one exception:
with drop_last=False, if the epoch's last batches hold fewer cuts than there are ranks,
lhotse copies a few, with ids marked as duplicates, so that no rank runs dry).

Resuming mid-epoch: store ``sampler.state_dict()`` in the checkpoint; build a sampler with
the same arguments, call ``load_state_dict``, and iteration continues with the next batch
(lhotse replays the epoch up to that point, which only reads the manifest). With
``num_workers > 0`` the DataLoader asks the sampler for a few batches ahead of the training
step (``num_workers * prefetch_factor``), and the state counts those too: a resumed run then
skips those few batches, a small and deterministic loss that icefall and friends accept.
"""

from __future__ import annotations

import warnings
from itertools import islice

# Upper edge of the single duration bin used for sets of fewer than two cuts.
_CATCH_ALL_SECONDS = 1e9


def resolve_distributed(world_size: int | None, rank: int | None) -> tuple[int, int]:
    """(world_size, rank): explicit values win, else torch.distributed's, else (1, 0)."""
    import torch.distributed as dist

    initialised = dist.is_available() and dist.is_initialized()
    if world_size is None:
        world_size = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    return int(world_size), int(rank)


def make_sampler(
    cuts,
    *,
    max_duration: float,
    shuffle: bool = True,
    seed: int = 0,
    num_buckets: int = 10,
    world_size: int | None = None,
    rank: int | None = None,
    drop_last: bool = False,
    max_cuts: int | None = None,
    buffer_size: int = 20000,
    quadratic_duration: float | None = None,
):
    """A lhotse ``DynamicBucketingSampler`` over ``cuts``.

    Args:
        cuts: lhotse CutSet; lazy ones (``CutSet.from_jsonl_lazy``) keep memory flat.
        max_duration: maximum total audio per batch, in seconds (per rank).
        shuffle: shuffle within the bucketing buffer (order changes with ``set_epoch``).
        seed: base seed; the effective seed is seed + epoch.
        num_buckets: duration buckets, estimated from the first 10k cuts (fewer for sets
            with fewer cuts than buckets).
        world_size: number of data-parallel ranks (default: torch.distributed's, else 1).
        rank: this process's rank (default: torch.distributed's, else 0).
        drop_last: drop incomplete batches at the end of buckets (and uneven tails across
            ranks); otherwise the last batches are split so every rank gets some.
        max_cuts: optional cap on the number of cuts per batch.
        buffer_size: cuts held in the bucketing buffer (larger shuffles better).
        quadratic_duration: if set, cuts count as d + d^2 / quadratic_duration seconds,
            to even out the cost of attention over long inputs.

    Returns:
        ``lhotse.dataset.DynamicBucketingSampler`` (supports ``set_epoch``, ``state_dict``
        and ``load_state_dict``).
    """
    from lhotse.dataset import DynamicBucketingSampler

    if max_duration <= 0:
        raise ValueError(f"max_duration must be positive, got {max_duration}")
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
    world_size, rank = resolve_distributed(world_size, rank)
    # lhotse estimates bucket bins from the data and needs at least as many cuts as
    # buckets (and two buckets); tiny sets get fewer buckets, or one catch-all bin.
    available = sum(1 for _ in islice(cuts, num_buckets))
    duration_bins = None
    if available < 2:
        duration_bins = [_CATCH_ALL_SECONDS]
    else:
        num_buckets = max(2, min(num_buckets, available))
    with warnings.catch_warnings():
        # lhotse warns that an eager CutSet brings no memory benefit; it is still correct,
        # and small (test/dev) sets are routinely eager.
        warnings.filterwarnings("ignore", message=".*eagerly read CutSet.*")
        return DynamicBucketingSampler(
            cuts,
            max_duration=max_duration,
            max_cuts=max_cuts,
            shuffle=shuffle,
            seed=seed,
            num_buckets=num_buckets,
            duration_bins=duration_bins,
            drop_last=drop_last,
            world_size=world_size,
            rank=rank,
            buffer_size=buffer_size,
            quadratic_duration=quadratic_duration,
        )
