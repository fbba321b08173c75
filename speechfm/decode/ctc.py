"""CTC decoding: greedy search, prefix beam search, forced alignment and word timestamps.

All searches take a padded batch of log-posteriors ``log_probs`` (N, T, V) (any float
dtype; the search runs in float64 on the CPU) with ``out_lens`` (N,) valid frames, and
return :class:`CtcHypothesis` objects. Frames are encoder output frames; multiply by the
model's ``frame_shift_s`` for seconds.

A hypothesis' per-token frames and confidences come from its best (Viterbi) alignment:
a token *occupies* the frames its best path spends on it (a repeated label in
consecutive frames collapses to one token), its ``token_frames`` entry is the first of
them and its confidence the mean (or max) posterior over them. For greedy search the best
alignment is the arg-max path itself; for beam search it is recomputed by
:func:`ctc_forced_align` for each returned prefix.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from speechfm.text.base import Tokenizer

__all__ = [
    "CtcHypothesis",
    "WordTimestamp",
    "ctc_forced_align",
    "ctc_greedy_hypotheses",
    "ctc_greedy_search",
    "ctc_prefix_beam_search",
    "word_timestamps",
]

_NEG_INF = float("-inf")
_CONFIDENCES = ("mean", "max")


@dataclass
class CtcHypothesis:
    """One decoded token sequence with its alignment summary."""

    tokens: list[int]
    """Token ids (blank-free, repeats collapsed)."""
    token_frames: list[int] = field(default_factory=list)
    """First encoder frame of each token on the hypothesis' best alignment."""
    token_end_frames: list[int] = field(default_factory=list)
    """Last encoder frame (inclusive) of each token on that alignment."""
    token_confidences: list[float] = field(default_factory=list)
    """Per-token confidence in [0, 1]: mean (or max) posterior over the token's frames."""
    score: float = 0.0
    """Natural-log score: greedy and forced alignment give the best path's log-probability,
    prefix beam search the log of the total probability of all alignments of ``tokens``."""

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass
class WordTimestamp:
    """A word with its time span."""

    word: str
    """Word text as the tokenizer decodes it (IPA: phones separated by spaces)."""
    start: float
    """Start time in seconds (first frame of the first token)."""
    end: float
    """End time in seconds (end of the last frame of the last token)."""
    confidence: float
    """Mean of the word's token confidences, in [0, 1]."""


def _check_batch(log_probs: torch.Tensor, out_lens: torch.Tensor | None) -> torch.Tensor:
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be (N, T, V), got shape {tuple(log_probs.shape)}")
    n, t, _ = log_probs.shape
    if out_lens is None:
        return torch.full((n,), t, dtype=torch.int64)
    out_lens = out_lens.detach().to("cpu", torch.int64)
    if out_lens.shape != (n,):
        raise ValueError(f"out_lens must be ({n},), got shape {tuple(out_lens.shape)}")
    if bool((out_lens < 0).any()) or bool((out_lens > t).any()):
        raise ValueError(f"out_lens must be in [0, {t}], got {out_lens.tolist()}")
    return out_lens


def _check_confidence(confidence: str) -> None:
    if confidence not in _CONFIDENCES:
        raise ValueError(f"confidence must be one of {_CONFIDENCES}, got {confidence!r}")


def _run_confidence(post: np.ndarray, starts: np.ndarray, how: str) -> np.ndarray:
    """Per-run mean or max of ``post`` (L,) over runs starting at ``starts`` (sorted)."""
    if starts.size == 0:
        return np.zeros(0)
    if how == "max":
        return np.maximum.reduceat(post, starts)
    sizes = np.diff(np.append(starts, post.shape[0]))
    return np.add.reduceat(post, starts) / sizes


# ------------------------------------------------------------------------------ greedy


def ctc_greedy_hypotheses(
    log_probs: torch.Tensor,
    out_lens: torch.Tensor | None = None,
    *,
    blank: int = 0,
    confidence: str = "mean",
) -> list[CtcHypothesis]:
    """Best-path (arg-max) decoding with frames and confidences.

    Args:
        log_probs: (N, T, V) log-posteriors.
        out_lens: int (N,) valid frames; default T for all.
        blank: blank id.
        confidence: "mean" or "max" posterior over each token's frames.

    Returns:
        N hypotheses; ``score`` is the arg-max path's log-probability.
    """
    _check_confidence(confidence)
    lens = _check_batch(log_probs, out_lens)
    best_lp, best = log_probs.detach().max(dim=-1)
    best_lp = best_lp.to("cpu", torch.float64).numpy()
    best = best.cpu().numpy()
    out = []
    for i, length in enumerate(lens.tolist()):
        labels, lps = best[i, :length], best_lp[i, :length]
        if length == 0:
            out.append(CtcHypothesis(tokens=[], score=0.0))
            continue
        change = np.ones(length, dtype=bool)
        change[1:] = labels[1:] != labels[:-1]
        starts = np.flatnonzero(change)
        ends = np.append(starts[1:], length) - 1
        conf = _run_confidence(np.exp(lps), starts, confidence)
        keep = labels[starts] != blank
        out.append(
            CtcHypothesis(
                tokens=labels[starts][keep].tolist(),
                token_frames=starts[keep].tolist(),
                token_end_frames=ends[keep].tolist(),
                token_confidences=np.clip(conf[keep], 0.0, 1.0).tolist(),
                score=float(lps.sum()),
            )
        )
    return out


def ctc_greedy_search(
    log_probs: torch.Tensor, out_lens: torch.Tensor | None = None, *, blank: int = 0
) -> list[list[int]]:
    """Best-path decoding: arg-max per frame, collapse repeats, drop blanks.

    Args:
        log_probs: (N, T, V) log-posteriors (or logits: the arg-max is the same).
        out_lens: int (N,) valid frames; default T for all.
        blank: blank id.

    Returns:
        N token-id lists. See :func:`ctc_greedy_hypotheses` for frames and confidences.
    """
    lens = _check_batch(log_probs, out_lens)
    best = log_probs.detach().argmax(dim=-1).cpu()
    t = best.shape[1]
    valid = torch.arange(t)[None, :] < lens[:, None]
    change = torch.ones_like(valid)
    change[:, 1:] = best[:, 1:] != best[:, :-1]
    emit = valid & change & (best != blank)
    return [best[i][emit[i]].tolist() for i in range(best.shape[0])]


# ------------------------------------------------------------------------- alignment


def _forced_align_many(
    lp: np.ndarray, token_lists: Sequence[Sequence[int]], blank: int, confidence: str
) -> list[CtcHypothesis | None]:
    """Viterbi alignments of several token sequences to one ``lp`` (T, V) float64.

    All sequences run through one dynamic programme over a padded (H, S) state grid
    (state 2k+1 is token k, even states are blanks); None where a sequence cannot fit.
    """
    t_len = lp.shape[0]
    h = len(token_lists)
    if h == 0:
        return []
    u = np.array([len(x) for x in token_lists], dtype=np.int64)
    s_lens = 2 * u + 1
    s_max = int(s_lens.max())
    ext = np.full((h, s_max), blank, dtype=np.int64)
    for i, toks in enumerate(token_lists):
        if len(toks):
            ext[i, 1 : 2 * len(toks) : 2] = np.asarray(toks, dtype=np.int64)
    state_ok = np.arange(s_max)[None, :] < s_lens[:, None]
    # A label state may skip the blank before it only after a different label.
    skip = np.zeros((h, s_max), dtype=bool)
    skip[:, 3::2] = ext[:, 3::2] != ext[:, 1:-2:2]
    skip &= state_ok
    rows = np.arange(h)[:, None]
    cols = np.arange(s_max)[None, :]
    back = np.zeros((t_len, h, s_max), dtype=np.int8)  # 0 stay, 1 from s-1, 2 from s-2
    alpha = np.full((h, s_max), _NEG_INF)
    if t_len:
        emis0 = np.where(state_ok, lp[0][ext], _NEG_INF)
        alpha[:, :2] = emis0[:, :2]
    cand = np.full((3, h, s_max), _NEG_INF)
    for t in range(1, t_len):
        cand[0] = alpha
        cand[1, :, 1:] = alpha[:, :-1]
        cand[2, :, 2:] = alpha[:, :-2]
        cand[2][~skip] = _NEG_INF
        choice = cand.argmax(axis=0)
        back[t] = choice
        alpha = cand[choice, rows, cols] + np.where(state_ok, lp[t][ext], _NEG_INF)

    out: list[CtcHypothesis | None] = []
    for i, toks in enumerate(token_lists):
        if u[i] == 0:
            score = float(lp[:, blank].sum()) if t_len else 0.0
            out.append(CtcHypothesis(tokens=[], score=score))
            continue
        if t_len == 0:
            out.append(None)
            continue
        end = int(s_lens[i]) - 1
        last = end if alpha[i, end] >= alpha[i, end - 1] else end - 1
        score = float(alpha[i, last])
        if score == _NEG_INF:
            out.append(None)
            continue
        states = np.empty(t_len, dtype=np.int64)
        s = last
        for t in range(t_len - 1, -1, -1):
            states[t] = s
            s -= int(back[t, i, s])
        frames = np.flatnonzero(states % 2 == 1)
        token_idx = states[frames] // 2
        starts_mask = np.ones(frames.shape[0], dtype=bool)
        starts_mask[1:] = token_idx[1:] != token_idx[:-1]
        run_starts = np.flatnonzero(starts_mask)
        run_ends = np.append(run_starts[1:], frames.shape[0]) - 1
        post = np.exp(lp[frames, ext[i, states[frames]]])
        conf = np.clip(_run_confidence(post, run_starts, confidence), 0.0, 1.0)
        out.append(
            CtcHypothesis(
                tokens=[int(x) for x in toks],
                token_frames=frames[run_starts].tolist(),
                token_end_frames=frames[run_ends].tolist(),
                token_confidences=conf.tolist(),
                score=score,
            )
        )
    return out


def ctc_forced_align(
    log_probs: torch.Tensor,
    tokens: Sequence[int],
    *,
    blank: int = 0,
    confidence: str = "mean",
) -> CtcHypothesis:
    """Best CTC alignment of a known token sequence to one utterance.

    Args:
        log_probs: (T, V) log-posteriors of one utterance (valid frames only).
        tokens: the blank-free token ids to align.
        blank: blank id.
        confidence: "mean" or "max" posterior over each token's frames.

    Returns:
        The hypothesis for ``tokens`` with frames and confidences; ``score`` is the best
        path's log-probability.

    Raises:
        ValueError: ``tokens`` contain the blank, or cannot be aligned to T frames.
    """
    _check_confidence(confidence)
    if log_probs.dim() != 2:
        raise ValueError(f"log_probs must be (T, V), got shape {tuple(log_probs.shape)}")
    if blank in tokens:
        raise ValueError(f"tokens contain the blank id {blank}")
    lp = log_probs.detach().to("cpu", torch.float64).numpy()
    (hyp,) = _forced_align_many(lp, [list(tokens)], blank, confidence)
    if hyp is None:
        raise ValueError(f"{len(tokens)} tokens cannot be aligned to {lp.shape[0]} frames")
    return hyp


# ---------------------------------------------------------------------- beam search


def _lse(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    if b == _NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


class _PrefixTrie:
    """Prefixes as integer node ids (hashing and extending a tuple would cost O(length))."""

    def __init__(self) -> None:
        self.parent = [-1]
        self.token = [-1]
        self.children: list[dict[int, int]] = [{}]

    def child(self, node: int, token: int) -> int:
        kids = self.children[node]
        found = kids.get(token)
        if found is None:
            found = len(self.parent)
            kids[token] = found
            self.parent.append(node)
            self.token.append(token)
            self.children.append({})
        return found

    def tokens(self, node: int) -> list[int]:
        out = []
        while node > 0:
            out.append(self.token[node])
            node = self.parent[node]
        return out[::-1]


def _merge(beams: dict[int, list[float]], key: int, pb: float, pnb: float) -> None:
    """Add (pb, pnb) into ``beams[key]`` (log-sum-exp), creating the entry if absent."""
    cur = beams.get(key)
    if cur is None:
        beams[key] = [pb, pnb]
    else:
        cur[0] = _lse(cur[0], pb)
        cur[1] = _lse(cur[1], pnb)


def _prefix_beam_one(
    lp: np.ndarray,
    cand_ids: np.ndarray,
    beam: int,
    blank: int,
    prune_threshold: float | None,
) -> list[tuple[list[int], float]]:
    """Prefix beam search over one utterance; returns (prefix, log P) best first.

    Each prefix keeps two log-probabilities: of its alignments ending in a blank (pb) and
    ending in its last label (pnb). A label equal to the prefix's last one extends the
    prefix only after a blank; directly after the same label it merges into the prefix.
    """
    trie = _PrefixTrie()
    beams: dict[int, list[float]] = {0: [0.0, _NEG_INF]}
    for t in range(lp.shape[0]):
        row = lp[t]
        cands = [int(c) for c in cand_ids[t] if c != blank]
        if prune_threshold is not None:
            cands = [c for c in cands if row[c] >= prune_threshold]
        cand_lp = [float(row[c]) for c in cands]
        nxt: dict[int, list[float]] = {}
        lp_blank = float(row[blank])
        for node, (pb, pnb) in beams.items():
            total = _lse(pb, pnb)
            last = trie.token[node]
            stay_nb = pnb + float(row[last]) if node > 0 else _NEG_INF
            _merge(nxt, node, total + lp_blank, stay_nb)
            for c, lc in zip(cands, cand_lp, strict=True):
                # Same label again: only alignments ending in blank start a new token.
                score = (pb if c == last else total) + lc
                _merge(nxt, trie.child(node, c), _NEG_INF, score)
        if len(nxt) > beam:
            keep = heapq.nlargest(beam, nxt.items(), key=lambda kv: _lse(kv[1][0], kv[1][1]))
            nxt = dict(keep)
        beams = nxt
    out = [(trie.tokens(k), _lse(pb, pnb)) for k, (pb, pnb) in beams.items()]
    out.sort(key=lambda kv: kv[1], reverse=True)
    return out


def ctc_prefix_beam_search(
    log_probs: torch.Tensor,
    out_lens: torch.Tensor | None = None,
    *,
    beam: int = 4,
    nbest: int | None = None,
    topk: int | None = None,
    prune_threshold: float | None = None,
    blank: int = 0,
    confidence: str = "mean",
) -> list[list[CtcHypothesis]]:
    """CTC prefix beam search (no language model).

    Every prefix sums the probabilities of all its alignments (blank/non-blank split in
    log space), so with ``beam`` >= the number of distinct prefixes and no pruning the
    scores are exact prefix probabilities.

    Args:
        log_probs: (N, T, V) log-posteriors.
        out_lens: int (N,) valid frames; default T for all.
        beam: prefixes kept after each frame.
        nbest: hypotheses returned per utterance (<= beam); default ``beam``.
        topk: extend prefixes only by each frame's ``topk`` most probable ids (a blank
            among them is not an extension); default ``beam``. The blank and the repeat
            of a prefix's last label are always scored, whatever their rank.
        prune_threshold: skip labels whose log-posterior at a frame is below this (e.g.
            ``math.log(1e-4)``); None = no threshold.
        blank: blank id.
        confidence: "mean" or "max" posterior for the token confidences.

    Returns:
        N lists of up to ``nbest`` hypotheses, best first; ``score`` is log P(tokens).
    """
    _check_confidence(confidence)
    lens = _check_batch(log_probs, out_lens)
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    nbest = beam if nbest is None else nbest
    if not 1 <= nbest <= beam:
        raise ValueError(f"nbest must be in [1, beam={beam}], got {nbest}")
    v = log_probs.shape[-1]
    k = min(v, beam if topk is None else topk)
    if k < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    lp_all = log_probs.detach().to("cpu", torch.float64)
    # One batched top-k for all frames; the per-frame loop only reads its rows.
    cand_all = lp_all.topk(k, dim=-1).indices.numpy()
    lp_all = lp_all.numpy()
    results = []
    for i, length in enumerate(lens.tolist()):
        lp = lp_all[i, :length]
        ranked = _prefix_beam_one(lp, cand_all[i, :length], beam, blank, prune_threshold)
        top = ranked[:nbest]
        hyps = []
        aligned = _forced_align_many(lp, [p for p, _ in top], blank, confidence)
        for (_, score), hyp in zip(top, aligned, strict=True):
            if hyp is None:  # cannot happen for a prefix the search built; be safe
                continue
            hyp.score = score
            hyps.append(hyp)
        results.append(hyps)
    return results


# --------------------------------------------------------------------- timestamps


def word_timestamps(
    hyp: CtcHypothesis,
    tokenizer: Tokenizer,
    frame_shift_s: float,
    *,
    offset_s: float = 0.0,
) -> list[WordTimestamp]:
    """Group a hypothesis' tokens into words with start/end times.

    Word boundaries by tokenizer kind: BPE/unigram pieces starting with ``▁`` begin a
    word (a lone ``▁`` piece is only a boundary); character tokenizers separate words
    with their ``▁`` token and IPA tokenizers with ``|``.

    Args:
        hyp: a hypothesis with ``token_frames``/``token_end_frames`` (any search here).
        tokenizer: the model's tokenizer (:mod:`speechfm.text`).
        frame_shift_s: seconds per encoder frame (``model.frame_shift_s``).
        offset_s: added to every time (e.g. the segment's start in a longer recording).

    Returns:
        Words in order; ``start`` = first frame x shift, ``end`` = (last frame + 1) x shift.
    """
    n = len(hyp.tokens)
    if len(hyp.token_frames) != n or len(hyp.token_end_frames) != n:
        raise ValueError("the hypothesis has no per-token frames (token_frames/token_end_frames)")
    confs = hyp.token_confidences if len(hyp.token_confidences) == n else [1.0] * n
    kind = getattr(tokenizer, "kind", None)
    separator_id = getattr(tokenizer, "word_id", None) if kind in ("char", "ipa") else None

    words: list[WordTimestamp] = []
    current: list[int] = []  # indices into hyp.tokens

    def close() -> None:
        if not current:
            return
        text = tokenizer.decode([hyp.tokens[j] for j in current]).strip()
        if text:
            words.append(
                WordTimestamp(
                    word=text,
                    start=offset_s + hyp.token_frames[current[0]] * frame_shift_s,
                    end=offset_s + (hyp.token_end_frames[current[-1]] + 1) * frame_shift_s,
                    confidence=float(np.mean([confs[j] for j in current])),
                )
            )
        current.clear()

    for j, tok in enumerate(hyp.tokens):
        if kind in ("char", "ipa"):
            if separator_id is not None and tok == separator_id:
                close()
                continue
        else:
            piece = tokenizer.id_to_token(tok)
            if piece.startswith("▁"):
                close()
                if piece == "▁":
                    continue
        current.append(j)
    close()
    return words
