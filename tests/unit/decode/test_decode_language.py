"""``decode_manifest(language=, final_pass=, adapters=)`` and ``speechfm decode --language
--first-pass --adapters``: a tiny cascaded transducer with language-keyed adapters in both
encoders, its hypotheses checked against ``model.recognize`` / ``model.stream`` per cut."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from speechfm.decode.asr import decode_manifest

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["ab", "ba c", "cab", "a bc"]
CHUNK = 4
ADAPTERS = [{"name": "lda", "kind": "bottleneck", "points": ["after_block"],
             "options": {"bottleneck": 4}, "languages": ["ky", "tt"]}]
EXTRA_SPEC = {"kind": "bottleneck", "options": {"bottleneck": 4}, "points": ["after_block"]}


def _perturb(module, seed, scale=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def _cascaded(vocab_size):
    from speechfm.models.conformer.config import ConformerConfig
    from speechfm.models.transducer import create_transducer_model
    from speechfm.models.transducer.config import transducer_tiny

    config = transducer_tiny(vocab_size)
    config.encoder.conformer.conv_causal = True
    config.encoder.specaugment = False
    config.second_encoder = ConformerConfig(
        input_dim=32, front_end="stack", subsampling_factor=1, dim=32, num_layers=1,
        num_heads=4, ffn_dim=64, conv_kernel=5, dropout=0.0)
    config.adapters = [dict(a) for a in ADAPTERS]
    torch.manual_seed(0)
    model = create_transducer_model(config).eval()
    _perturb(model, 1)
    with torch.no_grad():  # fewer blanks, no <unk>: hypotheses that tell the runs apart
        model.joiner.output_linear.bias[model.blank_id] -= 3.0
        model.joiner.output_linear.bias[1] -= 10.0
    return model, config


def _write_cuts(root):
    import soundfile as sf
    from lhotse import CutSet, Recording

    from speechfm.data.manifest import make_cut

    rng = np.random.default_rng(0)
    cuts = []
    for i, text in enumerate(TEXTS):
        t = np.arange(int(16000 * (0.5 + 0.1 * i))) / 16000
        audio = 0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t) + 0.05 * rng.standard_normal(t.size)
        sf.write(root / f"u{i}.wav", audio.astype(np.float32), 16000)
        rec = Recording.from_file(root / f"u{i}.wav", recording_id=f"u{i}")
        cuts.append(make_cut(f"u{i}", rec, text=text, language="ky", speaker=f"s{i % 2}"))
    path = root / "cuts.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(model, tokenizer, model dir, cuts manifest, extra adapter file, model + that adapter)."""
    import copy

    from speechfm.models.adapter_store import export_adapter, save_adapter
    from speechfm.models.io import save_model_dir
    from speechfm.nn.adapters import adapter_factory
    from speechfm.text.char import CharTokenizer

    root = tmp_path_factory.mktemp("decode_language")
    tok = CharTokenizer(["a", "b", "c"])
    model, config = _cascaded(tok.vocab_size)
    model_dir = save_model_dir(root / "model", model, config, parts={"tokenizer": tok})
    cuts = _write_cuts(root)
    # one more adapter for "ky", stored apart from the model directory
    extended = copy.deepcopy(model)
    for host in (extended.encoder.conformer, extended.second_encoder):
        host.add_adapter("extra", adapter_factory("bottleneck", bottleneck=4),
                         points=["after_block"], languages=["ky"])
    for name, p in extended.named_parameters():
        if ".extra@ky." in name:
            _perturb_param(p, len(name))
    extra = save_adapter(export_adapter(extended, "extra", "ky", spec=EXTRA_SPEC),
                         root / "extra_ky")
    return model, tok, model_dir, cuts, extra, extended.eval()


def _perturb_param(p, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        p.add_(0.5 * torch.randn(p.shape, generator=g))


def _hyps(out_dir):
    return dict(line.partition(" ")[::2] for line in
                (out_dir / "hyps.txt").read_text(encoding="utf-8").splitlines())


def _per_cut(model, tok, cuts, **kwargs):
    """model.recognize / model.stream on each cut alone (features as decode_manifest makes them)."""
    from lhotse import CutSet

    from speechfm.data.dataset import iterate_batches

    stream = kwargs.pop("stream", False)
    out = {}
    for cut in CutSet.from_file(cuts):
        batch = next(iter(iterate_batches(CutSet.from_cuts([cut]), model.encoder.fbank.config,
                                          max_duration=100.0)))
        feats, lens = batch["features"], batch["x_lens"]
        with torch.no_grad():
            if stream:
                s = model.stream(chunk_size=CHUNK, **kwargs)
                s.accept_features(feats[0, : int(lens[0])])
                tokens = s.finalize().tokens
            else:
                tokens = model.recognize(feats, lens, **kwargs)[0].tokens
        out[cut.id] = tok.decode(tokens)
    return out


def test_language_and_pass_reach_the_search(setup, tmp_path):
    model, tok, model_dir, cuts, _, _ = setup
    runs = {
        "base": ({}, {}),
        "ky": ({"language": "ky"}, {"language": "ky"}),
        "tt": ({"language": "tt"}, {"language": "tt"}),
        "ky_first": ({"language": "ky", "final_pass": False},
                     {"language": "ky", "final_pass": False}),
        "ky_beam": ({"language": "ky", "method": "beam", "beam": 3},
                    {"language": "ky", "method": "beam", "beam": 3}),
    }
    got = {}
    for name, (kw, ref_kw) in runs.items():
        res = decode_manifest(model_dir, cuts, tmp_path / name, **kw)
        got[name] = _hyps(tmp_path / name)
        assert got[name] == _per_cut(model, tok, cuts, **ref_kw), name
        assert res.get("language") == kw.get("language")
        assert res["final_pass"] is kw.get("final_pass", True)  # a cascade: the pass is recorded
        assert "adapters" not in res
        saved = json.loads((tmp_path / name / "results.json").read_text())
        assert saved["final_pass"] == res["final_pass"] and saved.get("language") == res.get("language")
    # the language's adapters and the pass change what is decoded
    assert got["ky"] != got["base"] and got["ky"] != got["tt"]
    assert got["ky_first"] != got["ky"]
    assert any(got["ky"].values())
    with pytest.raises(ValueError, match="language"):
        decode_manifest(model_dir, cuts, tmp_path / "bad", language="")


def test_streaming_with_a_language_is_chunked_first_pass_decoding(setup, tmp_path):
    model, tok, model_dir, cuts, _, _ = setup
    stream = decode_manifest(model_dir, cuts, tmp_path / "s", streaming=True, chunk_size=CHUNK,
                             piece_frames=7, language="ky")
    chunked = decode_manifest(model_dir, cuts, tmp_path / "c", chunk_size=CHUNK,
                              final_pass=False, language="ky")
    assert stream["final_pass"] is False and stream["language"] == "ky"
    assert chunked["final_pass"] is False
    hyps = _hyps(tmp_path / "s")
    assert hyps == _hyps(tmp_path / "c")
    assert hyps == _per_cut(model, tok, cuts, stream=True, language="ky")
    assert hyps == _per_cut(model, tok, cuts, chunk_size=CHUNK, final_pass=False, language="ky")
    decode_manifest(model_dir, cuts, tmp_path / "s0", streaming=True, chunk_size=CHUNK,
                    piece_frames=7)
    assert _hyps(tmp_path / "s0") == _per_cut(model, tok, cuts, stream=True)
    assert _hyps(tmp_path / "s0") != hyps  # the language reached the stream


def test_extra_adapter_files_are_attached(setup, tmp_path):
    from speechfm.errors import DataError

    _, tok, model_dir, cuts, extra, extended = setup
    res = decode_manifest(model_dir, cuts, tmp_path / "x", language="ky", adapters=[extra])
    assert res["adapters"] == ["extra@ky"]
    hyps = _hyps(tmp_path / "x")
    assert hyps == _per_cut(extended, tok, cuts, language="ky")
    decode_manifest(model_dir, cuts, tmp_path / "ky", language="ky")
    assert hyps != _hyps(tmp_path / "ky")
    with pytest.raises(ValueError, match="sequence"):
        decode_manifest(model_dir, cuts, tmp_path / "bad", adapters=str(extra))
    with pytest.raises(DataError, match="no such adapter"):
        decode_manifest(model_dir, cuts, tmp_path / "bad", adapters=[tmp_path / "nope"])


def test_one_encoder_models_ignore_the_pass(tmp_path, caplog):
    from speechfm.models.ctc import create_ctc_model, ctc_tiny
    from speechfm.models.io import save_model_dir
    from speechfm.text.char import CharTokenizer

    tok = CharTokenizer(["a", "b", "c"])
    torch.manual_seed(0)
    config = ctc_tiny(tok.vocab_size)
    model_dir = save_model_dir(tmp_path / "ctc", create_ctc_model(config), config,
                               parts={"tokenizer": tok})
    cuts = _write_cuts(tmp_path)
    plain = decode_manifest(model_dir, cuts, tmp_path / "a", group_by="none")
    assert not {"language", "final_pass", "adapters"} & set(plain)
    with caplog.at_level("WARNING", logger="speechfm.decode"):
        first = decode_manifest(model_dir, cuts, tmp_path / "b", group_by="none",
                                final_pass=False, language="ky")
    assert first["final_pass"] is None and first["language"] == "ky"
    assert "no adapter for language 'ky'" in caplog.text
    assert _hyps(tmp_path / "a") == _hyps(tmp_path / "b")


def test_cli_passes_language_first_pass_and_adapters(setup, tmp_path, capsys):
    from speechfm.cli import main

    _, _, model_dir, cuts, extra, _ = setup
    rc = main(["decode", str(model_dir), "--cuts", str(cuts), "--out-dir", str(tmp_path / "cli"),
               "--language", "ky", "--first-pass", "--adapters", str(extra),
               "--num-threads", "1"])
    assert rc == 0
    assert "first pass, language ky" in capsys.readouterr().out
    res = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert res["language"] == "ky" and res["final_pass"] is False
    assert res["adapters"] == ["extra@ky"]
    decode_manifest(model_dir, cuts, tmp_path / "api", language="ky", final_pass=False,
                    adapters=[extra])
    assert _hyps(tmp_path / "cli") == _hyps(tmp_path / "api")
    assert main(["decode", str(model_dir), "--cuts", str(cuts), "--out-dir",
                 str(tmp_path / "plain"), "--num-threads", "1"]) == 0
    assert "language" not in json.loads((tmp_path / "plain" / "results.json").read_text())
