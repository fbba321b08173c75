#!/usr/bin/env python3
"""Language-dependent adapters (LDA) for tail languages of a frozen multilingual streaming
transducer ("Efficient Adapter Finetuning for Tail Languages in Streaming Multilingual
ASR"): one small adapter per language is the only thing that trains.

    python recipes/lda/train.py CONFIG.yaml [--exp-dir DIR] [--resume] [--print-config]
        [key=value ...]

The foundation (``foundation``: a transducer model directory, normally a cascaded one:
causal streaming encoder + full-context second encoder, trained with
``recipes/transducer``) is loaded frozen; residual bottleneck adapters keyed by
``language`` go into every block of the encoders ``adapter.encoders`` names; only they
train, on ``train_cuts`` (that language's labelled utterances, plus pseudo-labelled ones
for the noisy student: ``recipes/lda/pseudo_label.py``).  Frozen modules stay in eval
mode (no dropout, no BatchNorm statistics updates: the base weights stay bit-identical);
SpecAugment (``specaugment``) and speed perturbation (``speed_perturb``) are the student's
noise.  The run exports the kept checkpoint with the best dev WER (``average: best``;
``select_metric: cer`` picks by CER) and
writes that language's adapter file, ``EXP/adapter/<language>.safetensors`` (+ .json):
attach it with ``speechfm.load(foundation, adapters=[...])`` or merge several languages'
into one model directory with ``recipes/lda/merge.py``.

With ``method: full`` the whole model trains instead (the full fine-tuning baseline of the
paper's comparison; no adapter file).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Any

from speechfm.losses.transducer import TransducerLossConfig
from speechfm.train import RunConfig

log = logging.getLogger("speechfm.recipes.lda")

DEFAULT_ADAPTER = {"name": "lda", "kind": "bottleneck", "options": {"bottleneck": 32},
                   "points": ["after_block"], "layers": None, "encoders": None}
"""A residual bottleneck adapter after every block of every encoder."""


@dataclass(kw_only=True)
class LdaConfig(RunConfig):
    """One tail language's adapter run: :class:`RunConfig` plus the foundation, the
    language, the adapter and the loss."""

    foundation: str
    """The frozen multilingual transducer's model directory (its tokenizer is used)."""
    language: str
    """The language whose adapter trains (the cuts' supervision language)."""
    method: str = "adapter"
    """"adapter" (only this language's adapter trains) or "full" (every weight: the full
    fine-tuning baseline)."""
    adapter: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_ADAPTER))
    """The adapter: ``name``, ``kind`` (see :mod:`speechfm.nn.adapters`), ``options``
    (e.g. ``{"bottleneck": 32}``), ``points``, ``layers`` (None = every block) and
    ``encoders`` ("first" and/or "second"; None = every encoder of the foundation)."""
    specaugment: bool = True
    """SpecAugment on the training batches (the noisy student's input noise)."""
    targets: str = "auto"
    """Transcript to learn: "text", "ipa" or "auto" (the tokenizer's kind)."""
    transducer_loss: TransducerLossConfig = field(
        default_factory=lambda: TransducerLossConfig(warm_steps=0))
    """The loss (a trained foundation needs no pruned-loss warm-up)."""
    valid_final_pass: bool = True
    """Select checkpoints on the final (cascaded) pass; False: the streaming (first) pass."""
    select_metric: str = "wer"
    """Dev metric that picks the exported checkpoint: "wer" (the paper's) or "cer" (for a
    foundation whose WER is near 100 %, where WER barely moves and CER still does)."""
    average: str = "best"
    exp_dir: str = "exp/lda"

    def validate(self) -> None:
        super().validate()
        if not self.foundation or not self.language:
            raise ValueError("foundation and language must be set")
        if self.select_metric not in ("wer", "cer"):
            raise ValueError(f"select_metric must be wer or cer, got {self.select_metric!r}")
        if self.method not in ("adapter", "full"):
            raise ValueError(f"method must be adapter or full, got {self.method!r}")
        for key in ("name", "kind", "points"):
            if not self.adapter.get(key):
                raise ValueError(f"adapter.{key} must be set")
        unknown = sorted(set(self.adapter) - set(DEFAULT_ADAPTER))
        if unknown:
            raise ValueError(f"adapter has unknown keys {unknown}")
        self.transducer_loss.validate()


def adapter_spec(config: LdaConfig) -> dict[str, Any]:
    """The transducer config's ``adapters`` entry for this language."""
    spec = {k: v for k, v in config.adapter.items() if v is not None}
    spec["options"] = dict(spec.get("options") or {})
    spec["languages"] = [config.language]
    return spec


def build_model(config: LdaConfig):
    """(model, model config): the foundation's architecture and weights, plus this
    language's adapter (method adapter), everything but the adapter frozen."""
    from speechfm.errors import DataError
    from speechfm.models.io import build_model as build_from_meta
    from speechfm.models.io import load_state_strict, read_model_config, read_weights
    from speechfm.nn.adapters import base_state_dict, freeze_all_but

    meta = read_model_config(config.foundation)
    if meta["family"] != "transducer":
        raise DataError(f"{config.foundation}: a {meta['family']} model; LDA needs a transducer")
    model_meta = dict(meta, model=dict(meta["model"]))
    model_meta["model"]["encoder"] = dict(model_meta["model"]["encoder"],
                                          specaugment=config.specaugment)
    if config.method == "adapter":
        taken = [a for a in model_meta["model"].get("adapters") or []
                 if a.get("name") == config.adapter["name"]
                 and config.language in (a.get("languages") or [])]
        if taken:
            raise DataError(f"{config.foundation} already has adapter "
                            f"{config.adapter['name']}@{config.language}")
        model_meta["model"]["adapters"] = list(model_meta["model"].get("adapters") or []) + [
            adapter_spec(config)]
    model, model_config = build_from_meta(model_meta, config.foundation)
    weights = read_weights(config.foundation, meta)
    if config.method == "adapter":
        own = model.state_dict()
        weights = {**{k: v for k, v in own.items() if k not in base_state_dict(model)},
                   **weights}
    load_state_strict(model, weights, config.foundation)
    if config.method == "adapter":
        freeze_all_but(model, config.adapter["name"], config.language)
    return model, model_config


def train(config: LdaConfig, *, resume: bool = False):
    """Train and export; returns the :class:`speechfm.train.RunResult` (with
    ``adapter_file`` in its summary for method adapter)."""
    import json
    from pathlib import Path

    from speechfm.decode.asr import evaluate_recognizer
    from speechfm.models.adapter_store import base_model_hash, export_adapter, save_adapter
    from speechfm.models.io import load_model_dir, load_part
    from speechfm.nn.adapters import count_parameters
    from speechfm.text.targets import batch_targets, resolve_targets
    from speechfm.train import run
    from speechfm.train.optim import keep_frozen_in_eval
    from speechfm.train.runner import load_cuts, seed_run

    config.validate()
    seed_run(config)
    tokenizer = load_part(config.foundation, "tokenizer")
    if tokenizer is None:
        raise ValueError(f"{config.foundation}: the foundation has no tokenizer")
    targets = resolve_targets(config.targets, tokenizer)
    model, model_config = build_model(config)
    base_hash = base_model_hash(model)
    lang = config.language
    if config.method == "adapter":
        # Frozen blocks never apply dropout or update BatchNorm statistics; SpecAugment
        # (no parameters) stays on in training mode.
        keep_frozen_in_eval(model, ["encoder.conformer.", "second_encoder.", "predictor.",
                                    "joiner.", "simple_", "ctc_output."])
    trainable = count_parameters(model, trainable_only=True)
    total = count_parameters(model)
    log.info("%s %s: %d trainable of %d parameters (%.2f %%)", config.method, lang, trainable,
             total, 100.0 * trainable / total)
    dev_cuts = load_cuts(config.dev_cuts).to_eager() if config.dev_cuts else None
    if dev_cuts is not None:
        dev_cuts = dev_cuts.filter(lambda c: c.supervisions[0].language == lang).to_eager()
        if len(dev_cuts) == 0:
            raise ValueError(f"{config.dev_cuts}: no {lang} utterance to validate on")
    loss_config = config.transducer_loss
    search = {"language": lang, "final_pass": config.valid_final_pass}

    def loss_fn(net, batch, ctx):
        return net(dict(batch, targets=batch_targets(batch, tokenizer, targets)),
                   step=ctx.state.step, loss_config=loss_config, language=lang)

    def validate(model, ctx):
        return evaluate_recognizer(model, dev_cuts, tokenizer, targets=targets,
                                   device=ctx.device, max_duration=config.max_duration,
                                   world_size=ctx.info.world_size, rank=ctx.info.rank,
                                   search_kwargs=search,
                                   loss_kwargs={"step": ctx.state.step, "loss_config": loss_config,
                                                "language": lang})

    summary = {"language": lang, "method": config.method, "foundation": config.foundation,
               "base_hash": base_hash, "trainable_parameters": trainable,
               "total_parameters": total}
    result = run(config, model=model, model_config=model_config, loss_fn=loss_fn,
                 validate=validate if dev_cuts is not None else None,
                 metric=config.select_metric,
                 parts={"tokenizer": tokenizer}, find_unused_parameters=True,
                 summary=summary, resume=resume)
    if config.method == "adapter":
        final = load_model_dir(result.final_dir, tokenizer=False).module
        if base_model_hash(final) != base_hash:
            raise RuntimeError(f"{result.final_dir}: the base weights changed in training")
        dev = (result.summary.get("average") or {}).get("candidates", {}).get(
            (result.summary.get("average") or {}).get("chosen"), {})
        adapter = export_adapter(
            final, config.adapter["name"], lang, spec=adapter_spec(config), base_hash=base_hash,
            extra={"foundation": str(config.foundation), "trainable_share": trainable / total,
                   "dev": {k: v for k, v in dev.items() if isinstance(v, (int, float))},
                   "chosen": (result.summary.get("average") or {}).get("chosen")})
        file = save_adapter(adapter, Path(config.exp_dir) / "adapter" / lang)
        log.info("adapter %s@%s: %d parameters (%.2f %% of the model) -> %s",
                 adapter.name, lang, adapter.meta["num_params"],
                 100.0 * adapter.meta["num_params"] / total, file)
        summary_file = Path(config.exp_dir) / "train_summary.json"
        data = json.loads(summary_file.read_text(encoding="utf-8"))
        data["adapter_file"] = str(file)
        summary_file.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        result.summary["adapter_file"] = str(file)
    return result


def main(argv: list[str] | None = None) -> int:
    import yaml

    from speechfm.config import parse_recipe_args

    config, args = parse_recipe_args(argv, LdaConfig, __doc__)
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True), end="")
        return 0
    result = train(config, resume=args.resume)
    print(f"model: {result.final_dir}")
    if "adapter_file" in result.summary:
        print(f"adapter: {result.summary['adapter_file']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
