"""Self-attention positional schemes against naive O(T^2) loops, caches and masks."""

from __future__ import annotations

import math

import pytest
import torch

from speechfm.nn.attention import POS_TYPES, MultiHeadSelfAttention
from speechfm.nn.masks import attention_mask, chunk_attention_mask, lengths_to_valid_mask
from speechfm.nn.positional import rel_shift, relative_positions

DIM, HEADS = 8, 2
D = DIM // HEADS


def _module(pos_type, **kw):
    torch.manual_seed(0)
    m = MultiHeadSelfAttention(DIM, HEADS, pos_type=pos_type, **kw).double().eval()
    for p in m.parameters():  # non-trivial values everywhere (biases, pos biases)
        torch.nn.init.normal_(p, std=0.5)
    return m


def _sinusoid(r: float) -> torch.Tensor:
    """Interleaved sin/cos of one signed distance, written out element by element."""
    out = torch.zeros(DIM, dtype=torch.float64)
    for k in range(DIM // 2):
        w = 10000.0 ** (-2 * k / DIM)
        out[2 * k] = math.sin(r * w)
        out[2 * k + 1] = math.cos(r * w)
    return out


def _rotate(vec: torch.Tensor, pos: int, base: float = 10000.0) -> torch.Tensor:
    """Rotate pairs (x_k, x_{k + d/2}) by angle pos * base^(-2k/d)."""
    half = vec.shape[0] // 2
    out = vec.clone()
    for k in range(half):
        a = pos * base ** (-2 * k / vec.shape[0])
        x1, x2 = vec[k], vec[k + half]
        out[k] = x1 * math.cos(a) - x2 * math.sin(a)
        out[k + half] = x2 * math.cos(a) + x1 * math.sin(a)
    return out


def _naive(m: MultiHeadSelfAttention, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Loop over (n, h, i, j) computing each score from its definition."""
    n_, t, _ = x.shape
    q = m.q_proj(x).view(n_, t, HEADS, D)
    k = m.k_proj(x).view(n_, t, HEADS, D)
    v = m.v_proj(x).view(n_, t, HEADS, D)
    out = torch.zeros(n_, t, HEADS, D, dtype=x.dtype)
    for n in range(n_):
        for h in range(HEADS):
            for i in range(t):
                scores = torch.full((t,), float("-inf"), dtype=x.dtype)
                for j in range(t):
                    if not allowed[n, i, j]:
                        continue
                    qi, kj = q[n, i, h], k[n, j, h]
                    if m.pos_type == "rel_pos":
                        p = (m.linear_pos.weight @ _sinusoid(i - j)).view(HEADS, D)[h]
                        s = (qi + m.pos_bias_u[h]) @ kj + (qi + m.pos_bias_v[h]) @ p
                    elif m.pos_type == "relative_key":
                        dist = min(max(j - i, -m.rel_left_max), m.rel_right_max)
                        e = m.distance_embedding.weight[dist + m.rel_left_max]
                        s = qi @ kj + qi @ e
                    elif m.pos_type == "rotary":
                        s = _rotate(qi, i) @ _rotate(kj, j)
                    else:
                        s = qi @ kj
                    scores[j] = s / math.sqrt(D)
                out[n, i, h] = torch.softmax(scores, 0) @ v[n, :, h]
    return m.out_proj(out.reshape(n_, t, DIM))


@pytest.mark.parametrize("pos_type", POS_TYPES)
def test_attention_equals_naive_loop(pos_type):
    m = _module(pos_type, rel_left_max=2, rel_right_max=1)
    torch.manual_seed(1)
    t = 6
    x = torch.randn(2, t, DIM, dtype=torch.float64)
    lens = torch.tensor([6, 4])
    chunk = chunk_attention_mask(t, 2, 2)
    mask = attention_mask(lengths_to_valid_mask(lens, t), chunk)
    got, _ = m(x, mask)
    expect = _naive(m, x, mask[:, 0].expand(2, t, t))
    for n, length in enumerate(lens.tolist()):
        torch.testing.assert_close(got[n, :length], expect[n, :length], atol=1e-10, rtol=1e-9)
    # gradients too, positional parameters included (they reach SDPA through its float mask)
    weight = torch.randn_like(got)
    weight[1, 4:] = 0
    params = list(m.parameters())
    g_got = torch.autograd.grad((got * weight).sum(), params)
    g_expect = torch.autograd.grad((expect * weight).sum(), params)
    for (name, _), a, b in zip(m.named_parameters(), g_got, g_expect, strict=True):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7, msg=name)
    # the positional scheme matters: a shifted copy of the input gives other outputs
    if pos_type in ("rel_pos", "relative_key", "rotary"):
        with torch.no_grad():
            flipped, _ = m(x.flip(1), None)
            plain, _ = m(x, None)
        assert not torch.allclose(flipped.flip(1), plain)


def test_rel_shift_indexing():
    q_len, k_len = 3, 5
    pos = relative_positions(q_len, k_len)
    assert pos.tolist() == [4, 3, 2, 1, 0, -1, -2]
    # scores[i, m] = 100 * i + pos[m]: after the shift, entry (i, j) holds distance
    # (k_len - q_len + i) - j of query i to key j
    scores = 100 * torch.arange(q_len).unsqueeze(1) + pos.unsqueeze(0)
    shifted = rel_shift(scores.view(1, 1, q_len, -1).clone(), k_len)[0, 0]
    for i in range(q_len):
        for j in range(k_len):
            assert shifted[i, j] == 100 * i + (k_len - q_len + i - j)


@pytest.mark.parametrize("pos_type", POS_TYPES)
def test_cache_continues_the_sequence(pos_type):
    """Attending with a cache of the first frames equals the tail rows of a causal full pass."""
    m = _module(pos_type, rel_left_max=3, rel_right_max=2)
    torch.manual_seed(2)
    t, split = 9, 5
    x = torch.randn(2, t, DIM, dtype=torch.float64)
    causal = chunk_attention_mask(t, 1, -1)
    with torch.no_grad():
        full, _ = m(x, causal[None, None])
        _, cache = m(x[:, :split], causal[:split, :split][None, None])
        tail, kv = m(x[:, split:], causal[split:][None, None], cache=cache, pos_offset=split)
    torch.testing.assert_close(tail, full[:, split:], atol=1e-10, rtol=1e-9)
    assert kv[0].shape == (2, HEADS, t, D)


def test_padded_keys_do_not_matter():
    for pos_type in POS_TYPES:
        m = _module(pos_type)
        x = torch.randn(1, 7, DIM, dtype=torch.float64)
        x2 = x.clone()
        x2[:, 4:] = 1e3
        mask = attention_mask(lengths_to_valid_mask(torch.tensor([4]), 7), None)
        with torch.no_grad():
            a, _ = m(x, mask)
            b, _ = m(x2, mask)
        torch.testing.assert_close(a[:, :4], b[:, :4], atol=1e-10, rtol=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadSelfAttention(10, 3)
    with pytest.raises(ValueError, match="pos_type"):
        MultiHeadSelfAttention(8, 2, pos_type="alibi")
    with pytest.raises(ValueError, match="even head dim"):
        MultiHeadSelfAttention(6, 2, pos_type="rotary")
