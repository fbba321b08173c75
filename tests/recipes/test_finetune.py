"""speechfm finetune end to end on tiny base models (random CTC / transducer / IPA-CTC
directories) and a tiny labelled set in TSV and Kaldi form: a few real updates per run,
then the export, dev/test decoding and RESULTS.md.

What each test holds the command to: ``full`` writes a loadable final/ and RESULTS.md with
dev and test numbers (CTC from a TSV with a bad item, reported and left out; a transducer
from a Kaldi dir); an interrupted run continues with ``--resume`` to the very weights of an
uninterrupted one; ``adapter``/``lora`` leave the base weights bit-identical (CTC: its
encoder; an LDA transducer foundation: every weight); ``--unlabelled`` runs continued
pretraining first; ``phoneme`` re-maps a Whistle-style IPA head."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import speechfm
from speechfm.errors import DataError
from speechfm.finetune.pipeline import finetune
from speechfm.finetune.plan import FinetuneOptions

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

TEXTS = ["ab ba", "abba", "a b", "baab", "ba", "bab", "ab", "aab", "bb a", "a ab", "b ab", "abab"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Twelve utterances of six speakers as a headerless TSV (plus a row whose file is
    missing) and a Kaldi dir; tiny random CTC, transducer and cascaded transducer bases."""
    import soundfile as sf

    from speechfm.models.conformer.config import ConformerConfig
    from speechfm.models.ctc import create_ctc_model, ctc_tiny
    from speechfm.models.io import save_model_dir
    from speechfm.models.transducer import create_transducer_model, transducer_tiny
    from speechfm.text.char import CharTokenizer

    root = tmp_path_factory.mktemp("finetune")
    rng = np.random.default_rng(0)
    rows = []
    for i, text in enumerate(TEXTS):
        t = np.arange(int(16000 * (0.6 + 0.05 * i))) / 16000
        audio = 0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t) + 0.01 * rng.standard_normal(t.size)
        (root / "wav").mkdir(exist_ok=True)
        sf.write(root / "wav" / f"u{i:02d}.wav", audio.astype(np.float32), 16000)
        rows.append((f"u{i:02d}", f"spk{i % 6}", text))
    tsv = root / "data.tsv"
    tsv.write_text("".join(f"wav/{u}.wav\t{t}\n" for u, _, t in rows) + "wav/lost.wav\tab\n")
    kaldi = root / "kaldi"
    kaldi.mkdir()
    (kaldi / "wav.scp").write_text("".join(f"{u} {root / 'wav' / (u + '.wav')}\n" for u, _, _ in rows))
    (kaldi / "text").write_text("".join(f"{u} {t}\n" for u, _, t in rows))
    (kaldi / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s, _ in rows))
    tok = CharTokenizer.train(["ab"])
    torch.manual_seed(0)
    ctc = ctc_tiny(tok.vocab_size)
    ctc.encoder.conformer.conv_norm = "batch_norm"  # frozen BatchNorm statistics must not move
    rnnt = transducer_tiny(tok.vocab_size)
    cascaded = transducer_tiny(tok.vocab_size)
    cascaded.encoder.conformer.conv_causal = True
    cascaded.second_encoder = ConformerConfig(input_dim=32, front_end="stack", subsampling_factor=1,
                                              dim=32, num_layers=1, num_heads=4, ffn_dim=64,
                                              conv_kernel=5)
    bases = {"ctc": save_model_dir(root / "base_ctc", create_ctc_model(ctc), ctc, parts={"tokenizer": tok}),
             "rnnt": save_model_dir(root / "base_rnnt", create_transducer_model(rnnt), rnnt,
                                    parts={"tokenizer": tok}),
             "cascaded": save_model_dir(root / "base_cascaded", create_transducer_model(cascaded),
                                        cascaded, parts={"tokenizer": tok})}
    return {"root": root, "tsv": tsv, "kaldi": kaldi, "wav": root / "wav" / "u00.wav", **bases}


def _run(lines=None, **kw) -> Path | None:
    options = FinetuneOptions(lang=kw.pop("lang", "xx"), threads=1, num_workers=0, nj=1,
                              progress=False, max_steps=kw.pop("max_steps", 4), **kw)
    return finetune(options, echo=(lines.append if lines is not None else lambda _: None))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from speechfm.models.io import read_weights

    return read_weights(path)


def _results(exp: Path) -> str:
    text = (exp / "RESULTS.md").read_text()
    assert "| dev | 2 |" in text and "| test | 2 |" in text
    for name in ("dev", "test"):
        results = json.loads((exp / "eval" / name / "results.json").read_text())
        assert results["num_scored"] == 2
    return text


def test_full_ctc_from_tsv_reports_bad_item_and_resumes_exactly(setup, tmp_path, monkeypatch):
    import speechfm.train as T

    class Interrupted(Exception):
        pass

    real = T.save_checkpoint

    def save_then_stop(root, name, **kw):
        out = real(root, name, **kw)
        if name.endswith("000002"):
            raise Interrupted
        return out

    exp = tmp_path / "exp"
    args = dict(base=str(setup["ctc"]), data=str(setup["tsv"]), out=str(exp))
    lines: list[str] = []
    monkeypatch.setattr(T, "save_checkpoint", save_then_stop)
    with pytest.raises(Interrupted):
        _run(lines, **args)
    monkeypatch.undo()
    assert any(line.startswith("BAD\tlost\tmissing_file") for line in lines)
    assert (exp / "train" / "checkpoints" / "step-000002").is_dir() and not (exp / "final").exists()
    with pytest.raises(DataError, match="--resume"):
        _run(**args)
    lines.clear()
    final = _run(lines, resume=True, **args)
    assert "data stage done before: using EXP/data and the saved plan" in lines
    log = (exp / "train" / "log" / "train-rank0.log").read_text()
    assert "resumed from" in log and "step-000002 (step 2" in log
    summary = json.loads((exp / "train" / "train_summary.json").read_text())
    assert summary["steps"] == 4 and summary["stop_reason"] == "max_steps"
    straight = tmp_path / "straight"
    _run(**dict(args, out=str(straight)))
    a = _weights(exp / "train" / "checkpoints" / "step-000004")
    b = _weights(straight / "train" / "checkpoints" / "step-000004")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    text = _results(exp)
    assert "| method | full |" in text and "| tokenizer | char |" in text
    assert "tsv_noheader" in text and "missing_file 1" in text
    assert "lost\tmissing_file" in (exp / "data" / "bad_items.tsv").read_text()
    split = json.loads((exp / "data" / "data.json").read_text())["split"]
    assert split["by"] == "text"  # a headerless TSV has no speakers
    model = speechfm.load(final)
    assert model.tokenizer.kind == "char" and isinstance(model.transcribe(setup["wav"]), str)


def test_full_transducer_from_kaldi(setup, tmp_path):
    exp = tmp_path / "exp"
    final = _run(base=str(setup["rnnt"]), data=str(setup["kaldi"]), out=str(exp))
    text = _results(exp)
    assert "| recipe | recipes/transducer |" in text
    assert json.loads((exp / "data" / "data.json").read_text())["split"]["by"] == "speaker"
    assert json.loads((final / "config.json").read_text())["family"] == "transducer"
    assert isinstance(speechfm.load(final).transcribe(setup["wav"]), str)


@pytest.mark.parametrize("method", ["adapter", "lora"])
def test_adapters_on_a_ctc_base_leave_its_encoder_bit_identical(setup, tmp_path, method):
    exp = tmp_path / "exp"
    final = _run(base=str(setup["ctc"]), data=str(setup["kaldi"]), out=str(exp), method=method,
                 specaugment="on", lr=5e-2)
    _results(exp)
    base, ours = _weights(setup["ctc"]), _weights(final)
    encoder = [k for k in base if k.startswith("encoder.")]
    assert encoder and all(torch.equal(base[k], ours[k]) for k in encoder)
    assert not torch.equal(base["head.weight"], ours["head.weight"]) or \
        base["head.weight"].shape != ours["head.weight"].shape
    meta = json.loads((final / "config.json").read_text())
    assert meta["family"] == "ctc" and "adapters" in meta["parts"]
    adapter = json.loads((final / "adapters" / "finetune.json").read_text())
    assert adapter["spec"]["kind"] == ("bottleneck" if method == "adapter" else "lora")
    model = speechfm.load(final)
    assert model.adapters == [("finetune", None)]
    assert isinstance(model.transcribe(setup["wav"]), str)


def test_adapter_on_a_cascaded_foundation_keeps_every_base_weight(setup, tmp_path):
    exp = tmp_path / "exp"
    final = _run(base=str(setup["cascaded"]), data=str(setup["kaldi"]), out=str(exp), lr=5e-2)
    text = _results(exp)
    assert "| method | adapter |" in text and "| recipe | recipes/lda |" in text
    assert 'transcribe("audio.wav", lang="xx")' in text
    base, ours = _weights(setup["cascaded"]), _weights(final)
    assert base.keys() == ours.keys() and all(torch.equal(base[k], ours[k]) for k in base)
    model = speechfm.load(final)
    assert model.languages == ["xx"]
    assert isinstance(model.transcribe(setup["wav"], lang="xx"), str)


def test_unlabelled_audio_continues_pretraining_first(setup, tmp_path):
    exp = tmp_path / "exp"
    final = _run(base=str(setup["ctc"]), data=str(setup["kaldi"]), out=str(exp),
                 unlabelled=str(setup["tsv"]), pretrain_steps=3)
    pretrain = json.loads((exp / "pretrain" / "train_summary.json").read_text())
    assert pretrain["steps"] == 3 and pretrain["family"] == "w2v_bert"
    base, merged = _weights(setup["ctc"]), _weights(exp / "pretrain" / "merged")
    assert base.keys() == merged.keys()
    changed = [k for k in base if not torch.equal(base[k], merged[k])]
    assert changed and all(k.startswith("encoder.") for k in changed)
    data = json.loads((exp / "data" / "data.json").read_text())
    assert data["unlabelled_held_out_recordings_left_out"] == 4  # dev + test audio
    text = _results(exp)
    assert "| pretrain (w2v-BERT) | 3 |" in text
    assert final.is_dir()


def test_phoneme_method_remaps_a_whistle_head(setup, tmp_path):
    from speechfm.models.ctc import create_ctc_model, ctc_tiny
    from speechfm.models.io import save_model_dir
    from speechfm.text.espeak import EspeakNotFound
    from speechfm.text.ipa import IpaTokenizer, phonemize

    try:
        phones = phonemize(TEXTS, "en")
    except EspeakNotFound:
        pytest.skip("espeak-ng is not installed")
    tok = IpaTokenizer.train([("en", p) for p in phones[:6]])
    config = ctc_tiny(tok.vocab_size)
    base = save_model_dir(tmp_path / "whistle", create_ctc_model(config), config,
                          parts={"tokenizer": tok})
    exp = tmp_path / "exp"
    final = _run(base=str(base), data=str(setup["kaldi"]), out=str(exp), lang="en")
    text = _results(exp)
    assert "| method | phoneme |" in text and "PER %" in text
    remap = json.loads((exp / "train" / "train_summary.json").read_text())["head_remap"]
    assert remap["shared"] >= 3  # blank, <unk>, | and the phones both inventories hold
    assert speechfm.load(final).tokenizer.kind == "ipa"


def test_ctc_recipe_adapter_needs_an_encoder_to_adapt(recipe, setup):
    from speechfm.config import config_from_dict

    mod = recipe("ctc")
    settings = dict(train_cuts="x.jsonl.gz", tokenizer="tok", model_size="ctc_tiny", max_steps=1,
                    adapter={"name": "a", "kind": "lora", "options": {"rank": 2},
                             "points": ["attn_q"], "layers": None})
    with pytest.raises(ValueError, match="adapter needs init_from"):
        config_from_dict(mod.CtcConfig, settings).validate()
    bad = dict(settings, init_from=str(setup["ctc"]),
               adapter=dict(settings["adapter"], points=["nowhere"]))
    with pytest.raises(ValueError, match="points must be"):
        config_from_dict(mod.CtcConfig, bad).validate()
    config_from_dict(mod.CtcConfig, dict(settings, init_from=str(setup["ctc"]))).validate()


def test_from_scratch_keeps_the_architecture_and_normalisation_only(setup, tmp_path):
    """The control run: fresh weights (an lr too small to move them keeps them visibly not
    the base's), the base's CMVN statistics, no frozen-encoder start, and it says so."""
    exp = tmp_path / "exp"
    lines: list[str] = []
    final = _run(lines, base=str(setup["ctc"]), data=str(setup["kaldi"]), out=str(exp),
                 from_scratch=True, lr=1e-12, max_steps=1)
    base, ours = _weights(setup["ctc"]), _weights(final)
    cmvn = [k for k in base if k.startswith("encoder.cmvn.")]
    weights = [k for k in base if k.startswith("encoder.conformer.") and k.endswith(".weight")
               and base[k].dim() > 1]
    assert cmvn and all(torch.equal(base[k], ours[k]) for k in cmvn)
    assert weights and all(base[k].shape == ours[k].shape for k in weights)
    assert not any(torch.allclose(base[k], ours[k], atol=1e-4) for k in weights)
    plan = json.loads((exp / "plan.json").read_text())
    assert plan["train"]["freeze_encoder_steps"] == 0 and plan["method"] == "full"
    text = (exp / "RESULTS.md").read_text()
    assert "| initialisation | fresh weights in the base's architecture" in text
    for bad in (dict(unlabelled=str(setup["kaldi"])), dict(method="adapter")):
        with pytest.raises(DataError, match="--from-scratch"):
            _run(base=str(setup["ctc"]), data=str(setup["kaldi"]), out=str(tmp_path / "x"),
                 from_scratch=True, **bad)
