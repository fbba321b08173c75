#!/usr/bin/env python3
"""InSerter at small scale: "Speech Instruction Following with Unsupervised Interleaved
Pre-training" (a speech LM whose speech pre-training is text | speech | text sequences
made with TTS from a text corpus, compared with ASR-style alignment).

    python recipes/inserter/train.py CONFIG.yaml [--exp-dir DIR] [--resume]
        [--print-config] [key=value ...]

One script, four ``stage`` values (each training stage starts from the previous
stage's model directory through ``init_from``):

=============  ==========================================================================
stage          what it does
=============  ==========================================================================
tokenizer      trains the LM's byte-level BPE (``lm_tokenizer``, ``tokenizer_vocab``) on
               the text corpus + the framed instruction texts; no training run
text           a fresh speech LM (``model_size``: the Llama of ``speech_lm_small``, the
               speech encoder and its weights from ``encoder_from``; or ``lm_from``, a local
               transformers causal LM and its tokenizer, plugged in) trained on text only:
               the ``num_instructions`` text instructions of ``instruct.training_pairs``
               framed by ``prompt_segments`` (loss on the answer) mixed with corpus
               sequences (loss on every token), the corpus subsampled or repeated so that
               instructions are ``instruct_ratio`` of the examples; encoder, adaptor and
               speech markers get no data (frozen)
speech         ``mode``: ``asr`` (each spoken span -> its transcript under a fixed
               transcription prompt), ``interleave`` (InSerter: the interleaved sequences,
               loss on every text token, speech as encoder outputs) or ``both`` (a mixture,
               ``asr_fraction`` of the examples ASR); adaptor + markers + LM train, the
               encoder is frozen (``freeze_encoder``) and its outputs are computed once
               into an encoder cache; ``freeze_lm`` trains the adaptor and markers only
instruct       the text-instruction stage of ``text`` again (``instruct_ratio`` 1:
               instructions only), the same after each speech system
=============  ==========================================================================

Every stage reads ONE interleaved build (``interleaved_dir``, ``data.py corpus``) made
from the plain text corpus only -- never from instruction data -- so a speech system can
follow spoken instructions only by transferring what the LM learnt from text
instructions: the claim under test. The text stages read its sequences as plain text; the
speech stage reads its speech. Held-out examples (``dev_fraction``, by a hash of the
sequence id or of the instruction text) give the dev loss and token accuracy (metric
``loss``).

Data goes through the platform: each example is a lhotse cut without audio whose
duration is its LM positions / 100 (``data.py``), written to ``EXP/data/`` by the
recipe (``train_cuts: auto``), so the bucketing sampler (``max_duration`` 20 = 2000
positions a batch), exact resume and DDP sharding are the run function's own. Stages::

    python recipes/inserter/train.py recipes/inserter/configs/text.yaml stage=tokenizer
    python recipes/inserter/train.py recipes/inserter/configs/text.yaml --exp-dir exp/text
    python recipes/inserter/train.py recipes/inserter/configs/speech.yaml \\
        --exp-dir exp/interleave mode=interleave init_from=exp/text/final
    python recipes/inserter/train.py recipes/inserter/configs/instruct.yaml \\
        --exp-dir exp/interleave_instruct init_from=exp/interleave/final
    python recipes/inserter/evaluate.py exp/interleave_instruct/final --bench data/bench ...

The exported ``EXP/final`` is a ``speech_lm`` model directory (``speechfm.load(dir)
.respond(audio | text=, prompt_before=, prompt_after=)``) with ``inserter.json``: the
prompts it was trained with (``evaluate.py`` uses them) and the stages behind it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechfm.models.speech_lm.prompt import FRAMING_FILE
from speechfm.train import RunConfig
from speechfm.train.optim import OptimizerConfig
from speechfm.train.schedulers import SchedulerConfig

log = logging.getLogger("speechfm.recipes.inserter")

STAGES = ("tokenizer", "text", "speech", "instruct")
MODES = ("asr", "interleave", "both")
SPEECH_PREFIXES = ("adaptor.", "speech_begin", "speech_end")
"""Parameters that only speech reaches (frozen in the text-only stages)."""
INFO_FILE = FRAMING_FILE  # "inserter.json"
"""The recipe's note in an exported model directory (prompts, stages); its framing is
what ``speechfm.load(dir).respond`` uses by default (``read_framing``)."""


def _data():
    """recipes/inserter/data.py as a module."""
    import importlib.util

    key = "_inserter_data"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, Path(__file__).with_name("data.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


@dataclass(kw_only=True)
class InserterConfig(RunConfig):
    """An InSerter stage: :class:`RunConfig` plus the stage, its data and the model."""

    stage: str = "text"
    """tokenizer, text, speech or instruct (see the module doc)."""
    mode: str = "interleave"
    """Speech stage: asr, interleave or both."""
    interleaved_dir: str | None = None
    """A finished ``build_interleaved`` folder (``data.py corpus``): the corpus of every
    stage (its text for the text stages, its speech for the speech stage). Not needed by
    a stage of instructions only."""
    lm_tokenizer: str | None = None
    """The LM tokenizer folder: written by the tokenizer stage, read by a fresh text
    stage (later stages take the one of ``init_from``)."""
    tokenizer_vocab: int = 2000
    """Tokenizer stage: the most tokens of the byte-level BPE."""
    encoder_from: str | None = None
    """A fresh model (text stage without ``init_from``): a speechfm model directory (ctc,
    transducer, w2v_bert, ...) whose speech encoder config and weights it takes; None = a
    random encoder of ``model_size`` (no use for speech)."""
    model_size: str = "speech_lm_small"
    """Named size of a fresh model: speech_lm_small or speech_lm_tiny."""
    lm_from: str | None = None
    """A fresh text stage: a local transformers causal-LM checkpoint folder (the LM's and
    its tokenizer's ``save_pretrained``) plugged in with ``speech_lm_from_pretrained_lm``
    instead of ``model_size``'s fresh Llama (whose ``stack`` and ``adaptor_dim`` it keeps;
    no ``lm_tokenizer`` needed); None = the fresh small LM."""
    model: dict[str, Any] = field(default_factory=dict)
    """Overrides of a fresh model's config (``{"adaptor_dim": 256, "lm":
    {"num_hidden_layers": 6}}``; ``lm`` keys update the transformers config dict)."""
    freeze_encoder: bool = True
    """Keep the speech encoder fixed (eval mode, no gradients) and feed its cached
    outputs; False fine-tunes it on fbank computed from the audio (slow on CPU)."""
    freeze_lm: bool = False
    """Speech stage: train the adaptor and speech markers only (the LM stays as the text
    stage left it)."""
    encoder_cache: str | None = None
    """Root of the encoder-output caches (a folder per encoder inside); None =
    ``<interleaved_dir>/encoder_cache``."""
    cache_batch_seconds: float = 60.0
    """Seconds of audio per encoder forward when filling the cache."""
    num_instructions: int = 20000
    """Text and instruct stages (``instruct_ratio`` > 0), and the tokenizer: how many
    instruction examples, ``instruct.training_pairs(num_instructions, instruct_seed)``, each
    used once an epoch (the dev share, by instruction text, held out of them)."""
    instruct_seed: int = 1
    """Seed of ``instruct.training_pairs`` (the same in every stage: the same data)."""
    instruct_ratio: float = 0.3
    """Text and instruct stages: the fraction of the training examples that are
    instructions. The ``num_instructions`` instructions are fixed; the corpus side is
    sized to match, ``round(instructions * (1 - r) / r)`` sequences drawn from a seeded
    permutation of the corpus (a subsample when the corpus is larger, the corpus cycled
    when it is smaller). 1 = instructions only (no corpus needed); 0 = the corpus only,
    every sequence once."""
    asr_fraction: float = 0.5
    """Speech stage ``both``: the fraction of the training examples that are ASR examples
    (every interleaved sequence once, ASR examples drawn to make up the fraction)."""
    prompt_before: str = "instruction: "
    """Instruction framing: the text before the instruction (spoken or written)."""
    prompt_after: str = "\nanswer: "
    """Instruction framing: the text after the instruction, before the answer."""
    asr_prompt_before: str = "transcribe: "
    """ASR examples: the text before the speech."""
    asr_prompt_after: str = "\ntranscript: "
    """ASR examples: the text after the speech, before the transcript."""
    dev_fraction: float = 0.02
    """Held out for the dev loss: this fraction of the sequences (by a hash of their id)
    and of the distinct instruction texts."""
    max_dev: int = 200
    """At most this many dev examples of each kind (corpus, instructions, ASR)."""
    train_cuts: str = "auto"
    """The stage's training sequences as cuts; auto = written by the recipe to
    ``EXP/data/cuts_train.jsonl.gz`` from the stage's sources."""
    dev_cuts: str | None = "auto"
    """The dev sequences; auto = ``EXP/data/cuts_dev.jsonl.gz`` (none when
    ``dev_fraction`` is 0); None = no validation."""
    max_duration: float = 20.0
    """Batch size in LM positions / 100 (a sequence cut's duration, see ``data.py``)."""
    max_utt_duration: float = 20.0
    """Longer sequences (in positions / 100) are left out."""
    num_workers: int = 0
    """DataLoader workers (0: batches are cheap to assemble)."""
    init_prefixes: tuple[str, ...] = ("encoder.", "adaptor.", "speech_begin", "speech_end",
                                      "lm.")
    """What ``init_from`` provides: the whole model of the previous stage."""
    optimizer: OptimizerConfig = field(
        default_factory=lambda: OptimizerConfig(lr=1e-3, weight_decay=0.01))
    """AdamW settings."""
    scheduler: SchedulerConfig = field(
        default_factory=lambda: SchedulerConfig(kind="cosine", warmup_steps=100))
    """Learning-rate schedule."""
    max_steps: int | None = 1000
    """Stop after this many updates."""
    exp_dir: str = "exp/inserter"
    """Output directory of the run."""

    def validate(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not 0.0 <= self.instruct_ratio <= 1.0:
            raise ValueError(f"instruct_ratio must be in [0, 1], got {self.instruct_ratio}")
        if not 0.0 < self.asr_fraction < 1.0:
            raise ValueError(f"asr_fraction must be in (0, 1), got {self.asr_fraction}")
        if not 0.0 <= self.dev_fraction < 0.5:
            raise ValueError(f"dev_fraction must be in [0, 0.5), got {self.dev_fraction}")
        if self.max_dev < 1 or self.num_instructions < 0 or self.cache_batch_seconds <= 0:
            raise ValueError("max_dev must be >= 1, num_instructions >= 0, "
                             "cache_batch_seconds > 0")
        if self.speed_perturb or self.volume_perturb_db:
            raise ValueError("speed_perturb and volume_perturb_db act on audio features; the "
                             "recipe's batches are token sequences (encoder outputs cached)")
        if uses_corpus(self) and not self.interleaved_dir:
            raise ValueError(f"stage {self.stage} needs interleaved_dir (the corpus)")
        if (self.stage in ("text", "instruct") and self.instruct_ratio > 0
                and self.num_instructions < 1):
            raise ValueError("instruct_ratio > 0 needs num_instructions >= 1 (the corpus side "
                             "is sized from the instructions)")
        if self.stage == "tokenizer":
            if not self.lm_tokenizer:
                raise ValueError("stage tokenizer needs lm_tokenizer (the output folder)")
            if self.tokenizer_vocab < 260:
                raise ValueError(f"tokenizer_vocab must be >= 260, got {self.tokenizer_vocab}")
        elif self.stage == "text":
            if not self.init_from and not self.lm_tokenizer and not self.lm_from:
                raise ValueError("a fresh text stage needs lm_tokenizer (run stage=tokenizer)")
        elif not self.init_from:
            raise ValueError(f"stage {self.stage} starts from the previous stage: set init_from")
        if self.freeze_lm and self.stage != "speech":
            raise ValueError("freeze_lm is for the speech stage (the text stages train the LM "
                             "only)")
        if self.lm_from and (self.stage != "text" or self.init_from or self.model.get("lm")):
            raise ValueError("lm_from starts a fresh text stage (no init_from, no model.lm "
                             "overrides: the checkpoint is the LM)")
        if self.init_from and self.model:
            raise ValueError("model overrides shape a fresh model; with init_from the "
                             "architecture is the previous stage's")
        super().validate()
        if not self.init_from:
            build_model_config(self, vocab_size=300, read_encoder=False)


def model_sizes(vocab_size: int) -> dict[str, Any]:
    """The family's named sizes for a tokenizer of ``vocab_size`` tokens."""
    from functools import partial

    from speechfm.models.speech_lm import speech_lm_small, speech_lm_tiny

    return {"speech_lm_small": partial(speech_lm_small, vocab_size),
            "speech_lm_tiny": partial(speech_lm_tiny, vocab_size)}


def build_model_config(config: InserterConfig, vocab_size: int, *, read_encoder: bool = True):
    """The model config: the previous stage's (``init_from``), or a fresh one (named size,
    ``encoder_from``'s encoder, the ``model`` overrides); ``freeze_encoder`` from the
    recipe."""
    from speechfm.config import named_config
    from speechfm.models.io import read_encoder_config, read_model_config
    from speechfm.models.speech_lm import SpeechLMConfig

    if config.init_from:
        meta = read_model_config(config.init_from)
        if meta["family"] != "speech_lm":
            raise ValueError(f"init_from {config.init_from}: a {meta['family']} model, not a "
                             "speech_lm (encoders come in through encoder_from)")
        model_config = SpeechLMConfig.from_dict(meta["model"])
        model_config.freeze_encoder = config.freeze_encoder
        return model_config
    sizes = model_sizes(vocab_size)
    if config.model_size not in sizes:
        raise ValueError(f"model_size must be one of {sorted(sizes)}, got {config.model_size!r}")
    overrides = dict(config.model)
    lm = dict(overrides.pop("lm", None) or {})
    if "vocab_size" in lm:
        raise ValueError("model.lm.vocab_size cannot be set: it comes from the tokenizer")
    replace: dict[str, Any] = {"lm": {**sizes[config.model_size]().lm, **lm},
                               "freeze_encoder": config.freeze_encoder}
    if config.encoder_from and read_encoder:
        replace["encoder"] = read_encoder_config(config.encoder_from)
    return named_config(sizes, config.model_size, overrides, replace=replace,
                        fixed={"freeze_encoder": "set the recipe's freeze_encoder"})


def framing(config: InserterConfig):
    """The prompts of the instruction and ASR examples."""
    return _data().Framing(config.prompt_before, config.prompt_after, config.asr_prompt_before,
                           config.asr_prompt_after)


def _instruction_items(config: InserterConfig, n: int) -> list:
    return _data().sibling("instruct").training_pairs(n, config.instruct_seed)


# ----------------------------------------------------------------------------- tokenizer


def train_tokenizer(config: InserterConfig) -> Path:
    """Byte-level BPE on the corpus text and the framed instruction and ASR texts."""
    from speechfm.models.speech_lm import train_lm_tokenizer

    data = _data()
    corpus = [data.text_view(line)["text"] for line in data.read_build(config.interleaved_dir)]
    framed = [f"{config.prompt_before}{i.instruction}{config.prompt_after}{i.answer}"
              for i in _instruction_items(config, config.num_instructions)]
    asr = [config.asr_prompt_before + config.asr_prompt_after] * 10
    tok = train_lm_tokenizer(corpus + framed + asr, config.tokenizer_vocab, config.lm_tokenizer)
    log.info("LM tokenizer: %d tokens from %d corpus sequences and %d instructions -> %s",
             len(tok), len(corpus), len(framed), config.lm_tokenizer)
    return Path(config.lm_tokenizer)


# ----------------------------------------------------------------------------- stage data


def stage_examples(config: InserterConfig, lines: list[dict]
                   ) -> tuple[list[tuple[str, dict]], list[tuple[str, dict]]]:
    """(train, dev) ``(cut id, example spec)`` lists of the stage (see the module doc)."""
    data = _data()
    frac, cap = config.dev_fraction, config.max_dev
    if config.stage in ("text", "instruct"):
        # num_instructions instructions, each once; the corpus side is resampled (subsampled
        # or cycled) so that instructions are instruct_ratio of the training examples
        r = config.instruct_ratio
        corpus = ([(f"text-{q['id']}", q["id"], data.text_view(q)) for q in lines]
                  if r < 1 else [])
        instr = ([(f"ins-{i.id}", i.instruction, data.instruction_view(i))
                  for i in _instruction_items(config, config.num_instructions)]
                 if r > 0 else [])
        ctrain, cdev = data.split_dev(corpus, frac, cap)
        itrain, idev = data.split_dev(instr, frac, cap)
        if 0 < r < 1:
            ctrain = data.resample(ctrain, round(len(itrain) * (1 - r) / r),
                                   f"inserter-text:{config.seed}")
        return ctrain + itrain, cdev + idev
    inter = [(f"il-{q['id']}", q["id"], data.interleave_view(q)) for q in lines]
    asr = [(f"asr-{v['speech']['id']}", q["id"], v) for q in lines for v in data.asr_views(q)]
    if config.mode == "asr":
        return data.split_dev(asr, frac, cap)
    itrain, idev = data.split_dev(inter, frac, cap)
    if config.mode == "interleave":
        return itrain, idev
    atrain, adev = data.split_dev(asr, frac, cap)
    f = config.asr_fraction
    picked = data.resample(atrain, round(len(itrain) * f / (1 - f)),
                           f"inserter-both:{config.seed}")
    return itrain + picked, idev + adev


def uses_corpus(config: InserterConfig) -> bool:
    """Whether the stage reads the interleaved corpus."""
    return config.stage in ("tokenizer", "speech") or config.instruct_ratio < 1


def _fingerprint(config: InserterConfig, tok, model_config, cache) -> dict:
    from speechfm.data.interleave import load_index

    index = load_index(config.interleaved_dir) if uses_corpus(config) else None
    extra = {}
    if config.stage in ("text", "instruct"):  # the instructions themselves and how they mix
        items = (_instruction_items(config, config.num_instructions)
                 if config.instruct_ratio > 0 else [])
        extra["instructions"] = {
            "sha256": _data()._digest([[i.family, i.instruction, i.answer] for i in items]),
            "mix": "instructions fixed, corpus resampled"}
    keys = ("stage", "mode", "num_instructions", "instruct_seed", "instruct_ratio",
            "asr_fraction", "prompt_before", "prompt_after", "asr_prompt_before",
            "asr_prompt_after", "dev_fraction", "max_dev", "seed")
    return {**{k: getattr(config, k) for k in keys},
            "corpus": None if index is None else {"plan_sha256": index["plan_sha256"],
                                                  "sequences": index["sequences"]},
            "tokenizer_sha256": _data()._digest(tok.backend_tokenizer.to_str()),
            "stack": model_config.stack,
            "encoder": None if cache is None else cache.fingerprint,
            "freeze_encoder": config.freeze_encoder, **extra}


def write_stage_data(config: InserterConfig, out: Path, tok, model, model_config, cache,
                     lines: list[dict]) -> dict:
    """Write the stage's train/dev sequence cuts to ``out``; returns counts by kind."""
    import math

    import torch
    from lhotse import CutSet

    from speechfm.models.speech_lm import SpeechSegment

    data = _data()
    fr = framing(config)

    def frames(seg) -> int:
        if cache is not None:
            return cache.frames(seg["id"])
        enc = model.encoder
        samples = torch.tensor([seg["num_samples"]])
        return int(enc.output_lengths(enc.feature_extractor().num_frames(samples))[0])

    def placeholder(seg):  # as many rows as the encoder output, no data
        return SpeechSegment(encoded=torch.empty(frames(seg), 0))

    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    for split, examples in zip(("train", "dev"), stage_examples(config, lines), strict=True):
        cuts, kinds, total = [], {}, 0
        for cut_id, spec in examples:
            n = data.count_positions(data.sequence_segments(spec, tok, fr, placeholder),
                                     model_config.stack)
            cuts.append(data.sequence_cut(cut_id, spec, n))
            kinds[spec["kind"]] = kinds.get(spec["kind"], 0) + 1
            total += n
        if split == "train" and not cuts:
            raise ValueError(f"stage {config.stage}: no training examples")
        path = out / f"cuts_{split}.jsonl.gz"
        tmp = out / f".{os.getpid()}-cuts_{split}.jsonl.gz"
        CutSet.from_cuts(cuts).to_file(tmp)
        os.replace(tmp, path)
        summary[split] = {"sequences": len(cuts), "by_kind": kinds, "positions": total,
                          "longest": max((c.custom["positions"] for c in cuts), default=0),
                          "over_max_utt_duration": sum(
                              c.duration > config.max_utt_duration for c in cuts)}
        if summary[split]["over_max_utt_duration"]:
            log.warning("%s: %d sequences longer than %d positions are left out", split,
                        summary[split]["over_max_utt_duration"],
                        math.floor(config.max_utt_duration * data.POSITIONS_PER_SECOND))
    return summary


def _on_rank0(ready: Path, fingerprint: dict, work) -> dict:
    """Run ``work()`` (-> summary) on rank 0 and record it in ``ready``; other ranks wait
    until ``ready`` holds this fingerprint."""
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        summary = work()
        _data()._write_json(ready, {"fingerprint": fingerprint, "summary": summary})
        return summary
    for _ in range(2 * 3600):
        if ready.is_file():
            saved = json.loads(ready.read_text(encoding="utf-8"))
            if saved.get("fingerprint") == fingerprint:
                return saved["summary"]
        time.sleep(1.0)
    raise TimeoutError(f"rank {rank}: rank 0 did not prepare {ready.parent} within 2 h")


def prepare_data(config: InserterConfig, tok, model, model_config, *, resume: bool
                 ) -> tuple[InserterConfig, Any, dict]:
    """The encoder cache (speech stage, frozen encoder) and the stage's cuts; returns the
    config with real manifest paths, the cache (or None) and a data summary."""
    data = _data()
    speech = config.stage == "speech"
    lines = data.read_build(config.interleaved_dir) if uses_corpus(config) else []
    cache = None
    if speech and config.freeze_encoder:
        root = Path(config.encoder_cache or Path(config.interleaved_dir) / "encoder_cache")
        fp = data.encoder_fingerprint(model.encoder)
        folder = root / fp[:16]
        _on_rank0(folder / ".ready.json", {"encoder": fp}, lambda: {"path": str(
            data.build_encoder_cache(model, data.speech_cuts(lines), root,
                                     batch_seconds=config.cache_batch_seconds,
                                     progress=config.progress))})
        cache = data.EncoderCache(folder)
    exp = Path(config.exp_dir)
    auto_train, auto_dev = config.train_cuts == "auto", config.dev_cuts == "auto"
    summary: dict[str, Any] = {}
    if auto_train or auto_dev:
        out = exp / "data"
        fingerprint = _fingerprint(config, tok, model_config, cache)
        ready = out / "data.json"
        if (resume and ready.is_file() and (exp / "checkpoints").is_dir()
                and json.loads(ready.read_text(encoding="utf-8")).get("fingerprint")
                != fingerprint):
            raise ValueError(f"{ready}: the stage's data settings changed since the run "
                             "started; resume with the original settings or a new exp_dir")
        summary = None
        if ready.is_file() and (out / "cuts_train.jsonl.gz").is_file():
            saved = json.loads(ready.read_text(encoding="utf-8"))
            if saved.get("fingerprint") == fingerprint:
                summary = saved["summary"]
        if summary is None:
            if int(os.environ.get("RANK", "0")) == 0 and ready.is_file():
                ready.unlink()
            summary = _on_rank0(ready, fingerprint, lambda: write_stage_data(
                config, out, tok, model, model_config, cache, lines))
        dev = str(out / "cuts_dev.jsonl.gz") if summary["dev"]["sequences"] else None
        config = dataclasses.replace(
            config,
            train_cuts=str(out / "cuts_train.jsonl.gz") if auto_train else config.train_cuts,
            dev_cuts=dev if auto_dev else config.dev_cuts)
    return config, cache, summary


# ----------------------------------------------------------------------------- training


def parameter_counts(model) -> dict[str, int]:
    """Parameters of the encoder, the adaptor (+ speech markers) and the LM."""
    def count(params) -> int:
        return sum(p.numel() for p in params)

    return {"encoder": count(model.encoder.parameters()),
            "adaptor": count(model.adaptor.parameters()) + model.speech_begin.numel()
            + model.speech_end.numel(),
            "lm": count(model.lm.parameters())}


def make_validate(dev_cuts, dataset, max_positions: float):
    """Dev loss per target token and greedy token accuracy (batches of at most
    ``max_positions`` positions, sharded over ranks, summed)."""
    import torch

    from speechfm.train.distributed import all_reduce_sum

    batches, batch, size = [], [], 0
    for cut in dev_cuts:
        n = int(cut.custom["positions"])
        if batch and size + n > max_positions:
            batches.append(batch)
            batch, size = [], 0
        batch.append(cut)
        size += n
    if batch:
        batches.append(batch)

    def validate(model, ctx):
        sums = torch.zeros(3, dtype=torch.float64, device=ctx.device)
        for i, b in enumerate(batches):
            if i % ctx.info.world_size != ctx.info.rank:
                continue
            loss, count, stats = model(dataset[b])
            sums += torch.tensor([float(loss), count, stats["correct"]], dtype=torch.float64,
                                 device=ctx.device)
        if ctx.info.world_size > 1:  # not when rank 0 alone compares exported weights
            all_reduce_sum(sums)
        loss, count, correct = sums.tolist()
        return {"loss": loss / max(count, 1.0), "accuracy": correct / max(count, 1.0),
                "count": count}

    return validate


def _history(config: InserterConfig) -> list[dict]:
    if not config.init_from:
        return []
    path = Path(config.init_from) / INFO_FILE
    if not path.is_file():
        return []
    return list(json.loads(path.read_text(encoding="utf-8")).get("stages", []))


def train(config: InserterConfig, *, resume: bool = False):
    """Run the stage: the tokenizer's folder (tokenizer stage) or the
    :class:`speechfm.train.RunResult`."""
    from speechfm.models.io import init_weights, load_part
    from speechfm.models.speech_lm import (
        create_speech_lm_model,
        load_lm_tokenizer,
        speech_lm_from_pretrained_lm,
    )
    from speechfm.train import run
    from speechfm.train.runner import load_cuts, seed_run

    config.validate()
    if config.stage == "tokenizer":
        return train_tokenizer(config)
    seed_run(config)
    if config.lm_from:  # a plugged-in LM: its weights and tokenizer, the encoder's
        shape = build_model_config(config, 300, read_encoder=False)
        model, model_config, tok = speech_lm_from_pretrained_lm(
            config.lm_from, encoder_source=config.encoder_from or shape.encoder,
            stack=shape.stack, adaptor_dim=shape.adaptor_dim,
            freeze_encoder=config.freeze_encoder)
    else:
        tok = (load_part(config.init_from, "lm_tokenizer") if config.init_from
               else load_lm_tokenizer(config.lm_tokenizer))
        if tok is None:
            raise ValueError(f"init_from {config.init_from} has no lm_tokenizer part")
        model_config = build_model_config(config, len(tok))
        model = create_speech_lm_model(model_config)
    if config.init_from:  # run() copies them too; the encoder cache needs them now
        init_weights(model, config.init_from, config.init_prefixes)
    elif config.encoder_from:
        init_weights(model, config.encoder_from, ("encoder.",))
    else:
        log.warning("no encoder_from: the speech encoder has random weights")
    freeze = list(config.freeze_prefixes)
    if config.stage != "speech":  # text-only stages train the LM only
        freeze += [p for p in ("encoder.", *SPEECH_PREFIXES) if p not in freeze]
    if config.freeze_lm and "lm." not in freeze:
        freeze.append("lm.")
    config = dataclasses.replace(config, freeze_prefixes=tuple(freeze))
    config, cache, data_summary = prepare_data(config, tok, model, model_config, resume=resume)
    fbank = None if cache is not None else model.encoder.feature_extractor()
    dataset = _data().SequenceDataset(tok, framing(config), cache=cache, fbank=fbank)
    validate = None
    if config.dev_cuts:
        dev = load_cuts(config.dev_cuts).to_eager()
        validate = make_validate(dev, dataset, config.max_duration * _data().POSITIONS_PER_SECOND)

    def loss_fn(net, batch, ctx):
        return net(batch)

    summary = {
        "stage": config.stage, "mode": config.mode if config.stage == "speech" else None,
        "lm_tokenizer": {"vocab_size": len(tok),
                         "path": None if config.init_from else (config.lm_from
                                                                 or config.lm_tokenizer)},
        "parameters": parameter_counts(model),
        "model_size": None if config.init_from else config.model_size,
        "lm_from": config.lm_from,
        "encoder_from": config.encoder_from, "init_from": config.init_from,
        "encoder_cache": None if cache is None else str(cache.path),
        "data": data_summary, "framing": dataclasses.asdict(framing(config)),
    }
    result = run(config, model=model, model_config=model_config, loss_fn=loss_fn,
                 validate=validate, metric="loss", higher_is_better=False,
                 parts={"lm_tokenizer": tok}, dataset=dataset,
                 find_unused_parameters=config.stage == "speech" and config.mode != "asr",
                 summary=summary, resume=resume)
    if int(os.environ.get("RANK", "0")) == 0:
        stages = _history(config) + [{"stage": config.stage, "mode": summary["mode"],
                                      "exp_dir": config.exp_dir}]
        _data()._write_json(result.final_dir / INFO_FILE,
                            {"framing": summary["framing"], "stages": stages})
    return result


def main(argv: list[str] | None = None) -> int:
    import yaml

    from speechfm.config import parse_recipe_args

    config, args = parse_recipe_args(argv, InserterConfig, __doc__)
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True), end="")
        return 0
    out = train(config, resume=args.resume)
    print(f"lm tokenizer: {out}" if config.stage == "tokenizer" else f"model: {out.final_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
