"""What ``speechfm finetune`` decides, and the one table of rules it decides by.

The base model's family and the size of the new language's labelled data choose the
method, the recipe that trains it, the tokenizer and every training setting. The rules
are :data:`RULES` (one :class:`TierRules` per data-size tier) plus the method matrix of
:func:`choose_method` / :data:`RECIPES`; nothing else in the package picks a default.
:func:`make_plan` applies them (a flag the user gave always wins) and returns a
:class:`Plan` whose :meth:`Plan.table` lists every choice with its reason: it is printed
before anything trains (``--dry-run`` prints it and stops) and copied into RESULTS.md.

Data-size tiers, by hours of good labelled audio in ``--data``:

====================  ===========  ==============  =============
rule                  < 1 h        1 - 10 h        >= 10 h
====================  ===========  ==============  =============
tokenizer             characters   BPE 256         BPE 500
peak lr (full)        5e-4         1e-3            1e-3
peak lr (adapters)    2e-3         2e-3            1e-3
epochs (step range)   40 (300-4k)  15 (2k-30k)     5 (10k-100k)
batch (s of audio)    60           120             200
SpecAugment           on           on              off
encoder frozen first  25 % steps   10 % steps      5 % steps
early-stop patience   5            4               3
held out (each)       10 %         5 %             2 % (<= 1 h)
adapter size          dim/16, r4   dim/8, r8       dim/4, r16
====================  ===========  ==============  =============

Why: little data is seen many times (many epochs, SpecAugment against over-fitting, gentle
updates and a long frozen-encoder start so that a random head's gradients do not wreck the
pretrained encoder); characters need no text to learn a vocabulary from, BPE pays off once
there is enough text; with many hours few epochs fit a budget and the model under-fits,
where masking only slows it down (the mini_cv_lang probing runs, egs/mini_cv_lang/RESULTS.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from speechfm.errors import DataError

__all__ = ["RULES", "BaseInfo", "Choice", "FinetuneOptions", "Plan", "TierRules",
           "choose_method", "choose_tokenizer", "inspect_base", "make_plan", "tier_of"]

METHODS = ("auto", "full", "adapter", "lora", "phoneme")
TOKENIZERS = ("auto", "char", "bpe", "ipa")
CTC, TRANSDUCER = "ctc", "transducer"
"""The two kinds of ASR output a fine-tune trains (``ModelFamily.asr_head`` of the base's
family, from the family table in speechfm/models/io.py)."""


@dataclass(frozen=True)
class TierRules:
    """The defaults of one data-size tier (see the module doc for the reasons)."""

    label: str
    max_hours: float
    """The tier holds data sets below this many hours."""
    tokenizer: str
    bpe_vocab: int | None
    lr_full: float
    lr_adapter: float
    epochs: int
    min_steps: int
    max_steps: int
    batch_seconds: float
    specaugment: bool
    freeze_fraction: float
    patience: int
    held_out_fraction: float
    held_out_max_hours: float
    bottleneck_divisor: int
    lora_rank: int
    pretrain_epochs: int
    pretrain_min_steps: int
    pretrain_max_steps: int
    pretrain_lr: float


RULES: dict[str, TierRules] = {
    "minutes": TierRules(
        label="< 1 h", max_hours=1.0, tokenizer="char", bpe_vocab=None, lr_full=5e-4,
        lr_adapter=2e-3, epochs=40, min_steps=300, max_steps=4000, batch_seconds=60.0,
        specaugment=True, freeze_fraction=0.25, patience=5, held_out_fraction=0.10,
        held_out_max_hours=1.0, bottleneck_divisor=16, lora_rank=4, pretrain_epochs=20,
        pretrain_min_steps=200, pretrain_max_steps=4000, pretrain_lr=5e-4),
    "hours": TierRules(
        label="1-10 h", max_hours=10.0, tokenizer="bpe", bpe_vocab=256, lr_full=1e-3,
        lr_adapter=2e-3, epochs=15, min_steps=2000, max_steps=30000, batch_seconds=120.0,
        specaugment=True, freeze_fraction=0.10, patience=4, held_out_fraction=0.05,
        held_out_max_hours=1.0, bottleneck_divisor=8, lora_rank=8, pretrain_epochs=10,
        pretrain_min_steps=1000, pretrain_max_steps=20000, pretrain_lr=5e-4),
    "many_hours": TierRules(
        label=">= 10 h", max_hours=math.inf, tokenizer="bpe", bpe_vocab=500, lr_full=1e-3,
        lr_adapter=1e-3, epochs=5, min_steps=10000, max_steps=100000, batch_seconds=200.0,
        specaugment=False, freeze_fraction=0.05, patience=3, held_out_fraction=0.02,
        held_out_max_hours=1.0, bottleneck_divisor=4, lora_rank=16, pretrain_epochs=3,
        pretrain_min_steps=5000, pretrain_max_steps=50000, pretrain_lr=3e-4),
}
"""Data-size tier -> its defaults (ordered by ``max_hours``)."""

VALIDATIONS_PER_RUN = 10
"""Dev validations over a run (``valid_every`` = steps / this); early stopping counts them."""
WARMUP_FRACTION = 0.1
"""Share of the steps spent warming the learning rate up (then cosine decay)."""
MIN_BASE_COVERAGE = 0.98
"""Share of training utterances the base's tokenizer must encode without ``<unk>`` for the
adapter method on a transducer foundation to be the default (it keeps that tokenizer)."""

RECIPES: dict[tuple[str, str], tuple[str, str]] = {
    ("ctc", "full"): ("ctc", "a new CTC head on the base encoder; the whole model trains"),
    ("ctc", "adapter"): ("ctc", "bottleneck adapters after every Conformer block + a new CTC "
                                "head; the base encoder is frozen"),
    ("ctc", "lora"): ("ctc", "LoRA on the attention query/value projections + a new CTC head; "
                             "the base encoder is frozen"),
    ("ctc", "phoneme"): ("whistle", "the base's IPA CTC head re-mapped to the new language's "
                                    "phones (shared phones keep their rows, new ones start "
                                    "fresh; recipes/whistle head_from_init); the whole model trains"),
    ("transducer", "full"): ("transducer", "a new predictor and joiner on the base encoder(s); "
                                           "the whole model trains"),
    ("transducer", "adapter"): ("lda", "a language-dependent bottleneck adapter on the frozen "
                                       "foundation (recipes/lda); everything else frozen"),
    ("transducer", "lora"): ("lda", "a language-dependent LoRA on the attention query/value "
                                    "projections of the frozen foundation (recipes/lda)"),
}
"""(base kind, method) -> (recipe, what it trains). Base kind ``ctc`` also covers the
encoder-only families (``encoder``, ``w2v_bert``: a converted w2v-BERT 2.0 checkpoint)."""


def tier_of(hours: float) -> str:
    """The :data:`RULES` tier of a data set of ``hours``."""
    for name, rules in RULES.items():
        if hours < rules.max_hours:
            return name
    return list(RULES)[-1]


@dataclass(kw_only=True)
class FinetuneOptions:
    """Everything ``speechfm finetune`` is told (its command-line flags)."""

    base: str
    data: str
    lang: str
    method: str = "auto"
    out: str | None = None
    dev: str | None = None
    test: str | None = None
    unlabelled: str | None = None
    related_data: str | None = None
    related_ratio: float = 1.0
    tokenizer: str = "auto"
    vocab_size: int | None = None
    minutes: float | None = None
    max_steps: int | None = None
    epochs: int | None = None
    pretrain_steps: int | None = None
    pretrain_minutes: float | None = None
    lr: float | None = None
    batch_seconds: float | None = None
    specaugment: str = "auto"
    freeze_encoder_steps: int | None = None
    patience: int | None = None
    adapter_size: int | None = None
    min_duration: float = 0.1
    max_duration: float = 30.0
    seed: int = 42
    from_scratch: bool = False
    """The control run: the base's architecture (and its feature normalisation statistics)
    with fresh weights, trained the same way: what the base's pretraining is worth."""
    threads: int = 0
    num_workers: int = 1
    nj: int = 2
    device: str = "auto"
    progress: bool = True
    resume: bool = False
    dry_run: bool = False
    command: str | None = None

    RUN_ONLY = ("resume", "dry_run", "progress", "threads", "num_workers", "nj", "device",
                "minutes", "pretrain_minutes", "command")
    """Options that may change between a run and its ``--resume`` (they change how, not what)."""

    def validate(self) -> None:
        if self.method not in METHODS:
            raise DataError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.tokenizer not in TOKENIZERS:
            raise DataError(f"--tokenizer must be one of {', '.join(TOKENIZERS)}, got {self.tokenizer!r}")
        if self.specaugment not in ("auto", "on", "off"):
            raise DataError(f"--specaugment must be auto, on or off, got {self.specaugment!r}")
        if not self.lang or "." in self.lang or "@" in self.lang:
            raise DataError(f"--lang must be a language code (ISO 639), got {self.lang!r}")
        for name in ("minutes", "max_steps", "epochs", "pretrain_steps", "pretrain_minutes", "lr",
                     "batch_seconds", "patience", "adapter_size", "vocab_size", "related_ratio"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise DataError(f"--{name.replace('_', '-')} must be > 0, got {value}")
        if self.freeze_encoder_steps is not None and self.freeze_encoder_steps < 0:
            raise DataError(f"--freeze-encoder-steps must be >= 0, got {self.freeze_encoder_steps}")
        if self.max_steps is not None and self.epochs is not None:
            raise DataError("give --max-steps or --epochs, not both")
        if self.from_scratch and self.unlabelled:
            raise DataError("--from-scratch trains fresh weights; --unlabelled continues the "
                            "base's pretraining: give one of them")
        if self.from_scratch and self.method not in ("auto", "full"):
            raise DataError(f"--from-scratch trains the whole model; --method {self.method} "
                            "adapts the base's trained weights")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------- the base model


@dataclass
class BaseInfo:
    """What the base model directory is."""

    path: Path
    family: str
    kind: str
    """``ctc`` (CTC and encoder-only families) or ``transducer``."""
    tokenizer_kind: str | None
    encoder_dim: int
    encoder_layers: int
    cascaded: bool
    adapter_languages: list[str]
    """Languages with a language-dependent adapter (an LDA merged model's, or the config's)."""
    meta: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def whistle(self) -> bool:
        """A CTC model over IPA phones (a Whistle checkpoint)."""
        return self.kind == CTC and self.tokenizer_kind == "ipa"

    def describe(self) -> str:
        extra = []
        if self.tokenizer_kind:
            extra.append(f"{self.tokenizer_kind} tokenizer")
        if self.cascaded:
            extra.append("cascaded")
        if self.adapter_languages:
            extra.append(f"adapters for {', '.join(self.adapter_languages)}")
        return (f"{self.family} ({self.encoder_layers} x {self.encoder_dim} encoder"
                + "".join(f", {e}" for e in extra) + ")")


def inspect_base(path: str | Path) -> BaseInfo:
    """Read a base model directory's config.json (and its tokenizer's kind).

    Raises:
        DataError: not a model directory, or a family ``speechfm finetune`` cannot start from.
    """
    import json

    from speechfm.models.io import FAMILIES, get_family, read_model_config, resolve_model_dir

    directory = resolve_model_dir(path)
    meta = read_model_config(directory)
    family = meta["family"]
    head = get_family(family).asr_head
    if head is None:
        starts = [name for name in FAMILIES if get_family(name).asr_head is not None]
        raise DataError(f"{directory}: a {family} model; speechfm finetune starts from a speech "
                        f"encoder: one of {', '.join(starts)}")
    model = meta["model"]
    conformer = (model.get("encoder") or {}).get("conformer") or {}
    tok_kind = None
    tok_file = (meta.get("parts") or {}).get("tokenizer")
    if tok_file and (directory / tok_file / "tokenizer.json").is_file():
        tok_kind = json.loads((directory / tok_file / "tokenizer.json").read_text("utf-8")).get("kind")
    langs = set()
    for spec in model.get("adapters") or []:
        langs.update(spec.get("languages") or [])
    adapters_part = (meta.get("parts") or {}).get("adapters")
    if adapters_part and (directory / adapters_part).is_dir():
        for file in (directory / adapters_part).glob("*.json"):
            lang = json.loads(file.read_text("utf-8")).get("language")
            if lang:
                langs.add(lang)
    return BaseInfo(
        path=directory, family=family, kind=head,
        tokenizer_kind=tok_kind, encoder_dim=int(conformer.get("dim", 0)),
        encoder_layers=int(conformer.get("num_layers", 0)),
        cascaded=model.get("second_encoder") is not None, adapter_languages=sorted(langs),
        meta=meta)


# ------------------------------------------------------------------------- decisions


def choose_method(base: BaseInfo, asked: str, coverage: float | None) -> tuple[str, str]:
    """(method, why). ``coverage``: share of the training utterances the base's tokenizer
    encodes without ``<unk>`` (None: it has none).

    Raises:
        DataError: a method this base cannot do (why is said).
    """
    if asked == "auto":
        if base.whistle:
            return "phoneme", "an IPA-phone CTC base (Whistle): its phone classifier carries over"
        if base.kind == TRANSDUCER and (base.adapter_languages or base.cascaded):
            what = "an LDA merged model" if base.adapter_languages else "a cascaded transducer foundation"
            if coverage is not None and coverage >= MIN_BASE_COVERAGE:
                return "adapter", f"{what}: a language-dependent adapter, the foundation frozen"
            return "full", (f"{what}, but its tokenizer encodes only {100 * (coverage or 0):.0f} % "
                            "of the utterances: a new tokenizer and predictor/joiner instead")
        return "full", "the default for a CTC, transducer or encoder-only base"
    if asked == "phoneme" and not base.whistle:
        raise DataError(f"{base.path}: --method phoneme re-maps an IPA CTC head (a Whistle "
                        f"checkpoint); this base is {base.describe()}. Use --method full with "
                        "--tokenizer ipa for a new phone head")
    if (base.kind, asked) not in RECIPES:
        raise DataError(f"--method {asked} is not available for a {base.family} base")
    if base.kind == TRANSDUCER and asked in ("adapter", "lora") and coverage is not None \
            and coverage < 0.5:
        raise DataError(f"{base.path}: the foundation's tokenizer encodes only "
                        f"{100 * coverage:.0f} % of the training utterances without <unk>; an "
                        "adapter keeps that tokenizer. Use --method full (a new tokenizer)")
    return asked, "--method"


def choose_tokenizer(base: BaseInfo, method: str, recipe: str, tier: str, asked: str,
                     vocab_size: int | None) -> tuple[str, int | None, str]:
    """(kind: char | bpe | ipa | base, BPE vocabulary size or None, why)."""
    if recipe == "lda":
        if asked not in ("auto",):
            raise DataError(f"--tokenizer {asked}: an adapter on a transducer foundation keeps "
                            "the foundation's tokenizer (its predictor and joiner are tied to it)")
        return "base", None, "the frozen foundation's predictor and joiner are tied to its tokenizer"
    if method == "phoneme":
        if asked not in ("auto", "ipa"):
            raise DataError(f"--tokenizer {asked}: --method phoneme trains IPA phones")
        return "ipa", None, "phoneme method: the new language's phones by espeak-ng G2P"
    rules = RULES[tier]
    if asked != "auto":
        kind = asked
        why = "--tokenizer"
    else:
        kind, why = rules.tokenizer, f"{rules.label} of data: " + (
            "characters need no text to learn a vocabulary from" if rules.tokenizer == "char"
            else "enough text for subwords, shorter targets")
    vocab = (vocab_size or rules.bpe_vocab or 256) if kind == "bpe" else None
    return kind, vocab, why


@dataclass
class Choice:
    """One row of the plan table."""

    setting: str
    value: str
    why: str


@dataclass
class Plan:
    """Every decision of a run (see the module doc), with its reasons."""

    method: str
    recipe: str
    tier: str
    tokenizer: str
    vocab_size: int | None
    targets: str
    adapter: dict[str, Any] | None
    train: dict[str, Any]
    """lr, max_steps, num_epochs, max_minutes, batch_seconds, specaugment,
    freeze_encoder_steps, patience, valid_every, warmup_steps."""
    pretrain: dict[str, Any] | None
    choices: list[Choice] = field(default_factory=list)

    def table(self) -> str:
        """The Markdown table of the choices."""
        rows = ["| setting | value | why |", "|---|---|---|"]
        rows += [f"| {c.setting} | {c.value} | {c.why} |" for c in self.choices]
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        data = dict(data)
        data["choices"] = [Choice(**c) for c in data.get("choices") or []]
        return cls(**data)


def _steps(seconds: float, batch: float, epochs: int, low: int, high: int) -> tuple[int, float]:
    per_epoch = max(1, math.ceil(seconds / batch))
    return max(low, min(high, epochs * per_epoch)), per_epoch


def _fmt_lr(lr: float) -> str:
    return f"{lr:.0e}".replace("e-0", "e-")


def make_plan(options: FinetuneOptions, base: BaseInfo, *, labelled_hours: float,
              train_seconds: float, longest_seconds: float, coverage: float | None,
              split_info: dict[str, Any] | None, related_info: dict[str, Any] | None,
              unlabelled_seconds: float | None) -> Plan:
    """Apply the rules to this base and data (a flag the user gave always wins).

    Args:
        labelled_hours: good labelled hours of ``--data`` (picks the tier).
        train_seconds: audio of the training set (related data included).
        longest_seconds: the longest training utterance (a batch must hold it).
        coverage: share of training utterances the base's tokenizer covers (None: none).
        split_info: :attr:`Split.info` of the held-out split (None: given sets).
        related_info, unlabelled_seconds: the optional stages' data (None: not asked for).
    """
    o = options
    tier = tier_of(labelled_hours)
    rules = RULES[tier]
    choices = [Choice("data", f"{labelled_hours:.3f} h labelled", f"tier {rules.label}: the "
                      "defaults below follow from it")]
    method, why = choose_method(base, "full" if o.from_scratch else o.method, coverage)
    if o.from_scratch:
        why = "--from-scratch: the whole model trains, from fresh weights"
    recipe, what = RECIPES[(base.kind, method)]
    choices += [Choice("base", base.describe(), str(base.path)),
                Choice("method", method, why), Choice("recipe", f"recipes/{recipe}", what)]
    if o.from_scratch:
        choices.append(Choice("initialisation", "fresh weights in the base's architecture "
                              "(only its feature normalisation statistics are copied)",
                              "--from-scratch: the control that shows what the base's "
                              "pretraining is worth"))
    tok, vocab, why = choose_tokenizer(base, method, recipe, tier, o.tokenizer, o.vocab_size)
    tok_value = {"base": f"the base's {base.tokenizer_kind}", "bpe": f"bpe {vocab}"}.get(tok, tok)
    choices.append(Choice("tokenizer", tok_value, why))
    targets = "ipa" if tok == "ipa" or (tok == "base" and base.tokenizer_kind == "ipa") else "text"
    if split_info is not None:
        from speechfm.finetune.report import duration

        sizes = ", ".join(f"{name} {split_info[name]['utterances']} utts / "
                          f"{duration(split_info[name]['hours'])}" for name in ("dev", "test")
                          if name in split_info)
        choices.append(Choice("held out", sizes, f"{split_info['rule']}; {100 * rules.held_out_fraction:.0f} "
                              f"% of the audio each (<= {rules.held_out_max_hours:g} h), seed {o.seed}"))
    if related_info is not None:
        from speechfm.finetune.report import duration

        choices.append(Choice("related data", f"{duration(related_info['taken']['hours'])} "
                              f"({related_info['taken']['utterances']} utts)",
                              f"--related-data mixed at --related-ratio {o.related_ratio:g} of the "
                              "new language's training audio"))

    adapter_method = method in ("adapter", "lora")
    batch = o.batch_seconds or max(longest_seconds, min(rules.batch_seconds, train_seconds / 8))
    choices.append(Choice("batch", f"{batch:.1f} s of audio",
                          "--batch-seconds" if o.batch_seconds else
                          f"tier {rules.label}: {rules.batch_seconds:g} s (at most 1/8 of the "
                          "training audio, at least the longest utterance)"))
    steps, per_epoch = _steps(train_seconds, batch, rules.epochs, rules.min_steps, rules.max_steps)
    num_epochs = None
    if o.max_steps:
        steps, why = o.max_steps, "--max-steps"
    elif o.epochs:
        steps, num_epochs, why = o.epochs * per_epoch, o.epochs, "--epochs"
    else:
        why = (f"tier {rules.label}: {rules.epochs} epochs of ~{per_epoch} batches, within "
               f"{rules.min_steps}-{rules.max_steps} updates")
    choices.append(Choice("updates", f"{steps} (~{steps / per_epoch:.1f} epochs)", why))
    if o.minutes:
        choices.append(Choice("time budget", f"{o.minutes:g} min", "--minutes (stops at "
                              "whichever budget ends first, with a checkpoint)"))
    lr = o.lr or (rules.lr_adapter if adapter_method else rules.lr_full)
    choices.append(Choice("peak lr", _fmt_lr(lr), "--lr" if o.lr else
                          f"tier {rules.label}, {'adapter' if adapter_method else 'whole-model'} "
                          "fine-tuning; AdamW, cosine decay"))
    warmup = max(1, round(WARMUP_FRACTION * steps))
    choices.append(Choice("warm-up", f"{warmup} updates", f"{100 * WARMUP_FRACTION:.0f} % of the updates"))
    if o.specaugment != "auto":
        specaug, why = o.specaugment == "on", "--specaugment"
    else:
        specaug = rules.specaugment
        why = (f"tier {rules.label}: " + ("many epochs over little data over-fit without it"
                                          if specaug else "few epochs under-fit; masking slows them"))
    choices.append(Choice("SpecAugment", "on" if specaug else "off", why))
    if o.freeze_encoder_steps is not None:
        freeze, why = o.freeze_encoder_steps, "--freeze-encoder-steps"
    elif o.from_scratch:
        freeze, why = 0, "--from-scratch: no pretrained encoder to protect from a random head"
    elif method == "full":
        freeze = round(rules.freeze_fraction * steps)
        why = (f"tier {rules.label}: {100 * rules.freeze_fraction:.0f} % of the updates train "
               "the new head alone first, so its random gradients spare the pretrained encoder")
    else:
        freeze = 0
        why = ("the encoder is frozen throughout" if adapter_method else
               "the re-mapped head already fits the encoder (Whistle fine-tunes all at once)")
    if adapter_method and o.freeze_encoder_steps:
        raise DataError("--freeze-encoder-steps: the encoder is frozen throughout with --method "
                        f"{method}")
    choices.append(Choice("encoder frozen for", f"{freeze} updates", why))
    valid_every = max(1, steps // VALIDATIONS_PER_RUN)
    patience = o.patience or rules.patience
    choices.append(Choice("validation", f"every {valid_every} updates on dev; early stop after "
                          f"{patience} without improvement",
                          ("--patience" if o.patience else f"tier {rules.label}") +
                          f"; {VALIDATIONS_PER_RUN} validations a run"))
    adapter = None
    if adapter_method:
        if method == "adapter":
            size = o.adapter_size or max(4, base.encoder_dim // rules.bottleneck_divisor)
            adapter = {"kind": "bottleneck", "options": {"bottleneck": size},
                       "points": ["after_block"], "layers": None}
            value = f"bottleneck {size} after every block"
        else:
            size = o.adapter_size or rules.lora_rank
            adapter = {"kind": "lora", "options": {"rank": size, "alpha": 2.0 * size},
                       "points": ["attn_q", "attn_v"], "layers": None}
            value = f"LoRA rank {size} (alpha {2 * size}) on attention q and v"
        if recipe == "lda":
            adapter = {"name": "lda", **adapter, "encoders": None}
            value += f", keyed by language {o.lang}"
        else:
            adapter = {"name": "finetune", **adapter}
        choices.append(Choice("adapter", value, "--adapter-size" if o.adapter_size else
                              f"tier {rules.label}: capacity grows with the data"))
    pretrain = None
    if unlabelled_seconds is not None:
        if base.encoder_layers < 2:
            raise DataError(f"{base.path}: continued pretraining (--unlabelled) needs an encoder "
                            f"of at least 2 layers (w2v-BERT's contrastive + MLM modules); it has "
                            f"{base.encoder_layers}")
        p_steps, p_epoch = _steps(unlabelled_seconds, batch, rules.pretrain_epochs,
                                  rules.pretrain_min_steps, rules.pretrain_max_steps)
        why = "--pretrain-steps" if o.pretrain_steps else (
            f"tier {rules.label}: {rules.pretrain_epochs} epochs of ~{p_epoch} batches, within "
            f"{rules.pretrain_min_steps}-{rules.pretrain_max_steps}")
        p_steps = o.pretrain_steps or p_steps
        pretrain = {"steps": p_steps, "lr": rules.pretrain_lr, "batch_seconds": batch,
                    "warmup_steps": max(1, round(WARMUP_FRACTION * p_steps)),
                    "max_minutes": o.pretrain_minutes,
                    "valid_every": max(1, p_steps // VALIDATIONS_PER_RUN)}
        from speechfm.finetune.report import duration

        choices.append(Choice("continued pretraining", f"w2v-BERT, {p_steps} updates on "
                              f"{duration(unlabelled_seconds / 3600)} of audio (--unlabelled + "
                              f"the training set), peak lr {_fmt_lr(rules.pretrain_lr)}",
                              why + "; then fine-tuning starts from that encoder"))
    train = {"lr": lr, "max_steps": steps, "num_epochs": num_epochs, "max_minutes": o.minutes,
             "batch_seconds": batch, "specaugment": specaug, "freeze_encoder_steps": freeze,
             "patience": patience, "valid_every": valid_every, "warmup_steps": warmup}
    return Plan(method=method, recipe=recipe, tier=tier, tokenizer=tok, vocab_size=vocab,
                targets=targets, adapter=adapter, train=train, pretrain=pretrain, choices=choices)
