"""speechfm.decode.graph: TLG / TG graphs (kaldifst) searched with kaldi-decoder.

Every case is hand-built so that the right answer is known: a few tokens, a tiny
lexicon, an ARPA written here and compiled by kaldilm, and synthetic log-probs whose
greedy path is ambiguous, misspelled or spells a non-word.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("kaldifst")
pytest.importorskip("kaldi_decoder")
pytest.importorskip("kaldilm")

from speechfm.decode.graph import (  # noqa: E402
    LABEL_OFFSET,
    DecodingGraph,
    build_tg,
    build_tlg,
    compile_arpa,
    decode_graph,
    extend_lexicon,
    graph_hypotheses,
    oov_rate,
    read_symbols,
)
from speechfm.errors import DataError  # noqa: E402
from speechfm.text import CharTokenizer  # noqa: E402

TOKENS = ["<blk>", "<unk>", "|", "a", "b", "c"]
ID = {t: i for i, t in enumerate(TOKENS)}
BLK = 0


def _write_arpa(path, unigrams, bigrams=None):
    """``unigrams``: {word: (log10 p, log10 backoff or None)}; ``bigrams``: {(w1, w2): log10 p}."""
    bigrams = bigrams or {}
    lines = ["\\data\\", f"ngram 1={len(unigrams)}"]
    if bigrams:
        lines.append(f"ngram 2={len(bigrams)}")
    lines += ["", "\\1-grams:"]
    for w, (p, bow) in unigrams.items():
        lines.append(f"{p}\t{w}" + (f"\t{bow}" if bow is not None else ""))
    if bigrams:
        lines += ["", "\\2-grams:"]
        lines += [f"{p}\t{w1} {w2}" for (w1, w2), p in bigrams.items()]
    lines += ["", "\\end\\", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _unigram_lm(path, words, probs=None):
    probs = probs or {}
    uni = {"<s>": (-99.0, None), "</s>": (-1.0, None)}  # no backoffs in a 1-gram LM
    uni.update({w: (probs.get(w, -1.0), None) for w in words})
    return _write_arpa(path, uni)


def _frames(*frames, floor=-12.0):
    """(1, T, V) log-probs: each frame a token name (posterior ~1) or {token: prob}."""
    x = np.full((len(frames), len(TOKENS)), floor, dtype=np.float64)
    for t, f in enumerate(frames):
        probs = {f: 1.0} if isinstance(f, str) else f
        for tok, p in probs.items():
            x[t, ID[tok]] = math.log(p)
    x -= np.log(np.exp(x).sum(axis=1, keepdims=True))
    return x[None].astype(np.float32)


B = "<blk>"


@pytest.fixture
def lm(tmp_path):
    """Bigram LM over ab, ba, abc, c: "ab c" is likely, "abc" is rare."""
    return _write_arpa(
        tmp_path / "lm.arpa",
        {"<s>": (-99.0, -0.3), "</s>": (-1.0, None), "ab": (-0.7, -0.2), "ba": (-0.9, -0.2),
         "abc": (-2.0, -0.1), "c": (-1.2, -0.1)},
        {("<s>", "ab"): -0.2, ("ab", "c"): -0.1, ("c", "</s>"): -0.05},
    )


LEXICON = {"ab": [["a", "b"]], "ba": [["b", "a"]], "abc": [["a", "b", "c"]], "c": [["c"]]}


def test_lm_resolves_missing_word_boundary(lm):
    # greedy: "a b c" with no "|": either "abc" or "ab c"; the bigram prefers "ab c"
    g = build_tlg(TOKENS, LEXICON, lm)
    x = _frames(B, "a", "b", B, "c", B)
    assert decode_graph(g, x) == [["ab", "c"]]
    # with a boundary token the split is spelled out (and still allowed by the graph)
    assert decode_graph(g, _frames(B, "a", "b", "|", "c", B)) == [["ab", "c"]]


def test_misspelled_greedy_path_becomes_lexicon_words(tmp_path):
    # greedy spells "a c" ("b" lost to blank), which is no word; "abc" is the only
    # lexicon word close to it
    lm = _unigram_lm(tmp_path / "u.arpa", ["ab", "ba", "abc", "c"])
    g = build_tlg(TOKENS, LEXICON, lm)
    x = _frames(B, "a", {B: 0.7, "b": 0.3}, "c", B)
    greedy = [t for t, prev in zip(x[0].argmax(1), [-1, *x[0].argmax(1)[:-1]], strict=True)
              if t != BLK and t != prev]
    assert [TOKENS[t] for t in greedy] == ["a", "c"]
    assert decode_graph(g, x) == [["abc"]]


def test_graph_only_outputs_lexicon_words(tmp_path):
    lm = _unigram_lm(tmp_path / "u.arpa", ["ab", "c"])
    g = build_tlg(TOKENS, {"ab": [["a", "b"]], "c": [["c"]]}, lm)
    # "b a" is spelled confidently but is no word: the path must be words of the lexicon
    x = _frames(B, "b", B, "a", B, "c", B)
    (words,) = decode_graph(g, x)
    assert words and set(words) <= {"ab", "c"}


def test_lm_weight_flips_between_close_candidates(tmp_path):
    # acoustics slightly prefer "ab", the LM strongly prefers "ba"
    lm = _unigram_lm(tmp_path / "u.arpa", ["ab", "ba"], {"ab": -2.0, "ba": -0.3})
    g = build_tlg(TOKENS, {"ab": [["a", "b"]], "ba": [["b", "a"]]}, lm)
    x = _frames(B, {"a": 0.55, "b": 0.45}, {"b": 0.55, "a": 0.45}, B)
    assert decode_graph(g, x, acoustic_scale=1.0) == [["ba"]]      # LM weight 1
    assert decode_graph(g, x, acoustic_scale=20.0) == [["ab"]]     # LM weight 0.05


def test_homophones_are_disambiguated_and_chosen_by_the_lm(tmp_path):
    lex = {"ba": [["b", "a"]], "bah": [["b", "a"]], "ab": [["a", "b"]]}
    x = _frames(B, "b", "a", B)
    lm1 = _unigram_lm(tmp_path / "1.arpa", ["ba", "bah", "ab"], {"ba": -0.5, "bah": -2.0})
    lm2 = _unigram_lm(tmp_path / "2.arpa", ["ba", "bah", "ab"], {"ba": -2.0, "bah": -0.5})
    assert decode_graph(build_tlg(TOKENS, lex, lm1), x) == [["ba"]]
    assert decode_graph(build_tlg(TOKENS, lex, lm2), x) == [["bah"]]


def test_multiple_pronunciations(tmp_path):
    lm = _unigram_lm(tmp_path / "u.arpa", ["abc", "c"])
    g = build_tlg(TOKENS, {"abc": [["a", "b", "c"], ["a", "c"]], "c": [["c"]]}, lm)
    assert decode_graph(g, _frames(B, "a", "b", "c", B)) == [["abc"]]
    assert decode_graph(g, _frames(B, "a", B, "c", B)) == [["abc"]]


def test_ctc_repeats_collapse_unless_a_blank_separates_them(tmp_path):
    lm = _unigram_lm(tmp_path / "u.arpa", ["a", "b"])
    g = build_tlg(TOKENS, {"a": [["a"]], "b": [["b"]]}, lm)
    (hyp,) = graph_hypotheses(g, _frames("a", "a", B, "a"))
    assert hyp.words == ["a", "a"]
    assert hyp.tokens == [ID["a"], ID["a"]]
    assert decode_graph(g, _frames("a", "a", "a", B)) == [["a"]]


def test_label_offset_alignment_follows_the_columns(lm):
    # DecodableCtc reads column (input label - 1): the best path's per-frame tokens must
    # be exactly the columns that peak
    g = build_tlg(TOKENS, LEXICON, lm)
    frames = [B, "a", "b", B, "|", "c", "c", B]
    (hyp,) = graph_hypotheses(g, _frames(*frames))
    assert LABEL_OFFSET == 1
    assert hyp.alignment == [ID[f] for f in frames]
    assert hyp.tokens == [ID["a"], ID["b"], ID["|"], ID["c"]]
    assert hyp.words == ["ab", "c"]
    assert hyp.graph_cost > 0 and hyp.acoustic_cost >= 0


def test_batch_torch_lengths_and_empty(lm):
    g = build_tlg(TOKENS, LEXICON, lm)
    a = _frames(B, "b", "a", B, B, B)
    b = _frames(B, "a", "b", B, "c", B)
    x = torch.from_numpy(np.concatenate([a, b, b]))
    out = decode_graph(g, x, torch.tensor([4, 6, 0]))
    assert out == [["ba"], ["ab", "c"], []]
    with pytest.raises(ValueError, match="V="):
        decode_graph(g, x[..., :4])


def test_g_as_fst_or_file_with_words_table(lm, tmp_path):
    g_fst, words = compile_arpa(lm)
    assert words[:2] == ["<eps>", "#0"] and "ab" in words
    assert g_fst.write(str(tmp_path / "G.fst"))
    (tmp_path / "words.txt").write_text("".join(f"{w} {i}\n" for i, w in enumerate(words)))
    x = _frames(B, "a", "b", B, "c", B)
    for graph in (build_tlg(TOKENS, LEXICON, g_fst, words),
                  build_tlg(TOKENS, LEXICON, tmp_path / "G.fst", tmp_path / "words.txt")):
        assert decode_graph(graph, x) == [["ab", "c"]]
    with pytest.raises(ValueError, match="words"):
        build_tlg(TOKENS, LEXICON, g_fst)


def test_compact_topology_agrees_on_simple_input(lm):
    g = build_tlg(TOKENS, LEXICON, lm, topo="compact")
    std = build_tlg(TOKENS, LEXICON, lm)
    assert g.topo == "compact"
    for x in (_frames(B, "a", "b", B, "c", B), _frames(B, "b", "b", "a", B)):
        assert decode_graph(g, x) == decode_graph(std, x)
    with pytest.raises(ValueError, match="topo"):
        build_tlg(TOKENS, LEXICON, lm, topo="nope")


def test_save_load_round_trip(lm, tmp_path):
    g = build_tlg(TOKENS, LEXICON, lm)
    g.save(tmp_path / "graph")
    for name in ("TLG.fst", "words.txt", "tokens.txt", "graph.json"):
        assert (tmp_path / "graph" / name).is_file()
    assert read_symbols(tmp_path / "graph" / "tokens.txt") == TOKENS
    h = DecodingGraph.load(tmp_path / "graph")
    assert (h.kind, h.topo, h.tokens, h.words) == ("tlg", "standard", TOKENS, g.words)
    x = np.concatenate([_frames(B, "a", "b", B, "c", B, B), _frames(B, "b", "a", "a", B, "c", B)])
    assert decode_graph(h, x) == decode_graph(g, x)
    with pytest.raises(DataError, match="missing"):
        DecodingGraph.load(tmp_path)


def test_token_level_lm_without_lexicon(tmp_path):
    # char LM over a, b, c, "|": after "a", "b" is far likelier than "c"
    arpa = _write_arpa(
        tmp_path / "char.arpa",
        {"<s>": (-99.0, -0.5), "</s>": (-1.0, None), "a": (-0.6, -0.3), "b": (-1.0, -0.3),
         "c": (-1.0, -0.3), "|": (-0.8, -0.3)},
        {("a", "b"): -0.05, ("a", "c"): -3.0},
    )
    g = build_tg(TOKENS, arpa)
    assert (g.kind, g.word_boundary, g.token_sep) == ("tg", "|", " ")
    x = _frames(B, "a", {"c": 0.55, "b": 0.45}, B, "|", "c", B)
    (hyp,) = graph_hypotheses(g, x)
    assert hyp.tokens == [ID["a"], ID["b"], ID["|"], ID["c"]]
    assert hyp.words == ["a b", "c"]           # IPA-style: phones joined by spaces
    assert g.join(hyp.words) == "a b | c"
    # acoustics alone (LM weight ~0) keep the greedy "c"
    (hyp,) = graph_hypotheses(g, x, acoustic_scale=100.0)
    assert hyp.words == ["a c", "c"]
    # CTC repeats at token level: a a <blk> a -> two a's
    (hyp,) = graph_hypotheses(g, _frames("a", "a", B, "a"))
    assert hyp.tokens == [ID["a"], ID["a"]]
    g.save(tmp_path / "tg")
    assert (tmp_path / "tg" / "TG.fst").is_file()
    assert decode_graph(DecodingGraph.load(tmp_path / "tg"), x) == decode_graph(g, x)


def test_token_level_with_char_tokenizer_and_fst_input(tmp_path):
    tok = CharTokenizer(["a", "b", "c"])   # <blk> <unk> ▁ a b c
    arpa = _unigram_lm(tmp_path / "c.arpa", ["a", "b", "c", "▁", "x"])  # x: not a token
    g_fst, words = compile_arpa(arpa)
    g = build_tg(tok, g_fst, words)
    assert (g.word_boundary, g.token_sep) == ("▁", "")
    ids = {t: i for i, t in enumerate(tok.tokens)}
    x = np.full((1, 6, 6), -12.0, np.float32)
    for t, s in enumerate(["a", "b", "<blk>", "▁", "c", "<blk>"]):
        x[0, t, ids[s]] = 0.0
    (hyp,) = graph_hypotheses(g, x)
    assert hyp.words == ["ab", "c"]
    assert tok.decode(hyp.tokens) == g.join(hyp.words) == "ab c"


def test_subword_pieces_join_sentencepiece_style(tmp_path):
    pieces = ["<blk>", "<unk>", "▁a", "b", "▁c"]
    arpa = _unigram_lm(tmp_path / "p.arpa", pieces[2:])
    g = build_tg(pieces, arpa)
    assert g.word_boundary is None
    x = np.full((1, 5, 5), -12.0, np.float32)
    for t, s in enumerate([2, 3, 0, 4, 0]):
        x[0, t, s] = 0.0
    assert decode_graph(g, x) == [["ab", "c"]]


def test_char_tokenizer_tlg_allows_boundary_between_words(tmp_path):
    tok = CharTokenizer(["a", "b", "c"])
    lm = _unigram_lm(tmp_path / "u.arpa", ["ab", "c"])
    g = build_tlg(tok, {"ab": [["a", "b"]], "c": [["c"]]}, lm)
    assert g.word_boundary == "▁"
    ids = {t: i for i, t in enumerate(tok.tokens)}
    x = np.full((1, 5, 6), -12.0, np.float32)
    for t, s in enumerate(["a", "b", "▁", "c", "<blk>"]):
        x[0, t, ids[s]] = 0.0
    assert decode_graph(g, x) == [["ab", "c"]]


def test_bad_inputs_are_data_errors(lm, tmp_path):
    with pytest.raises(DataError, match="no lexicon entry"):
        build_tlg(TOKENS, {"zz": [["z", "z"]]}, lm)
    # kaldilm aborts its process on a malformed ARPA; ours must survive with a message
    bad = tmp_path / "bad.arpa"
    bad.write_text("\\data\\\nngram 1=1\n\n\\1-grams:\n-1.0\tab\t0.0\n\n\\end\\\n")
    with pytest.raises(DataError, match="bad.arpa"):
        compile_arpa(bad)
    with pytest.raises(DataError, match="blank"):
        build_tlg(["a", "<blk>"], LEXICON, lm)


def test_oov_rate():
    assert oov_rate(["ab c d", "d  d"], {"ab", "c"}) == (3, 5)
    assert oov_rate("ab", {"ab"}) == (0, 1)
    assert oov_rate([], set()) == (0, 0)


def test_extend_lexicon_with_fake_g2p(tmp_path):
    calls = []

    def fake_g2p(words):
        calls.append(list(words))
        return [list(w) if w != "zz" else [] for w in words]

    lex = {"ab": [["a", "b"]]}
    out = extend_lexicon(lex, ["ab", "cab", "ba", "cab", "zz"], fake_g2p)
    assert calls == [["cab", "ba", "zz"]]           # once, missing words, first-seen order
    assert out == {"ab": [["a", "b"]], "cab": [["c", "a", "b"]], "ba": [["b", "a"]]}
    assert lex == {"ab": [["a", "b"]]}              # the input is not modified
    assert extend_lexicon(out, ["ab"], fake_g2p) == out and len(calls) == 1
    with pytest.raises(DataError, match="g2p returned"):
        extend_lexicon({}, ["x"], lambda ws: [])
    # the extended lexicon makes the new word decodable
    lm = _unigram_lm(tmp_path / "u.arpa", ["ab", "cab"])
    x = _frames(B, "c", "a", "b", B)
    assert decode_graph(build_tlg(TOKENS, out, lm), x) == [["cab"]]
    assert oov_rate(["cab ab"], lex) == (1, 2) and oov_rate(["cab ab"], out) == (0, 2)


def test_decode_manifest_through_a_graph(tmp_path, one_thread):
    import soundfile as sf
    from lhotse import CutSet, Recording

    from speechfm.data.manifest import make_cut
    from speechfm.decode.asr import decode_manifest
    from speechfm.models.ctc import create_ctc_model, ctc_tiny
    from speechfm.models.io import save_model_dir

    tok = CharTokenizer(["a", "b", "c"])
    torch.manual_seed(0)
    config = ctc_tiny(tok.vocab_size)
    model_dir = save_model_dir(tmp_path / "model", create_ctc_model(config), config,
                               parts={"tokenizer": tok})
    cuts = []
    for i, text in enumerate(["ab c", "c ab"]):
        wav = (0.1 * np.random.default_rng(i).standard_normal(8000)).astype(np.float32)
        sf.write(tmp_path / f"u{i}.wav", wav, 16000)
        rec = Recording.from_file(tmp_path / f"u{i}.wav", recording_id=f"u{i}")
        cuts.append(make_cut(f"u{i}", rec, text=text, language="xx"))
    CutSet.from_cuts(cuts).to_file(tmp_path / "cuts.jsonl.gz")
    lm = _unigram_lm(tmp_path / "u.arpa", ["ab", "c"])
    graph = build_tlg(tok, {"ab": [["a", "b"]], "c": [["c"]]}, lm)
    graph.save(tmp_path / "graph")
    # an untrained model: whatever it hears, the graph only lets lexicon words out
    out = decode_manifest(model_dir, tmp_path / "cuts.jsonl.gz", tmp_path / "dec",
                          graph=tmp_path / "graph", graph_options={"blank_penalty": 2.0})
    assert out["graph"] == {"kind": "tlg", "blank_penalty": 2.0} and out["num_scored"] == 2
    hyps = (tmp_path / "dec" / "hyps.txt").read_text().splitlines()
    assert len(hyps) == 2 and all(set(h.split()[1:]) <= {"ab", "c"} for h in hyps)
    other = build_tlg(TOKENS, LEXICON, lm)
    with pytest.raises(ValueError, match="other tokens"):
        decode_manifest(model_dir, tmp_path / "cuts.jsonl.gz", tmp_path / "d2", graph=other)
