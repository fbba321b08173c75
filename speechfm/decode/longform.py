"""Long recordings and noise-only inputs for :meth:`speechfm.api.SpeechModel.transcribe`.

One encoder pass over a whole recording needs memory that grows with its length (and
with full attention, with its square): a 30-minute file does not fit. So inputs longer
than ``long_form_s`` (default :data:`DEFAULT_LONG_FORM_S`, 30 s) are transcribed piece by
piece, and no encoder pass ever sees more than ``long_form_s`` seconds of audio:

1. **Pauses.** The voice-activity detector (:mod:`speechfm.features.vad`) finds the
   speech; each run of speech is padded by :data:`PAD_S` and runs closer than
   :data:`MERGE_GAP_S` are merged into one region.
2. **Pieces.** Consecutive regions are grouped into one piece while the piece stays
   within ``long_form_s`` and the pause before the next region is at most
   :data:`MAX_PAUSE_S` (a long stretch of non-speech is not decoded at all). A piece
   holds whole regions, so it begins and ends in a pause and keeps all its tokens.
3. **Unbroken speech.** A region longer than ``long_form_s`` (or the whole recording,
   with the detector off) is cut at its quietest 10 ms frame within the last quarter of
   each ``long_form_s - 2 * CONTEXT_S`` span; each part is decoded with
   :data:`CONTEXT_S` of audio beyond each cut, and keeps the tokens whose first frame
   lies between its cuts (the overlap is decoded twice, each token kept once).
4. **Stitching.** Every piece starts on a multiple of the encoder frame shift, so its
   frames map exactly onto the recording's: token and word times are times in the
   original recording and increase monotonically. Pieces that a pause separates are a
   word boundary: for character and IPA tokenizers (whose words are separated by a
   token) the separator is inserted there; subword pieces carry their own ``▁``.

Inputs of at most ``long_form_s`` take exactly the one-pass path they always took; with
the detector on, one without any detected speech gives an empty result and is not
decoded. Memory: the decoded audio of a batch is bounded by ``batch_size`` pieces of
``long_form_s``; the recording itself is held as float32 samples (230 MB per hour at
16 kHz), and the detector needs ~20 MB of block buffers plus ~1 MB per 10 minutes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from speechfm.decode.ctc import CtcHypothesis
from speechfm.features.vad import VadConfig, VoiceActivity, detect_voice

__all__ = [
    "CONTEXT_S",
    "DEFAULT_LONG_FORM_S",
    "Piece",
    "join_texts",
    "plan_pieces",
    "run_long_form",
    "stitch_hypotheses",
]

DEFAULT_LONG_FORM_S = 30.0
"""Inputs longer than this many seconds are transcribed piece by piece (and no piece is
longer): about what ASR models are trained on, and a few hundred MB of activations for
a large model."""
CONTEXT_S = 1.0
"""Audio decoded beyond each cut inside unbroken speech, seconds."""
PAD_S = 0.2
"""Audio kept before and after each run of detected speech, seconds."""
MERGE_GAP_S = 0.3
"""Runs of speech at most this far apart (after padding) form one region, seconds."""
MAX_PAUSE_S = 1.0
"""A longer pause between regions starts a new piece, seconds."""


@dataclass(frozen=True)
class Piece:
    """One stretch of a recording decoded on its own (all positions in samples)."""

    start: int
    """First sample decoded (a multiple of the encoder frame shift)."""
    end: int
    """One past the last sample decoded."""
    keep_start: int
    """Tokens whose first frame starts at or after this sample ..."""
    keep_end: int
    """... and before this one are kept."""
    after_pause: bool
    """A pause separates this piece from the previous one (a word boundary)."""


def _aligned(sample: int, step: int) -> int:
    return (sample // step) * step


def _split_region(start: int, end: int, *, level_db: np.ndarray, hop: int, max_len: int,
                  context: int, step: int, first_after_pause: bool) -> list[Piece]:
    """Pieces of one region of unbroken speech (see the module docstring, step 3)."""
    # Room for the context both sides and for aligning a piece's start down to a frame.
    span = max(step, _aligned(max_len - 2 * context - step, step))
    cuts = [start]
    while end - cuts[-1] > max_len - step - (0 if cuts[-1] == start else context):
        lo = cuts[-1] + span - span // 4
        hi = cuts[-1] + span
        f0, f1 = lo // hop, max(lo // hop + 1, hi // hop)
        quiet = f0 + int(np.argmin(level_db[f0:f1])) if f0 < level_db.shape[0] else f1
        cut = min(hi, max(cuts[-1] + step, _aligned(quiet * hop + hop // 2, step)))
        cuts.append(cut)
    cuts.append(end)
    pieces = []
    for k in range(len(cuts) - 1):
        a, b = cuts[k], cuts[k + 1]
        pieces.append(Piece(
            start=_aligned(max(start, a - context), step),
            end=min(end, b + context),
            keep_start=a if k else 0,
            keep_end=b if k < len(cuts) - 2 else end + step,
            after_pause=first_after_pause and k == 0,
        ))
    return pieces


def plan_pieces(activity: VoiceActivity, *, sample_rate: int, max_s: float, step: int,
                use_speech: bool = True, context_s: float = CONTEXT_S) -> list[Piece]:
    """Cut a recording into pieces of at most ``max_s`` seconds (the module docstring).

    Args:
        activity: the detector's output for the recording (its levels choose the cuts
            inside unbroken speech).
        sample_rate: rate in Hz.
        max_s: the longest piece, seconds.
        step: the encoder frame shift in samples (piece starts are multiples of it).
        use_speech: cut at the detected pauses and skip non-speech; False: the whole
            recording is one region.
        context_s: audio decoded beyond each cut inside unbroken speech, seconds.

    Returns:
        The pieces in order (none when ``use_speech`` and there is no speech).
    """
    n = activity.num_samples
    max_len = int(max_s * sample_rate)
    context = min(int(round(context_s * sample_rate)), max(0, (max_len - 2 * step) // 4))
    if use_speech:
        regions = activity.regions(pad=int(PAD_S * sample_rate),
                                   merge_gap=int(MERGE_GAP_S * sample_rate))
    else:
        regions = [(0, n)] if n else []
    max_pause = int(MAX_PAUSE_S * sample_rate)
    pieces: list[Piece] = []
    group: list[tuple[int, int]] = []

    def close() -> None:
        if group:
            a, b = _aligned(group[0][0], step), group[-1][1]
            pieces.append(Piece(a, b, a, b + step, after_pause=bool(pieces)))
            group.clear()

    for a, b in regions:
        if b - _aligned(a, step) > max_len:
            close()
            pieces += _split_region(a, b, level_db=activity.level_db, hop=activity.hop,
                                    max_len=max_len, context=context, step=step,
                                    first_after_pause=bool(pieces))
            continue
        if group and (b - _aligned(group[0][0], step) > max_len or a - group[-1][1] > max_pause):
            close()
        group.append((a, b))
    close()
    return pieces


def stitch_hypotheses(pieces: Sequence[Piece], hyps: Sequence[CtcHypothesis], *, step: int,
                      separator: int | None = None) -> CtcHypothesis:
    """One hypothesis in the recording's encoder frames from the pieces' hypotheses.

    Args:
        pieces, hyps: the pieces and their hypotheses (frames relative to ``piece.start``).
        step: the encoder frame shift in samples.
        separator: the token that separates words (character/IPA tokenizers), inserted
            where a pause separates two pieces and de-duplicated at cuts; None: none.
    """
    tokens: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    confs: list[float] = []
    score = 0.0
    for piece, hyp in zip(pieces, hyps, strict=True):
        offset = piece.start // step
        n = len(hyp.tokens)
        frames = hyp.token_frames if len(hyp.token_frames) == n else [0] * n
        end_frames = hyp.token_end_frames if len(hyp.token_end_frames) == n else frames
        token_confs = hyp.token_confidences if len(hyp.token_confidences) == n else [1.0] * n
        kept = [j for j in range(n)
                if piece.keep_start <= (frames[j] + offset) * step < piece.keep_end]
        if not kept:
            continue
        score += float(hyp.score)
        if (piece.after_pause and separator is not None and tokens and tokens[-1] != separator
                and hyp.tokens[kept[0]] != separator):
            tokens.append(separator)
            starts.append(max(starts[-1], offset))
            ends.append(starts[-1])
            confs.append(1.0)
        for j in kept:
            if separator is not None and hyp.tokens[j] == separator and (
                    not tokens or tokens[-1] == separator):
                continue  # a separator both sides of a cut decoded, or a leading one
            tokens.append(int(hyp.tokens[j]))
            starts.append(int(frames[j]) + offset)
            ends.append(max(int(end_frames[j]) + offset, starts[-1]))
            confs.append(float(token_confs[j]))
    return CtcHypothesis(tokens=tokens, token_frames=starts, token_end_frames=ends,
                         token_confidences=confs, score=score)


def join_texts(pieces: Sequence[Piece], texts: Sequence[str]) -> str:
    """The pieces' texts (e.g. of a decoding graph, which has no token times) joined by
    spaces; these pieces must not overlap (plan them with ``context_s=0``)."""
    return " ".join(t.strip() for t in texts if t.strip())


def run_long_form(
    waves: Sequence[np.ndarray],
    decode: Callable[[list[np.ndarray]], list[Any]],
    *,
    sample_rate: int,
    step: int,
    batch_size: int,
    long_form_s: float | None,
    vad: bool | VadConfig,
    stitch: Callable[[list[Piece], list[Any]], Any],
    empty: Callable[[], Any],
    context_s: float = CONTEXT_S,
    progress: bool = False,
) -> list[Any]:
    """Decode inputs of any length: short ones in one pass each, long ones piece by piece.

    Args:
        waves: float32 (S,) inputs at ``sample_rate``.
        decode: waves -> one result per wave (batched, in order), e.g.
            ``lambda ws: model._batches(ws, batch_size, search)``.
        sample_rate: rate in Hz.
        step: the encoder frame shift in samples.
        batch_size: pieces of long inputs decoded per call of ``decode``.
        long_form_s: inputs longer than this many seconds go piece by piece (None: never).
        vad: gate inputs (and pieces) on detected speech: True (default settings), a
            :class:`~speechfm.features.vad.VadConfig`, or False (decode everything).
        stitch: (pieces, results) -> the result of a long input.
        empty: the result of an input without speech.
        context_s: audio decoded beyond each cut inside unbroken speech, seconds.
        progress: a tqdm bar (stderr, seconds of audio) over the long inputs.

    Returns:
        One result per input, in input order.
    """
    config = (VadConfig() if vad is True else vad) or None
    limit = None if long_form_s is None else int(long_form_s * sample_rate)
    if limit is not None and limit < 4 * step:
        raise ValueError(f"long_form_s must be at least 4 encoder frames, got {long_form_s}")
    results: list[Any] = [None] * len(waves)
    short, long = [], []
    for i, wave in enumerate(waves):
        if limit is not None and wave.shape[0] > limit:
            long.append(i)
        elif config is not None and not detect_voice(wave, sample_rate, config).has_speech:
            results[i] = empty()
        else:
            short.append(i)
    if short:
        for i, out in zip(short, decode([waves[i] for i in short]), strict=True):
            results[i] = out
    if not long:
        return results
    bar = None
    if progress:
        from tqdm import tqdm

        total = sum(waves[i].shape[0] for i in long) / sample_rate
        bar = tqdm(total=round(total, 1), unit="s", desc="long audio", file=sys.stderr,
                   bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}]")
    try:
        for i in long:
            wave = waves[i]
            activity = detect_voice(wave, sample_rate, config or VadConfig())
            pieces = plan_pieces(activity, sample_rate=sample_rate, max_s=long_form_s,
                                 step=step, use_speech=config is not None, context_s=context_s)
            outs: list[Any] = []
            done = 0
            for k in range(0, len(pieces), batch_size):
                group = pieces[k:k + batch_size]
                outs += decode([wave[p.start:p.end] for p in group])
                if bar is not None:
                    reached = min(wave.shape[0], group[-1].keep_end)
                    bar.update((reached - done) / sample_rate)
                    done = reached
            if bar is not None:
                bar.update((wave.shape[0] - done) / sample_rate)
            results[i] = stitch(pieces, outs) if pieces else empty()
    finally:
        if bar is not None:
            bar.close()
    return results
