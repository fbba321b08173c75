#!/usr/bin/env python3
"""Data of the InSerter recipe: the corpus, the benchmark audio, the encoder-output cache,
the training sequences as lhotse cuts and the dataset that turns them into a batch.

    python recipes/inserter/data.py corpus TEXT_DIR_OR_FILES... --out data/interleaved
        [--udhr] [--generated-docs N] [--speech-ratio 0.3] [--seed 0] [--num-workers 2]
    python recipes/inserter/data.py benchmark --n-per-family 30 --seed 1 --out data/bench
    python recipes/inserter/data.py cache --model DIR --cuts CUTS --out DIR

``corpus`` reads text documents and builds the interleaved corpus
(:func:`speechfm.data.interleave.build_interleaved`: text | speech | text ... with spans
spoken by espeak-ng voices of the ``train`` pool). It is built from the plain text
corpus ONLY, never from instruction data: the claim under test is that unsupervised
interleaving transfers the instruction following an LM learnt from *text* to *speech*.
Every training stage reads this one build: the text stages its sequences as plain text,
the speech stage their speech (``asr``: each spoken span -> its transcript;
``interleave``: the sequences as built).

``benchmark`` writes the spoken-instruction benchmark (``instruct.benchmark``) and its
audio, spoken by the ``test`` voice pool (voices no training data uses): ``bench.jsonl``,
``clean/cuts.jsonl.gz`` and ``noisy/cuts.jsonl.gz`` (the same voices with additive noise).
Cut ids are item ids.

``cache`` computes the frozen speech encoder's output for every cut of a manifest once
(:func:`build_encoder_cache`; the speech stage does it itself for the corpus).

**A training sequence is a lhotse cut without audio** (:func:`sequence_cut`): its
``custom["inserter"]`` holds the example (see :func:`sequence_segments` for the kinds) and
its duration is a proxy for its length, ``positions / POSITIONS_PER_SECOND`` (LM
positions: text tokens, and per speech segment its adaptor frames + the two markers). So
the platform's bucketing sampler, exact resume and DDP sharding work unchanged, and
``max_duration: 20`` means batches of at most 2000 LM positions.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import random
import sys
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

POSITIONS_PER_SECOND = 100.0
"""A sequence cut's duration is its LM positions divided by this."""
CACHE_SHARD = "enc-{:05d}.safetensors"
"""File name of encoder-cache shard ``i``."""


def sibling(name: str):
    """``recipes/inserter/<name>.py`` as a module (recipes are scripts, not a package);
    the key matches the one tests use, so a module is loaded once."""
    key = f"_inserter_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, Path(__file__).with_name(f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules[key]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode("utf-8")).hexdigest()


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- encoder cache


def encoder_fingerprint(encoder: torch.nn.Module) -> str:
    """sha256 of what a speech encoder's output depends on: its weights and buffers (CMVN
    included), the normalisation and the fbank settings."""
    h = hashlib.sha256()
    fbank = getattr(encoder, "fbank", None)
    settings = {"class": type(encoder).__name__,
                "normalization": getattr(encoder, "normalization", None),
                "ddof": getattr(encoder, "utterance_norm_ddof", None),
                "eps": getattr(encoder, "utterance_norm_eps", None),
                "fbank": repr(getattr(fbank, "config", None))}
    h.update(json.dumps(settings, sort_keys=True).encode())
    for name, t in sorted(encoder.state_dict().items()):
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{t.numel()}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _duration_batches(cuts: list, seconds: float) -> Iterable[list]:
    batch, total = [], 0.0
    for cut in cuts:
        if batch and total + cut.duration > seconds:
            yield batch
            batch, total = [], 0.0
        batch.append(cut)
        total += cut.duration
    if batch:
        yield batch


def _wave(cut, sample_rate: int) -> torch.Tensor:
    from speechfm.errors import AudioError

    if cut.sampling_rate != sample_rate:
        cut = cut.resample(sample_rate)
    audio = cut.load_audio()
    if audio is None or audio.size == 0:
        raise AudioError(f"cut {cut.id}: no audio")
    return torch.from_numpy(audio[0].astype("float32", copy=False))


def build_encoder_cache(model: torch.nn.Module, cuts: Iterable, root: str | os.PathLike, *,
                        batch_seconds: float = 60.0, shard_size: int = 256,
                        progress: bool = True) -> Path:
    """The speech encoder's output for every cut, computed once; returns the cache folder.

    fbank (the encoder's own ``feature_extractor()``, as ``SpeechModel.respond`` computes
    it) and ``model.run_encoder`` (``model.encoder`` for a family without it), in eval mode
    without gradients; each output is trimmed to its valid frames and stored float16.

    Layout of ``root/<encoder fingerprint[:16]>/`` (other encoders get other folders)::

        cache.json                 encoder sha256, cut-id digest, shard size, width C
        enc-00000.safetensors ...  {cut id: (T', C) float16}, ``shard_size`` cuts each
        index.json                 {"shards": [...], "items": {id: [shard, T']}}, once complete

    Resumable: shards are written atomically and existing ones are skipped; a rerun with
    other cuts in the same folder is refused.

    Args:
        model: a speechfm model (a :class:`SpeechLM`, or any family with ``.encoder``).
        cuts: lhotse cuts with audio (ids unique).
        root: where cache folders live.
        batch_seconds: audio per encoder forward.
        shard_size: cuts per shard file.
        progress: tqdm bar.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from speechfm.errors import DataError

    encoder = model.encoder
    run = getattr(model, "run_encoder", None) or (lambda f, n: encoder(f, n)[:2])
    cuts = list(cuts)
    ids = [c.id for c in cuts]
    if len(set(ids)) != len(ids):
        raise DataError("encoder cache: cut ids must be unique")
    fingerprint = encoder_fingerprint(encoder)
    out = Path(root) / fingerprint[:16]
    out.mkdir(parents=True, exist_ok=True)
    meta = {"encoder_sha256": fingerprint, "ids_sha256": _digest(ids), "num_items": len(ids),
            "shard_size": shard_size, "dim": encoder.dim, "dtype": "float16",
            "sample_rate": encoder.sample_rate, "frame_shift_s": encoder.frame_shift_s}
    path = out / "cache.json"
    if path.exists():
        if json.loads(path.read_text(encoding="utf-8")) != meta:
            raise DataError(f"{out} caches other cuts (see {path}); give another root")
    else:
        _write_json(path, meta)
    shards = [cuts[i:i + shard_size] for i in range(0, len(cuts), shard_size)]
    todo = [i for i in range(len(shards)) if not (out / CACHE_SHARD.format(i)).exists()]
    device = next(encoder.parameters()).device
    fbank = encoder.feature_extractor()
    was_training = encoder.training
    encoder.eval()
    bar = tqdm(total=sum(len(shards[i]) for i in todo), desc="inserter: encoder cache",
               unit="cut", disable=not progress or not todo)
    try:
        with torch.no_grad():
            for i in todo:
                tensors = {}
                for batch in _duration_batches(sorted(shards[i], key=lambda c: -c.duration),
                                               batch_seconds):
                    waves = [_wave(c, encoder.sample_rate) for c in batch]
                    lens = torch.tensor([w.shape[0] for w in waves], dtype=torch.int64)
                    x = torch.zeros(len(waves), int(lens.max()))
                    for row, w in enumerate(waves):
                        x[row, : w.shape[0]] = w
                    feats, feat_lens = fbank(x.to(device), lens.to(device))
                    enc, enc_lens = run(feats, feat_lens)
                    for cut, e, n in zip(batch, enc, enc_lens.tolist(), strict=True):
                        tensors[cut.id] = e[:n].to(torch.float16).cpu().contiguous()
                    bar.update(len(batch))
                name = out / CACHE_SHARD.format(i)
                tmp = name.with_name(f".{name.name}.{os.getpid()}.tmp")
                save_file(tensors, str(tmp), metadata={"format": "pt"})
                os.replace(tmp, name)
    finally:
        bar.close()
        encoder.train(was_training)
    if not (out / "index.json").exists() or todo:
        items: dict[str, list[int]] = {}
        names = [CACHE_SHARD.format(i) for i in range(len(shards))]
        for i, name in enumerate(names):
            with safe_open(str(out / name), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                    items[key] = [i, int(f.get_slice(key).get_shape()[0])]
        _write_json(out / "index.json", {"shards": names, "items": items})
    return out


class EncoderCache:
    """Read access to a folder of :func:`build_encoder_cache` (picklable: shard files are
    opened lazily in each process)."""

    def __init__(self, path: str | os.PathLike) -> None:
        from speechfm.errors import DataError

        self.path = Path(path)
        index = self.path / "index.json"
        if not index.is_file():
            raise DataError(f"{self.path}: not a complete encoder cache (no index.json)")
        data = json.loads(index.read_text(encoding="utf-8"))
        self.meta = json.loads((self.path / "cache.json").read_text(encoding="utf-8"))
        self.shards: list[str] = data["shards"]
        self.items: dict[str, list[int]] = data["items"]
        self._open: dict[int, Any] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_open": {}}

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, key: str) -> bool:
        return key in self.items

    @property
    def fingerprint(self) -> str:
        """sha256 of the encoder that made it (:func:`encoder_fingerprint`)."""
        return self.meta["encoder_sha256"]

    def frames(self, key: str) -> int:
        """T', the encoder frames of cut ``key``."""
        return self._item(key)[1]

    def get(self, key: str) -> torch.Tensor:
        """(T', C) float16 encoder output of cut ``key``."""
        from safetensors import safe_open

        shard = self._item(key)[0]
        if shard not in self._open:
            self._open[shard] = safe_open(str(self.path / self.shards[shard]), framework="pt")
        return self._open[shard].get_tensor(key)

    def _item(self, key: str) -> list[int]:
        from speechfm.errors import DataError

        try:
            return self.items[key]
        except KeyError:
            raise DataError(f"{self.path}: no cached encoder output for {key!r}") from None


# ----------------------------------------------------------------------------- the corpus


def read_build(interleaved_dir: str | os.PathLike) -> list[dict]:
    """The sequences of a finished interleaved build, audio paths made absolute."""
    from speechfm.data.interleave import iter_sequences

    root = Path(interleaved_dir).resolve()
    lines = []
    for line in iter_sequences(root):
        for seg in line["segments"]:
            if seg["kind"] == "speech":
                seg["audio"] = str(root / seg["audio"])
        lines.append(line)
    return lines


def _speech(seg: Mapping[str, Any]) -> dict:
    return {"id": seg["id"], "audio": seg["audio"], "num_samples": seg["num_samples"],
            "sampling_rate": seg["sampling_rate"]}


def text_view(line: Mapping[str, Any]) -> dict:
    """A sequence as plain text (its spoken spans written out: the text corpus)."""
    return {"kind": "text", "text": " ".join(s["text"] for s in line["segments"])}


def interleave_view(line: Mapping[str, Any]) -> dict:
    """A sequence as built: text and speech segments in document order."""
    return {"kind": "interleave", "segments": [
        {"kind": "text", "text": s["text"]} if s["kind"] == "text" else
        {"kind": "speech", **_speech(s)} for s in line["segments"]]}


def asr_views(line: Mapping[str, Any]) -> list[dict]:
    """Each spoken span of a sequence as an ASR example (speech -> its transcript)."""
    return [{"kind": "asr", "speech": _speech(s), "text": s["text"]}
            for s in line["segments"] if s["kind"] == "speech"]


def speech_cuts(lines: Iterable[Mapping[str, Any]]) -> list:
    """The speech segments of ``lines`` as lhotse cuts (for the encoder cache)."""
    from lhotse import AudioSource, MonoCut, Recording

    cuts = []
    for line in lines:
        for s in line["segments"]:
            if s["kind"] != "speech":
                continue
            dur = s["num_samples"] / s["sampling_rate"]
            rec = Recording(id=s["id"], sources=[AudioSource(type="file", channels=[0],
                                                             source=s["audio"])],
                            sampling_rate=s["sampling_rate"], num_samples=s["num_samples"],
                            duration=dur)
            cuts.append(MonoCut(id=s["id"], start=0.0, duration=dur, channel=0, recording=rec))
    return cuts


def instruction_view(item: Any) -> dict:
    """A text instruction (``instruct.InstructItem``) and its reference answer."""
    return {"kind": "instruct", "instruction": item.instruction, "answer": item.answer,
            "family": item.family}


# ----------------------------------------------------------------------------- sequences


@dataclass(frozen=True)
class Framing:
    """The prompts of the instruction and ASR examples (``prompt_segments``' framing)."""

    prompt_before: str
    prompt_after: str
    asr_prompt_before: str
    asr_prompt_after: str


def sequence_segments(spec: Mapping[str, Any], tok: Any, framing: Framing,
                      speech: Callable[[Mapping[str, Any]], Any]) -> list:
    """The segments of one example (``SpeechLM.forward``'s sequence).

    Kinds (``spec["kind"]``):

    - ``text``: ``[<s>] text </s>``, loss on every token after ``<s>``;
    - ``instruct``: ``prompt_segments(text=instruction, prompt_before=, prompt_after=,
      response=answer)``, loss on the answer and ``</s>`` only;
    - ``asr``: ``prompt_segments(speech=..., asr_prompt_before, asr_prompt_after,
      response=transcript)``, loss on the transcript and ``</s>``;
    - ``interleave``: ``[<s>]`` then the text and speech segments in document order and
      ``</s>``; the loss is on every text token (``<s>`` has no context), none on speech.

    Text after another segment gets a leading space, so an interleaved sequence's text is
    tokenised as its plain-text view is. ``speech(seg)`` turns a speech dict into a
    :class:`SpeechSegment`.
    """
    from speechfm.models.speech_lm import TextSegment, prompt_segments, text_ids

    kind = spec["kind"]
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    eos = tok.eos_token_id
    if kind == "instruct":
        return prompt_segments(tok, text=spec["instruction"], prompt_before=framing.prompt_before,
                               prompt_after=framing.prompt_after, response=spec["answer"])
    if kind == "asr":
        return prompt_segments(tok, speech=speech(spec["speech"]),
                               prompt_before=framing.asr_prompt_before,
                               prompt_after=framing.asr_prompt_after, response=spec["text"])
    if kind == "text":
        return [TextSegment(bos), TextSegment(text_ids(tok, spec["text"]) + [eos], train=True)]
    if kind == "interleave":
        out = [TextSegment(bos)]
        for k, seg in enumerate(spec["segments"]):
            if seg["kind"] == "text":
                out.append(TextSegment(text_ids(tok, (" " if k else "") + seg["text"]),
                                       train=True))
            else:
                out.append(speech(seg))
        out.append(TextSegment([eos], train=True))
        return out
    raise ValueError(f"unknown example kind {kind!r}")


def count_positions(segments: Sequence[Any], stack: int) -> int:
    """LM positions of a sequence: text tokens, and per speech segment ceil(T' / stack)
    adaptor frames + 2 markers (T' from its ``encoded`` rows)."""
    from speechfm.models.speech_lm import TextSegment

    return sum(len(s) if isinstance(s, TextSegment)
               else math.ceil(s.encoded.shape[0] / stack) + 2 for s in segments)


def sequence_cut(cut_id: str, spec: Mapping[str, Any], positions: int):
    """A lhotse cut without audio carrying one example (see the module doc)."""
    from lhotse import MonoCut

    return MonoCut(id=cut_id, start=0.0, duration=round(positions / POSITIONS_PER_SECOND, 6),
                   channel=0, recording=None,
                   custom={"inserter": dict(spec), "positions": positions})


def is_dev(key: str, fraction: float) -> bool:
    """Whether an example keyed ``key`` is held out (a hash, stable across runs)."""
    return zlib.crc32(key.encode("utf-8")) % 1_000_000 < fraction * 1_000_000


def split_dev(examples: list[tuple[str, str, dict]], fraction: float, max_dev: int
              ) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]]]:
    """``(cut id, hash key, spec)`` -> (train, dev) ``(cut id, spec)`` lists. Examples with
    the same key go to the same side; at most ``max_dev`` dev examples (distinct keys);
    when the fraction picks none of several keys, the lowest-hash key is held out."""
    keys = sorted({k for _, k, _ in examples}, key=lambda k: zlib.crc32(k.encode("utf-8")))
    held = {k for k in keys if fraction > 0 and is_dev(k, fraction)}
    if fraction > 0 and not held and len(keys) > 1:
        held = {keys[0]}
    train = [(i, s) for i, k, s in examples if k not in held]
    dev, seen = [], set()
    for i, k, s in examples:
        if k in held and k not in seen and len(dev) < max_dev:
            seen.add(k)
            dev.append((i, s))
    return train, dev


def resample(examples: list[tuple[str, dict]], count: int, seed: str) -> list[tuple[str, dict]]:
    """``count`` examples drawn without replacement from a seeded permutation, cycled when
    more are asked than there are (repeats get ``-r<k>`` id suffixes)."""
    if not examples or count <= 0:
        return []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    out = []
    for n in range(count):
        cut_id, spec = examples[order[n % len(order)]]
        k = n // len(order)
        out.append((f"{cut_id}-r{k}" if k else cut_id, spec))
    return out


class SequenceDataset(torch.utils.data.Dataset):
    """Map-style dataset whose index is a CutSet of sequence cuts (one mini-batch).

    ``dataset[cuts]`` -> ``{"sequences": [segments...], "cut_ids": [...],
    "skipped_cut_ids": [], "positions": int}``, what ``SpeechLM.forward`` and the run
    function read. Speech comes from the encoder ``cache`` (``SpeechSegment(encoded=)``,
    float16 as stored), or with ``cache=None`` as fbank computed from the audio by
    ``fbank`` (a trainable encoder).
    """

    def __init__(self, tokenizer: Any, framing: Framing, *, cache: EncoderCache | None = None,
                 fbank: Any = None) -> None:
        self.tokenizer = tokenizer
        self.framing = framing
        self.cache = cache
        self.fbank = fbank

    def speech(self, seg: Mapping[str, Any]):
        """A speech dict -> :class:`SpeechSegment`."""
        import soundfile as sf

        from speechfm.errors import DataError
        from speechfm.models.speech_lm import SpeechSegment

        if self.cache is not None:
            return SpeechSegment(encoded=self.cache.get(seg["id"]))
        if self.fbank is None:
            raise DataError("speech segments need an encoder cache or an fbank extractor")
        audio, sr = sf.read(seg["audio"], dtype="float32", always_2d=True)
        if sr != self.fbank.config.sample_rate:
            raise DataError(f"{seg['audio']}: {sr} Hz, the encoder takes "
                            f"{self.fbank.config.sample_rate} Hz")
        wave = torch.from_numpy(audio[:, 0].copy())[None]
        with torch.no_grad():
            feats, n = self.fbank(wave)
        return SpeechSegment(feats=feats[0, : int(n[0])])

    def __getitem__(self, cuts) -> dict:
        sequences, ids, positions = [], [], 0
        for cut in cuts:
            sequences.append(sequence_segments(cut.custom["inserter"], self.tokenizer,
                                               self.framing, self.speech))
            ids.append(cut.id)
            positions += int(cut.custom.get("positions", 0))
        return {"sequences": sequences, "cut_ids": ids, "skipped_cut_ids": [],
                "positions": positions}


# ----------------------------------------------------------------------------- CLI


def build_corpus(texts: Sequence[str] | None, out: str | os.PathLike, *, lang: str = "en",
                 udhr: bool | None = None, generated_docs: int = 0, num_workers: int = 1,
                 shard_size: int = 512, progress: bool = True, **interleave: Any) -> Path:
    """Documents (``read_documents``) -> a finished interleaved build in ``out``."""
    from speechfm.data.interleave import InterleaveConfig, build_interleaved, read_documents

    docs = read_documents(texts or None, lang, udhr=udhr, generated_docs=generated_docs,
                          seed=interleave.get("seed", 0))
    config = InterleaveConfig(lang=lang, **interleave)
    return build_interleaved(docs, out, config, num_workers=num_workers, shard_size=shard_size,
                             progress=progress)


def build_benchmark(out: str | os.PathLike, *, n_per_family: int = 30, seed: int = 1,
                    snr_range: tuple[float, float] = (5.0, 20.0), num_workers: int = 1,
                    progress: bool = True) -> dict[str, Path]:
    """``bench.jsonl`` + its audio in ``clean/`` and ``noisy/`` (same voices of the ``test``
    pool, the noisy copy with additive noise at ``snr_range`` dB); returns the paths."""
    from speechfm.data.interleave import synthesize_texts

    ins = sibling("instruct")
    out = Path(out)
    items = ins.benchmark(n_per_family, seed)
    bench = ins.write_jsonl(out / "bench.jsonl", items)
    pairs = [(i.id, i.instruction) for i in items]
    clean = synthesize_texts(pairs, out / "clean", pool="test", noise_prob=0.0, seed=seed,
                             num_workers=num_workers, progress=progress)
    noisy = synthesize_texts(pairs, out / "noisy", pool="test", noise_prob=1.0,
                             snr_range=snr_range, seed=seed, num_workers=num_workers,
                             progress=progress)
    return {"bench": bench, "clean": clean, "noisy": noisy}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("corpus", help="text documents -> the interleaved corpus")
    c.add_argument("texts", nargs="*", help="text files or folders (none: the UDHR file)")
    c.add_argument("--out", required=True)
    c.add_argument("--lang", default="en")
    c.add_argument("--udhr", action="store_true", help="add the UDHR file of --lang")
    c.add_argument("--generated-docs", type=int, default=0)
    c.add_argument("--speech-ratio", type=float, default=0.3)
    c.add_argument("--max-sequence-sentences", type=int, default=16)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--num-workers", type=int, default=1)
    c.add_argument("--shard-size", type=int, default=512)
    b = sub.add_parser("benchmark", help="the benchmark items and their clean/noisy audio")
    b.add_argument("--out", required=True)
    b.add_argument("--n-per-family", type=int, default=30)
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--snr", type=float, nargs=2, default=(5.0, 20.0), metavar=("LOW", "HIGH"))
    b.add_argument("--num-workers", type=int, default=1)
    k = sub.add_parser("cache", help="cache a model's encoder output for a cut manifest")
    k.add_argument("--model", required=True, help="a speechfm model directory")
    k.add_argument("--cuts", required=True)
    k.add_argument("--out", required=True, help="cache root (a folder per encoder inside)")
    k.add_argument("--batch-seconds", type=float, default=60.0)
    args = p.parse_args(argv)
    if args.command == "corpus":
        out = build_corpus(args.texts, args.out, lang=args.lang, udhr=args.udhr or None,
                           generated_docs=args.generated_docs, num_workers=args.num_workers,
                           shard_size=args.shard_size, speech_ratio=args.speech_ratio,
                           max_sequence_sentences=args.max_sequence_sentences, seed=args.seed)
        from speechfm.data.interleave import load_index

        index = load_index(out)
        print(f"{out}: {index['sequences']} sequences, {index['segments']} segments, "
              f"{index['speech_hours']} h of speech")
    elif args.command == "benchmark":
        paths = build_benchmark(args.out, n_per_family=args.n_per_family, seed=args.seed,
                                snr_range=tuple(args.snr), num_workers=args.num_workers)
        print("\n".join(f"{k}: {v}" for k, v in paths.items()))
    else:
        from speechfm.models.io import load_model_dir
        from speechfm.train.runner import load_cuts

        model = load_model_dir(args.model).module
        out = build_encoder_cache(model, load_cuts(args.cuts), args.out,
                                  batch_seconds=args.batch_seconds)
        print(f"encoder cache: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
