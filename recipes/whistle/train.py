#!/usr/bin/env python3
"""Whistle recipe: weakly phonetic (IPA) multilingual CTC pretraining and crosslingual
fine-tuning ("Whistle: Data-Efficient Multilingual and Crosslingual Speech Recognition via
Weakly Phonetic Supervision"; the authors' pipeline is CAT's egs/cv-lang10).

    python recipes/whistle/train.py CONFIG.yaml [--exp-dir DIR] [--resume] [key=value ...]

The model is the shared speech encoder with a linear CTC head, as in ``recipes/ctc``; what
Whistle adds:

* **Named sizes of the paper** (CAT's configs for Multi._phoneme_S/M/L: VGG front end,
  Conformer kernel 15, 4 heads; SpecAugment with 2 frequency masks of up to 35 % of the
  bins and 10 time masks of up to 5 % of the utterance; Adam (0.9, 0.98), Noam warm-up) plus
  CPU sizes (:data:`SIZES`).
* **Phoneme fine-tuning with output-layer re-mapping** (``head_from_init``): the encoder
  comes from ``init_from`` and the output rows of the phones the new language shares with
  the pretraining inventory are copied (:func:`speechfm.models.ctc.head.init_head_from`);
  new phones start from the fresh head. Subword fine-tuning is the same run with a BPE
  tokenizer and a new head (``head_from_init: false``); from scratch drops ``init_from``.
* **Word decoding parts**: ``lexicon`` (word -> phones) and ``lm`` (a ``speechfm lm
  train`` directory) are stored in the exported model directory so that
  ``speechfm.load(dir).transcribe(audio, words=True)`` decodes to words through a
  lexicon + n-gram graph.

The run writes ``EXP/final``, resumable checkpoints, TensorBoard logs, curves.png and
train_summary.json; the exported weights are the best by dev PER (CER for subword/char
targets).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from speechfm.train import RunConfig

# CAT's cv-lang10 Multi._phoneme_{S,M,L}/config.json, in speechfm's terms. CAT's
# SpecAugment: freq_mask_width_range 0.35 (of 80 bins: 28), 2 frequency masks, 10 time
# masks of time_mask_width_range 0.05 (of the utterance). Its L model has 4 heads of 224
# (attention width 896 inside a 1024 model); speechfm's attention width is the model's, so
# L here has 4 heads of 256 (a few % more parameters: see tests/recipes/test_whistle.py).
_PAPER_SPECAUG = {"num_freq_masks": 2, "freq_mask_width": 28, "num_time_masks": 10,
                  "time_mask_multiplicity": 1.0, "time_mask_max_frac": 0.05}
_PAPER = {"front_end": "vgg", "subsampling_factor": 4, "num_heads": 4, "conv_kernel": 15,
          "pos_type": "rel_pos", "dropout": 0.1}
SIZES: dict[str, dict[str, Any]] = {
    # paper sizes (S: 89.98 M parameters in CAT's readme with V=75)
    "whistle_S": {"conformer": dict(_PAPER, dim=512, num_layers=14, ffn_dim=2048),
                  "specaug": _PAPER_SPECAUG},
    "whistle_M": {"conformer": dict(_PAPER, dim=640, num_layers=22, ffn_dim=2560),
                  "specaug": _PAPER_SPECAUG},
    "whistle_L": {"conformer": dict(_PAPER, dim=1024, num_layers=22, ffn_dim=4096),
                  "specaug": _PAPER_SPECAUG},
    # CPU sizes. whistle_small is the Conformer of w2v_bert_small (frame stacking by 2,
    # 6 x 192, kernel 15, Shaw relative positions, per-utterance normalisation), so that the
    # phoneme, subword and self-supervised pretrainings of egs/mini_cv_lang/whistle share
    # one encoder. SpecAugment and dropout off: at a few thousand CPU updates they only
    # slowed convergence (the mini_cv_lang CTC probing runs, egs/mini_cv_lang/RESULTS.md).
    "whistle_small": {"conformer": {"front_end": "stack", "subsampling_factor": 2,
                                    "dim": 192, "num_layers": 6, "num_heads": 4,
                                    "ffn_dim": 768, "conv_kernel": 15,
                                    "conv_norm": "batch_norm", "pos_type": "relative_key",
                                    "dropout": 0.0},
                      "normalization": "utterance", "specaugment": False},
    "whistle_tiny": {"conformer": {"front_end": "stack", "subsampling_factor": 2, "dim": 32,
                                   "num_layers": 1, "num_heads": 2, "ffn_dim": 64,
                                   "conv_kernel": 5, "pos_type": "relative_key",
                                   "dropout": 0.0},
                     "normalization": "utterance", "specaugment": False},
}


@dataclass(kw_only=True)
class WhistleConfig(RunConfig):
    """A Whistle run: :class:`RunConfig` plus the tokenizer, targets, model and decoding parts."""

    tokenizer: str
    """Tokenizer directory: ipa (phoneme CTC), bpe/unigram (subword) or char."""
    targets: str = "auto"
    """Transcript to learn: "text", "ipa" or "auto" (ipa for an ipa tokenizer)."""
    cmvn: str | None = None
    """Global CMVN JSON copied into the encoder's buffers (fine-tunes keep init_from's
    when ``encoder_from_init``)."""
    model_size: str = "whistle_small"
    """One of :data:`SIZES`: whistle_S/M/L (the paper's) or whistle_small/tiny (CPU)."""
    encoder_from_init: bool = False
    """Take the encoder's configuration from ``init_from``'s config.json (fine-tuning)."""
    head_from_init: bool = False
    """Copy the output rows of the tokens ``init_from``'s tokenizer shares with this
    run's (phoneme fine-tuning with output-layer re-mapping); needs ``init_from``."""
    lexicon: str | None = None
    """lexicon.txt (word phone ...) stored in the exported model (word decoding)."""
    lm: str | None = None
    """A ``speechfm lm train`` directory (lm.arpa, words.txt, G.fst) whose decoding graph,
    built with ``lexicon`` (or over tokens without one), is stored in the exported model."""
    model: dict[str, Any] = field(default_factory=dict)
    """Overrides of the model config's fields, nested."""
    exp_dir: str = "exp/whistle"
    """Output directory of the run."""

    def validate(self) -> None:
        super().validate()
        if not self.tokenizer:
            raise ValueError("tokenizer must be set")
        if self.targets not in ("auto", "text", "ipa"):
            raise ValueError(f"targets must be auto, text or ipa, got {self.targets!r}")
        if self.head_from_init and not self.init_from:
            raise ValueError("head_from_init needs init_from")
        build_model_config(self, vocab_size=2)


def _size(name: str, vocab_size: int):
    from speechfm.config import override_dataclass
    from speechfm.models.ctc import ctc_small

    return override_dataclass(ctc_small(vocab_size), {"encoder": SIZES[name]}, "model")


def build_model_config(config: WhistleConfig, vocab_size: int):
    """The named size with the ``model`` overrides applied (the encoder from ``init_from``
    with ``encoder_from_init``)."""
    from functools import partial

    from speechfm.config import named_config

    sizes = {name: partial(_size, name, vocab_size) for name in SIZES}
    replace = None
    if config.encoder_from_init:
        from speechfm.models.io import read_encoder_config

        if not config.init_from:
            raise ValueError("encoder_from_init needs init_from")
        replace = {"encoder": read_encoder_config(config.init_from)}
    return named_config(sizes, config.model_size, config.model, replace=replace,
                        fixed={"vocab_size": "it comes from the tokenizer"})


def train(config: WhistleConfig, *, resume: bool = False):
    """Train and export; returns the :class:`speechfm.train.RunResult`."""
    from speechfm.decode.asr import evaluate_recognizer
    from speechfm.models.ctc import create_ctc_model
    from speechfm.models.ctc.head import init_head_from
    from speechfm.text import load_tokenizer
    from speechfm.text.targets import batch_targets, resolve_targets
    from speechfm.train import run
    from speechfm.train.runner import load_cuts, seed_run

    config.validate()
    seed_run(config)
    tokenizer = load_tokenizer(config.tokenizer)
    targets = resolve_targets(config.targets, tokenizer)
    model_config = build_model_config(config, tokenizer.vocab_size)
    model = create_ctc_model(model_config)
    model.encoder.load_cmvn(config.cmvn)
    remap = None
    if config.head_from_init:
        remap = init_head_from(model, config.init_from, tokenizer.tokens)
    parts: dict[str, Any] = {"tokenizer": tokenizer}
    if config.lexicon:
        from speechfm.models.io import PARTS

        parts["lexicon"] = PARTS["lexicon"].load(config.lexicon)
    if config.lm:
        from speechfm.decode.graph import graph_for_model

        parts["graph"] = graph_for_model(tokenizer, parts.get("lexicon"), config.lm)
    dev_cuts = load_cuts(config.dev_cuts).to_eager() if config.dev_cuts else None

    def loss_fn(net, batch, ctx):
        return net(dict(batch, targets=batch_targets(batch, tokenizer, targets)))

    def validate(model, ctx):
        return evaluate_recognizer(model, dev_cuts, tokenizer, targets=targets, device=ctx.device,
                                   max_duration=config.max_duration,
                                   world_size=ctx.info.world_size, rank=ctx.info.rank)

    return run(
        config, model=model, model_config=model_config, loss_fn=loss_fn,
        validate=validate if dev_cuts is not None else None,
        metric="per" if targets == "ipa" else "cer",
        parts=parts,
        find_unused_parameters=model_config.encoder.conformer.layer_drop > 0,
        summary={"tokenizer": {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
                               "path": config.tokenizer},
                 "targets": targets, "model_size": config.model_size,
                 "head_remap": remap.summary() if remap is not None else None},
        resume=resume,
    )


def main(argv: list[str] | None = None) -> int:
    import yaml

    from speechfm.config import parse_recipe_args

    config, args = parse_recipe_args(argv, WhistleConfig, __doc__)
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True), end="")
        return 0
    print(f"model: {train(config, resume=args.resume).final_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
