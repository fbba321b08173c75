"""speechfm.models.io: the one model-directory format and the one family table.

Encoder-only directories load and embed (and say they cannot transcribe); optional parts
round-trip; directories written before the shared front end (format 1) still load, with
the same outputs; broken directories are refused by name; and no library code outside a
family's own package asks which family a model is.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import speechfm
from speechfm.errors import DataError, SpeechfmError
from speechfm.models.encoder import EncoderModelConfig, create_encoder_model
from speechfm.models.io import (
    FAMILIES,
    load_model_dir,
    load_part,
    read_model_config,
    save_model_dir,
)

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[3]


def _tone(n=12000, f=350.0):
    return (0.3 * np.sin(2 * np.pi * f * np.arange(n) / 16000)).astype(np.float32)


def _encoder_config():
    from speechfm.models.conformer.config import conformer_tiny
    from speechfm.models.conformer.speech_encoder import SpeechEncoderConfig

    return EncoderModelConfig(encoder=SpeechEncoderConfig(conformer=conformer_tiny(),
                                                          specaugment=False))


@pytest.mark.parametrize("name", ["ctc", "transducer"])
def test_format_1_directories_load_with_the_same_outputs(name, tmp_path):
    src = DATA / f"v1_{name}_tiny"
    assert "format_version" not in json.loads((src / "config.json").read_text())
    meta = read_model_config(src)
    assert meta["format_version"] == 1 and meta["family"] == name
    assert meta["model"]["encoder"]["conformer"]["dim"] == 32
    model = speechfm.load(src)
    expected = np.load(DATA / f"v1_{name}_tiny_embed.npy")
    got = model.embed(_tone(), sample_rate=16000)[0].numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert isinstance(model.transcribe(_tone(), sample_rate=16000), str)
    # saving it again writes the current format, which loads to the same outputs
    save_model_dir(tmp_path / "v2", model.module, load_model_dir(src).config,
                   parts={"tokenizer": model.tokenizer})
    assert read_model_config(tmp_path / "v2")["format_version"] == 2
    again = speechfm.load(tmp_path / "v2").embed(_tone(), sample_rate=16000)[0].numpy()
    np.testing.assert_array_equal(again, got)


def test_an_encoder_only_directory_embeds_and_cannot_transcribe(tmp_path):
    torch.manual_seed(0)
    config = _encoder_config()
    module = create_encoder_model(config)
    out = save_model_dir(tmp_path / "enc", module, config)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    meta = json.loads((out / "config.json").read_text())
    assert meta["family"] == "encoder" and meta["parts"] == {}
    model = speechfm.load(out)
    assert model.tokenizer is None and not model.can_transcribe
    layers = model.embed(_tone(), sample_rate=16000, layers=(0, -1))
    assert len(layers) == 2 and layers[1].shape[1] == 32
    module.eval()
    with torch.no_grad():
        feats, lens = module.encoder.fbank(torch.from_numpy(_tone())[None], torch.tensor([12000]))
        ref = module.encode(feats, lens)[0][0]
    torch.testing.assert_close(layers[1], ref)
    with pytest.raises(SpeechfmError, match="no ASR head"):
        model.transcribe(_tone(), sample_rate=16000)
    with pytest.raises(SpeechfmError, match="no ASR head"):
        model.stream()


def test_init_from_an_encoder_only_directory(tmp_path):
    from speechfm.models.ctc import create_ctc_model, ctc_tiny
    from speechfm.models.io import init_weights

    torch.manual_seed(0)
    config = _encoder_config()
    encoder = create_encoder_model(config)
    save_model_dir(tmp_path / "enc", encoder, config)
    ctc = create_ctc_model(ctc_tiny(7))
    copied = init_weights(ctc, tmp_path / "enc")
    assert copied and all(k.startswith("encoder.") for k in copied)
    for key in copied:
        assert torch.equal(ctc.state_dict()[key], encoder.state_dict()[key])


def test_optional_parts_round_trip(tmp_path):
    config = _encoder_config()
    module = create_encoder_model(config)
    from speechfm.models.adapter_store import AdapterFile

    adapters = {"ky": AdapterFile({"format": "speechfm-adapter", "version": 1, "name": "lda",
                                   "language": "ky"}, {"w": torch.arange(4.0)}),
                "tt": AdapterFile({"format": "speechfm-adapter", "version": 1, "name": "lda",
                                   "language": "tt"}, {"w": torch.ones(2)})}
    lexicon = {"salam": [["s", "a", "l", "a", "m"]], "a": [["a"], ["ə"]]}
    out = save_model_dir(tmp_path / "m", module, config, parts={
        "labels": ["yes", "no"], "lexicon": lexicon, "adapters": adapters})
    meta = read_model_config(out)
    assert meta["parts"] == {"labels": "labels.json", "lexicon": "lexicon.txt",
                             "adapters": "adapters"}
    assert load_part(out, "labels") == ["yes", "no"]
    assert load_part(out, "lexicon") == lexicon
    loaded = load_part(out, "adapters")
    assert set(loaded) == {"ky", "tt"} and torch.equal(loaded["ky"].state["w"], torch.arange(4.0))
    assert loaded["tt"].key == "lda@tt"
    assert load_part(out, "tokenizer") is None
    with pytest.raises(DataError, match="unknown model-directory part"):
        load_part(out, "vocoder")
    (out / "labels.json").unlink()
    with pytest.raises(DataError, match="labels.json"):
        load_part(out, "labels")
    with pytest.raises(ValueError, match="unknown model-directory parts"):
        save_model_dir(tmp_path / "x", module, config, parts={"vocoder": 1})


def test_broken_directories_are_refused_by_name(tmp_path):
    config = _encoder_config()
    out = save_model_dir(tmp_path / "m", create_encoder_model(config), config)
    with pytest.raises(DataError, match="config.json is missing"):
        speechfm.load(tmp_path)
    meta = json.loads((out / "config.json").read_text())
    for change, message in [({"family": "vocoder"}, "unknown model family 'vocoder'"),
                            ({"format_version": 99}, "newer than this speechfm"),
                            ({"model": {"encoder": {"normalisation": "x"}}}, "normalisation")]:
        bad = tmp_path / f"bad{len(message)}"
        shutil.copytree(out, bad)
        (bad / "config.json").write_text(json.dumps({**meta, **change}))
        with pytest.raises(DataError, match=message):
            speechfm.load(bad)
    weights = tmp_path / "weights"
    shutil.copytree(out, weights)
    other = _encoder_config()
    other.encoder.conformer.dim = 48
    save_model_dir(tmp_path / "other", create_encoder_model(other), other)
    shutil.copy(tmp_path / "other" / "model.safetensors", weights / "model.safetensors")
    with pytest.raises(DataError, match="shape mismatches"):
        speechfm.load(weights)


def test_one_family_table_and_no_family_branches_in_the_library():
    """Only speechfm/models/io.py names the families; nothing else compares family names,
    tests for a family's class, or probes a family's attributes."""
    assert set(FAMILIES) >= {"ctc", "transducer", "encoder"}
    package = REPO / "speechfm"
    pattern = re.compile(
        r"""family\s*[!=]=|==\s*["'](ctc|transducer)["']|isinstance\([^)]*(CtcModel|TransducerModel)"""
        r"""|hasattr\([^)]*["'](predictor|joiner|head)["']|model_size\.startswith""")
    offenders = []
    for path in package.rglob("*.py"):
        rel = path.relative_to(package).as_posix()
        if rel.startswith(("models/ctc/", "models/transducer/")):
            continue  # a family may know itself
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert not offenders, "family branches outside the families:\n" + "\n".join(offenders)
    tables = [p.relative_to(package).as_posix() for p in package.rglob("*.py")
              if re.search(r"^FAMILIES\s*[:=]", p.read_text(encoding="utf-8"), re.M)]
    assert tables == ["models/io.py"]
