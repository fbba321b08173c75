"""speechfm.text.lexicon: espeak-ng lexicons, cache, strip options, inventories, CLI."""

from __future__ import annotations

import argparse
import re

import pytest

from speechfm.cli import lexicon as cli_lexicon
from speechfm.errors import DataError
from speechfm.models.io import PARTS, load_part
from speechfm.text import ipa as ipa_mod
from speechfm.text.ipa import PhoneInventory, ipa_words, map_phones, phonemize, shared_phones
from speechfm.text.lexicon import (
    Lexicon,
    build_lexicon,
    compare_with_transcripts,
    context_mismatches,
    espeak_g2p,
    read_lexicon,
    word_counts,
)


def _have_espeak() -> bool:
    try:
        import phonemizer  # noqa: F401

        ipa_mod.espeak_voice("en")
    except Exception:  # noqa: BLE001 - phonemizer or the espeak-ng library missing
        return False
    return True


needs_espeak = pytest.mark.skipif(
    not _have_espeak(), reason="needs phonemizer + espeak-ng (g2p extra)"
)

MARKS = re.compile(r"[ˈˌːˑ]")


@pytest.fixture
def count_g2p(monkeypatch):
    """Wrap ipa.phonemize (what build_lexicon calls) to record the texts of each call."""
    calls: list[list[str]] = []
    real = ipa_mod.phonemize

    def counting(texts, lang, **kwargs):
        calls.append(list(texts))
        return real(texts, lang, **kwargs)

    monkeypatch.setattr(ipa_mod, "phonemize", counting)
    return calls


# --------------------------------------------------------------------------------------
# building with espeak-ng
# --------------------------------------------------------------------------------------


@needs_espeak
def test_build_lexicon_languages():
    en = build_lexicon(["Hello, world!", "The cat sat."], "en")
    assert en.words == ["cat", "hello", "sat", "the", "world"]  # normalised, sorted
    assert en.lang == "en"
    assert en["cat"] == [["k", "ˈæ", "t"]]
    pl = build_lexicon(["Szczaw rośnie w lesie."], "pl")
    # espeak-ng 1.52 reads Polish sz/cz as ʃ/tʃ (not retroflex ʂ/ʈʂ), final w devoiced
    assert pl["szczaw"] == [["ʃ", "tʃ", "ˈa", "f"]]
    assert pl["w"] == [["v", "ɨ"]]  # alone, a one-letter word is read as its letter name
    ind = build_lexicon(["Selamat pagi, dunia!"], "id")
    assert ind["selamat"] == [["s", "ə", "l", "ˈa", "m", "a", "t"]]
    ru = build_lexicon(["Шапка и школа"], "ru")
    assert set(ru) == {"шапка", "и", "школа"}
    assert ru["школа"][0][0] == "ʃ"
    for lex in (en, pl, ind, ru):
        for prons in lex.values():
            assert len(prons) == 1 and prons[0] and all(p and " " not in p for p in prons[0])


@needs_espeak
def test_words_split_by_espeak_are_joined():
    # "42" is read as two IPA words ("forty two"): one lexicon entry with all the phones
    parts = ipa_words(phonemize(["42"], "en")[0])
    assert len(parts) == 2
    lex = build_lexicon(["42 cats"], "en")
    assert lex["42"] == [parts[0] + parts[1]]


@needs_espeak
def test_strip_options():
    words = ["hello", "world", "see", "two", "szczaw"]
    full = build_lexicon(words[:4], "en")
    assert any(MARKS.search(p) for prons in full.values() for p in prons[0])
    bare = build_lexicon(words[:4], "en", strip_stress=True, strip_length=True)
    assert not any(MARKS.search(p) for prons in bare.values() for p in prons[0])
    assert (bare.strip_stress, bare.strip_length, bare.strip_tones) == (True, True, False)
    # stripping a built lexicon gives what building stripped gives
    assert full.stripped(strip_stress=True, strip_length=True) == bare
    # tones: espeak's Mandarin tone digits
    tonal = espeak_g2p("cmn")(["妈妈"])
    assert any(re.search(r"[1-5]$", p) for p in tonal[0])
    flat = espeak_g2p("cmn", strip_tones=True)(["妈妈"])
    assert flat[0] and not any(re.search(r"\d", p) for p in flat[0])


def test_stripped_merges_and_drops():
    lex = Lexicon({"ma": [["m", "ˈa˥"], ["m", "a˩"], ["m", "ˈaː"]], "x": [["ˌə"]]})
    s = lex.stripped(strip_stress=True, strip_tones=True)
    assert s["ma"] == [["m", "a"], ["m", "aː"]]
    assert s["x"] == [["ə"]]
    assert lex.stripped(strip_stress=True, strip_length=True, strip_tones=True)["ma"] == [
        ["m", "a"]
    ]
    assert lex["ma"][0] == ["m", "ˈa˥"]  # the original is untouched


# --------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------


@needs_espeak
def test_cache_hit_does_not_call_espeak(tmp_path, count_g2p):
    texts = ["the cat sat on the mat", "a dog"]
    first = build_lexicon(texts, "en", cache_dir=tmp_path)
    assert count_g2p == [sorted(set(" ".join(texts).split()))]  # one batch, each word once
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 1 and re.fullmatch(r"en\.[0-9a-f]{16}\.lexicon\.txt", files[0])
    second = build_lexicon(list(reversed(texts)), "en", cache_dir=tmp_path)
    assert len(count_g2p) == 1  # no espeak call
    assert second == first and second.words == first.words
    # a subset of the cached words reads the cache and returns only those words
    sub = build_lexicon(["the cat"], "en", cache_dir=tmp_path)
    assert len(count_g2p) == 1 and sub.words == ["cat", "the"]
    # other options: another cache file
    build_lexicon(texts, "en", cache_dir=tmp_path, strip_stress=True)
    assert len(count_g2p) == 2 and len(list(tmp_path.glob("en.*.lexicon.txt"))) == 2


@needs_espeak
def test_cache_is_incremental(tmp_path, count_g2p):
    build_lexicon(["the cat sat"], "en", cache_dir=tmp_path)
    lex = build_lexicon(["the cat sat", "a dog barked"], "en", cache_dir=tmp_path)
    assert count_g2p[1] == ["a", "barked", "dog"]  # only the new words
    fresh = build_lexicon(["the cat sat", "a dog barked"], "en")
    assert lex == fresh
    cached = next(tmp_path.glob("en.*.lexicon.txt"))
    assert read_lexicon(cached).words == ["a", "barked", "cat", "dog", "sat", "the"]


@needs_espeak
def test_cache_records_words_without_phones(tmp_path, monkeypatch):
    calls = []

    def fake(texts, lang, **kwargs):
        calls.append(list(texts))
        return ["" if t == "zzz" else "a | b" for t in texts]

    monkeypatch.setattr(ipa_mod, "phonemize", fake)
    lex = build_lexicon(["zzz yy"], "en", cache_dir=tmp_path)
    assert lex.to_dict() == {"yy": [["a", "b"]]}
    build_lexicon(["zzz yy"], "en", cache_dir=tmp_path)
    assert calls == [["yy", "zzz"]]


# --------------------------------------------------------------------------------------
# the Lexicon object and lexicon.txt
# --------------------------------------------------------------------------------------


def test_lexicon_order_dedup_and_edit():
    lex = Lexicon()
    assert lex.add("b", ["b", "i"]) and not lex.add("b", ("b", "i"))
    lex.add("a", ["ə"])
    lex.add("a", ["ˈeɪ"])
    assert lex.words == ["b", "a"] and lex["a"] == [["ə"], ["ˈeɪ"]]
    assert lex.num_pronunciations == 3 and len(lex) == 2
    assert lex.phones() == ["b", "i", "ə", "ˈeɪ"]
    assert lex.to_dict() == {"b": [["b", "i"]], "a": [["ə"], ["ˈeɪ"]]}
    assert lex.missing(["a", "c", "c", "d"]) == ["c", "d"]
    added = lex.extend(["a", "c", "d"], lambda ws: [[w, w] if w == "c" else [] for w in ws])
    assert added == ["c"] and lex["c"] == [["c", "c"]] and "d" not in lex
    both = lex.merged({"a": [["ə"], ["a"]]})
    assert both["a"] == [["ə"], ["ˈeɪ"], ["a"]] and lex["a"] == [["ə"], ["ˈeɪ"]]
    for word, pron in [("", ["a"]), ("a b\t", ["a"]), ("w", []), ("w", ["a b"])]:
        with pytest.raises(DataError):
            Lexicon().add(word, pron)


def test_lexicon_file_round_trip(tmp_path):
    lex = Lexicon(
        {"salam": [["s", "a", "l", "a", "m"]], "a": [["a"], ["ə"]], "tʃaj": [["tʃ", "ˈaː", "j"]]}
    )
    path = tmp_path / "lexicon.txt"
    lex.save(path)
    assert path.read_text(encoding="utf-8").splitlines() == [
        "salam\ts a l a m",
        "a\ta",
        "a\tə",
        "tʃaj\ttʃ ˈaː j",
    ]
    back = Lexicon.load(path, lang="xx")
    assert back == lex and back.words == lex.words and back.lang == "xx"
    # the model directory's lexicon part reads and writes the same file
    (tmp_path / "m").mkdir()
    PARTS["lexicon"].save(lex, tmp_path / "m" / "lexicon.txt")
    assert (tmp_path / "m" / "lexicon.txt").read_bytes() == path.read_bytes()
    assert (
        load_part(tmp_path / "m", "lexicon", {"parts": {"lexicon": "lexicon.txt"}}) == lex.to_dict()
    )
    path.write_text("ok\to k\nbroken line\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"lexicon.txt:2"):
        read_lexicon(path)


def test_word_counts_tokenisation():
    c = word_counts(["Don't stop, Don't!", "e-mail – ok"], "en")
    assert c == {"don't": 2, "stop": 1, "e-mail": 1, "ok": 1}
    assert word_counts(["Iİ"], "tr") == {"ıi": 1}
    assert word_counts(["A b,"], normalize=False) == {"A": 1, "b,": 1}
    with pytest.raises(TypeError):
        word_counts("a b")


# --------------------------------------------------------------------------------------
# in-context pronunciations
# --------------------------------------------------------------------------------------


def test_context_mismatches_alignment():
    lex = Lexicon(
        {"to": [["t", "uː"]], "go": [["ɡ", "ˈoʊ"]], "of": [["ʌ", "v"]], "the": [["ð", "ə"]]}
    )
    texts = ["to go", "of the go", "go to x"]
    ipa = ["t ə | ɡ ˈoʊ", "ʌ v ð ə | ɡ ˈoʊ", "ɡ ˈoʊ | t uː | ɛ k s"]
    r = context_mismatches(lex, texts, ipa)
    assert (r.tokens, r.compared, r.mismatched, r.merged, r.oov) == (8, 5, 1, 2, 1)
    assert r.rate == pytest.approx(1 / 5)
    assert r.variants == {"to": {("t", "ə"): 1}}
    assert lex.merged(r.to_lexicon())["to"] == [["t", "uː"], ["t", "ə"]]
    assert compare_with_transcripts(lex, texts, ipa) == pytest.approx(0.2)
    # a stress-free lexicon is compared with stress-free transcripts
    bare = lex.stripped(strip_stress=True, strip_length=True)
    r2 = context_mismatches(bare, ["go to"], ["ɡ ˌoʊ | t ˈuː"])
    assert (r2.compared, r2.mismatched) == (2, 0)
    with pytest.raises(DataError):
        context_mismatches(lex, ["a"], [])


@needs_espeak
def test_context_mismatch_with_espeak():
    texts = ["i saw a cat", "give it to me"]
    lex = build_lexicon(texts, "en")
    r = context_mismatches(lex, texts, phonemize(texts, "en"))
    assert 0 < r.rate < 1
    assert ("ɐ",) in r.variants["a"]  # alone "a" is the letter name ˈeɪ


# --------------------------------------------------------------------------------------
# multilingual phone inventory
# --------------------------------------------------------------------------------------


def test_inventory_from_lexicons_subset_shared(tmp_path):
    en = Lexicon({"cat": [["k", "ˈæ", "t"]], "the": [["ð", "ə"]]})
    pl = Lexicon({"kot": [["k", "ˈɔ", "t"]], "szczaw": [["ʃ", "tʃ", "ˈa", "f"]]})
    inv = PhoneInventory.from_lexicons({"en": en, "pl": pl})
    assert inv.languages == ["en", "pl"]
    assert set(inv.phones("pl")) == set(pl.phones())
    assert inv.counts()["k"] == 2 and inv.counts()["t"] == 2
    weighted = PhoneInventory.from_lexicons({"en": en}, {"en": {"the": 3}})
    assert weighted.counts("en") == {"ð": 3, "ə": 3}
    sub = inv.subset("pl")
    assert sub.languages == ["pl"] and sub.counts("pl") == inv.counts("pl")
    assert inv.subset(["en", "pl"]) == inv
    with pytest.raises(DataError):
        inv.subset("xx")
    assert shared_phones(inv.subset("pl"), inv.subset("en")) == ["k", "t"]
    assert shared_phones(pl.phones(), en.phones()) == ["k", "t"]
    # the JSON format is the inventory's usual one
    inv.save(tmp_path / "inventory.json")
    assert PhoneInventory.load(tmp_path / "inventory.json") == inv
    # from transcripts and from lexicons agree when each word is said once
    assert PhoneInventory.from_transcripts([("en", "k ˈæ t | ð ə")]) == inv.subset("en")


def test_map_phones_for_head_remapping():
    pretrained = ["a", "t", "k", "ˈi", "ɨ", "ʃ"]
    new = ["a", "ˈa", "tʲ", "iː", "ɨː", "ɕ", "t"]
    m = map_phones(new, pretrained)
    assert m == {"a": "a", "ˈa": "a", "tʲ": "t", "iː": "ˈi", "ɨː": "ɨ", "ɕ": None, "t": "t"}
    assert map_phones(new, pretrained, fallback=False)["ˈa"] is None
    inv = PhoneInventory({"en": {"t": 5, "tʰ": 9}})
    assert map_phones(["tʲ"], inv) == {"tʲ": "tʰ"}  # reduced match: most frequent known first


# --------------------------------------------------------------------------------------
# G2P for test-time extension, CLI
# --------------------------------------------------------------------------------------


@needs_espeak
def test_espeak_g2p_extends_a_lexicon():
    g2p = espeak_g2p("pl", strip_stress=True)
    lex = build_lexicon(["szczaw"], "pl", strip_stress=True)
    assert lex.extend(["szczaw", "kot"], g2p) == ["kot"]
    assert lex["kot"] == [["k", "ɔ", "t"]]
    with pytest.raises(DataError, match="xx-nope"):
        espeak_g2p("xx-nope")


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="speechfm")
    cli_lexicon.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@needs_espeak
def test_cli_build(tmp_path, capsys):
    d = tmp_path / "train"
    d.mkdir()
    (d / "text").write_text("pl1 Kot i pies\npl2 w domu\nen1 the cat\n", encoding="utf-8")
    (d / "utt2lang").write_text("pl1 pl\npl2 pl\nen1 en\n", encoding="utf-8")
    (d / "text_ipa").write_text(
        "pl1 "
        + phonemize(["kot i pies"], "pl")[0]
        + "\npl2 "
        + phonemize(["w domu"], "pl")[0]
        + "\nen1 x\n",
        encoding="utf-8",
    )
    extra = tmp_path / "extra.txt"
    extra.write_text("Szczaw rośnie.\n", encoding="utf-8")
    out = tmp_path / "lang" / "lexicon.txt"
    argv = [
        "lexicon",
        "build",
        "--lang",
        "pl",
        "--text",
        str(d / "text"),
        "--out",
        str(out),
        "--extra-text",
        str(extra),
        "--strip-stress",
        "--strip-length",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--text-ipa",
        str(d / "text_ipa"),
    ]
    assert _run(argv) == 0
    printed = capsys.readouterr().out
    lex = read_lexicon(out)
    assert lex.words == ["domu", "i", "kot", "pies", "rośnie", "szczaw", "w"]  # no English
    assert not any(MARKS.search(p) for p in lex.phones())
    assert (
        f"lexicon (pl): 7 words, {len(lex.phones())} phones, 7 pronunciations -> {out}" in printed
    )
    assert "in-context mismatch (pl):" in printed
    # in-context variants: "w" before "domu" is not its letter name
    assert _run(argv + ["--add-context-variants"]) == 0
    lex2 = read_lexicon(out)
    assert lex2.num_pronunciations > 7 and len(lex2["w"]) == 2
    # an output directory gets lexicon.txt
    assert (
        _run(
            [
                "lexicon",
                "build",
                "--lang",
                "pl",
                "--extra-text",
                str(extra),
                "--out",
                str(tmp_path / "lang"),
            ]
        )
        == 0
    )
    assert read_lexicon(out).words == ["rośnie", "szczaw"]
    with pytest.raises(DataError):
        _run(["lexicon", "build", "--lang", "pl", "--out", str(out)])
    with pytest.raises(DataError, match="no utterance of language"):
        _run(["lexicon", "build", "--lang", "id", "--text", str(d / "text"), "--out", str(out)])
