"""speechfm.text.normalize: ASR text normalisation."""

from __future__ import annotations

import pytest

from speechfm.text.normalize import NormalizerConfig, lowercase, normalize_text


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Hello, World!", "hello world"),
        ("Don’t   stop—now…", "don't stop now"),
        ("'quoted' words' end", "quoted words end"),
        ("e-mail - dash ‐hyphen co‐op", "e-mail dash hyphen co-op"),
        ("l'homme «libre»", "l'homme libre"),
        ("Straße GROSS", "straße gross"),
        ("ΣΟΦΟΣ", "σοφος"),
        ("1,5 % and 3:30, 2.", "1,5 and 3:30 2"),
        ("tab\tnew\nline\ufeff zero\u200bwidth", "tab new line zerowidth"),
        ("Üй-бүлө (family)", "üй-бүлө family"),
    ],
)
def test_default_normalisation(text, expected):
    assert normalize_text(text) == expected


def test_nfc_composes():
    decomposed = "e\u0301te\u0301"  # é as e + combining acute
    assert normalize_text(decomposed) == "\u00e9t\u00e9"
    assert len(normalize_text(decomposed)) == 3


def test_turkish_dotted_and_dotless_i():
    tr = NormalizerConfig(lang="tr")
    assert normalize_text("İstanbul IŞIK", tr) == "istanbul ışık"
    assert lowercase("I", "az") == "ı"
    # elsewhere I -> i, and İ never leaves a stray combining dot
    assert normalize_text("İstanbul IŞIK") == "istanbul işik"
    assert "\u0307" not in normalize_text("İİİ")


def test_options_and_catalan():
    cfg = NormalizerConfig(lowercase=False, remove_punctuation=False)
    assert normalize_text("  Hello,  World! ", cfg) == "Hello, World!"
    no_apos = NormalizerConfig(keep_apostrophes=False, keep_hyphens=False)
    assert normalize_text("don't e-mail", no_apos) == "don t e mail"
    assert normalize_text("col·lecció", NormalizerConfig(lang="ca")) == "col·lecció"
    assert normalize_text("col·lecció") == "col lecció"


def test_config_roundtrip_and_validation():
    cfg = NormalizerConfig(lang="tr", lowercase=False)
    assert NormalizerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        NormalizerConfig.from_dict({"form": "XYZ"})


def test_idempotent():
    for text in ["Don’t STOP — e-mail, 1,5%", "İstanbul'da ışık", "«Привет», мир!"]:
        once = normalize_text(text, NormalizerConfig(lang="tr"))
        assert normalize_text(once, NormalizerConfig(lang="tr")) == once
