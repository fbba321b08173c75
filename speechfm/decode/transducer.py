"""Transducer search: greedy, modified beam search, and streaming.

All searches take a :class:`~speechfm.models.transducer.TransducerModel` (its predictor and
joiner) and the encoder output ``enc`` (N, T, C) with ``enc_lens`` (N,) valid frames (from
``model.encode(feats, x_lens)``), and return :class:`TransducerHypothesis`
objects. Frames are encoder output frames; multiply by ``model.encoder.frame_shift_s`` for seconds.

Topology. Every search emits at most ``max_sym_per_frame`` (M) non-blank tokens per frame:
on frame t a hypothesis emits tokens until it emits a blank (which moves it to frame t + 1)
or until it has emitted M tokens, after which it moves on without a blank. With M = 1 every
frame emits exactly one symbol (icefall's "modified" transducer). A hypothesis' ``score`` is
the natural-log probability of its alignment under that topology: the sum of the log-probs
of every symbol emitted, blanks included (beam search: the log-sum of the merged alignments
with the same tokens).

Modified beam search keeps ``beam`` hypotheses per utterance. Within a frame, each
sub-step extends the hypotheses still on that frame by a blank (they are done with it) or by
a token; candidates with equal token sequences that are both done with the frame are merged
(log-add of scores, the better alignment's frames kept); then the ``beam`` best of all
candidates survive. With ``beam=1`` this is greedy search.

Streaming: :class:`TransducerStream` takes feature frames in pieces of any size, runs the
encoder chunk by chunk (:meth:`ConformerEncoder.streaming_forward`) and advances the search
on every new encoder frame; its result equals the offline search on the chunked-attention
encoder output (``model.encode(feats, x_lens, chunk_size=..., left_context=...)``).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from speechfm.models.transducer.model import TransducerModel

__all__ = [
    "SEARCH_METHODS",
    "TransducerHypothesis",
    "TransducerStream",
    "greedy_search",
    "modified_beam_search",
]

SEARCH_METHODS = ("greedy", "modified_beam")
_NEG_INF = float("-inf")


@dataclass
class TransducerHypothesis:
    """One decoded token sequence with its alignment."""

    tokens: list[int] = field(default_factory=list)
    """Token ids (no blanks)."""
    frames: list[int] = field(default_factory=list)
    """Encoder frame on which each token was emitted (for timestamps)."""
    score: float = 0.0
    """Natural-log probability of the alignment (beam search: of the merged alignments)."""
    token_log_probs: list[float] = field(default_factory=list)
    """Log-probability the joiner gave each token where it was emitted (its confidence is
    the exp of it)."""

    def __len__(self) -> int:
        return len(self.tokens)


def _check_search_args(max_sym_per_frame: int, beam: int = 1) -> None:
    if max_sym_per_frame < 1:
        raise ValueError(f"max_sym_per_frame must be >= 1, got {max_sym_per_frame}")
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")


def _check_enc(model: TransducerModel, enc: torch.Tensor, enc_lens: torch.Tensor) -> torch.Tensor:
    """Validate a batch of encoder output; return ``enc_lens`` as int64 on the CPU."""
    if enc.dim() != 3:
        raise ValueError(f"enc must be (N, T, C), got shape {tuple(enc.shape)}")
    dim = model.joiner.encoder_proj.in_features
    if enc.shape[2] != dim:
        raise ValueError(f"enc has {enc.shape[2]} channels, the joiner expects {dim}")
    if enc_lens.shape != (enc.shape[0],) or enc_lens.is_floating_point():
        raise ValueError(
            f"enc_lens must be an integer ({enc.shape[0]},) tensor, got {enc_lens.dtype} "
            f"{tuple(enc_lens.shape)}"
        )
    lens = enc_lens.to("cpu", torch.int64)
    if bool(((lens < 0) | (lens > enc.shape[1])).any()):
        raise ValueError(f"enc_lens {lens.tolist()} outside [0, {enc.shape[1]}]")
    return lens


def _predict(model: TransducerModel, contexts: torch.Tensor) -> torch.Tensor:
    """(H, context_size) token contexts -> (H, J) projected predictor outputs."""
    return model.joiner.decoder_proj(model.predictor.step(contexts))


def _joint_log_probs(model: TransducerModel, am: torch.Tensor, lm: torch.Tensor) -> torch.Tensor:
    """(H, J) projected encoder and predictor vectors -> (H, V) float32 log-probs."""
    return torch.log_softmax(model.joiner(am, lm, project_input=False).float(), dim=-1)


# ---------------------------------------------------------------------------------- greedy


class _GreedyDecoder:
    """Greedy search state of N streams, advanced a block of frames at a time.

    The bookkeeping (scores, emitted tokens, which streams are still on a frame) is plain
    Python: one small tensor-to-list transfer per joiner call instead of many tiny tensor
    operations. Streams still on a frame share one joiner call, and the ones that emitted
    one predictor call.
    """

    def __init__(
        self, model: TransducerModel, batch_size: int, max_sym_per_frame: int, device: torch.device
    ):
        self.model = model
        self.blank = model.blank_id
        self.max_sym = max_sym_per_frame
        self.device = device
        c = model.predictor.context_size
        self.context = torch.full((batch_size, c), self.blank, dtype=torch.int64, device=device)
        self.lm = _predict(model, self.context)  # (N, J)
        self.tokens: list[list[int]] = [[] for _ in range(batch_size)]
        self.frames: list[list[int]] = [[] for _ in range(batch_size)]
        self.token_lps: list[list[float]] = [[] for _ in range(batch_size)]
        self.scores = [0.0] * batch_size  # float64 sums of float32 log-probs
        self.num_frames = [0] * batch_size  # frames consumed

    def _index(self, positions: list[int]) -> torch.Tensor:
        return torch.tensor(positions, dtype=torch.int64, device=self.device)

    def advance(self, am: torch.Tensor, lens: torch.Tensor) -> None:
        """Consume frames: am (N, t, J) projected encoder output, lens int64 CPU (N,)."""
        lens_list = lens.tolist()
        n = len(lens_list)
        for i in range(am.shape[1]):
            rows = [r for r in range(n) if lens_list[r] > i]
            if not rows:
                break
            if len(rows) == n:
                a, lm = am[:, i], self.lm
            else:
                index = self._index(rows)
                a, lm = am[index, i], self.lm[index]
            for _ in range(self.max_sym):
                best_lp, best = _joint_log_probs(self.model, a, lm).max(dim=-1)
                emitted = []  # positions in `rows` of the streams that emitted a token
                for k, (r, tok, lp) in enumerate(
                    zip(rows, best.tolist(), best_lp.tolist(), strict=True)
                ):
                    self.scores[r] += lp
                    if tok != self.blank:
                        emitted.append(k)
                        self.tokens[r].append(tok)
                        self.frames[r].append(self.num_frames[r] + i)
                        self.token_lps[r].append(lp)
                if not emitted:
                    break
                if len(emitted) < len(rows):
                    keep = self._index(emitted)
                    rows = [rows[k] for k in emitted]
                    a, best = a[keep], best[keep]
                if len(rows) == n:
                    self.context = torch.cat((self.context[:, 1:], best.unsqueeze(1)), dim=1)
                    self.lm = lm = _predict(self.model, self.context)
                else:
                    index = self._index(rows)
                    context = torch.cat((self.context[index, 1:], best.unsqueeze(1)), dim=1)
                    self.context[index] = context
                    lm = _predict(self.model, context)
                    self.lm[index] = lm
        for r in range(n):
            self.num_frames[r] += lens_list[r]

    def hypotheses(self) -> list[TransducerHypothesis]:
        return [
            TransducerHypothesis(tokens=list(t), frames=list(f), score=s, token_log_probs=list(p))
            for t, f, s, p in zip(self.tokens, self.frames, self.scores, self.token_lps,
                                  strict=True)
        ]


def greedy_search(
    model: TransducerModel,
    enc: torch.Tensor,
    enc_lens: torch.Tensor,
    *,
    max_sym_per_frame: int = 1,
) -> list[TransducerHypothesis]:
    """Greedy search of a batch: the most probable symbol at each step.

    Args:
        model: the transducer (predictor and joiner are used).
        enc: (N, T, C) encoder output.
        enc_lens: int (N,) valid frames (0 gives an empty hypothesis).
        max_sym_per_frame: most tokens emitted per frame (M, see the module docstring).

    Returns:
        N hypotheses.
    """
    _check_search_args(max_sym_per_frame)
    lens = _check_enc(model, enc, enc_lens)
    with torch.inference_mode():
        decoder = _GreedyDecoder(model, enc.shape[0], max_sym_per_frame, enc.device)
        decoder.advance(model.joiner.encoder_proj(enc), lens)
        return decoder.hypotheses()


# ----------------------------------------------------------------------------- beam search


@dataclass
class _Hyp:
    tokens: tuple[int, ...]
    frames: tuple[int, ...]
    score: float
    lm: torch.Tensor | None  # (J,) projected predictor output; None until computed
    token_lps: tuple[float, ...] = ()  # log-prob of each token where it was emitted


def _log_add(a: float, b: float) -> float:
    if a == _NEG_INF:
        return b
    if b == _NEG_INF:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


def _merge(into: dict[tuple[int, ...], _Hyp], hyp: _Hyp) -> None:
    """Add ``hyp`` to a set of hypotheses done with the frame, log-adding equal token sequences."""
    old = into.get(hyp.tokens)
    if old is None:
        into[hyp.tokens] = hyp
        return
    score = _log_add(old.score, hyp.score)
    if hyp.score > old.score:  # keep the alignment (frames, token log-probs) of the better one
        old.frames = hyp.frames
        old.token_lps = hyp.token_lps
    old.score = score


class _BeamDecoder:
    """Modified beam search state of N streams, advanced a block of frames at a time."""

    def __init__(
        self,
        model: TransducerModel,
        batch_size: int,
        beam: int,
        max_sym_per_frame: int,
        device: torch.device,
    ):
        self.model = model
        self.blank = model.blank_id
        self.beam = beam
        self.max_sym = max_sym_per_frame
        self.context_size = model.predictor.context_size
        self.device = device
        start = torch.full((1, self.context_size), self.blank, dtype=torch.int64, device=device)
        lm = _predict(model, start)[0]
        self.beams: list[list[_Hyp]] = [[_Hyp((), (), 0.0, lm)] for _ in range(batch_size)]
        self.num_frames = torch.zeros(batch_size, dtype=torch.int64)

    def _fill_lm(self, hyps: list[_Hyp]) -> None:
        """Compute the predictor output of new hypotheses in one batched call."""
        if not hyps:
            return
        pad = (self.blank,) * self.context_size
        ctx = torch.tensor(
            [(pad + h.tokens)[-self.context_size :] for h in hyps],
            dtype=torch.int64,
            device=self.device,
        )
        lm = _predict(self.model, ctx)
        for h, row in zip(hyps, lm, strict=True):
            h.lm = row

    def _frame(self, am: torch.Tensor, utts: list[int], frame_of: dict[int, int]) -> None:
        """Advance utterances ``utts`` over one frame; am (len(utts), J)."""
        blank, beam = self.blank, self.beam
        opened: dict[int, list[_Hyp]] = {n: self.beams[n] for n in utts}
        done: dict[int, dict[tuple[int, ...], _Hyp]] = {n: {} for n in utts}
        am_of = {n: am[k] for k, n in enumerate(utts)}
        for sub in range(self.max_sym):
            live = [n for n in utts if opened[n]]
            if not live:
                break
            last = sub == self.max_sym - 1
            a = torch.stack([am_of[n] for n in live for _ in opened[n]])
            lm = torch.stack([h.lm for n in live for h in opened[n]])
            logp = _joint_log_probs(self.model, a, lm).double().cpu()
            new_hyps: list[_Hyp] = []
            row = 0
            for n in live:
                hyps = opened[n]
                lp = logp[row : row + len(hyps)]
                row += len(hyps)
                closed = done[n]
                for j, h in enumerate(hyps):
                    _merge(closed, _Hyp(h.tokens, h.frames, h.score + float(lp[j, blank]), h.lm,
                                        h.token_lps))
                scores = torch.tensor([h.score for h in hyps], dtype=torch.float64)
                cand = scores[:, None] + lp
                cand[:, blank] = _NEG_INF
                if last:
                    # A token now ends the frame too: merge it into an equal finished
                    # sequence before ranking, so a split probability mass is not undercounted.
                    index = {h.tokens: j for j, h in enumerate(hyps)}
                    for key, h in closed.items():
                        j = index.get(key[:-1]) if key else None
                        if j is not None and cand[j, key[-1]] > _NEG_INF:
                            extra = float(cand[j, key[-1]])
                            if extra > h.score:
                                h.frames = hyps[j].frames + (frame_of[n],)
                                h.token_lps = hyps[j].token_lps + (float(lp[j, key[-1]]),)
                            h.score = _log_add(h.score, extra)
                            cand[j, key[-1]] = _NEG_INF
                k = min(beam, cand.numel())
                top_v, top_i = cand.flatten().topk(k)
                pool: list[tuple[float, int, object]] = [
                    (h.score, 0, key) for key, h in closed.items()
                ]
                pool += [
                    (float(v), 1, int(i))
                    for v, i in zip(top_v.tolist(), top_i.tolist(), strict=True)
                    if v > _NEG_INF
                ]
                # Stable sort: on equal scores a finished hypothesis (kind 0) goes first.
                pool.sort(key=lambda p: -p[0])
                kept = pool[:beam]
                done[n] = {p[2]: closed[p[2]] for p in kept if p[1] == 0}
                opened[n] = []
                vocab = lp.shape[1]
                for score, kind, flat in kept:
                    if kind == 0:
                        continue
                    j, v = divmod(flat, vocab)
                    parent = hyps[j]
                    h = _Hyp(parent.tokens + (v,), parent.frames + (frame_of[n],), score, None,
                             parent.token_lps + (float(lp[j, v]),))
                    new_hyps.append(h)
                    if last:
                        done[n][h.tokens] = h
                    else:
                        opened[n].append(h)
            self._fill_lm(new_hyps)
        for n in utts:
            self.beams[n] = sorted(done[n].values(), key=lambda h: -h.score)[:beam]

    def advance(self, am: torch.Tensor, lens: torch.Tensor) -> None:
        """Consume frames: am (N, t, J) projected encoder output, lens int64 CPU (N,)."""
        base = self.num_frames.clone()
        for i in range(am.shape[1]):
            utts = torch.nonzero(lens > i).flatten().tolist()
            if not utts:
                break
            frame_of = {n: int(base[n]) + i for n in utts}
            self._frame(am[torch.tensor(utts, device=am.device), i], utts, frame_of)
        self.num_frames += lens

    def nbest(self, n: int) -> list[TransducerHypothesis]:
        return [
            TransducerHypothesis(tokens=list(h.tokens), frames=list(h.frames), score=h.score,
                                 token_log_probs=list(h.token_lps))
            for h in self.beams[n]
        ]


def modified_beam_search(
    model: TransducerModel,
    enc: torch.Tensor,
    enc_lens: torch.Tensor,
    *,
    beam: int = 4,
    max_sym_per_frame: int = 1,
) -> list[list[TransducerHypothesis]]:
    """Modified beam search of a batch (see the module docstring).

    Args:
        model: the transducer (predictor and joiner are used).
        enc: (N, T, C) encoder output.
        enc_lens: int (N,) valid frames (0 gives one empty hypothesis).
        beam: hypotheses kept per utterance.
        max_sym_per_frame: most tokens emitted per frame (M).

    Returns:
        For each utterance, up to ``beam`` hypotheses, best (highest score) first.
    """
    _check_search_args(max_sym_per_frame, beam)
    lens = _check_enc(model, enc, enc_lens)
    with torch.inference_mode():
        decoder = _BeamDecoder(model, enc.shape[0], beam, max_sym_per_frame, enc.device)
        decoder.advance(model.joiner.encoder_proj(enc), lens)
        return [decoder.nbest(n) for n in range(enc.shape[0])]


# ------------------------------------------------------------------------------- streaming


class TransducerStream:
    """Streaming recognition of one utterance: features in, partial results out.

    Feature frames (fbank, not normalised: the encoder normalises them) arrive in
    pieces of any size; the encoder front end keeps the frames its receptive field still
    needs, encoder frames are grouped into attention chunks of ``chunk_size``, and each
    completed chunk's frames advance the search at once. :meth:`finalize` flushes the last
    partial chunk. The result equals :func:`greedy_search` / :func:`modified_beam_search` on
    ``model.encode(feats, x_lens, chunk_size=chunk_size, left_context=left_context)``.

    The encoder must be streamable: causal convolutions (``conv_causal=True``) and a front
    end without padding in time ("conv2d" or "stack").

    Args:
        model: the transducer, in eval mode.
        method: "greedy" or "modified_beam".
        beam: hypotheses kept (modified_beam).
        max_sym_per_frame: most tokens per frame.
        chunk_size: encoder frames per attention chunk; default: the encoder's own.
        left_context: cached encoder frames per layer (-1 = all); default: the encoder's.
        language, adapters: passed to the encoder (language-keyed adapters).
    """

    def __init__(
        self,
        model: TransducerModel,
        *,
        method: str = "greedy",
        beam: int = 4,
        max_sym_per_frame: int = 1,
        chunk_size: int | None = None,
        left_context: int | None = None,
        language: str | None = None,
        adapters: Collection[str] | str | None = None,
    ) -> None:
        if method not in SEARCH_METHODS:
            raise ValueError(f"method must be one of {SEARCH_METHODS}, got {method!r}")
        _check_search_args(max_sym_per_frame, beam)
        if model.training:
            raise ValueError("streaming runs in eval mode; call model.eval() first")
        self.model = model
        self.method = method
        self.language = language
        self.adapters = adapters
        param = next(model.parameters())
        self._device, self._dtype = param.device, param.dtype
        self.feature_dim = model.encoder.feature_dim
        with torch.inference_mode():
            self._state = model.encoder.init_streaming_state(
                1,
                chunk_size=chunk_size,
                left_context=left_context,
                device=self._device,
                dtype=self._dtype,
            )
            if method == "greedy":
                self._decoder = _GreedyDecoder(model, 1, max_sym_per_frame, self._device)
            else:
                self._decoder = _BeamDecoder(model, 1, beam, max_sym_per_frame, self._device)
        self.num_input_frames = 0
        """Feature frames accepted so far."""
        self.finished = False
        """True after :meth:`finalize`."""

    @property
    def num_frames(self) -> int:
        """Encoder frames decoded so far."""
        return int(self._decoder.num_frames[0])

    @property
    def frames_to_next_chunk(self) -> int:
        """Feature frames still needed before the next chunk is decoded: :meth:`accept_features`
        on fewer only buffers them, so a caller may hold frames back until then (the result
        does not depend on how the frames are grouped)."""
        return self.model.encoder.frames_to_next_chunk(self._state)

    def _decode(self, out: torch.Tensor, out_lens: torch.Tensor) -> None:
        if out.shape[1]:
            self._decoder.advance(self.model.joiner.encoder_proj(out), out_lens.cpu())

    def accept_features(self, feats: torch.Tensor) -> int:
        """Feed the next feature frames.

        Args:
            feats: (T, F) fbank frames (T may be 0).

        Returns:
            The number of new encoder frames decoded (0 while a chunk is still filling).
        """
        if self.finished:
            raise RuntimeError("this stream is finalized; start a new TransducerStream")
        if feats.dim() != 2 or feats.shape[1] != self.feature_dim:
            raise ValueError(
                f"features must be (T, {self.feature_dim}), got shape {tuple(feats.shape)}"
            )
        before = self.num_frames
        with torch.inference_mode():
            x = feats.to(self._device, self._dtype).unsqueeze(0)
            out, out_lens, self._state = self.model.encoder.streaming_forward(
                x, self._state, language=self.language, adapters=self.adapters
            )
            self._decode(out, out_lens)
        self.num_input_frames += feats.shape[0]
        return self.num_frames - before

    def finalize(self) -> TransducerHypothesis:
        """Flush the frames still buffered (the last partial chunk) and return the result."""
        if not self.finished:
            with torch.inference_mode():
                empty = torch.zeros(1, 0, self.feature_dim, device=self._device, dtype=self._dtype)
                out, out_lens, self._state = self.model.encoder.streaming_forward(
                    empty,
                    self._state,
                    final=True,
                    language=self.language,
                    adapters=self.adapters,
                )
                self._decode(out, out_lens)
            self.finished = True
        return self.result()

    def result(self) -> TransducerHypothesis:
        """The best hypothesis so far (partial until :meth:`finalize`)."""
        return self.nbest()[0]

    def nbest(self) -> list[TransducerHypothesis]:
        """All current hypotheses, best first (one for greedy search)."""
        if isinstance(self._decoder, _GreedyDecoder):
            return self._decoder.hypotheses()
        return self._decoder.nbest(0)
