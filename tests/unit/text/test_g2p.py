"""speechfm.text.ipa.phonemize: espeak-ng G2P in the project's IPA format."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("phonemizer")  # the g2p extra

from speechfm.errors import DataError  # noqa: E402
from speechfm.text.ipa import clean_ipa, espeak_voice, ipa_words, phonemize  # noqa: E402

# ASCII that would mean an espeak mnemonic leaked instead of IPA.
_LEAK = re.compile(r"[A-Z0-9:\[\]\-.\"'#@!?*&%$^_=+<>/\\;`~(),]")

# (lang, text, a phone that must occur) — texts whose words espeak keeps one-to-one.
CASES = [
    ("en", "she sells sea shells", "ʃ"),
    ("en", "cheap church chairs", "tʃ"),
    ("es", "el chico come mucho", "tʃ"),
    ("ru", "шапка и школа", "ʃ"),
    ("tr", "şeker çok güzel", "ʃ"),
    ("tr", "çiçek bahçesi", "tʃ"),
    ("pl", "szkoła jest duża", "ʃ"),
    ("fr", "le chat noir", "ʃ"),
    ("de", "schöne Schule", "ʃ"),
    ("ky", "Бардык адамдар эркин жана тең укуктуу болуп төрөлөт", "dʒ"),
    ("tt", "Барлык кешеләр дә азат", "ʃ"),
    ("it", "la pace del mondo", "tʃ"),
    ("sv", "sju sjuka sjömän", "ɧ"),
    ("nl", "de grote stad", "ɣ"),
    ("id", "selamat pagi dunia", "ɡ"),
]


def _well_formed(ipa: str) -> None:
    assert ipa == ipa.strip()
    assert "  " not in ipa
    for word in ipa.split(" | "):
        assert word and "|" not in word
        for phone in word.split(" "):
            assert phone, ipa
            assert not _LEAK.search(phone), (phone, ipa)
            # stress marks lead their phone and never stand alone
            core = phone.lstrip("ˈˌ")
            assert core and not set(core) & {"ˈ", "ˌ"}, (phone, ipa)


@pytest.fixture(scope="module")
def batch():
    out = {}
    for lang in sorted({c[0] for c in CASES}):
        texts = [t for c_lang, t, _ in CASES if c_lang == lang]
        out[lang] = dict(zip(texts, phonemize(texts, lang), strict=True))
    return out


@pytest.mark.parametrize("lang,text,phone", CASES)
def test_phonemize_languages(batch, lang, text, phone):
    ipa = batch[lang][text]
    _well_formed(ipa)
    assert len(ipa.split(" | ")) == len(text.split())
    phones = [p.lstrip("ˈˌ") for w in ipa_words(ipa) for p in w]
    assert phone in phones, ipa


def test_multichar_phones_stay_together():
    (ipa,) = phonemize(["church hello"], "en")
    words = ipa_words(ipa)
    assert words[0][0] == "tʃ" and words[0][-1] == "tʃ"
    assert any(p.endswith("oʊ") for p in words[1])  # diphthong is one phone
    (ru,) = phonemize(["пять"], "ru")
    assert "pʲ" in ru.split() and "tʲ" in ru.split()  # palatalisation stays attached


def test_strip_options():
    texts = ["the weather is lovely today", "beautiful music"]
    full = phonemize(texts, "en")
    no_stress = phonemize(texts, "en", strip_stress=True)
    assert any(c in "".join(full) for c in "ˈˌ")
    for f, s in zip(full, no_stress, strict=True):
        assert not set(s) & {"ˈ", "ˌ"}
        assert s == f.replace("ˈ", "").replace("ˌ", "")
    no_len = phonemize(texts, "en", strip_length=True)
    assert "ː" in "".join(full) and "ː" not in "".join(no_len)


def test_strip_tones_mandarin():
    (toned,) = phonemize(["你好世界"], "zh")
    (flat,) = phonemize(["你好世界"], "zh", strip_tones=True)
    _well_formed(flat)
    assert re.search(r"[1-7]", toned)  # espeak's tone numbers, tone 3 included
    assert not re.search(r"[0-9ɜ]", flat)
    assert len(ipa_words(flat)) == len(ipa_words(toned))


def test_empty_and_whitespace_keep_alignment():
    out = phonemize(["", "hello", "   ", "...", "two\nlines"], "en")
    assert out[0] == "" and out[2] == "" and out[3] == ""
    assert out[1] and len(ipa_words(out[4])) == 2
    assert phonemize([], "en") == []


def test_language_switch_policy():
    text = ["Привет hello мир"]
    (kept,) = phonemize(text, "ru")
    _well_formed(kept)
    assert len(ipa_words(kept)) == 3
    assert phonemize(text, "ru", language_switch="remove-utterance") == [""]
    with pytest.raises(ValueError):
        phonemize(text, "ru", language_switch="keep-flags")


def test_language_codes():
    assert espeak_voice("en") == "en-us"
    assert espeak_voice("fr") == "fr-fr"
    assert espeak_voice("ky") == "ky"
    assert espeak_voice("en-gb") == "en-gb"
    with pytest.raises(DataError, match="xx"):
        phonemize(["a"], "xx")
    with pytest.raises(TypeError):
        phonemize("hello", "en")


def test_clean_ipa_repairs_raw_espeak_output():
    # leaked mnemonics (ky), stray spaces from removed flags, lone marks
    raw = "  dZ ˈɑ n ɑ |  t[ u: l-  | ˈ a ː |"
    assert clean_ipa(raw, "ky") == "dʒ ˈɑ n ɑ | t̪ uː l | ˈaː"
    assert clean_ipa(raw, "ky", strip_stress=True, strip_length=True) == "dʒ ɑ n ɑ | t̪ u l | a"
    assert clean_ipa("ts.h ˈi.ɜ | n iɜ", "cmn") == "ʈʂʰ ˈɨ3 | n i3"
    assert clean_ipa("ts.h ˈi.ɜ", "cmn", strip_tones=True) == "ʈʂʰ ˈɨ"
    assert clean_ipa("", "en-us") == ""


def test_udhr_lines_are_clean(shared_data):
    for lang, name in [("ky", "kir"), ("fr", "fra"), ("ru", "rus"), ("tr", "tur")]:
        lines = [ln.strip() for ln in (shared_data / "udhr2" / f"{name}.txt").open() if ln.strip()]
        lines = lines[:40]
        out = phonemize(lines, lang)
        assert len(out) == len(lines)
        for ipa in out:
            if ipa:
                _well_formed(ipa)
        assert sum(bool(o) for o in out) >= 0.9 * len(lines)


def test_parallel_jobs_match_serial():
    texts = [f"number {w} is here" for w in ("one", "two", "three", "four")] * 3
    assert phonemize(texts, "en", njobs=2) == phonemize(texts, "en")
