"""Tokenizers: BPE/unigram (sentencepiece), characters, IPA phones; save/load."""

from __future__ import annotations

import json
import sys

import pytest

from speechfm.errors import DataError
from speechfm.text import (
    BpeTokenizer,
    CharTokenizer,
    IpaTokenizer,
    NormalizerConfig,
    PhoneInventory,
    load_tokenizer,
)
from speechfm.text.base import BLANK, UNK, UNK_SURFACE

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A journey of a thousand miles begins with a single step!",
    "Don't count your chickens before they hatch.",
    "Where there's a will, there's a way.",
    "Actions speak louder than words; e-mail me later.",
    "Knowledge is power, and power corrupts.",
    "Every cloud has a silver lining, they say.",
    "Better late than never, but never late is better.",
] * 3

IPA = {
    "en": [
        "h ə l ˈoʊ | w ˈɜː l d",
        "ð ə | k w ˈɪ k | b ɹ ˈaʊ n | f ˈɑː k s",
        "tʃ ˈɜː tʃ | b ˈɛ l z",
    ],
    "ru": ["p rʲ i vʲ ˈe t | mʲ ˈi r", "ʃ ˈa p k ə | i | ʂ k ˈo l ə"],
}
IPA_ITEMS = [(lang, t) for lang, ts in IPA.items() for t in ts]


@pytest.fixture(scope="module")
def trained():
    return {
        "bpe": BpeTokenizer.train(TEXTS, 80, "bpe"),
        "unigram": BpeTokenizer.train(TEXTS, 60, "unigram"),
        "char": CharTokenizer.train(TEXTS),
        "ipa": IpaTokenizer.train(IPA_ITEMS),
    }


def _inputs(kind):
    return [t for _, t in IPA_ITEMS] if kind == "ipa" else TEXTS[:8]


@pytest.mark.parametrize("kind", ["bpe", "unigram", "char", "ipa"])
def test_round_trip_and_blank(trained, kind):
    tok = trained[kind]
    assert tok.kind == kind and tok.blank_id == 0
    assert tok.id_to_token(0) == BLANK and tok.id_to_token(tok.unk_id) == UNK
    for text in _inputs(kind):
        ids = tok.encode(text)
        assert ids and all(0 < i < tok.vocab_size for i in ids)
        assert tok.unk_id not in ids
        assert tok.decode(ids) == tok.normalize(text)
        # blanks interleaved (as CTC emits them) are ignored
        assert tok.decode([0, *ids, 0]) == tok.normalize(text)
    assert tok.encode_batch(_inputs(kind)) == [tok.encode(t) for t in _inputs(kind)]


@pytest.mark.parametrize("kind", ["bpe", "unigram", "char", "ipa"])
def test_save_load_equal(trained, kind, tmp_path):
    tok = trained[kind]
    tok.save(tmp_path / kind)
    meta = json.loads((tmp_path / kind / "tokenizer.json").read_text())
    assert meta["kind"] == kind and meta["blank_id"] == 0
    again = load_tokenizer(tmp_path / kind)
    assert type(again) is type(tok) and again.kind == kind
    assert again.tokens == tok.tokens
    assert again.normalizer == tok.normalizer
    probe = _inputs(kind) + (["zebra QUIZ ✓"] if kind != "ipa" else ["x ˈy | z"])
    assert [again.encode(t) for t in probe] == [tok.encode(t) for t in probe]


def test_normalisation_is_inside_encode(trained):
    for kind in ("bpe", "char"):
        tok = trained[kind]
        assert tok.encode("THE QUICK, brown fox!") == tok.encode("the quick brown fox")


@pytest.mark.parametrize("kind", ["bpe", "unigram", "char"])
def test_unknown_symbols_text(trained, kind):
    tok = trained[kind]
    assert tok.unknown_symbols("the quick brown fox") == set()
    # Ω is lower-cased first; the symbol ☃ is removed by normalisation, not unknown
    assert tok.unknown_symbols("the Ωmega ☃ жук fox") == {"ω", "ж", "у", "к"}
    ids = tok.encode("the ω fox")
    assert tok.unk_id in ids
    assert UNK_SURFACE in tok.decode(ids)


def test_bpe_options(trained):
    bpe = trained["bpe"]
    assert bpe.vocab_size == 80
    assert len(bpe.encode("the quick brown fox")) < len("the quick brown fox")
    fallback = BpeTokenizer.train(TEXTS, 300, "bpe", byte_fallback=True)
    assert fallback.unknown_symbols("the ω fox") == set()
    assert fallback.unk_id not in fallback.encode("the ω fox")
    assert fallback.decode(fallback.encode("the ω fox")) == "the ω fox"
    sym = BpeTokenizer.train(
        TEXTS + ["<noise> the dog"] * 3,
        80,
        "bpe",
        user_defined_symbols=["<noise>"],
        normalizer=NormalizerConfig(remove_punctuation=False),
    )
    assert "<noise>" in sym.encode_pieces("<noise> dog")
    with pytest.raises(ValueError):
        BpeTokenizer.train(TEXTS, 80, "wordpiece")
    with pytest.raises(DataError):
        BpeTokenizer.train(["", "!!!"], 80, "bpe")


def test_char_tokenizer_details(trained):
    char = trained["char"]
    assert char.id_to_token(char.word_id) == "▁"
    assert char.encode("a b").count(char.word_id) == 1
    assert " " not in char.tokens and "," not in char.tokens and "'" in char.tokens
    capped = CharTokenizer.train(TEXTS, vocab_size=10)
    assert capped.vocab_size == 10
    # most frequent characters are kept
    assert capped.unknown_symbols("eee") == set() and capped.unknown_symbols("zzz") == {"z"}


def test_ipa_tokenizer_languages(trained):
    ipa = trained["ipa"]
    assert ipa.id_to_token(2) == "|"
    ru = IPA["ru"][0]
    assert ipa.unknown_symbols(ru) == set()
    # restricted to English, the Russian palatalised phones are unknown
    assert ipa.unknown_symbols(ru, lang="en") >= {"rʲ", "vʲ", "mʲ"}
    assert ipa.unk_id in ipa.encode(ru, lang="en")
    assert ipa.unk_id not in ipa.encode(ru, lang="ru")
    ids_ru = ipa.language_ids("ru")
    assert ids_ru[:3] == [0, 1, 2]
    assert ipa.token_to_id("rʲ") in ids_ru and ipa.token_to_id("ð") not in ids_ru
    with pytest.raises(DataError, match="xx"):
        ipa.encode(ru, lang="xx")
    # a subset tokenizer built only from English
    en_only = IpaTokenizer.train(IPA_ITEMS, languages=["en"])
    assert "rʲ" not in en_only.tokens and "ð" in en_only.tokens


def test_ipa_tokenizer_strip_and_boundary():
    tok = IpaTokenizer.train(IPA_ITEMS, strip_stress=True, strip_length=True, word_boundary=False)
    assert not any(set(t) & set("ˈˌː") for t in tok.tokens[2:])
    assert "|" not in tok.tokens
    ids = tok.encode("h ə l ˈoʊ | w ˈɜː l d")
    assert tok.unk_id not in ids
    assert tok.decode(ids) == "h ə l oʊ w ɜ l d"
    # stress variants collapse into one token, so counts merge
    assert tok.tokens.count("oʊ") == 1


def test_ipa_normalize_tolerates_messy_spacing(trained):
    ipa = trained["ipa"]
    assert ipa.normalize("  h ə l ˈoʊ|w ˈɜː  l d | ") == "h ə l ˈoʊ | w ˈɜː l d"
    assert ipa.encode("") == [] and ipa.decode([]) == ""


def test_phone_inventory(tmp_path):
    inv = PhoneInventory.from_transcripts(IPA_ITEMS)
    assert inv.languages == ["en", "ru"]
    assert inv.counts("en")["tʃ"] == 2 and "|" not in inv.counts()
    ru = inv.counts("ru")
    assert [ru[p] for p in inv.phones("ru")] == sorted(ru.values(), reverse=True)
    assert inv.phones("ru", min_count=2) == ["i", "k", "p", "ə"]  # ties by name
    assert set(inv.phones()) == set(inv.phones("en")) | set(inv.phones("ru"))
    inv.save(tmp_path / "inv.json")
    assert PhoneInventory.load(tmp_path / "inv.json") == inv
    doubled = inv.merged(inv)
    assert doubled.counts("en")["tʃ"] == 4 and inv.counts("en")["tʃ"] == 2
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DataError, match="bad.json"):
        PhoneInventory.load(tmp_path / "bad.json")


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"kind": "wordpiece"}')
    with pytest.raises(DataError, match="wordpiece"):
        load_tokenizer(tmp_path)


def test_decode_rejects_out_of_range(trained):
    with pytest.raises(ValueError):
        trained["char"].decode([trained["char"].vocab_size])


def test_import_is_light():
    # speechfm.text must not pull sentencepiece/phonemizer until used
    code = (
        "import sys, speechfm.text, speechfm.text.base, speechfm.text.ipa, speechfm.cli.tokenizer;"
        "print('sentencepiece' in sys.modules, 'phonemizer' in sys.modules)"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
