#!/usr/bin/env python3
"""Transducer ASR recipe: the shared speech encoder, a stateless predictor and a joiner
trained with the pruned RNN-T loss (or the full loss), icefall style.

    python recipes/transducer/train.py CONFIG.yaml [--exp-dir DIR] [--resume] [--full-loss]
        [--print-config] [key=value ...]
    torchrun --nproc-per-node 2 recipes/transducer/train.py CONFIG.yaml ...   (data parallel)

CONFIG holds the fields of :class:`TransducerConfig` below: the run's settings
(:class:`speechfm.train.RunConfig`) plus the tokenizer, the transcript to learn, the CMVN
statistics, the model (``transducer_tiny`` ... ``transducer_large`` with overrides) and
``transducer_loss`` (:class:`speechfm.losses.transducer.TransducerLossConfig`), whose
defaults are icefall's pruned_transducer_stateless ones: prune range 5, lm_scale 0.25,
am_scale 0, the simple loss weighted 1.0 -> 0.5 while the pruned loss rises 0.1 -> 1.0
over ``warm_steps``. ``--full-loss`` trains with the full RNN-T loss over the whole
(T, U+1) lattice instead (memory O(N T U V): for small vocabularies or checking the pruned
loss against it). ``init_from=DIR`` starts the encoder from another model (CTC
pre-training of the encoder); ``model.ctc_head: true`` with ``transducer_loss.ctc_scale``
adds the auxiliary CTC loss (icefall's --use-ctc).

The run writes ``EXP/final``; decode it with ``speechfm decode EXP/final --cuts ...
[--method beam] [--streaming --chunk-size 16]`` or ``speechfm.load("EXP/final")``
(``.transcribe`` and ``.stream``). The exported weights are chosen by dev greedy CER.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from speechfm.losses.transducer import TransducerLossConfig
from speechfm.train import RunConfig


@dataclass(kw_only=True)
class TransducerConfig(RunConfig):
    """A transducer run: :class:`RunConfig` plus the tokenizer, targets, model and loss."""

    tokenizer: str
    """Tokenizer directory (bpe, unigram, char or ipa) saved by ``speechfm tokenizer train``."""
    targets: str = "auto"
    """Transcript to learn: "text", "ipa" (``custom["ipa"]``) or "auto" (ipa for an ipa tokenizer)."""
    cmvn: str | None = None
    """Global CMVN JSON (``speechfm features cmvn``) copied into the encoder's buffers."""
    model_size: str = "transducer_small"
    """Named size to start from: transducer_tiny, _small, _base or _large."""
    encoder_from_init: bool = False
    """Take the encoder's configuration (front end, normalisation, Conformer) from
    ``init_from``'s config.json, so a pretrained encoder (w2v-BERT, a converted checkpoint)
    is fine-tuned as it is; ``model.encoder`` overrides still apply on top."""
    model: dict[str, Any] = field(default_factory=dict)
    """Overrides of the model config's fields, nested
    (``{"encoder": {"conformer": {"conv_causal": true}}, "ctc_head": true}``)."""
    transducer_loss: TransducerLossConfig = field(default_factory=TransducerLossConfig)
    """Pruned (default) or full RNN-T loss and its weights."""
    valid_languages: list[str] = field(default_factory=list)
    """Languages whose dev CER/WER are also logged on their own at every validation
    (``valid/cer_<lang>``, ``valid/wer_<lang>``: per-language curves of a multilingual
    model); the checkpoint choice still uses the overall metric."""
    exp_dir: str = "exp/transducer"
    """Output directory of the run."""

    def validate(self) -> None:
        super().validate()
        if not self.tokenizer:
            raise ValueError("tokenizer must be set")
        if self.targets not in ("auto", "text", "ipa"):
            raise ValueError(f"targets must be auto, text or ipa, got {self.targets!r}")
        self.transducer_loss.validate()
        head = build_model_config(self, vocab_size=2).ctc_head
        if head != (self.transducer_loss.ctc_scale > 0):
            # a head without its loss would be an untrained layer (and unused under DDP)
            raise ValueError(
                f"model.ctc_head is {head} but transducer_loss.ctc_scale is "
                f"{self.transducer_loss.ctc_scale}: the CTC head and its loss go together")


def build_model_config(config, vocab_size: int):
    """The named size with the ``model`` overrides applied; the vocabulary is the tokenizer's
    (and with ``encoder_from_init`` the encoder is ``init_from``'s)."""
    from functools import partial

    from speechfm.config import named_config
    from speechfm.models import transducer as tr

    sizes = {f"transducer_{n}": partial(getattr(tr, f"transducer_{n}"), vocab_size)
             for n in ("tiny", "small", "base", "large")}
    replace = None
    if config.encoder_from_init:
        from speechfm.models.io import read_encoder_config

        if not config.init_from:
            raise ValueError("encoder_from_init needs init_from")
        replace = {"encoder": read_encoder_config(config.init_from)}
    return named_config(sizes, config.model_size, config.model, replace=replace,
                        fixed={"vocab_size": "it comes from the tokenizer"})


def train(config: TransducerConfig, *, resume: bool = False):
    """Train and export; returns the :class:`speechfm.train.RunResult`."""
    from speechfm.decode.asr import evaluate_recognizer
    from speechfm.models.transducer import create_transducer_model
    from speechfm.text import load_tokenizer
    from speechfm.text.targets import batch_targets, resolve_targets
    from speechfm.train import run
    from speechfm.train.runner import load_cuts, seed_run

    config.validate()
    seed_run(config)
    tokenizer = load_tokenizer(config.tokenizer)
    targets = resolve_targets(config.targets, tokenizer)
    model_config = build_model_config(config, tokenizer.vocab_size)
    model = create_transducer_model(model_config)
    model.encoder.load_cmvn(config.cmvn)
    dev_cuts = load_cuts(config.dev_cuts).to_eager() if config.dev_cuts else None
    loss_config = config.transducer_loss

    def loss_fn(net, batch, ctx):
        # Through the (DDP) wrapper's forward, so that gradients are synchronised.
        return net(dict(batch, targets=batch_targets(batch, tokenizer, targets)),
                   step=ctx.state.step, loss_config=loss_config)

    def validate(model, ctx):
        # The dev loss with the loss weights of the current step (the pruned loss' warm-up).
        return evaluate_recognizer(model, dev_cuts, tokenizer, targets=targets, device=ctx.device,
                                   max_duration=config.max_duration,
                                   world_size=ctx.info.world_size, rank=ctx.info.rank,
                                   loss_kwargs={"step": ctx.state.step, "loss_config": loss_config},
                                   languages=config.valid_languages or None)

    # The full loss leaves the simple-loss projections without gradient.
    unused = model_config.encoder.conformer.layer_drop > 0 or loss_config.kind == "full"
    return run(
        config, model=model, model_config=model_config, loss_fn=loss_fn,
        validate=validate if dev_cuts is not None else None,
        metric="per" if targets == "ipa" else "cer",
        parts={"tokenizer": tokenizer}, find_unused_parameters=unused,
        summary={"tokenizer": {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
                               "path": config.tokenizer},
                 "targets": targets, "model_size": config.model_size},
        resume=resume,
    )


def main(argv: list[str] | None = None) -> int:
    import yaml

    from speechfm.config import parse_recipe_args

    def options(parser) -> None:
        parser.add_argument("--full-loss", action="store_true",
                            help="train with the full RNN-T loss instead of the pruned one")
        parser.set_defaults(override_hooks=[
            lambda a: a.overrides.append("transducer_loss.kind=full") if a.full_loss else None])

    config, args = parse_recipe_args(argv, TransducerConfig, __doc__, extra=options)
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True), end="")
        return 0
    print(f"model: {train(config, resume=args.resume).final_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
