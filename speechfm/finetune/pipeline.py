"""``speechfm finetune``'s stages: data -> [continued pretraining] -> fine-tuning -> export
-> evaluation -> RESULTS.md, each run by an existing recipe's ``train(config)``.

Layout of the output directory EXP::

    finetune.json          the options of the run (a --resume must repeat them)
    plan.json, PLAN.md     every choice with its reason (speechfm.finetune.plan)
    data/                  train/dev/test (+ pretrain) manifests, tokenizer/, data.json,
                           bad_items.tsv (every item left out, by set, id and reason)
    pretrain/              the w2v-BERT run (recipes/w2v_bert) and merged/: the base model
                           with the continued-pretrained encoder
    train/                 the fine-tuning run of recipes/ctc, transducer, whistle or lda
    final/                 the model directory (speechfm.load(EXP/final).transcribe(...))
    eval/dev, eval/test    decode_manifest's hyps, errs and results
    RESULTS.md             dev/test WER/CER, the command, the data summary, the settings
    .<stage>.done          markers: --resume skips finished stages and resumes the
                           interrupted one exactly (the run function's checkpoints)

Recipes are scripts, not a package: they are imported from the ``recipes/`` folder of the
source checkout (as ``speechfm train`` runs them), under the module names the tests'
recipe loader uses.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from speechfm.errors import DataError, SpeechfmError
from speechfm.finetune.plan import (
    TRANSDUCER,
    BaseInfo,
    FinetuneOptions,
    Plan,
    inspect_base,
    make_plan,
)

__all__ = ["RECIPES_DIR", "finetune", "load_recipe", "merge_encoder", "merge_language_adapter"]

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"
"""recipes/ of the source checkout speechfm runs from."""

Echo = Callable[[str], None]


def load_recipe(name: str):
    """``recipes/<name>/train.py`` as a module (cached under ``_speechfm_recipe_<name>``).

    Raises:
        SpeechfmError: no such recipe (speechfm finetune runs the recipes of a source checkout).
    """
    key = f"_speechfm_recipe_{name}"
    if key in sys.modules:
        return sys.modules[key]
    path = RECIPES_DIR / name / "train.py"
    if not path.is_file():
        raise SpeechfmError(f"{path} is missing: speechfm finetune runs the recipes of a "
                            "source checkout")
    spec = importlib.util.spec_from_file_location(key, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module  # dataclasses look their module up while the class is built
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[key]
        raise
    return module


def _done(exp: Path, stage: str) -> Path:
    return exp / f".{stage}.done"


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _check_exp(exp: Path, options: FinetuneOptions) -> None:
    saved = exp / "finetune.json"
    if not options.resume:
        if exp.exists() and any(exp.iterdir()):
            raise DataError(f"{exp} exists: pass --resume to continue that run, or choose "
                            "another --out")
        return
    if saved.is_file():
        before = json.loads(saved.read_text(encoding="utf-8"))
        now = options.to_dict()
        differ = sorted(k for k in now if k not in FinetuneOptions.RUN_ONLY
                        and before.get(k) != now[k])
        if differ:
            raise DataError(f"{exp}: --resume with other settings than the run it continues: "
                            + "; ".join(f"{k}: {before.get(k)!r} then, {now[k]!r} now"
                                        for k in differ))


# ------------------------------------------------------------------------- data stage


def _g2p(sets: dict[str, list], lang: str, tokenizer_hint, echo: Echo) -> dict[str, list]:
    """Fill each supervision's ``custom["ipa"]`` by espeak-ng G2P where missing; items
    whose transcript gives no phones are reported and left out."""
    from lhotse.utils import fastcopy

    from speechfm.text.ipa import phonemize

    strip = {k: bool(getattr(tokenizer_hint, k, False))
             for k in ("strip_stress", "strip_length", "strip_tones")}
    out = {}
    for name, cuts in sets.items():
        todo: dict[str, list[int]] = {}
        for i, cut in enumerate(cuts):
            sup = cut.supervisions[0]
            if not (sup.custom or {}).get("ipa"):
                todo.setdefault(sup.language or lang, []).append(i)
        ipa: dict[int, str] = {}
        for code, idx in todo.items():
            for i, text in zip(idx, phonemize([cuts[i].supervisions[0].text or "" for i in idx],
                                              code, **strip), strict=True):
                ipa[i] = text
        kept = []
        for i, cut in enumerate(cuts):
            if i not in ipa:
                kept.append(cut)
            elif ipa[i].strip():
                sup = cut.supervisions[0]
                kept.append(fastcopy(cut, supervisions=[fastcopy(
                    sup, custom={**(sup.custom or {}), "ipa": ipa[i]})]))
            else:
                echo(f"BAD\t{cut.id}\tempty_text\tG2P ({lang}) gave no phones for its transcript")
        out[name] = kept
    return out


def _build_tokenizer(plan: Plan, base: BaseInfo, train: list, lang: str):
    from speechfm.models.io import load_part
    from speechfm.text.normalize import NormalizerConfig

    if plan.tokenizer == "base":
        return load_part(base.path, "tokenizer")
    if plan.tokenizer == "ipa":
        from speechfm.text.ipa import IpaTokenizer

        hint = load_part(base.path, "tokenizer") if base.tokenizer_kind == "ipa" else None
        flags = {k: bool(getattr(hint, k, False))
                 for k in ("strip_stress", "strip_length", "strip_tones")}
        return IpaTokenizer.train([(c.supervisions[0].language or lang, c.supervisions[0].custom["ipa"])
                                   for c in train], **flags)
    texts = [c.supervisions[0].text for c in train]
    norm = NormalizerConfig(lang=lang)
    if plan.tokenizer == "char":
        from speechfm.text.char import CharTokenizer

        return CharTokenizer.train(texts, normalizer=norm)
    from speechfm.text.bpe import BpeTokenizer

    return BpeTokenizer.train(texts, plan.vocab_size, "bpe", normalizer=norm, num_threads=1)


def _source(cut) -> str:
    rec = getattr(cut, "recording", None)
    return str(rec.sources[0].source) if rec is not None and rec.sources else cut.id


def _coverage(base: BaseInfo, train: list) -> tuple[float | None, Any]:
    """(share of training utterances the base's tokenizer encodes without <unk>, the
    tokenizer); (None, None) where it does not matter (not a transducer base)."""
    from speechfm.models.io import load_part

    if base.kind != TRANSDUCER:
        return None, None
    tok = load_part(base.path, "tokenizer")
    if tok is None:
        return 0.0, None
    field = "ipa" if tok.kind == "ipa" else "text"
    ok = sum(1 for c in train if not tok.unknown_symbols(
        (c.supervisions[0].custom or {}).get("ipa", "") if field == "ipa" else c.supervisions[0].text))
    return ok / max(1, len(train)), tok


def prepare(options: FinetuneOptions, base: BaseInfo, exp: Path, echo: Echo
            ) -> tuple[dict[str, Any], Plan]:
    """The data stage: read and validate every data set, hold out dev/test, choose the
    plan; unless ``--dry-run``, also G2P (IPA targets), the tokenizer and the manifests."""
    from speechfm.finetune.data import held_out_split, mix_related, read_checked, summarize
    from speechfm.finetune.plan import RULES, tier_of

    o = options
    read = dict(min_duration=o.min_duration, max_duration=o.max_duration, num_jobs=o.nj, echo=echo)
    echo(f"reading {o.data}")
    data = read_checked(o.data, lang=o.lang, **read)
    given = {}
    for name, path in (("dev", o.dev), ("test", o.test)):
        if path:
            echo(f"reading --{name} {path}")
            given[name] = read_checked(path, lang=o.lang, **read)
    labelled_hours = sum(c.duration for c in data.cuts) / 3600
    rules = RULES[tier_of(labelled_hours)]
    missing = [n for n in ("dev", "test") if n not in given]
    split_info = None
    if missing:
        split = held_out_split(data.cuts, names=missing, fraction=rules.held_out_fraction,
                               max_hours=rules.held_out_max_hours, seed=o.seed)
        sets, split_info = split.sets, split.info
    else:
        sets = {"train": list(data.cuts)}
    sets.update({name: checked.cuts for name, checked in given.items()})
    held = {c.id for name in ("dev", "test") for c in sets[name]}
    overlap = [c.id for c in sets["train"] if c.id in held]
    if overlap:
        raise DataError(f"--dev/--test share {len(overlap)} utterance id(s) with --data "
                        f"({', '.join(overlap[:5])}): give held-out sets apart from the data")
    related = unlabelled = related_info = None
    if o.related_data:
        echo(f"reading --related-data {o.related_data}")
        related = read_checked(o.related_data, lang=None, **read)
    if o.unlabelled:
        echo(f"reading --unlabelled {o.unlabelled}")
        unlabelled = read_checked(o.unlabelled, lang=None, require_text=False, **read)
    train = sets["train"]
    if related is not None:
        train, related_info = mix_related(sets["train"], related.cuts, ratio=o.related_ratio,
                                          seed=o.seed)
    coverage, base_tok = _coverage(base, train)
    pretrain_audio = held_out_audio = None
    if unlabelled is not None:
        # Held-out recordings are never pretrained on, even when --unlabelled holds them.
        held_sources = {_source(c) for name in ("dev", "test") for c in sets[name]}
        pretrain_audio = [c for c in unlabelled.cuts if _source(c) not in held_sources]
        held_out_audio = len(unlabelled.cuts) - len(pretrain_audio)
        pretrain_audio += [c.with_id(f"labelled-{c.id}") for c in sets["train"]]
    plan = make_plan(
        o, base, labelled_hours=labelled_hours, train_seconds=sum(c.duration for c in train),
        longest_seconds=max(c.duration for c in train), coverage=coverage,
        split_info=split_info, related_info=related_info,
        unlabelled_seconds=None if pretrain_audio is None else sum(c.duration for c in pretrain_audio))
    sets["train"] = train
    info: dict[str, Any] = {
        "base": str(base.path), "lang": o.lang, "labelled_hours": round(labelled_hours, 4),
        "inputs": {"data": data.summary(), **{f"{n} (given)": g.summary() for n, g in given.items()},
                   **({"related": related.summary()} if related else {}),
                   **({"unlabelled": unlabelled.summary()} if unlabelled else {})},
        "split": split_info, "related": related_info, "base_tokenizer_coverage": coverage,
        "unlabelled_held_out_recordings_left_out": held_out_audio,
        "sets": {name: summarize(cuts) for name, cuts in sets.items()}}
    if o.dry_run:
        return info, plan

    dropped: list[str] = []
    if plan.targets == "ipa":
        from speechfm.models.io import load_part

        if related is not None and any(not c.supervisions[0].language for c in related.cuts):
            raise DataError(f"--related-data {o.related_data}: IPA targets need each related "
                            "utterance's language for G2P (a lang column, utt2lang, or lhotse "
                            "supervision languages)")

        hint = load_part(base.path, "tokenizer") if base.tokenizer_kind == "ipa" else None
        before = {name: {c.id for c in cuts} for name, cuts in sets.items()}
        sets = _g2p(sets, o.lang, hint, echo)
        dropped += [i for name, cuts in sets.items() for i in before[name] - {c.id for c in cuts}]
    if plan.tokenizer == "base" and base_tok is not None:
        for name in ("train", "dev", "test"):
            keep = []
            for c in sets[name]:
                sup = c.supervisions[0]
                text = (sup.custom or {}).get("ipa") if base_tok.kind == "ipa" else sup.text
                unknown = base_tok.unknown_symbols(text or "")
                if unknown:
                    dropped.append(c.id)
                    echo(f"BAD\t{c.id}\tunknown_chars\tthe foundation's tokenizer cannot encode "
                         f"{sorted(unknown)}")
                else:
                    keep.append(c)
            sets[name] = keep
    for name in ("train", "dev", "test"):
        if not sets[name]:
            raise DataError(f"no {name} utterance is left (see the BAD lines above)")
    from lhotse import CutSet

    dirs = exp / "data"
    dirs.mkdir(parents=True, exist_ok=True)
    for name, cuts in sets.items():
        CutSet.from_cuts(cuts).to_file(dirs / f"{name}.jsonl.gz")
    if pretrain_audio is not None:
        CutSet.from_cuts(pretrain_audio).to_file(dirs / "pretrain.jsonl.gz")
    tokenizer = _build_tokenizer(plan, base, sets["train"], o.lang)
    if plan.tokenizer != "base":
        tokenizer.save(dirs / "tokenizer")
    with open(dirs / "bad_items.tsv", "w", encoding="utf-8") as f:
        f.write("set\tid\treason\tdetail\n")
        checked = {"data": data, **given}
        checked.update({k: v for k, v in (("related", related), ("unlabelled", unlabelled)) if v})
        for name, item in checked.items():
            for p in item.report.problems:
                f.write(f"{name}\t{p.id}\t{p.reason}\t{' '.join(p.detail.split())}\n")
        for cut_id in dropped:
            f.write(f"data\t{cut_id}\tdropped\tsee the log: G2P or the foundation's tokenizer\n")
    info["sets"] = {name: summarize(cuts) for name, cuts in sets.items()}
    if pretrain_audio is not None:
        info["sets"]["pretrain"] = summarize(pretrain_audio)
    info["dropped_after_check"] = dropped
    info["tokenizer"] = {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size}
    _write_json(dirs / "data.json", info)
    return info, plan


# ------------------------------------------------------------------------- model surgery


def merge_encoder(base_dir: str | Path, ssl_dir: str | Path, out: str | Path) -> Path:
    """``base_dir``'s model (config, parts, weights) with every ``encoder.*`` weight that
    ``ssl_dir`` (a continued-pretraining run's export) holds in the same shape replaced by
    it. Adapter files and a language-ID head of the base were trained on the old encoder:
    they are not carried over."""
    from speechfm.models.io import (
        build_model,
        load_part,
        read_model_config,
        read_weights,
        save_model_dir,
    )

    meta = read_model_config(base_dir)
    _, config = build_model(meta, base_dir)
    weights = read_weights(base_dir, meta)
    ssl = read_weights(ssl_dir)
    replaced = 0
    for key, value in ssl.items():
        if key.startswith("encoder.") and key in weights and weights[key].shape == value.shape:
            weights[key] = value.to(weights[key].dtype)
            replaced += 1
    if not replaced:
        raise DataError(f"{ssl_dir}: no encoder weight matches {base_dir}'s encoder")
    parts = {name: load_part(base_dir, name, meta) for name in (meta.get("parts") or {})
             if name not in ("adapters", "language_id")}
    return save_model_dir(out, weights, config, parts=parts)


def merge_language_adapter(foundation: str | Path, adapter_file: str | Path, out: str | Path) -> Path:
    """The foundation's model directory (its weights, config and parts, the adapters it
    carries) with one more language's adapter file in its ``adapters/`` part.

    Raises:
        DataError: an adapter for that language is already there, or the adapter was made
            for another foundation.
    """
    from speechfm.models.adapter_store import attach_adapter, read_adapter
    from speechfm.models.io import load_model_dir, load_part, read_weights, save_model_dir

    loaded = load_model_dir(foundation, tokenizer=False)
    meta = loaded.meta
    adapters = dict(load_part(foundation, "adapters", meta) or {})
    new = read_adapter(adapter_file)
    stem = new.language or new.name
    if stem in adapters:
        raise DataError(f"{foundation} already has an adapter {stem!r}")
    attach_adapter(loaded.module, new)  # checks the base hash and the shapes
    parts = {name: load_part(foundation, name, meta) for name in (meta.get("parts") or {})
             if name != "adapters"}
    parts["adapters"] = {**adapters, stem: new}
    return save_model_dir(out, read_weights(loaded.directory, meta), loaded.config, parts=parts)


def _copy_dir(src: Path, dst: Path) -> None:
    """A copy of a model directory (hard links where possible: the files are never
    rewritten in place, model directories are replaced whole)."""
    if dst.exists():
        shutil.rmtree(dst)

    def link(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link)


# ------------------------------------------------------------------------- recipe configs


def _run_settings(options: FinetuneOptions, exp: Path, train: dict[str, Any], *,
                  train_cuts: Path, dev_cuts: Path) -> dict[str, Any]:
    valid = train["valid_every"]
    return dict(
        train_cuts=str(train_cuts), dev_cuts=str(dev_cuts), max_duration=train["batch_seconds"],
        max_utt_duration=max(options.max_duration, train["batch_seconds"]),
        num_workers=options.num_workers, max_steps=train["max_steps"],
        num_epochs=train.get("num_epochs"), max_minutes=train.get("max_minutes"),
        optimizer={"kind": "adamw", "lr": train["lr"], "weight_decay": 1e-3},
        scheduler={"kind": "cosine", "warmup_steps": train["warmup_steps"], "min_scale": 0.05},
        valid_every=valid, save_every=valid, keep_last=max(3, train.get("patience", 2) + 1),
        early_stopping_patience=train.get("patience"), average="auto", exp_dir=str(exp),
        seed=options.seed, num_threads=options.threads, device=options.device,
        progress=options.progress, log_every=max(1, min(10, valid)))


def _pretrain_config(options: FinetuneOptions, plan: Plan, base: BaseInfo, exp: Path) -> dict:
    p = plan.pretrain
    size = ("w2v_bert_tiny" if base.encoder_dim <= 64 else
            "w2v_bert_small" if base.encoder_dim <= 512 else "w2v_bert_600m")
    settings = _run_settings(options, exp / "pretrain",
                             {"lr": p["lr"], "max_steps": p["steps"], "max_minutes": p["max_minutes"],
                              "batch_seconds": p["batch_seconds"], "warmup_steps": p["warmup_steps"],
                              "valid_every": p["valid_every"]},
                             train_cuts=exp / "data" / "pretrain.jsonl.gz",
                             dev_cuts=exp / "data" / "dev.jsonl.gz")
    settings["optimizer"]["weight_decay"] = 1e-2
    return dict(settings, model_size=size, encoder_from_init=True, init_from=str(base.path),
                init_prefixes=["encoder."],
                model={"num_contrastive_layers": max(1, base.encoder_layers // 3),
                       "encoder": {"specaugment": False,
                                   "conformer": {"length_adapter": None, "layer_drop": 0.0}}})


def _train_config(options: FinetuneOptions, plan: Plan, base: BaseInfo, init: Path,
                  exp: Path) -> dict:
    t = plan.train
    settings = _run_settings(options, exp / "train", t, train_cuts=exp / "data" / "train.jsonl.gz",
                             dev_cuts=exp / "data" / "dev.jsonl.gz")
    encoder = {"specaugment": t["specaugment"]}
    model = base.meta["model"]
    if plan.recipe == "lda":
        return dict(settings, foundation=str(init), language=options.lang, method="adapter",
                    adapter=plan.adapter, specaugment=t["specaugment"], average="best",
                    select_metric="cer", transducer_loss={"warm_steps": 0, "ctc_scale": 0.0})
    def starts(prefixes: list[str]) -> list[str]:
        """What ``init_from`` gives: the encoders' weights, or with --from-scratch only
        their feature normalisation (the same architecture, none of the trained weights)."""
        return [p + "cmvn." for p in prefixes] if options.from_scratch else prefixes

    common = dict(settings, tokenizer=str(exp / "data" / "tokenizer"), targets=plan.targets,
                  encoder_from_init=True, init_from=str(init),
                  freeze_encoder_steps=t["freeze_encoder_steps"])
    if plan.recipe == TRANSDUCER:
        overrides = {k: model[k] for k in ("decoder_dim", "joiner_dim", "context_size") if k in model}
        prefixes = ["encoder."]
        if model.get("second_encoder") is not None:
            overrides["second_encoder"] = model["second_encoder"]
            prefixes.append("second_encoder.")
        return dict(common, model_size="transducer_small", init_prefixes=starts(prefixes),
                    model={**overrides, "ctc_head": False, "encoder": encoder},
                    transducer_loss={"warm_steps": max(1, t["max_steps"] // 5), "ctc_scale": 0.0})
    head = {"head_dropout": model.get("head_dropout", 0.1)}
    if plan.recipe == "whistle":
        return dict(common, model_size="whistle_small", head_from_init=True,
                    model={**head, "encoder": encoder})
    return dict(common, model_size="ctc_small", init_prefixes=starts(["encoder."]),
                model={**head, "encoder": encoder}, adapter=plan.adapter)


def _run_recipe(name: str, class_name: str, settings: dict, resume: bool):
    from speechfm.config import config_from_dict

    module = load_recipe(name)
    config = config_from_dict(getattr(module, class_name), settings, where=f"recipes/{name}")
    return module.train(config, resume=resume)


_CONFIG_CLASSES = {"ctc": "CtcConfig", "transducer": "TransducerConfig", "whistle": "WhistleConfig",
                   "lda": "LdaConfig", "w2v_bert": "W2vBertConfig"}


def _decode_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------------- the command


def finetune(options: FinetuneOptions, *, echo: Echo = print) -> Path | None:
    """Run (or continue, with ``options.resume``) every stage; returns EXP/final (None for
    a dry run, which prints the plan and writes nothing).

    Raises:
        DataError: unusable inputs or settings (named), SpeechfmError: no recipes.
    """
    from speechfm.finetune.report import data_lines, write_results

    options.validate()
    exp = Path(options.out or f"exp/finetune_{options.lang}")
    options.out = str(exp)
    if not options.dry_run:
        _check_exp(exp, options)
    base = inspect_base(options.base)
    echo(f"base: {base.path}: {base.describe()}")
    if options.resume and _done(exp, "data").is_file():
        info = json.loads((exp / "data" / "data.json").read_text(encoding="utf-8"))
        plan = Plan.from_dict(json.loads((exp / "plan.json").read_text(encoding="utf-8")))
        # wall-clock budgets may change on resume (they change how long, not what)
        plan.train["max_minutes"] = options.minutes
        if plan.pretrain is not None:
            plan.pretrain["max_minutes"] = options.pretrain_minutes
        echo("data stage done before: using EXP/data and the saved plan")
    else:
        info, plan = prepare(options, base, exp, echo)
    for line in data_lines(info):
        echo(line)
    echo("")
    echo(plan.table())
    echo("")
    if options.dry_run:
        echo("dry run: nothing trained, nothing written")
        return None
    _write_json(exp / "finetune.json", options.to_dict())
    _write_json(exp / "plan.json", plan.to_dict())
    (exp / "PLAN.md").write_text(plan.table() + "\n", encoding="utf-8")
    _done(exp, "data").touch()

    init = base.path
    if plan.pretrain is not None:
        merged = exp / "pretrain" / "merged"
        if not _done(exp, "pretrain").is_file():
            echo(f"stage pretrain: w2v-BERT on {exp / 'data' / 'pretrain.jsonl.gz'}")
            result = _run_recipe("w2v_bert", _CONFIG_CLASSES["w2v_bert"],
                                 _pretrain_config(options, plan, base, exp), options.resume)
            merge_encoder(base.path, result.final_dir, merged)
            _done(exp, "pretrain").touch()
        init = merged
    if not _done(exp, "train").is_file():
        echo(f"stage train: recipes/{plan.recipe} ({plan.method})")
        _run_recipe(plan.recipe, _CONFIG_CLASSES[plan.recipe],
                    _train_config(options, plan, base, init, exp), options.resume)
        _done(exp, "train").touch()
    final = exp / "final"
    if not _done(exp, "export").is_file():
        if plan.recipe == "lda":
            merge_language_adapter(init, exp / "train" / "adapter" / f"{options.lang}.safetensors",
                                   final)
        else:
            _copy_dir(exp / "train" / "final", final)
        _done(exp, "export").touch()
    from speechfm.decode.asr import decode_manifest

    results = {}
    for name in ("dev", "test"):
        echo(f"stage evaluate: {name}")
        results[name] = decode_manifest(
            final, exp / "data" / f"{name}.jsonl.gz", exp / "eval" / name,
            language=options.lang if plan.recipe == "lda" else None,
            device=_decode_device(options.device),
            max_duration=max(60.0, plan.train["batch_seconds"]))
    path = write_results(exp, options, base, plan, info, results)
    echo(f"wrote {path}")
    echo(f"model: {final}")
    return final
