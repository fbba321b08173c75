"""Decode a manifest with a CTC or transducer model directory and score it, per language
(or speaker).

``decode_manifest(model_dir, cuts, out_dir)`` writes into ``out_dir``::

    hyps.txt               Kaldi text format: "<utt-id> <hypothesis>"
    refs.txt               the references as scored (normalised like the tokenizer's targets)
    errs-<group>-<unit>.txt  icefall-style alignments per group and for "all" (unit cer,
                           wer or per)
    results.json           error counts and rates per group and overall, sizes, timing
    results.md             the same as a Markdown table

Orthographic models (bpe/unigram/char tokenizers) get CER and WER against the
tokenizer-normalised transcript; IPA models get PER against ``custom["ipa"]`` and a WER
whose words are the phone groups between ``|`` separators.

Searches: CTC greedy / prefix beam; transducer greedy / modified beam, offline or
streaming (``streaming=True``: every utterance fed to a
:class:`~speechfm.decode.transducer.TransducerStream` in pieces, chunk by chunk with
cached encoder state, exactly as a live stream would be).

Also the pieces the trainer validates with: :func:`load_asr_model`, :func:`evaluate_asr`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from speechfm.errors import DataError

__all__ = [
    "decode_manifest",
    "evaluate_asr",
    "evaluate_ctc",
    "format_results_table",
    "load_asr_model",
    "resolve_targets",
    "score_units",
]

log = logging.getLogger("speechfm.asr")

METHODS = ("greedy", "beam")
GROUP_BY = ("lang", "speaker", "none")
UNKNOWN_GROUP = "und"


def resolve_targets(targets: str, tokenizer) -> str:
    """``"text"`` or ``"ipa"``: ``"auto"`` follows the tokenizer's kind.

    Raises:
        ValueError: a mismatch between an explicit choice and the tokenizer.
    """
    if targets == "auto":
        return "ipa" if tokenizer.kind == "ipa" else "text"
    if targets not in ("text", "ipa"):
        raise ValueError(f"targets must be auto, text or ipa, got {targets!r}")
    if (targets == "ipa") != (tokenizer.kind == "ipa"):
        raise ValueError(f"targets {targets!r} do not match a {tokenizer.kind} tokenizer")
    return targets


def score_units(targets: str) -> list[tuple[str, str]]:
    """(scoring unit, rate name) pairs reported for ``targets``, the primary one first."""
    return [("phone", "per"), ("word", "wer")] if targets == "ipa" else [("char", "cer"), ("word", "wer")]


def _for_unit(text: str, unit: str, targets: str) -> str:
    # IPA "words" are the phone groups between '|' separators, phones glued together.
    if targets == "ipa" and unit == "word":
        return " ".join("".join(w.split()) for w in text.split("|") if w.strip())
    return text


def load_asr_model(model_dir: str | Path, *, device: str | torch.device = "cpu"):
    """Rebuild a CTC or transducer model directory (final export or training checkpoint).

    Returns:
        ``(model, tokenizer, config)``: the model in eval mode on ``device``, its tokenizer
        and the parsed config.json.

    Raises:
        DataError: the directory lacks config.json, weights or tokenizer, or is not an
            ASR model.
    """
    from safetensors.torch import load_file

    from speechfm.asr.config import create_model
    from speechfm.models.ctc import CtcModelConfig
    from speechfm.models.transducer import TransducerModelConfig
    from speechfm.text import load_tokenizer

    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    weights = model_dir / "model.safetensors"
    for path in (config_path, weights):
        if not path.is_file():
            raise DataError(f"{model_dir}: not a model directory ({path.name} is missing)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{config_path}: not valid JSON ({e})") from e
    classes = {"ctc": CtcModelConfig, "transducer": TransducerModelConfig}
    family = config.get("family")
    if family not in classes:
        raise DataError(f"{config_path}: family {family!r} is not an ASR model "
                        f"(expected one of {sorted(classes)})")
    try:
        model = create_model(classes[family].from_dict(config["model"]))
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{config_path}: invalid {family} model config: {e}") from e
    try:
        model.load_state_dict(load_file(str(weights)))
    except RuntimeError as e:
        raise DataError(f"{weights}: weights do not fit the config: {e}") from e
    tokenizer = load_tokenizer(model_dir / config.get("tokenizer", "tokenizer"))
    if tokenizer.vocab_size != model.vocab_size:
        raise DataError(f"{model_dir}: tokenizer has {tokenizer.vocab_size} ids, the model "
                        f"{model.vocab_size}")
    return model.to(device).eval(), tokenizer, config


def _batches(cuts, fbank_config, *, max_duration: float, num_workers: int = 0,
             world_size: int = 1, rank: int = 0) -> Iterator[dict]:
    from torch.utils.data import DataLoader

    from speechfm.data.dataset import AsrDataset
    from speechfm.data.sampler import make_sampler

    sampler = make_sampler(cuts, max_duration=max_duration, shuffle=False,
                           world_size=world_size, rank=rank)
    # An own generator: iterating must not draw from the global RNG training relies on.
    loader = DataLoader(AsrDataset(fbank_config=fbank_config), sampler=sampler,
                        batch_size=None, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(0))
    yield from loader


def _references(batch: Mapping[str, Any], targets: str, tokenizer) -> list[str | None]:
    texts = batch.get("ipa") if targets == "ipa" else batch["texts"]
    if texts is None:
        return [None] * len(batch["cut_ids"])
    return [None if t is None else tokenizer.normalize(t) for t in texts]


def is_transducer(model) -> bool:
    """True for a transducer (it has a predictor), False for a CTC model."""
    return hasattr(model, "predictor")


def _transducer_search(model, enc, enc_lens, *, method: str, beam: int,
                       max_sym_per_frame: int = 1) -> list[list[int]]:
    from speechfm.decode.transducer import greedy_search, modified_beam_search

    if method == "greedy":
        hyps = greedy_search(model, enc, enc_lens, max_sym_per_frame=max_sym_per_frame)
        return [h.tokens for h in hyps]
    nbest = modified_beam_search(model, enc, enc_lens, beam=beam,
                                 max_sym_per_frame=max_sym_per_frame)
    return [n[0].tokens if n else [] for n in nbest]


def _stream_search(model, feats, x_lens, *, method: str, beam: int, chunk_size: int | None,
                   left_context: int | None, piece_frames: int, max_sym_per_frame: int = 1
                   ) -> list[list[int]]:
    """Each utterance through a TransducerStream, ``piece_frames`` feature frames at a time."""
    from speechfm.decode.transducer import TransducerStream

    out = []
    for n, length in enumerate(x_lens.tolist()):
        stream = TransducerStream(model, method="greedy" if method == "greedy" else "modified_beam",
                                  beam=beam, max_sym_per_frame=max_sym_per_frame,
                                  chunk_size=chunk_size, left_context=left_context)
        for start in range(0, length, piece_frames):
            stream.accept_features(feats[n, start:min(length, start + piece_frames)])
        out.append(stream.finalize().tokens)
    return out


def _search(log_probs, out_lens, *, method: str, beam: int, blank: int) -> list[list[int]]:
    from speechfm.decode import ctc_greedy_search, ctc_prefix_beam_search

    if method == "greedy":
        return ctc_greedy_search(log_probs, out_lens, blank=blank)
    hyps = ctc_prefix_beam_search(log_probs, out_lens, beam=beam, nbest=1, blank=blank)
    return [h[0].tokens if h else [] for h in hyps]


@torch.no_grad()
def evaluate_asr(model, cuts, tokenizer, *, targets: str, device: str | torch.device = "cpu",
                 max_duration: float = 200.0, world_size: int = 1, rank: int = 0,
                 step: int | None = None, loss_config=None) -> dict[str, float]:
    """Dev loss (per token) and greedy error rates of a CTC or transducer ``model`` over ``cuts``.

    A transducer's loss is its training loss (``loss_config``, with the weights of training
    ``step``; default: the full warm-up done).

    Under data parallelism pass ``world_size``/``rank`` on every rank: each scores its
    share and the sums are all-reduced, so every rank returns the same numbers. With the
    default ``world_size=1`` nothing is reduced (safe to call from rank 0 alone).

    Returns:
        ``{"loss", "count" (tokens), "cer", "wer"}`` for text targets or
        ``{"loss", "count", "per", "wer"}`` for IPA targets; rates are fractions.
    """
    from speechfm.decode import score
    from speechfm.losses.ctc import ctc_loss, pad_targets
    from speechfm.train.distributed import all_reduce_sum

    units = score_units(targets)
    was_training = model.training
    model.eval()
    sums = torch.zeros(2 + 2 * len(units), dtype=torch.float64)
    try:
        for batch in _batches(cuts, model.fbank.config, max_duration=max_duration,
                              world_size=world_size, rank=rank):
            keep = [i for i, r in enumerate(_references(batch, targets, tokenizer)) if r is not None]
            if not keep:
                continue
            refs = [_references(batch, targets, tokenizer)[i] for i in keep]
            feats = batch["features"][keep].to(device)
            x_lens = batch["x_lens"][keep].to(device)
            ids = [tokenizer.encode(r) for r in refs]
            if is_transducer(model):
                tokens = _evaluate_transducer_batch(model, feats, x_lens, ids, sums, step=step,
                                                    loss_config=loss_config)
            else:
                log_probs, out_lens = model(feats, x_lens)
                padded, y_lens = pad_targets(ids, device=log_probs.device)
                _, per_utt = ctc_loss(log_probs, out_lens, padded, y_lens, blank=tokenizer.blank_id,
                                      reduction="none", zero_infinity=True)
                finite = torch.isfinite(per_utt)
                sums[0] += float(per_utt[finite].sum())
                sums[1] += float(y_lens[finite].sum())
                tokens = _search(log_probs, out_lens, method="greedy", beam=1,
                                 blank=tokenizer.blank_id)
            hyps = [tokenizer.decode(t) for t in tokens]
            for j, (unit, _) in enumerate(units):
                ids = [str(i) for i in range(len(refs))]
                result = score(dict(zip(ids, (_for_unit(r, unit, targets) for r in refs), strict=True)),
                               dict(zip(ids, (_for_unit(h, unit, targets) for h in hyps), strict=True)),
                               unit=unit)
                sums[2 + 2 * j] += result.errors
                sums[3 + 2 * j] += result.ref_len
    finally:
        model.train(was_training)
    if world_size > 1:
        all_reduce_sum(sums)
    values = sums.tolist()
    out = {"loss": values[0] / values[1] if values[1] else math.nan, "count": values[1]}
    for j, (_, name) in enumerate(units):
        out[name] = values[2 + 2 * j] / values[3 + 2 * j] if values[3 + 2 * j] else math.nan
    return out


evaluate_ctc = evaluate_asr
"""The name of :func:`evaluate_asr` from before transducers (kept for callers)."""


def _evaluate_transducer_batch(model, feats, x_lens, ids, sums, *, step, loss_config):
    """Add a batch's transducer loss and token count to ``sums``; greedy tokens out."""
    from speechfm.losses.transducer import TransducerLossConfig

    config = loss_config or TransducerLossConfig()
    loss, stats = model.compute_loss(feats, x_lens, ids, loss_config=config,
                                     step=config.warm_steps if step is None else step)
    sums[0] += float(loss)
    sums[1] += stats["num_tokens"]
    enc, enc_lens = model(feats, x_lens)
    return _transducer_search(model, enc, enc_lens, method="greedy", beam=1)


def _group_of(batch: Mapping[str, Any], i: int, group_by: str) -> str:
    if group_by == "none":
        return "all"
    values = batch["langs"] if group_by == "lang" else batch["speakers"]
    value = values[i] if values is not None else None
    return value or UNKNOWN_GROUP


def _counts(result) -> dict[str, Any]:
    return {"rate": result.rate, "percent": round(result.percent, 4), "errors": result.errors,
            "ref_len": result.ref_len, "ins": result.ins, "dels": result.dels, "subs": result.subs,
            "num_utts": result.num_utts, "sentence_errors": result.sentence_errors}


@torch.no_grad()
def decode_manifest(
    model_dir: str | Path,
    cuts: str | Path,
    out_dir: str | Path,
    *,
    method: str = "greedy",
    beam: int = 4,
    group_by: str = "lang",
    device: str | torch.device = "cpu",
    max_duration: float = 200.0,
    num_workers: int = 0,
    streaming: bool = False,
    chunk_size: int | None = None,
    left_context: int | None = None,
    piece_frames: int = 32,
    max_sym_per_frame: int = 1,
) -> dict[str, Any]:
    """Decode every cut of manifest ``cuts`` and write hyps, errs and results (module doc).

    Args:
        model_dir: a CTC or transducer model directory (``final/`` or a checkpoint).
        cuts: lhotse manifest; transcripts are the references (cuts without one are
            decoded but not scored).
        out_dir: output folder (created).
        method: "greedy" or "beam" (CTC: prefix beam search; transducer: modified beam
            search; no LM).
        beam: beam width for "beam".
        streaming: transducers: decode each utterance as a live stream (chunked encoder
            with cached state, ``piece_frames`` feature frames fed at a time).
        chunk_size, left_context: the encoder's attention chunk (encoder frames) and
            cached left context; None = the model's own setting. With ``streaming=False``
            they select chunked (simulated streaming) attention over whole utterances.
        piece_frames: feature frames per piece fed to a stream.
        max_sym_per_frame: transducers: most tokens emitted per encoder frame.
        group_by: score per "lang", per "speaker", or "none".
        device: where the model runs.
        max_duration: seconds of audio per batch.
        num_workers: DataLoader workers.

    Returns:
        The content of results.json.
    """
    from lhotse import CutSet

    from speechfm.decode import score, score_by_group, write_errs

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if group_by not in GROUP_BY:
        raise ValueError(f"group_by must be one of {GROUP_BY}, got {group_by!r}")
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    if piece_frames < 1:
        raise ValueError(f"piece_frames must be >= 1, got {piece_frames}")
    if not Path(cuts).is_file():
        raise DataError(f"{cuts}: no such manifest")
    model, tokenizer, _ = load_asr_model(model_dir, device=device)
    transducer = is_transducer(model)
    if streaming and not transducer:
        raise ValueError(f"{model_dir}: streaming decoding needs a transducer model")
    chunking = {k: v for k, v in (("chunk_size", chunk_size), ("left_context", left_context))
                if v is not None}
    targets = resolve_targets("auto", tokenizer)
    cutset = CutSet.from_file(cuts)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    hyps: dict[str, str] = {}
    refs: dict[str, str] = {}
    groups: dict[str, str] = {}
    audio_seconds = 0.0
    start = time.perf_counter()
    durations = {c.id: c.duration for c in cutset}
    skipped: list[str] = []
    for batch in _batches(cutset, model.fbank.config, max_duration=max_duration,
                          num_workers=num_workers):
        skipped.extend(batch["skipped_cut_ids"])
        if not batch["cut_ids"]:
            continue
        feats, x_lens = batch["features"].to(device), batch["x_lens"].to(device)
        if streaming:
            tokens = _stream_search(model, feats, x_lens, method=method, beam=beam,
                                    chunk_size=chunk_size, left_context=left_context,
                                    piece_frames=piece_frames,
                                    max_sym_per_frame=max_sym_per_frame)
        elif transducer:
            enc, enc_lens = model(feats, x_lens, **chunking)
            tokens = _transducer_search(model, enc, enc_lens, method=method, beam=beam,
                                        max_sym_per_frame=max_sym_per_frame)
        else:
            log_probs, out_lens = model(feats, x_lens, **chunking)
            tokens = _search(log_probs, out_lens, method=method, beam=beam,
                             blank=tokenizer.blank_id)
        for i, (cut_id, ref) in enumerate(zip(batch["cut_ids"], _references(batch, targets, tokenizer), strict=True)):
            hyps[cut_id] = tokenizer.decode(tokens[i])
            audio_seconds += durations[cut_id]
            if ref is not None:
                refs[cut_id] = ref
                groups[cut_id] = _group_of(batch, i, group_by)
    seconds = time.perf_counter() - start
    if skipped:
        log.warning("%d cuts could not be read and are scored as empty: %s", len(skipped), skipped[:10])
        # A bad cut still has its transcript: score it as all deletions, as it would fare.
        for cut in cutset.subset(cut_ids=skipped):
            sup = cut.supervisions[0] if cut.supervisions else None
            text = ((sup.custom or {}).get("ipa") if targets == "ipa" else sup.text) if sup else None
            if text is not None:
                refs[cut.id] = tokenizer.normalize(text)
                value = getattr(sup, "language" if group_by == "lang" else "speaker", None)
                groups[cut.id] = "all" if group_by == "none" else (value or UNKNOWN_GROUP)

    order = [c for c in durations if c in hyps or c in refs]
    _write_kaldi(out_dir / "hyps.txt", {k: hyps.get(k, "") for k in order})
    _write_kaldi(out_dir / "refs.txt", {k: refs[k] for k in order if k in refs})
    results: dict[str, Any] = {
        "model_dir": str(model_dir), "cuts": str(cuts), "method": method,
        "beam": beam if method == "beam" else None, "group_by": group_by, "targets": targets,
        "family": "transducer" if transducer else "ctc", "streaming": streaming,
        "chunk_size": chunk_size, "left_context": left_context,
        "tokenizer": {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size},
        "num_utts": len(order), "num_scored": len(refs), "skipped_cuts": skipped,
        "hours": round(audio_seconds / 3600, 4), "decode_seconds": round(seconds, 2),
        "rtf": round(seconds / audio_seconds, 5) if audio_seconds else None,
        "overall": {}, "groups": {},
    }
    for unit, name in score_units(targets):
        r_u = {k: _for_unit(v, unit, targets) for k, v in refs.items()}
        h_u = {k: _for_unit(hyps.get(k, ""), unit, targets) for k in refs}
        overall = score(r_u, h_u, unit=unit)
        write_errs(out_dir / f"errs-all-{name}.txt", overall, title=f"{cuts} ({method})")
        results["overall"][name] = _counts(overall)
        if group_by != "none":
            for group, result in score_by_group(r_u, h_u, groups, unit=unit).items():
                write_errs(out_dir / f"errs-{group}-{name}.txt", result, title=f"{cuts} {group}")
                results["groups"].setdefault(group, {})[name] = _counts(result)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n",
                                          encoding="utf-8")
    (out_dir / "results.md").write_text(format_results_table(results), encoding="utf-8")
    return results


def _write_kaldi(path: Path, entries: Mapping[str, str]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for key, text in entries.items():
            handle.write(f"{key} {text}\n" if text else f"{key}\n")


def format_results_table(results: Mapping[str, Any], *, title: str | None = None) -> str:
    """Markdown table of a :func:`decode_manifest` result: one row per group, then "all"."""
    from speechfm.decode import results_table_markdown

    names = [n for _, n in score_units(results["targets"])]
    label = {"lang": "language", "speaker": "speaker"}.get(results["group_by"], "set")
    rows = []
    for group, rates in sorted(results["groups"].items()):
        row: dict[str, Any] = {label: group, "utts": next(iter(rates.values()))["num_utts"]}
        row.update({f"{n.upper()} %": rates[n]["percent"] for n in names})
        rows.append(row)
    overall = results["overall"]
    row = {label: "**all**", "utts": next(iter(overall.values()))["num_utts"] if overall else 0}
    row.update({f"{n.upper()} %": overall[n]["percent"] for n in names if n in overall})
    rows.append(row)
    table = results_table_markdown(rows, columns=[label, "utts", *[f"{n.upper()} %" for n in names]])
    return (f"{title}\n\n" if title else "") + table
