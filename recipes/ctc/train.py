#!/usr/bin/env python3
"""CTC ASR recipe: the shared speech encoder with a linear CTC head, trained on lhotse cuts.

    python recipes/ctc/train.py CONFIG.yaml [--exp-dir DIR] [--resume] [--print-config]
        [key=value ...]
    torchrun --nproc-per-node 2 recipes/ctc/train.py CONFIG.yaml ...   (data parallel)

CONFIG holds the fields of :class:`CtcConfig` below: the run's settings
(:class:`speechfm.train.RunConfig`: data, budget, optimizer, schedule, checkpoints) plus
the tokenizer, the transcript to learn, the CMVN statistics and the model (a named size
with overrides, e.g. ``model.encoder.conformer.num_layers=8``). ``configs/`` has the
recipe's configurations. The run writes ``EXP/final`` (decode it with
``speechfm decode EXP/final --cuts ...`` or ``speechfm.load("EXP/final")``), resumable
checkpoints, TensorBoard logs, curves.png and train_summary.json; the exported weights
are the best of last / averaged / running-average weights by dev greedy CER (PER for
IPA targets).

With ``adapter`` set (parameter-efficient fine-tuning of the ``init_from`` encoder), only a
new adapter in the Conformer blocks and the CTC head train; the encoder stays frozen and
bit-identical, and the export is a plain ``ctc`` directory whose ``adapters/`` part holds
the adapter (``speechfm.load`` attaches it).

This file is the template of a new recipe: a config dataclass embedding ``RunConfig``,
a model built from it, a loss function, a validation function, and ``speechfm.train.runner``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, ClassVar

from speechfm.models.ctc.config import CtcModelConfig
from speechfm.train import RunConfig


@dataclass(kw_only=True)
class CtcConfig(RunConfig):
    """A CTC run: :class:`RunConfig` plus the tokenizer, targets and model."""

    tokenizer: str
    """Tokenizer directory (bpe, unigram, char or ipa) saved by ``speechfm tokenizer train``."""
    targets: str = "auto"
    """Transcript to learn: "text", "ipa" (``custom["ipa"]``) or "auto" (ipa for an ipa tokenizer)."""
    cmvn: str | None = None
    """Global CMVN JSON (``speechfm features cmvn``) copied into the encoder's buffers."""
    model_size: str = "ctc_small"
    """Named size to start from: ctc_tiny, ctc_small, ctc_base or ctc_large."""
    encoder_from_init: bool = False
    """Take the encoder's configuration (front end, normalisation, Conformer) from
    ``init_from``'s config.json, so a pretrained encoder (w2v-BERT, a converted checkpoint)
    is fine-tuned as it is; ``model.encoder`` overrides still apply on top."""
    model: dict[str, Any] = field(default_factory=dict)
    """Overrides of the model config's fields, nested
    (``{"encoder": {"conformer": {"dim": 144}, "specaugment": false}}``)."""
    adapter: dict[str, Any] | None = None
    """Parameter-efficient fine-tuning: one language-independent adapter ``{"name", "kind",
    "options", "points", "layers"}`` (:mod:`speechfm.nn.adapters`: e.g. ``bottleneck`` at
    ``after_block``, ``lora`` at ``attn_q``/``attn_v``) in the Conformer blocks of the
    ``init_from`` encoder (needs ``init_from``), which stays frozen in eval mode (no
    dropout, no BatchNorm updates); only the adapter and the CTC head train. The export is
    a ``ctc`` model directory (frozen encoder + new head) whose ``adapters/`` part holds the
    adapter. None = no adapter."""
    exp_dir: str = "exp/ctc"
    """Output directory of the run."""

    def validate(self) -> None:
        super().validate()
        if not self.tokenizer:
            raise ValueError("tokenizer must be set")
        if self.targets not in ("auto", "text", "ipa"):
            raise ValueError(f"targets must be auto, text or ipa, got {self.targets!r}")
        if self.adapter is not None:
            from speechfm.nn.adapters import CONFORMER_POINTS, check_adapter_specs

            if not self.init_from:
                raise ValueError("adapter needs init_from (the encoder it adapts, frozen)")
            check_adapter_specs([self.adapter], CONFORMER_POINTS)
        build_model_config(self, vocab_size=2)  # the size and every override are valid


def build_model_config(config, vocab_size: int):
    """The named size with the ``model`` overrides applied; the vocabulary is the tokenizer's
    (and with ``encoder_from_init`` the encoder is ``init_from``'s)."""
    from functools import partial

    from speechfm.config import named_config
    from speechfm.models import ctc

    sizes = {f"ctc_{n}": partial(getattr(ctc, f"ctc_{n}"), vocab_size)
             for n in ("tiny", "small", "base", "large")}
    replace = None
    if config.encoder_from_init:
        from speechfm.models.io import read_encoder_config

        if not config.init_from:
            raise ValueError("encoder_from_init needs init_from")
        replace = {"encoder": read_encoder_config(config.init_from)}
    return named_config(sizes, config.model_size, config.model, replace=replace,
                        fixed={"vocab_size": "it comes from the tokenizer"})


@dataclass(kw_only=True)
class AdaptedCtcModelConfig(CtcModelConfig):
    """A CTC model with adapters in its Conformer blocks, while ``adapter`` trains: the
    checkpoints' family (registered by :func:`train`); the export is a plain ``ctc``
    directory with the adapter as its ``adapters/`` part (:func:`export_with_adapter_part`)."""

    family: ClassVar[str] = "ctc_adapter_training"
    adapters: list[dict[str, Any]] = field(default_factory=list)
    """The adapters (``{"name", "kind", "options", "points", "layers"}`` each)."""

    def validate(self) -> None:
        from speechfm.nn.adapters import CONFORMER_POINTS, check_adapter_specs

        super().validate()
        check_adapter_specs(self.adapters, CONFORMER_POINTS)


def create_adapted_ctc_model(config: AdaptedCtcModelConfig):
    """The CTC model of ``config`` with its adapters added (fresh weights)."""
    from speechfm.models.ctc import create_ctc_model
    from speechfm.nn.adapters import adapter_factory

    model = create_ctc_model(config)
    for spec in config.adapters:
        model.encoder.conformer.add_adapter(
            spec["name"], adapter_factory(spec["kind"], **(spec.get("options") or {})),
            points=spec["points"], layers=spec.get("layers"))
    return model


def export_with_adapter_part(final_dir, model_config: AdaptedCtcModelConfig, tokenizer, *,
                             init_from: str) -> None:
    """Rewrite the run's export as a ``ctc`` directory (frozen encoder + trained head) with
    each adapter as a file of its ``adapters/`` part, checking that the encoder's own
    weights are still ``init_from``'s, bit for bit."""
    import dataclasses

    import torch

    from speechfm.models.adapter_store import base_model_hash, export_adapter
    from speechfm.models.io import load_state_strict, read_weights, save_model_dir
    from speechfm.nn.adapters import base_state_dict

    model = create_adapted_ctc_model(model_config)
    load_state_strict(model, read_weights(final_dir), final_dir)
    base = base_state_dict(model)
    start = read_weights(init_from)
    changed = [k for k, v in base.items() if k.startswith("encoder.") and k in start
               and not torch.equal(v.cpu(), start[k].to(v.dtype))]
    if changed:
        raise RuntimeError(f"{final_dir}: frozen encoder weights changed in training: {changed[:5]}")
    plain = CtcModelConfig(**{f.name: getattr(model_config, f.name)
                              for f in dataclasses.fields(CtcModelConfig)})
    base_hash = base_model_hash(base)
    adapters = {spec["name"]: export_adapter(model, spec["name"], None, spec=spec,
                                             base_hash=base_hash)
                for spec in model_config.adapters}
    save_model_dir(final_dir, base, plain, parts={"tokenizer": tokenizer, "adapters": adapters})


def train(config: CtcConfig, *, resume: bool = False):
    """Train and export; returns the :class:`speechfm.train.RunResult`."""
    from speechfm.decode.asr import evaluate_recognizer
    from speechfm.models.ctc import create_ctc_model
    from speechfm.text import load_tokenizer
    from speechfm.text.targets import batch_targets, resolve_targets
    from speechfm.train import run
    from speechfm.train.runner import load_cuts, seed_run

    config.validate()
    seed_run(config)
    tokenizer = load_tokenizer(config.tokenizer)
    targets = resolve_targets(config.targets, tokenizer)
    model_config = build_model_config(config, tokenizer.vocab_size)
    if config.adapter is None:
        model = create_ctc_model(model_config)
    else:
        import dataclasses

        from speechfm.models.io import ModelFamily, register_family
        from speechfm.nn.adapters import freeze_all_but_adapters
        from speechfm.train.optim import keep_frozen_in_eval

        register_family(ModelFamily(AdaptedCtcModelConfig.family, AdaptedCtcModelConfig,
                                    create_adapted_ctc_model))
        model_config = AdaptedCtcModelConfig(
            **{f.name: getattr(model_config, f.name) for f in dataclasses.fields(model_config)},
            adapters=[{k: v for k, v in config.adapter.items() if v is not None}])
        model = create_adapted_ctc_model(model_config)
        freeze_all_but_adapters(model)
        model.head.requires_grad_(True)
        keep_frozen_in_eval(model, ["encoder."])
    model.encoder.load_cmvn(config.cmvn)
    dev_cuts = load_cuts(config.dev_cuts).to_eager() if config.dev_cuts else None

    def loss_fn(net, batch, ctx):
        return net(dict(batch, targets=batch_targets(batch, tokenizer, targets)))

    def validate(model, ctx):
        return evaluate_recognizer(model, dev_cuts, tokenizer, targets=targets, device=ctx.device,
                                   max_duration=config.max_duration,
                                   world_size=ctx.info.world_size, rank=ctx.info.rank)

    result = run(
        config, model=model, model_config=model_config, loss_fn=loss_fn,
        validate=validate if dev_cuts is not None else None,
        metric="per" if targets == "ipa" else "cer",
        parts={"tokenizer": tokenizer},
        find_unused_parameters=model_config.encoder.conformer.layer_drop > 0,
        summary={"tokenizer": {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
                               "path": config.tokenizer},
                 "targets": targets, "model_size": config.model_size,
                 **({"adapter": config.adapter} if config.adapter is not None else {})},
        resume=resume,
    )
    if config.adapter is not None and result.summary:  # rank 0 exported
        export_with_adapter_part(result.final_dir, model_config, tokenizer,
                                 init_from=config.init_from)
    return result


def main(argv: list[str] | None = None) -> int:
    import yaml

    from speechfm.config import parse_recipe_args

    config, args = parse_recipe_args(argv, CtcConfig, __doc__)
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True), end="")
        return 0
    print(f"model: {train(config, resume=args.resume).final_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
