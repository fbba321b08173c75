"""``speechfm tokenizer`` train / g2p / encode."""

from __future__ import annotations

import argparse
import io

import pytest

from speechfm.cli import tokenizer as cli_tokenizer
from speechfm.errors import DataError
from speechfm.text import load_tokenizer

TEXT = """\
utt1 The quick brown fox jumps over the lazy dog.
utt2 A journey of a thousand miles begins with a single step!
utt3 Don't count your chickens before they hatch.
utt4 Where there's a will, there's a way.
utt5
utt6 Every cloud has a silver lining.
"""
TEXT_IPA = """\
en1 h ə l ˈoʊ | w ˈɜː l d
en2 tʃ ˈɜː tʃ | b ˈɛ l z
ru1 p rʲ i vʲ ˈe t | mʲ ˈi r
"""


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="speechfm")
    cli_tokenizer.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def text_file(tmp_path):
    p = tmp_path / "text"
    p.write_text(TEXT, encoding="utf-8")
    return p


@pytest.mark.parametrize("kind,vocab", [("bpe", 60), ("unigram", 40), ("char", None)])
def test_train_text_kinds(tmp_path, text_file, capsys, kind, vocab):
    out = tmp_path / f"tok_{kind}"
    argv = ["tokenizer", "train", "--kind", kind, "--text", str(text_file), "--out", str(out)]
    if vocab:
        argv += ["--vocab-size", str(vocab)]
    assert _run(argv) == 0
    assert f"trained {kind} tokenizer" in capsys.readouterr().out
    tok = load_tokenizer(out)
    assert tok.kind == kind
    if kind == "bpe":
        assert tok.vocab_size == vocab
    assert tok.decode(tok.encode("The lazy dog!")) == "the lazy dog"
    assert tok.unknown_symbols("the lazy dog") == set()


def test_train_ipa_with_utt2lang(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "text_ipa").write_text(TEXT_IPA, encoding="utf-8")
    (data / "utt2lang").write_text("en1 en\nen2 en\nru1 ru\n")
    out = tmp_path / "ipa"
    assert (
        _run(
            [
                "tokenizer",
                "train",
                "--kind",
                "ipa",
                "--text",
                str(data / "text_ipa"),
                "--out",
                str(out),
                "--strip-stress",
            ]
        )
        == 0
    )
    assert "languages: en,ru" in capsys.readouterr().out
    tok = load_tokenizer(out)
    assert tok.kind == "ipa" and tok.strip_stress
    assert sorted(tok.language_phones) == ["en", "ru"]
    assert tok.decode(tok.encode("h ə l ˈoʊ | w ˈɜː l d")) == "h ə l oʊ | w ɜː l d"
    assert (out / "inventory.json").is_file()


def test_train_ipa_vocab_cap_and_lang(tmp_path):
    p = tmp_path / "text_ipa"
    p.write_text(TEXT_IPA, encoding="utf-8")
    out = tmp_path / "ipa"
    assert (
        _run(
            [
                "tokenizer",
                "train",
                "--kind",
                "ipa",
                "--text",
                str(p),
                "--lang",
                "xx",
                "--vocab-size",
                "8",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    tok = load_tokenizer(out)
    assert tok.vocab_size == 8 and list(tok.language_phones) == ["xx"]


def _write_cuts(path):
    from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
    from lhotse.audio import AudioSource

    cuts = []
    rows = [
        ("c1", "en", "Hello world", "h ə l ˈoʊ | w ˈɜː l d"),
        ("c2", "ru", "Привет мир", "p rʲ i vʲ ˈe t | mʲ ˈi r"),
        ("c3", "en", "Church bells", None),
    ]
    for cid, lang, text, ipa in rows:
        rec = Recording(
            id=cid,
            sources=[AudioSource(type="file", channels=[0], source=f"{cid}.wav")],
            sampling_rate=16000,
            num_samples=16000,
            duration=1.0,
        )
        sup = SupervisionSegment(
            id=cid,
            recording_id=cid,
            start=0.0,
            duration=1.0,
            text=text,
            language=lang,
            speaker="s1",
            custom={"ipa": ipa} if ipa else None,
        )
        cuts.append(
            MonoCut(id=cid, start=0.0, duration=1.0, channel=0, recording=rec, supervisions=[sup])
        )
    CutSet.from_cuts(cuts).to_file(path)


def test_train_from_cuts(tmp_path, capsys):
    cuts = tmp_path / "cuts_train.jsonl.gz"
    _write_cuts(cuts)
    assert (
        _run(
            [
                "tokenizer",
                "train",
                "--kind",
                "ipa",
                "--cuts",
                str(cuts),
                "--out",
                str(tmp_path / "ipa"),
            ]
        )
        == 0
    )
    assert "from 2 transcripts" in capsys.readouterr().out  # c3 has no IPA
    ipa = load_tokenizer(tmp_path / "ipa")
    assert sorted(ipa.language_phones) == ["en", "ru"]
    assert (
        _run(
            [
                "tokenizer",
                "train",
                "--kind",
                "char",
                "--cuts",
                str(cuts),
                "--out",
                str(tmp_path / "char"),
            ]
        )
        == 0
    )
    char = load_tokenizer(tmp_path / "char")
    assert char.unknown_symbols("church привет") == set()


def test_train_rejects_empty_input(tmp_path):
    p = tmp_path / "text"
    p.write_text("u1\nu2 !!!\n")
    with pytest.raises(DataError, match=str(p)):
        _run(
            ["tokenizer", "train", "--kind", "char", "--text", str(p), "--out", str(tmp_path / "o")]
        )
    with pytest.raises(DataError, match="missing"):
        _run(
            [
                "tokenizer",
                "train",
                "--kind",
                "bpe",
                "--text",
                str(tmp_path / "missing"),
                "--out",
                str(tmp_path / "o"),
            ]
        )


def test_g2p_args_stdin_and_ids(capsys, monkeypatch):
    pytest.importorskip("phonemizer")
    assert _run(["tokenizer", "g2p", "--lang", "en", "hello world", "church"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].count(" | ") == 1 and lines[1].startswith("tʃ")
    monkeypatch.setattr("sys.stdin", io.StringIO("шапка\nмир\n"))
    assert _run(["tokenizer", "g2p", "--lang", "ru", "--strip-stress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("ʃ") and "ˈ" not in "".join(lines)
    monkeypatch.setattr("sys.stdin", io.StringIO("u1 buenos días\nu2\n"))
    assert _run(["tokenizer", "g2p", "--lang", "es", "--with-ids"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("u1 b") and lines[0].count(" | ") == 1 and lines[1] == "u2 "


def test_encode_command(tmp_path, text_file, capsys):
    out = tmp_path / "char"
    _run(["tokenizer", "train", "--kind", "char", "--text", str(text_file), "--out", str(out)])
    capsys.readouterr()
    assert _run(["tokenizer", "encode", "--tokenizer", str(out), "the dog ж"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["t", "h", "e", "▁", "d", "o", "g", "▁", "<unk>"]
    assert printed[2] == "unknown: ж"


def test_through_speechfm_main(tmp_path, text_file):
    from speechfm.cli import main

    out = tmp_path / "bpe"
    assert (
        main(
            [
                "tokenizer",
                "train",
                "--kind",
                "bpe",
                "--text",
                str(text_file),
                "--vocab-size",
                "50",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert load_tokenizer(out).vocab_size == 50
    # bad input is reported cleanly with exit status 2
    assert (
        main(
            [
                "tokenizer",
                "train",
                "--kind",
                "bpe",
                "--text",
                str(tmp_path / "nope"),
                "--out",
                str(out),
            ]
        )
        == 2
    )
