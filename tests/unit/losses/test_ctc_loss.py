"""speechfm.losses.ctc: values against brute force and torch, infinity reporting, validation."""

from __future__ import annotations

import itertools
import math
import re

import pytest
import torch
import torch.nn.functional as F

from speechfm.losses import ctc_loss, ctc_min_frames, pad_targets


def _collapse(path, blank=0):
    out, prev = [], None
    for s in path:
        if s != blank and s != prev:
            out.append(s)
        prev = s
    return out


def _brute_nll(lp: torch.Tensor, target: list[int]) -> float:
    """-log sum over all T-frame paths collapsing to ``target`` (lp: (T, V) float64)."""
    t, v = lp.shape
    total = 0.0
    for path in itertools.product(range(v), repeat=t):
        if _collapse(path) == target:
            total += math.exp(float(lp[range(t), list(path)].sum()))
    return -math.log(total)


def _random_lp(n, t, v, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, t, v, generator=g, dtype=dtype).log_softmax(-1)


def test_matches_brute_force_enumeration():
    lp = _random_lp(3, 5, 3, seed=1)
    targets = [[1, 2], [1, 1], [2, 1, 2]]
    padded, y_lens = pad_targets(targets)
    out_lens = torch.tensor([5, 4, 5])
    loss, per_utt = ctc_loss(lp, out_lens, padded, y_lens)
    for i, tgt in enumerate(targets):
        expected = _brute_nll(lp[i, : out_lens[i]], tgt)
        assert per_utt[i].item() == pytest.approx(expected, rel=1e-9)
    assert loss.item() == pytest.approx(per_utt.sum().item(), rel=1e-12)
    assert per_utt.dtype == torch.float64


def test_padded_and_concatenated_targets_agree_with_torch():
    lp = _random_lp(3, 12, 7, seed=2, dtype=torch.float32).requires_grad_()
    targets = [[1, 2, 3], [], [4, 4, 5, 6]]
    padded, y_lens = pad_targets(targets, pad_value=-1)
    out_lens = torch.tensor([12, 9, 10])
    loss_p, per_p = ctc_loss(lp, out_lens, padded, y_lens, reduction="none")
    concat = torch.tensor([x for t in targets for x in t])
    loss_c, per_c = ctc_loss(lp, out_lens, concat, y_lens, reduction="none")
    ref = F.ctc_loss(lp.transpose(0, 1), concat, out_lens, y_lens, reduction="none")
    torch.testing.assert_close(loss_p, ref)
    torch.testing.assert_close(loss_c, ref)
    torch.testing.assert_close(per_p, ref.detach())
    mean, _ = ctc_loss(lp, out_lens, padded, y_lens, reduction="mean")
    assert mean.item() == pytest.approx(ref.sum().item() / 3, rel=1e-6)


def test_bf16_input_is_computed_in_float32():
    lp = _random_lp(2, 8, 5, seed=3, dtype=torch.float32)
    padded, y_lens = pad_targets([[1, 2], [3]])
    lens = torch.tensor([8, 6])
    loss, per_utt = ctc_loss(lp.to(torch.bfloat16), lens, padded, y_lens)
    assert loss.dtype == torch.float32 and per_utt.dtype == torch.float32
    ref, _ = ctc_loss(lp.to(torch.bfloat16).float(), lens, padded, y_lens)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)


def test_min_frames_counts_blanks_between_repeats():
    padded, y_lens = pad_targets([[1, 1, 2], [3, 3, 3], [1, 2, 1], [], [5]])
    assert ctc_min_frames(padded, y_lens).tolist() == [4, 5, 3, 0, 1]


def test_infeasible_utterance_reported_and_excluded():
    lp = _random_lp(3, 6, 4, seed=4, dtype=torch.float32).requires_grad_()
    # utt 1 needs 4 frames for "2 2 3" but has 3; utt 2 has 5 labels in 4 frames.
    padded, y_lens = pad_targets([[1, 2], [2, 2, 3], [1, 2, 3, 1, 2]])
    out_lens = torch.tensor([6, 3, 4])
    loss, per_utt = ctc_loss(lp, out_lens, padded, y_lens)
    assert torch.isfinite(per_utt[0]) and torch.isinf(per_utt[1:]).all()
    assert loss.item() == pytest.approx(per_utt[0].item(), rel=1e-6)
    loss.backward()
    assert torch.isfinite(lp.grad).all()
    assert lp.grad[1:].abs().sum() == 0  # no gradient from the dropped utterances

    strict, per_strict = ctc_loss(lp, out_lens, padded, y_lens, zero_infinity=False)
    assert math.isinf(strict.item())
    torch.testing.assert_close(per_strict, per_utt)


def test_infinity_from_masked_log_probs_is_detected():
    lp = _random_lp(2, 5, 4, seed=5)
    lp[0, :, 3] = -math.inf  # token 3 impossible for utterance 0, though it has frames
    padded, y_lens = pad_targets([[3], [3]])
    loss, per_utt = ctc_loss(lp, torch.tensor([5, 5]), padded, y_lens)
    assert math.isinf(per_utt[0].item()) and math.isfinite(per_utt[1].item())
    assert loss.item() == pytest.approx(per_utt[1].item())


def test_certain_alignment_gives_zero_not_infinity():
    lp = torch.full((1, 3, 3), -math.inf, dtype=torch.float64)
    lp[0, 0, 1] = lp[0, 1, 0] = lp[0, 2, 2] = 0.0  # the only path: 1 - 2
    padded, y_lens = pad_targets([[1, 2]])
    loss, per_utt = ctc_loss(lp, torch.tensor([3]), padded, y_lens)
    assert per_utt.item() == 0.0 and loss.item() == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message", "utt"),
    [
        ({"out_lens": torch.tensor([7, 3])}, "out_lens 7 exceeds the 6 frames", "spk1-a"),
        ({"out_lens": torch.tensor([6, -1])}, "negative out_lens", "spk2-b"),
        ({"y_lens": torch.tensor([2, 4])}, "y_lens 4 exceeds the target width 3", "spk2-b"),
        ({"targets": torch.tensor([[1, 0, 0], [1, 2, 3]])}, "contains the blank id 0", "spk1-a"),
        ({"targets": torch.tensor([[1, 2, 0], [1, 9, 3]])}, "target id 9 at position 1", "spk2-b"),
        ({"targets": torch.tensor([1, 2, 3])}, "concatenated targets hold 3 ids", None),
        ({"targets": torch.tensor([[1.0, 2.0, 0.0]] * 2)}, "integer tensor", None),
        ({"out_lens": torch.tensor([6, 3, 2])}, "out_lens must be (2,)", None),
        ({"reduction": "avg"}, "reduction must be one of", None),
        ({"blank": 5}, "blank id 5 is outside", None),
    ],
)
def test_validation_errors(kwargs, message, utt):
    args = {
        "log_probs": _random_lp(2, 6, 5, dtype=torch.float32),
        "out_lens": torch.tensor([6, 3]),
        "targets": torch.tensor([[1, 2, 0], [1, 2, 3]]),
        "y_lens": torch.tensor([2, 3]),
        "utt_ids": ["spk1-a", "spk2-b"],
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        ctc_loss(**args)
    if utt is not None:
        assert f"utterance {utt!r}" in str(info.value)


def test_errors_without_ids_give_the_batch_index():
    lp = _random_lp(2, 6, 5, dtype=torch.float32)
    with pytest.raises(ValueError, match="utterance 1 of the batch"):
        ctc_loss(lp, torch.tensor([6, 3]), torch.tensor([[1, 2], [3, 0]]), torch.tensor([2, 2]))


def test_validation_rejects_bad_log_probs_shape():
    with pytest.raises(ValueError, match="log_probs must be"):
        ctc_loss(torch.zeros(6, 5), torch.tensor([6]), torch.tensor([[1]]), torch.tensor([1]))


def test_pad_targets():
    padded, lens = pad_targets([[3, 4], [], [5]], pad_value=-1)
    assert padded.tolist() == [[3, 4], [-1, -1], [5, -1]]
    assert lens.tolist() == [2, 0, 1] and lens.dtype == torch.int64
    empty, empty_lens = pad_targets([[], []])
    assert empty.shape == (2, 0) and empty_lens.tolist() == [0, 0]
