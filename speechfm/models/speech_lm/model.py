"""Speech language model: speech encoder -> frame-stacking adaptor -> decoder-only causal LM.

Speech enters the LM as embeddings spliced into the token-embedding sequence between two
learned markers, ``<speech_begin> frames <speech_end>``; the LM (any transformers causal
LM: a small Llama trained here or a plugged-in checkpoint) reads ``inputs_embeds`` and
never sees a speech token id. Sequences interleave text and speech segments
(:mod:`speechfm.models.speech_lm.segments`); the loss is next-token prediction on the text
tokens of ``train=True`` segments only.

The family contract (:mod:`speechfm.models.io`): ``model.encoder`` is the shared front
end, ``model(batch) -> (loss_sum, tokens, stats)``, ``model.encode`` the encoder output;
``speechfm.load(dir).respond(...)`` generates with :meth:`SpeechLM.generate`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from speechfm.models.conformer.speech_encoder import SpeechEncoder
from speechfm.models.speech_lm.segments import SpeechSegment, TextSegment

__all__ = ["IGNORE", "FrameStackAdaptor", "SpeechLM", "SpeechLMInputs"]

IGNORE = -100
"""Label of positions without a loss (speech, markers, prompts, padding)."""


class FrameStackAdaptor(nn.Module):
    """Encoder frames -> LM embeddings: concatenate ``stack`` consecutive frames, then an
    MLP (Linear, GELU, Linear).

    A last incomplete group is completed with zero frames, so T' frames give
    ceil(T' / stack) outputs whatever the padding of the batch.

    Args:
        in_dim: C, the encoder output width.
        out_dim: D, the LM embedding width.
        stack: frames per output frame.
        hidden: the MLP's hidden width.
    """

    def __init__(self, in_dim: int, out_dim: int, *, stack: int, hidden: int) -> None:
        super().__init__()
        self.stack = stack
        self.proj = nn.Sequential(nn.Linear(in_dim * stack, hidden), nn.GELU(),
                                  nn.Linear(hidden, out_dim))

    def output_lengths(self, x_lens: torch.Tensor) -> torch.Tensor:
        """int64 (N,) adaptor frames for ``x_lens`` encoder frames: ceil(x_lens / stack)."""
        return (x_lens + self.stack - 1) // self.stack

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, T', C) encoder frames, (N,) lengths -> (N, ceil(T'/stack), D), (N,) lengths."""
        n, t, c = x.shape
        valid = torch.arange(t, device=x.device)[None, :] < x_lens.to(x.device)[:, None]
        # Zero the padding so that a last partial group is the same batched or alone.
        x = x.masked_fill(~valid[..., None], 0.0)
        x = F.pad(x, (0, 0, 0, (-t) % self.stack))
        x = x.reshape(n, x.shape[1] // self.stack, self.stack * c)
        return self.proj(x), self.output_lengths(x_lens)


@dataclass
class SpeechLMInputs:
    """The LM's inputs for a padded batch of sequences (:meth:`SpeechLM.build_inputs`)."""

    embeds: torch.Tensor
    """(N, L, D) input embeddings: token embeddings, markers and speech frames."""
    attention_mask: torch.Tensor
    """int64 (N, L): 1 on the sequence, 0 on padding."""
    position_ids: torch.Tensor
    """int64 (N, L): 0, 1, ... along each sequence (padding not counted; 0 on padding)."""
    labels: torch.Tensor
    """int64 (N, L): the token id at trainable text positions, :data:`IGNORE` elsewhere
    (the LM predicts ``labels[:, t]`` from positions < t)."""
    lengths: torch.Tensor
    """int64 (N,): positions per sequence."""


def _pad_frames(rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(T_i, C) tensors -> zero-padded (M, max T_i, C) and int64 (M,) lengths."""
    lens = torch.tensor([r.shape[0] for r in rows], dtype=torch.int64)
    out = rows[0].new_zeros(len(rows), max(int(lens.max()), 1), rows[0].shape[1])
    for i, r in enumerate(rows):
        out[i, : r.shape[0]] = r
    return out, lens


class SpeechLM(nn.Module):
    """Speech encoder + adaptor + causal LM over interleaved text and speech.

    Args:
        encoder: the shared front end, (N, T, F) fbank -> (N, T', C).
        lm: a transformers causal LM (``AutoModelForCausalLM``); it takes
            ``inputs_embeds``, ``attention_mask``, ``position_ids`` and a KV cache.
        stack: encoder frames per adaptor frame.
        adaptor_dim: the adaptor MLP's hidden width.
        freeze_encoder: no gradients into the encoder and keep it in eval mode.
    """

    def __init__(self, encoder: SpeechEncoder, lm: Any, *, stack: int, adaptor_dim: int,
                 freeze_encoder: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        embedding = lm.get_input_embeddings()
        dim = embedding.embedding_dim
        self.adaptor = FrameStackAdaptor(encoder.dim, dim, stack=stack, hidden=adaptor_dim)
        # Markers on the scale of the LM's own token embeddings.
        std = float(embedding.weight.detach().float().std())
        self.speech_begin = nn.Parameter(torch.randn(dim) * std)
        self.speech_end = nn.Parameter(torch.randn(dim) * std)
        self.lm = lm
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            encoder.requires_grad_(False)
            encoder.eval()
        params = inspect.signature(type(lm).forward).parameters
        # transformers 5 names the KV cache argument ``cache``; 4.x ``past_key_values``.
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    # ------------------------------------------------------------------ properties

    @property
    def lm_dim(self) -> int:
        """D, the LM's embedding width."""
        return self.speech_begin.shape[0]

    @property
    def lm_vocab_size(self) -> int:
        """Rows of the LM's token embedding (the tokenizer may use fewer)."""
        return self.lm.get_input_embeddings().num_embeddings

    @property
    def device(self) -> torch.device:
        return self.speech_begin.device

    def train(self, mode: bool = True) -> SpeechLM:
        """As ``nn.Module.train``, but a frozen encoder stays in eval mode."""
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    # ------------------------------------------------------------------ speech

    def encode(self, feats: torch.Tensor, x_lens: torch.Tensor, **kwargs: Any):
        """Encoder output (and layers): :meth:`SpeechEncoder.forward`."""
        return self.encoder(feats, x_lens, **kwargs)

    def run_encoder(self, feats: torch.Tensor, feat_lens: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, T, F) fbank, (N,) lengths -> encoder output (N, T', C), int64 (N,) lengths
        (what a :class:`SpeechSegment`'s ``encoded`` holds per row); without gradients
        when the encoder is frozen."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            out, out_lens = self.encoder(feats, feat_lens)[:2]
        return out, out_lens

    def encode_speech(self, x: torch.Tensor, x_lens: torch.Tensor, *, encoded: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Speech -> LM-width frames.

        Args:
            x: (N, T, F) fbank features, or with ``encoded`` (N, T', C) encoder outputs.
            x_lens: int64 (N,) valid frames.
            encoded: ``x`` is already the encoder's output (skip the encoder).

        Returns:
            (N, ceil(T'/stack), D) adaptor frames and their int64 (N,) lengths.
        """
        if not encoded:
            x, x_lens = self.run_encoder(x, x_lens)
        return self.adaptor(x, x_lens)

    def _speech_frames(self, segments: list[SpeechSegment]) -> list[torch.Tensor]:
        """(T''_i, D) adaptor frames of each speech segment: the features of all segments
        go through the encoder as one batch, then all segments through the adaptor."""
        if not segments:
            return []
        dtype = self.speech_begin.dtype
        rows = [s.encoded for s in segments]
        feats = [s.feats for s in segments if s.feats is not None]
        if feats:
            if any(f.shape[-1] != self.encoder.feature_dim for f in feats):
                raise ValueError(f"speech features must have {self.encoder.feature_dim} dims "
                                 f"(the encoder's input), got {[f.shape[-1] for f in feats]}")
            x, lens = _pad_frames(feats)
            out, out_lens = self.run_encoder(x.to(self.device, dtype), lens.to(self.device))
            ran = iter([o[:n] for o, n in zip(out, out_lens.tolist(), strict=True)])
            rows = [e if e is not None else next(ran) for e in rows]  # in segment order
        encoded = [e.to(self.device, dtype) for e in rows if e is not None]
        if any(e.shape[-1] != self.encoder.dim for e in encoded):
            raise ValueError(f"encoded speech must have {self.encoder.dim} dims (the encoder's "
                             f"output), got {[e.shape[-1] for e in encoded]}")
        x, x_lens = _pad_frames(encoded)
        y, y_lens = self.adaptor(x, x_lens.to(self.device))
        return [y[i, : int(n)] for i, n in enumerate(y_lens)]

    # ------------------------------------------------------------------ inputs

    def build_inputs(self, sequences: Sequence[Sequence[TextSegment | SpeechSegment]], *,
                     padding: str = "right") -> SpeechLMInputs:
        """Embed and pad a batch of segment sequences.

        Text segments become token embeddings, speech segments ``speech_begin``, their
        adaptor frames and ``speech_end``. Labels are the ids of ``train=True`` text and
        :data:`IGNORE` elsewhere.

        Args:
            sequences: N sequences, each a list of segments.
            padding: "right" (training) or "left" (generation: every row ends at L).

        Returns:
            :class:`SpeechLMInputs` (N, L, D) embeddings, masks, positions, labels, lengths.
        """
        if padding not in ("right", "left"):
            raise ValueError(f"padding must be 'right' or 'left', got {padding!r}")
        if not sequences:
            raise ValueError("build_inputs needs at least one sequence")
        for n, seq in enumerate(sequences):
            for seg in seq:
                if not isinstance(seg, (TextSegment, SpeechSegment)):
                    raise TypeError(f"sequence {n}: segments must be TextSegment or "
                                    f"SpeechSegment, got {type(seg).__name__}")
        speech = iter(self._speech_frames(
            [s for seq in sequences for s in seq if isinstance(s, SpeechSegment)]))
        table = self.lm.get_input_embeddings()
        dtype, device = table.weight.dtype, self.device
        rows: list[tuple[torch.Tensor, torch.Tensor]] = []
        for n, seq in enumerate(sequences):
            pieces, labels = [], []
            for seg in seq:
                if isinstance(seg, TextSegment):
                    ids = torch.as_tensor(seg.ids, dtype=torch.int64).to(device).flatten()
                    if ids.numel() == 0:
                        continue
                    if int(ids.min()) < 0 or int(ids.max()) >= table.num_embeddings:
                        raise ValueError(f"sequence {n}: token ids must be in [0, "
                                         f"{table.num_embeddings}), got {ids.tolist()}")
                    pieces.append(table(ids))
                    labels.append(ids if seg.train else torch.full_like(ids, IGNORE))
                else:
                    frames = next(speech).to(dtype)
                    pieces += [self.speech_begin.to(dtype)[None], frames,
                               self.speech_end.to(dtype)[None]]
                    labels.append(torch.full((frames.shape[0] + 2,), IGNORE, dtype=torch.int64,
                                             device=device))
            if not pieces:
                raise ValueError(f"sequence {n} is empty")
            rows.append((torch.cat(pieces), torch.cat(labels)))
        lengths = torch.tensor([e.shape[0] for e, _ in rows], dtype=torch.int64, device=device)
        size, dim = int(lengths.max()), rows[0][0].shape[1]
        embeds = rows[0][0].new_zeros(len(rows), size, dim)
        label_out = torch.full((len(rows), size), IGNORE, dtype=torch.int64, device=device)
        mask = torch.zeros(len(rows), size, dtype=torch.int64, device=device)
        positions = torch.zeros(len(rows), size, dtype=torch.int64, device=device)
        for i, (emb, lab) in enumerate(rows):
            n = emb.shape[0]
            span = slice(0, n) if padding == "right" else slice(size - n, size)
            embeds[i, span] = emb
            label_out[i, span] = lab
            mask[i, span] = 1
            positions[i, span] = torch.arange(n, device=device)
        return SpeechLMInputs(embeds, mask, positions, label_out, lengths)

    # ------------------------------------------------------------------ LM

    def _lm(self, embeds: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
            cache: Any = None, use_cache: bool = False):
        kwargs = {self._cache_arg: cache} if cache is not None else {}
        return self.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                       use_cache=use_cache, **kwargs)

    def logits(self, inputs: SpeechLMInputs | Sequence[Sequence[Any]], *,
               padding: str = "right") -> torch.Tensor:
        """(N, L, V) LM logits at every position of a batch (``inputs`` from
        :meth:`build_inputs`, or the sequences themselves)."""
        if not isinstance(inputs, SpeechLMInputs):
            inputs = self.build_inputs(inputs, padding=padding)
        return self._lm(inputs.embeds, inputs.attention_mask, inputs.position_ids).logits

    def forward(self, batch: Mapping[str, Any] | Sequence[Sequence[Any]], **kwargs: Any
                ) -> tuple[torch.Tensor, int, dict[str, float]]:
        """Next-token cross-entropy of the trainable text tokens of a batch.

        Args:
            batch: N segment sequences, or a dict holding them as ``"sequences"``.

        Returns:
            ``(loss_sum, tokens, {"correct": greedy hits})``: the loss summed over the
            ``tokens`` target tokens (``loss_sum / tokens`` is the mean). A target at a
            sequence's first position has no context and is not counted.
        """
        sequences = batch["sequences"] if isinstance(batch, Mapping) else batch
        inputs = self.build_inputs(sequences)
        logits = self.logits(inputs)[:, :-1]
        targets = inputs.labels[:, 1:]
        keep = targets != IGNORE
        count = int(keep.sum())
        if count == 0:
            return logits.sum() * 0.0, 0, {"correct": 0.0}
        picked = logits[keep].float()
        loss = F.cross_entropy(picked, targets[keep], reduction="sum")
        correct = float((picked.argmax(-1) == targets[keep]).sum())
        return loss, count, {"correct": correct}

    @torch.no_grad()
    def generate(self, prefixes: Sequence[Sequence[Any]], *, max_new_tokens: int = 64,
                 eos_id: int | None = None) -> list[list[int]]:
        """Greedy continuation of a batch of prefixes, with the LM's KV cache.

        The batch is left-padded (every row's next token is at column L), positions count
        each row from 0 and the attention mask hides the padding, so a row's output does
        not depend on the other rows.

        Args:
            prefixes: N segment sequences (``train`` flags are ignored).
            max_new_tokens: at most this many tokens per row.
            eos_id: stop a row at this token (not returned); None = run to the limit.

        Returns:
            N lists of generated token ids.
        """
        if max_new_tokens < 1:
            return [[] for _ in prefixes]
        inputs = self.build_inputs(prefixes, padding="left")
        table = self.lm.get_input_embeddings()
        mask, positions = inputs.attention_mask, inputs.lengths.clone()
        out = self._lm(inputs.embeds, mask, inputs.position_ids, use_cache=True)
        result: list[list[int]] = [[] for _ in prefixes]
        done = [False] * len(prefixes)
        for step in range(max_new_tokens):
            tokens = out.logits[:, -1].argmax(-1)
            for i, token in enumerate(tokens.tolist()):
                if done[i]:
                    continue
                if token == eos_id:
                    done[i] = True
                else:
                    result[i].append(token)
            if all(done) or step == max_new_tokens - 1:
                break
            cache = getattr(out, "cache", None)
            cache = out.past_key_values if cache is None else cache
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            out = self._lm(table(tokens)[:, None], mask, positions[:, None], cache=cache,
                           use_cache=True)
            positions += 1
        return result
