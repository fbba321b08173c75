"""Decode a manifest with any ASR model directory and score it, per language (or speaker).

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

Search is the model's own (``model.recognize``: CTC greedy / prefix beam, transducer
greedy / modified beam), offline or streaming (``streaming=True``, for models with a
``stream`` method: every utterance fed in pieces, chunk by chunk with cached encoder
state, exactly as a live stream would be). Nothing here asks which family a model is.
``language=`` selects a language's adapters (``adapters=`` attaches more adapter files to
the directory's model first); ``final_pass=False`` searches a cascaded transducer's first
(causal) pass offline, as streaming always does.
With ``graph=`` (a :class:`~speechfm.decode.graph.DecodingGraph`: lexicon + word LM, or a
token-level LM) a CTC model's log-probs are searched through that graph instead.

Also what ASR recipes validate with: :func:`evaluate_recognizer` (dev loss through the
model's training forward, greedy error rates through ``recognize``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from speechfm.data.dataset import iterate_batches
from speechfm.errors import DataError
from speechfm.text.targets import resolve_targets

__all__ = [
    "decode_manifest",
    "evaluate_recognizer",
    "format_results_table",
    "load_asr_model",
    "resolve_targets",
    "score_units",
]

log = logging.getLogger("speechfm.decode")

METHODS = ("greedy", "beam")
GROUP_BY = ("lang", "speaker", "none")
UNKNOWN_GROUP = "und"


def score_units(targets: str) -> list[tuple[str, str]]:
    """(scoring unit, rate name) pairs reported for ``targets``, the primary one first."""
    return [("phone", "per"), ("word", "wer")] if targets == "ipa" else [("char", "cer"), ("word", "wer")]


def _for_unit(text: str, unit: str, targets: str) -> str:
    # IPA "words" are the phone groups between '|' separators, phones glued together.
    if targets == "ipa" and unit == "word":
        return " ".join("".join(w.split()) for w in text.split("|") if w.strip())
    return text


def load_asr_model(model_dir: str | Path, *, device: str | torch.device = "cpu"):
    """Rebuild an ASR model directory (final export or training checkpoint).

    Returns:
        ``(model, tokenizer, config.json)``, the model in eval mode on ``device``.

    Raises:
        DataError: the directory is incomplete, or the model has no tokenizer / no search.
    """
    from speechfm.models.io import load_model_dir

    loaded = load_model_dir(model_dir, device=device)
    if loaded.tokenizer is None or not hasattr(loaded.module, "recognize"):
        raise DataError(f"{loaded.directory}: a {loaded.family} model is not an ASR model "
                        "(it has no tokenizer or no search); use embed() on it")
    return loaded.module, loaded.tokenizer, loaded.meta


def _references(batch: Mapping[str, Any], targets: str, tokenizer) -> list[str | None]:
    texts = batch.get("ipa") if targets == "ipa" else batch["texts"]
    if texts is None:
        return [None] * len(batch["cut_ids"])
    return [None if t is None else tokenizer.normalize(t) for t in texts]


def _stream_search(model, feats, x_lens, *, method: str, beam: int, chunk_size: int | None,
                   left_context: int | None, piece_frames: int, max_sym_per_frame: int = 1,
                   language: str | None = None) -> list[list[int]]:
    """Each utterance through the model's stream, ``piece_frames`` feature frames at a time
    (with ``language``'s adapters, if given)."""
    lang = {} if language is None else {"language": language}
    out = []
    for n, length in enumerate(x_lens.tolist()):
        stream = model.stream(method=method, beam=beam, max_sym_per_frame=max_sym_per_frame,
                              chunk_size=chunk_size, left_context=left_context, **lang)
        for start in range(0, length, piece_frames):
            stream.accept_features(feats[n, start:min(length, start + piece_frames)])
        out.append(stream.finalize().tokens)
    return out


@torch.no_grad()
def evaluate_recognizer(model, cuts, tokenizer, *, targets: str, device: str | torch.device = "cpu",
                        max_duration: float = 200.0, world_size: int = 1, rank: int = 0,
                        loss_kwargs: Mapping[str, Any] | None = None,
                        languages: Sequence[str] | None = None,
                        search_kwargs: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Dev loss (per token) and error rates of an ASR ``model`` over ``cuts``, overall and
    optionally per language.

    The loss is the model's training loss (``model(batch, **loss_kwargs)``), the error
    rates come from ``model.recognize(features, lengths, **search_kwargs)`` (greedy search
    unless ``search_kwargs`` asks for another). Cuts without a reference are not scored.

    Under data parallelism pass ``world_size``/``rank`` on every rank: each scores its
    share and the sums are all-reduced, so every rank returns the same numbers. With the
    default ``world_size=1`` nothing is reduced (safe to call from rank 0 alone).

    Args:
        model: the ASR model (``model.encoder.fbank.config``, the training forward and
            ``recognize``).
        cuts: the CutSet to score.
        tokenizer: normalises the references and decodes the hypotheses.
        targets: "text" or "ipa" (what the references are).
        device: where the model runs.
        max_duration: seconds of audio per batch.
        world_size, rank: this process's share of ``cuts`` under data parallelism.
        loss_kwargs: keyword arguments of the model's training forward.
        languages: also score these languages (by the supervision's language), each over
            its own cuts. Under data parallelism every rank must pass the same list: it
            fixes the size of what is all-reduced, whatever languages a rank's share holds.
        search_kwargs: keyword arguments of ``model.recognize``, e.g.
            ``{"final_pass": False, "chunk_size": 16}`` or ``{"language": "ky"}``.

    Returns:
        ``{"loss", "count" (tokens), "cer", "wer"}`` for text targets or
        ``{"loss", "count", "per", "wer"}`` for IPA targets; rates are fractions. With
        ``languages``, also, for each language ``<lang>``, ``"utts_<lang>"`` (scored
        utterances, a float like ``count``) and ``"cer_<lang>"``, ``"wer_<lang>"`` (or
        ``"per_<lang>"``, ``"wer_<lang>"``). A listed language with no scored cut gets
        ``utts_<lang> = 0`` and NaN rates, as the overall rates are NaN when nothing is
        scored. Error counts add up: the errors of the listed languages plus those of the
        other cuts are the overall errors.

    Raises:
        ValueError: ``languages`` is a single string, or names a language twice.
    """
    from speechfm.decode import score
    from speechfm.train.distributed import all_reduce_sum

    if isinstance(languages, str):
        raise ValueError(f"languages must be a sequence of language codes, got the string {languages!r}")
    langs = list(languages or ())
    if len(set(langs)) != len(langs):
        raise ValueError(f"languages names a language more than once: {langs}")
    units = score_units(targets)
    was_training = model.training
    model.eval()
    base = 2 + 2 * len(units)
    per_lang = 1 + 2 * len(units)  # utterances, then (errors, ref_len) per unit
    sums = torch.zeros(base + per_lang * len(langs), dtype=torch.float64)
    search = dict(search_kwargs or {})
    try:
        for batch in iterate_batches(cuts, model.encoder.fbank.config, max_duration=max_duration,
                              world_size=world_size, rank=rank):
            all_refs = _references(batch, targets, tokenizer)
            keep = [i for i, r in enumerate(all_refs) if r is not None]
            if not keep:
                continue
            refs = [all_refs[i] for i in keep]
            feats = batch["features"][keep].to(device)
            x_lens = batch["x_lens"][keep].to(device)
            sub = {"features": feats, "x_lens": x_lens,
                   "cut_ids": [batch["cut_ids"][i] for i in keep],
                   "targets": [tokenizer.encode(r) for r in refs]}
            loss, count, *_ = model(sub, **dict(loss_kwargs or {}))
            sums[0] += float(loss)
            sums[1] += float(count)
            hyps = [tokenizer.decode(h.tokens) for h in model.recognize(feats, x_lens, **search)]
            batch_langs = batch.get("langs") or [None] * len(all_refs)
            members = [[n for n, i in enumerate(keep) if batch_langs[i] == lang] for lang in langs]
            for k, rows in enumerate(members):
                sums[base + per_lang * k] += len(rows)
            for j, (unit, _) in enumerate(units):
                ids = [str(i) for i in range(len(refs))]
                result = score(dict(zip(ids, (_for_unit(r, unit, targets) for r in refs), strict=True)),
                               dict(zip(ids, (_for_unit(h, unit, targets) for h in hyps), strict=True)),
                               unit=unit)
                sums[2 + 2 * j] += result.errors
                sums[3 + 2 * j] += result.ref_len
                for k, rows in enumerate(members):  # result.utts follow the order of ids
                    at = base + per_lang * k + 1 + 2 * j
                    sums[at] += sum(result.utts[n].errors for n in rows)
                    sums[at + 1] += sum(result.utts[n].ref_len for n in rows)
    finally:
        model.train(was_training)
    if world_size > 1:
        all_reduce_sum(sums)
    values = sums.tolist()
    out = {"loss": values[0] / values[1] if values[1] else math.nan, "count": values[1]}
    for j, (_, name) in enumerate(units):
        out[name] = values[2 + 2 * j] / values[3 + 2 * j] if values[3 + 2 * j] else math.nan
    for k, lang in enumerate(langs):
        at = base + per_lang * k
        out[f"utts_{lang}"] = values[at]
        for j, (_, name) in enumerate(units):
            errors, ref_len = values[at + 1 + 2 * j], values[at + 2 + 2 * j]
            out[f"{name}_{lang}"] = errors / ref_len if ref_len else math.nan
    return out


def _group_of(batch: Mapping[str, Any], i: int, group_by: str) -> str:
    if group_by == "none":
        return "all"
    values = batch["langs"] if group_by == "lang" else batch["speakers"]
    value = values[i] if values is not None else None
    return value or UNKNOWN_GROUP


def _attach_adapters(model, adapters: Sequence[str | os.PathLike]) -> list[str]:
    """Attach adapter files to a loaded model; returns their keys (``name[@language]``)."""
    from speechfm.models.adapter_store import attach_adapter, base_model_hash

    base = base_model_hash(model)
    return [attach_adapter(model, path, base_hash=base).key for path in adapters]


def _adapter_languages(model) -> set[str]:
    """Languages with a language-dependent adapter anywhere in ``model``."""
    from speechfm.nn.adapters import adapter_keys

    return {lang for _, lang in adapter_keys(model) if lang is not None}


def _counts(result) -> dict[str, Any]:
    return {"rate": result.rate, "percent": round(result.percent, 4), "errors": result.errors,
            "ref_len": result.ref_len, "ins": result.ins, "dels": result.dels, "subs": result.subs,
            "num_utts": result.num_utts, "sentence_errors": result.sentence_errors}


AUTO = "auto"
"""``language=`` value that lets the model's language-ID head pick each cut's language."""


def _language_id_head(model, model_dir: str | Path, meta: Mapping[str, Any]):
    """The model directory's language-ID head, checked against the model's base weights."""
    from speechfm.models.adapter_store import base_model_hash
    from speechfm.models.language_id import load_directory_head

    head = load_directory_head(model_dir, meta, base_model_hash(model))
    if head is None:
        raise DataError(f"{model_dir}: language {AUTO!r} needs a language-ID head (the model "
                        "directory has no language_id part; see recipes/lda/train_lid.py)")
    return head.to(next(model.parameters()).device)


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
    graph: Any = None,
    graph_options: Mapping[str, Any] | None = None,
    language: str | None = None,
    final_pass: bool = True,
    adapters: Sequence[str | os.PathLike] | None = None,
) -> dict[str, Any]:
    """Decode every cut of manifest ``cuts`` and write hyps, errs and results (module doc).

    Args:
        model_dir: an ASR model directory (``final/`` or a checkpoint).
        cuts: lhotse manifest; transcripts are the references (cuts without one are
            decoded but not scored).
        out_dir: output folder (created).
        method: "greedy" or "beam" (CTC: prefix beam search; transducer: modified beam
            search; no LM).
        beam: beam width for "beam".
        streaming: decode each utterance as a live stream (chunked encoder with cached
            state, ``piece_frames`` feature frames fed at a time); streaming models only.
        chunk_size, left_context: the encoder's attention chunk (encoder frames) and
            cached left context; None = the model's own setting. With ``streaming=False``
            they select chunked (simulated streaming) attention over whole utterances.
        piece_frames: feature frames per piece fed to a stream.
        max_sym_per_frame: transducers: most tokens emitted per encoder frame.
        graph: a :class:`~speechfm.decode.graph.DecodingGraph` (or its folder) built for
            the model's tokens: CTC log-probs are searched through it (``method`` and
            ``beam`` do not apply; offline only). A lexicon graph ("tlg") outputs words,
            scored against the transcripts (WER/CER) whatever the model's units; a token
            graph ("tg") is scored like greedy search (PER for IPA targets).
        graph_options: keyword arguments of :func:`~speechfm.decode.graph.graph_hypotheses`
            (``acoustic_scale``, ``beam``, ``max_active``, ``blank_penalty``).
        group_by: score per "lang", per "speaker", or "none".
        device: where the model runs.
        max_duration: seconds of audio per batch.
        num_workers: DataLoader workers.
        language: every cut's language for the model: its language-dependent adapters run
            (``language=`` to the search, the stream or the graph's log-probs); None = the
            base model (language-independent adapters only). A language without an
            adapter runs the base model (logged as a warning: it may be a misspelt code).
            ``"auto"``: the model directory's language-ID head (its ``language_id`` part)
            picks each cut's language from the base model's encoder output; the picks are
            written to ``lid.txt`` and scored against the supervisions' languages
            (``results["language_id"]``). Streaming with ``"auto"`` identifies the language
            from the whole utterance first (not a causal decision).
        final_pass: a cascaded transducer's pass searched offline: True = the final
            (full-context) pass, False = the first (causal, streaming) pass. A model with
            one encoder has one pass: False changes nothing. Streaming always runs the
            first pass.
        adapters: adapter files (:mod:`speechfm.models.adapter_store`) attached to the
            directory's model (after any the directory carries) before decoding.

    Returns:
        The content of results.json. It also records ``language`` and ``adapters`` (the
        attached files' ``name[@language]`` keys) when given, and ``final_pass`` (the pass
        searched: False when streaming) for a cascaded model, or as None for a one-encoder
        model given ``final_pass=False``. Without the new arguments a one-encoder model's
        results hold no new keys.

    Raises:
        ValueError: a bad option (also: ``language`` not a non-empty string, ``adapters``
            a single path rather than a sequence).
        DataError: no manifest, a bad model directory, an adapter file made for another
            base model (or already attached).
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
    if language is not None and (not isinstance(language, str) or not language):
        raise ValueError(f"language must be a non-empty language code, got {language!r}")
    if isinstance(adapters, (str, os.PathLike)):
        raise ValueError(f"adapters must be a sequence of adapter files, got the single path "
                         f"{str(adapters)!r}")
    if not Path(cuts).is_file():
        raise DataError(f"{cuts}: no such manifest")
    model, tokenizer, meta = load_asr_model(model_dir, device=device)
    lid_head = _language_id_head(model, model_dir, meta) if language == AUTO else None
    attached = _attach_adapters(model, adapters) if adapters else []
    if language not in (None, AUTO) and language not in (known := _adapter_languages(model)):
        log.warning("%s: no adapter for language %r (adapters for: %s); the base model runs",
                    model_dir, language, ", ".join(sorted(known)) or "none")
    cascaded = bool(getattr(model, "cascaded", False))
    if streaming and not hasattr(model, "stream"):
        raise ValueError(f"{model_dir}: streaming decoding needs a streaming-capable model "
                         f"(a {meta['family']} model has no stream())")
    if graph is not None:
        from speechfm.decode.graph import DecodingGraph, graph_hypotheses

        graph = graph if isinstance(graph, DecodingGraph) else DecodingGraph.load(graph)
        if streaming or not hasattr(model, "log_probs"):
            raise ValueError("graph decoding needs offline decoding of a model with CTC "
                             f"log_probs() (a {meta['family']} model, streaming={streaming})")
        if graph.tokens != tokenizer.tokens:
            raise ValueError(f"{model_dir}: the decoding graph was built for other tokens")
    chunking = {k: v for k, v in (("chunk_size", chunk_size), ("left_context", left_context))
                if v is not None}
    encoder_kwargs = dict(chunking)
    targets = resolve_targets("auto", tokenizer)
    if graph is not None and graph.kind == "tlg":
        targets = "text"  # a lexicon graph outputs words: scored against the transcripts
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
    lid: dict[str, str] = {}  # cut -> language picked by the language-ID head
    lid_true: dict[str, str | None] = {}
    for batch in iterate_batches(cutset, model.encoder.fbank.config, max_duration=max_duration,
                          num_workers=num_workers):
        skipped.extend(batch["skipped_cut_ids"])
        if not batch["cut_ids"]:
            continue
        feats, x_lens = batch["features"].to(device), batch["x_lens"].to(device)

        def rows(feats: torch.Tensor, x_lens: torch.Tensor, language: str | None) -> list[str]:
            """Hypothesis texts of a (sub-)batch whose rows are all in ``language``."""
            lang = {} if language is None else {"language": language}
            if streaming:
                tokens = _stream_search(model, feats, x_lens, method=method, beam=beam,
                                        chunk_size=chunk_size, left_context=left_context,
                                        piece_frames=piece_frames,
                                        max_sym_per_frame=max_sym_per_frame, language=language)
            elif graph is not None:
                log_probs, out_lens = model.log_probs(feats, x_lens, **encoder_kwargs, **lang)
                found = graph_hypotheses(graph, log_probs, out_lens, **dict(graph_options or {}))
                # a token graph's IPA output is scored on the best path's phones, words otherwise
                return [tokenizer.decode(h.tokens) if targets == "ipa" else graph.join(h.words)
                        for h in found]
            else:
                search = {**encoder_kwargs, **lang}
                if max_sym_per_frame != 1:  # a transducer's option; other searches need not take it
                    search["max_sym_per_frame"] = max_sym_per_frame
                if cascaded and not final_pass:  # a model with one encoder has one pass
                    search["final_pass"] = False
                tokens = [h.tokens for h in model.recognize(feats, x_lens, method=method,
                                                            beam=beam, **search)]
            return [tokenizer.decode(t) for t in tokens]

        if lid_head is not None:
            from speechfm.models.language_id import identify, run_by_language

            picked, _ = identify(model, lid_head, feats, x_lens)
            lid.update(zip(batch["cut_ids"], picked, strict=True))
            for cut_id, true_lang in zip(batch["cut_ids"], batch.get("langs") or [], strict=False):
                lid_true[cut_id] = true_lang
            texts = run_by_language(feats, x_lens, picked, rows)
        else:
            texts = rows(feats, x_lens, language)
        for i, (cut_id, ref) in enumerate(zip(batch["cut_ids"], _references(batch, targets, tokenizer), strict=True)):
            hyps[cut_id] = texts[i]
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
        "family": meta["family"], "streaming": streaming,
        "graph": None if graph is None else {"kind": graph.kind, **dict(graph_options or {})},
        "chunk_size": chunk_size, "left_context": left_context,
        "tokenizer": {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size},
        "num_utts": len(order), "num_scored": len(refs), "skipped_cuts": skipped,
        "hours": round(audio_seconds / 3600, 4), "decode_seconds": round(seconds, 2),
        "rtf": round(seconds / audio_seconds, 5) if audio_seconds else None,
        "overall": {}, "groups": {},
    }
    if language is not None:
        results["language"] = language
    if lid_head is not None:
        _write_kaldi(out_dir / "lid.txt", {k: lid[k] for k in order if k in lid})
        known = [k for k in lid if lid_true.get(k) is not None]
        results["language_id"] = {
            "languages": lid_head.languages, "num_utts": len(known),
            "accuracy": (sum(lid[k] == lid_true[k] for k in known) / len(known)) if known else None,
            "picked": {lang: sum(v == lang for v in lid.values()) for lang in sorted(set(lid.values()))},
        }
    if cascaded or not final_pass:  # the pass searched (None: a model with one encoder)
        results["final_pass"] = (final_pass and not streaming) if cascaded else None
    if attached:
        results["adapters"] = attached
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
