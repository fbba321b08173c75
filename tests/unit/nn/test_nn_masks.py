"""Padding and chunked-attention masks."""

from __future__ import annotations

import pytest
import torch

from speechfm.nn.masks import (
    attention_mask,
    chunk_attention_mask,
    lengths_to_valid_mask,
    make_pad_mask,
    sample_dynamic_chunk,
)


def test_valid_and_pad_masks_are_complements():
    lens = torch.tensor([3, 0, 5])
    valid = lengths_to_valid_mask(lens)
    assert valid.shape == (3, 5)
    assert valid.sum(1).tolist() == [3, 0, 5]
    assert valid[0].tolist() == [True, True, True, False, False]
    assert torch.equal(make_pad_mask(lens, 7), ~lengths_to_valid_mask(lens, 7))


@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
@pytest.mark.parametrize("left", [-1, 0, 1, 4])
def test_chunk_mask_matches_definition(chunk, left):
    t = 11
    mask = chunk_attention_mask(t, chunk, left)
    for i in range(t):
        start = (i // chunk) * chunk
        for j in range(t):
            expect = j < start + chunk and (left < 0 or j >= start - left)
            assert bool(mask[i, j]) == expect, (i, j)


def test_full_chunk_is_full_context():
    assert chunk_attention_mask(6, -1, 2).all()
    assert chunk_attention_mask(6, 6, 0).all()
    assert chunk_attention_mask(6, 10, -1).all()


def test_attention_mask_combines_and_guards_empty_rows():
    valid = lengths_to_valid_mask(torch.tensor([3, 0]), 4)
    chunk = chunk_attention_mask(4, 2, 0)
    mask = attention_mask(valid, chunk)
    assert mask.shape == (2, 1, 4, 4)
    # sequence 0: chunk mask and key padding combined
    assert torch.equal(mask[0, 0], chunk & valid[0].unsqueeze(0))
    # sequence 1 has no valid key: every row would be empty, so all keys are allowed
    assert mask[1].all()
    assert attention_mask(None, None) is None
    assert attention_mask(None, chunk).shape == (1, 1, 4, 4)
    assert attention_mask(valid, None).shape == (2, 1, 1, 4)


def test_dynamic_chunk_sampling():
    g = torch.Generator().manual_seed(0)
    draws = [
        sample_dynamic_chunk(
            100, max_chunk=8, full_context_prob=0.3, dynamic_left_context=True, generator=g
        )
        for _ in range(400)
    ]
    full = sum(1 for c, _ in draws if c == -1)
    assert 60 < full < 180  # ~30 %
    chunks = {c for c, _ in draws if c != -1}
    assert chunks == set(range(1, 9))
    for c, left in draws:
        if c != -1:
            assert left == -1 or (left % c == 0 and 0 <= left <= 99)
    assert any(left >= 0 for c, left in draws if c != -1)
    g = torch.Generator().manual_seed(1)
    no_left = [sample_dynamic_chunk(50, full_context_prob=0.0, generator=g) for _ in range(20)]
    assert all(c >= 1 and left == -1 for c, left in no_left)
