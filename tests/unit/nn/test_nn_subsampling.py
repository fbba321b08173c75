"""Front ends: exact length bookkeeping and independence from padding."""

from __future__ import annotations

import math

import pytest
import torch

from speechfm.nn.subsampling import (
    Conv2dSubsampling,
    FrameStacking,
    PatchEmbedding,
    VGGSubsampling,
)

F_IN = 20
MAX_LEN = 40


def _front_ends():
    torch.manual_seed(0)
    return {
        "conv2d_x4": Conv2dSubsampling(F_IN, 8, factor=4, channels=4),
        "conv2d_x6": Conv2dSubsampling(F_IN, 8, factor=6, channels=4),
        "conv2d_x8": Conv2dSubsampling(F_IN, 8, factor=8, channels=16),
        "stack_floor": FrameStacking(F_IN, stride=2, out_dim=8),
        "stack_ceil": FrameStacking(F_IN, stride=2, out_dim=8, mode="ceil"),
        "stack3_raw": FrameStacking(F_IN, stride=3),
        "vgg": VGGSubsampling(F_IN, 8, channels=(2, 4)),
        "patch": PatchEmbedding(F_IN, 8, patch=(4, 8), stride=(2, 6)),
    }


FRONT_ENDS = _front_ends()
# Front ends without padding in time: an output frame depends on a fixed input window.
UNPADDED = ["conv2d_x4", "conv2d_x6", "conv2d_x8", "stack_floor", "stack3_raw", "patch"]


def _run(module, x, x_lens):
    out = module(x, x_lens)
    return out[0], out[1]


@pytest.mark.parametrize("name", sorted(FRONT_ENDS))
def test_batched_outputs_equal_lone_outputs(name):
    """Every length 1..40 in one padded batch with garbage padding: valid outputs equal the
    outputs of the sequence run alone, and x_lens out equals the lone output count."""
    module = FRONT_ENDS[name].eval()
    torch.manual_seed(1)
    lens = torch.arange(1, MAX_LEN + 1)
    x = torch.randn(len(lens), MAX_LEN + 3, F_IN)
    pad = ~(torch.arange(MAX_LEN + 3)[None] < lens[:, None])
    x[pad] = 1e3 * torch.randn(int(pad.sum()), F_IN)
    with torch.no_grad():
        y, y_lens = _run(module, x, lens)
        assert y_lens.dtype == torch.int64
        for i, length in enumerate(lens.tolist()):
            alone, alone_lens = _run(module, x[i : i + 1, :length], torch.tensor([length]))
            n = int(alone_lens[0])
            assert int(y_lens[i]) == n
            if n:
                assert alone.shape[1] == n, "a lone sequence yields exactly its valid frames"
            torch.testing.assert_close(y[i, :n], alone[0, :n], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", UNPADDED)
def test_length_is_number_of_frames_depending_only_on_valid_input(name):
    """Perturb frames >= L of a fully valid input: exactly the first x_lens_out(L) outputs
    stay unchanged; every later one changes."""
    module = FRONT_ENDS[name].eval()
    torch.manual_seed(2)
    total = MAX_LEN + 8
    x = torch.randn(1, total, F_IN)
    full_lens = torch.tensor([total])
    with torch.no_grad():
        y, _ = _run(module, x, full_lens)
        for length in range(1, MAX_LEN + 1):
            unchanged = torch.ones(y.shape[1], dtype=torch.bool)
            for _ in range(3):  # several draws: one may leave every ReLU of a frame off
                x2 = x.clone()
                x2[:, length:] = torch.randn(1, total - length, F_IN) * 3
                y2, _ = _run(module, x2, full_lens)
                unchanged &= ((y - y2).abs().amax(-1) < 1e-6)[0]
            n = int(module.output_lengths(torch.tensor([length]))[0])
            assert unchanged[:n].all(), (name, length)
            assert not unchanged[n:].any(), (name, length)


def test_conv2d_length_formula_and_shapes():
    m = FRONT_ENDS["conv2d_x4"]
    lens = torch.tensor([6, 7, 8, 10, 11, 100])
    assert m.output_lengths(lens).tolist() == [0, 1, 1, 1, 2, 24]
    assert (m.receptive_field, m.time_stride) == (7, 4)
    assert (FRONT_ENDS["conv2d_x6"].receptive_field, FRONT_ENDS["conv2d_x6"].time_stride) == (11, 6)
    assert (FRONT_ENDS["conv2d_x8"].receptive_field, FRONT_ENDS["conv2d_x8"].time_stride) == (15, 8)
    y, y_lens = m(torch.randn(2, 3, F_IN), torch.tensor([3, 2]))  # shorter than the field
    assert y_lens.tolist() == [0, 0] and y.shape[0] == 2
    with pytest.raises(ValueError, match="4, 6 or 8"):
        Conv2dSubsampling(80, 16, factor=5)


def test_frame_stacking_matches_w2v_bert_layout():
    stack = FrameStacking(80, stride=2)
    x = torch.randn(2, 7, 80)
    y, y_lens = stack(x, torch.tensor([7, 4]))
    assert y.shape == (2, 3, 160)  # floor: the 7th frame is dropped
    assert y_lens.tolist() == [3, 2]
    torch.testing.assert_close(y[0, 1], torch.cat((x[0, 2], x[0, 3])))
    ceil = FrameStacking(80, stride=2, mode="ceil")
    y, y_lens = ceil(x, torch.tensor([7, 4]))
    assert y.shape == (2, 4, 160) and y_lens.tolist() == [4, 2]
    torch.testing.assert_close(y[0, 3], torch.cat((x[0, 6], torch.zeros(80))))


def test_vgg_lengths_are_ceil_ceil():
    lens = torch.arange(1, 20)
    expect = [math.ceil(math.ceil(n / 2) / 2) for n in lens.tolist()]
    assert VGGSubsampling.output_lengths(lens).tolist() == expect


def test_patch_embedding_grid_and_order():
    torch.manual_seed(3)
    m = PatchEmbedding(16, 4, patch=(4, 8), stride=(2, 4))  # 3 frequency patches
    x = torch.randn(2, 12, 16)
    y, p_lens, grid = m(x, torch.tensor([12, 7]))
    assert grid == (5, 3)
    assert y.shape == (2, 15, 4)
    assert p_lens.tolist() == [15, 2 * 3]
    # time-major: patch (t=1, f=2) is number 1 * 3 + 2 and sees frames 2..5, bins 8..15
    w = m.proj.weight[:, 0]  # (C, 4, 8)
    expect = (x[0, 2:6, 8:16] * w).sum((1, 2)) + m.proj.bias
    torch.testing.assert_close(y[0, 5], expect, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="smaller than the patch"):
        PatchEmbedding(4, 8, patch=(4, 8))
