"""Conformer block: padding invariance, causality, conv caching, stochastic depth."""

from __future__ import annotations

import pytest
import torch

from speechfm.nn.conformer import ConformerBlock, ConvModule
from speechfm.nn.masks import attention_mask, chunk_attention_mask, lengths_to_valid_mask

DIM = 16


def _block(**kw):
    torch.manual_seed(0)
    kw.setdefault("dropout", 0.0)
    return ConformerBlock(DIM, 4, 32, 5, **kw).eval()


def _masks(lens, t, chunk=None):
    valid = lengths_to_valid_mask(lens, t)
    cm = None if chunk is None else chunk_attention_mask(t, chunk, -1)
    return attention_mask(valid, cm), valid


@pytest.mark.parametrize("pos_type", ["rel_pos", "relative_key", "rotary", "none"])
@pytest.mark.parametrize("causal", [False, True])
def test_padding_never_reaches_valid_frames(pos_type, causal):
    block = _block(pos_type=pos_type, conv_causal=causal)
    torch.manual_seed(1)
    t = 12
    lens = torch.tensor([12, 7, 3])
    x = torch.randn(3, t, DIM)
    mask, valid = _masks(lens, t)
    x2 = x.clone()
    x2[~valid] = 50 * torch.randn(int((~valid).sum()), DIM)
    with torch.no_grad():
        a = block(x, mask, valid)
        b = block(x2, mask, valid)
        for n, length in enumerate(lens.tolist()):
            torch.testing.assert_close(a[n, :length], b[n, :length], atol=1e-6, rtol=0)
            alone = block(x[n : n + 1, :length])  # no mask at all
            torch.testing.assert_close(a[n, :length], alone[0], atol=1e-5, rtol=1e-5)


def test_conv_module_needs_the_valid_mask():
    """Without zeroing, padded frames leak through the depthwise conv (so the mask matters)."""
    torch.manual_seed(2)
    conv = ConvModule(DIM, 5).eval()
    x = torch.randn(1, 8, DIM)
    x2 = x.clone()
    x2[:, 5:] = 10.0
    valid = lengths_to_valid_mask(torch.tensor([5]), 8)
    with torch.no_grad():
        leak = (conv(x)[0][:, :5] - conv(x2)[0][:, :5]).abs().max()
        masked = (conv(x, valid)[0][:, :5] - conv(x2, valid)[0][:, :5]).abs().max()
    assert leak > 1e-3
    assert masked == 0


def test_causal_conv_and_chunk_mask_make_the_block_causal():
    block = _block(conv_causal=True)
    torch.manual_seed(3)
    x = torch.randn(1, 10, DIM)
    mask = chunk_attention_mask(10, 1, -1)[None, None]
    x2 = x.clone()
    x2[:, 6:] += torch.randn(1, 4, DIM)
    with torch.no_grad():
        a, b = block(x, mask), block(x2, mask)
    torch.testing.assert_close(a[:, :6], b[:, :6], atol=1e-6, rtol=0)
    assert (a[:, 6:] - b[:, 6:]).abs().amax() > 1e-3


def test_conv_cache_equals_full_causal_conv():
    torch.manual_seed(4)
    conv = ConvModule(DIM, 7, causal=True).eval()
    x = torch.randn(2, 13, DIM)
    with torch.no_grad():
        full, none = conv(x)
        assert none is None
        cache = torch.zeros(2, DIM, 6)
        pieces = []
        for start, stop in [(0, 2), (2, 3), (3, 9), (9, 13)]:
            y, cache = conv(x[:, start:stop], cache=cache)
            assert cache.shape == (2, DIM, 6)
            pieces.append(y)
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-6, rtol=1e-6)


def test_stochastic_depth_is_per_sample_and_training_only():
    block = _block(layer_drop=0.5)
    block.train()
    torch.manual_seed(5)
    x = torch.randn(64, 4, DIM)
    y = block(x)
    skipped = (y == x).flatten(1).all(1)
    assert 15 < int(skipped.sum()) < 49  # about half, chosen per sample
    assert not torch.isclose(y[~skipped], x[~skipped]).all()
    block.eval()
    assert not (block(x) == x).flatten(1).all(1).any()


def test_batch_norm_option_and_bad_arguments():
    block = _block(conv_norm="batch_norm")
    block.train()
    out = block(torch.randn(2, 6, DIM))
    assert out.shape == (2, 6, DIM) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="odd"):
        ConvModule(DIM, 4)
    with pytest.raises(ValueError, match="conv norm"):
        ConvModule(DIM, 3, norm="group_norm")
    with pytest.raises(ValueError, match="layer_drop"):
        ConformerBlock(DIM, 4, 32, 5, layer_drop=1.0)
