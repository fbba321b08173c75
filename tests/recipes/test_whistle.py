"""recipes/whistle: the paper's named sizes (checked on the meta device), the CPU size
sharing w2v_bert_small's encoder, and phoneme fine-tuning with output-layer re-mapping:
the rows of shared units are copied exactly, new units keep the fresh head."""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def whistle(recipe):
    return recipe("whistle")


def _params(config) -> int:
    from speechfm.models.ctc import create_ctc_model

    with torch.device("meta"):
        model = create_ctc_model(config)
    return sum(p.numel() for p in model.parameters())


def test_paper_sizes_match_cats_configs(whistle):
    # CAT egs/cv-lang10 Multi._phoneme_{S,M,L}/config.json: VGG front end, 4 heads, kernel
    # 15; S = 14 x 512 (89.98 M parameters with V = 75 in its readme), M = 22 x 640,
    # L = 22 x 1024; SpecAugment 2 x 35 % frequency masks, 10 x 5 % time masks.
    sizes = {name: whistle._size(name, 75) for name in ("whistle_S", "whistle_M", "whistle_L")}
    for name, (layers, dim) in {"whistle_S": (14, 512), "whistle_M": (22, 640),
                                "whistle_L": (22, 1024)}.items():
        conf = sizes[name].encoder.conformer
        assert (conf.num_layers, conf.dim, conf.num_heads, conf.conv_kernel) == (layers, dim, 4, 15)
        assert conf.front_end == "vgg" and conf.subsampling_factor == 4
        assert conf.ffn_dim == 4 * dim
        spec = sizes[name].encoder.specaug
        assert (spec.num_freq_masks, spec.freq_mask_width) == (2, 28)  # 0.35 x 80 bins
        assert (spec.num_time_masks, spec.time_mask_max_frac) == (10, 0.05)
        assert sizes[name].encoder.specaugment
    n_s = _params(sizes["whistle_S"])
    assert abs(n_s / 89.98e6 - 1) < 0.05, n_s
    n_m, n_l = _params(sizes["whistle_M"]), _params(sizes["whistle_L"])
    assert 200e6 < n_m < 240e6 and 500e6 < n_l < 600e6  # the paper: 218 M and 543 M


def test_cpu_size_is_w2v_bert_smalls_encoder(whistle):
    import dataclasses

    from speechfm.models.w2v_bert import w2v_bert_small

    ours, ssl = whistle._size("whistle_small", 40).encoder, w2v_bert_small().encoder
    # the same encoder but for dropout (off for supervised CPU runs)
    assert dataclasses.replace(ours.conformer, dropout=ssl.conformer.dropout) == ssl.conformer
    assert dataclasses.replace(ours, conformer=ssl.conformer) == ssl


def test_remap_copies_shared_rows_exactly():
    from speechfm.models.ctc.head import remap_head_rows

    head = torch.nn.Linear(8, 5)
    fresh = head.weight.detach().clone()
    src_w, src_b = torch.randn(4, 8), torch.randn(4)
    remap = remap_head_rows(head, ["<blk>", "<unk>", "a", "ʃ", "b"], src_w, src_b,
                            ["<blk>", "b", "a", "x"])
    assert remap.shared == ("<blk>", "a", "b") and remap.new == ("<unk>", "ʃ")
    assert remap.dropped == ("x",)
    assert torch.equal(head.weight[0], src_w[0]) and torch.equal(head.bias[0], src_b[0])
    assert torch.equal(head.weight[2], src_w[2]) and torch.equal(head.weight[4], src_w[1])
    assert torch.equal(head.bias[4], src_b[1])
    assert torch.equal(head.weight[1], fresh[1]) and torch.equal(head.weight[3], fresh[3])
    with pytest.raises(ValueError, match="no token is shared"):
        remap_head_rows(head, ["p", "q", "r", "s", "t"], src_w, src_b, ["<blk>", "b", "a", "x"])
    with pytest.raises(ValueError, match="width"):
        remap_head_rows(head, ["<blk>", "<unk>", "a", "ʃ", "b"], torch.randn(4, 3), None,
                        ["<blk>", "b", "a", "x"])


def _config(whistle, cuts, tok, exp, **kw):
    from speechfm.config import config_from_dict

    base = dict(train_cuts=str(cuts), dev_cuts=str(cuts), tokenizer=str(tok),
                model_size="whistle_tiny", max_duration=3.0, num_workers=0, max_steps=3,
                save_every=3, valid_every=3, progress=False, exp_dir=str(exp),
                scheduler={"kind": "noam", "warmup_steps": 2}, optimizer={"kind": "adam"})
    base.update(kw)
    return config_from_dict(whistle.WhistleConfig, base)


def test_finetune_with_head_remap_from_a_pretrained_model(whistle, tmp_path, monkeypatch):
    from reference_corpus import make_tone_corpus

    from speechfm.models.ctc.head import init_head_from
    from speechfm.models.io import read_weights
    from speechfm.text import load_tokenizer

    seen_cuts, seen_tok = make_tone_corpus(tmp_path / "seen", {"en": ["ab ba", "abba", "a b"]})
    new_cuts, new_tok = make_tone_corpus(tmp_path / "new", {"pl": ["ac ca", "cab", "a c"]})
    pre = whistle.train(_config(whistle, seen_cuts, seen_tok, tmp_path / "pre")).final_dir

    # what the recipe copies: exactly the pretrained rows of the shared units
    copied = {}

    def spy(model, source, tokens):
        remap = init_head_from(model, source, tokens)
        copied["weight"] = model.head.weight.detach().clone()
        copied["tokens"] = list(tokens)
        return remap

    monkeypatch.setattr("speechfm.models.ctc.head.init_head_from", spy)
    ft = whistle.train(_config(whistle, new_cuts, new_tok, tmp_path / "ft", init_from=str(pre),
                               encoder_from_init=True, head_from_init=True)).final_dir
    src = read_weights(pre)["head.weight"]
    src_tokens = load_tokenizer(seen_tok).tokens
    for i, token in enumerate(copied["tokens"]):
        if token in src_tokens:
            assert torch.equal(copied["weight"][i], src[src_tokens.index(token)]), token
    summary = json.loads((tmp_path / "ft" / "train_summary.json").read_text())
    assert summary["head_remap"]["new"] == ["c"]
    assert summary["head_remap"]["shared"] == len(copied["tokens"]) - 1
    assert json.loads((ft / "config.json").read_text())["model"]["encoder"] == json.loads(
        (pre / "config.json").read_text())["model"]["encoder"]
    with pytest.raises(ValueError, match="head_from_init needs init_from"):
        _config(whistle, new_cuts, new_tok, tmp_path / "x", head_from_init=True).validate()


def test_word_decoding_through_the_stored_graph_api_and_cli(whistle, tmp_path):
    """A run with ``lm=`` (and a lexicon) stores its decoding graph: ``transcribe`` then
    gives words of the LM through it (stored graph, or one built from ``lm=``), and
    ``speechfm decode --method graph`` scores words."""
    import soundfile as sf
    from reference_corpus import make_tone_corpus

    import speechfm
    from speechfm.cli import main as cli

    texts = {"en": ["ab ba", "abba", "a b", "ba ab"]}
    cuts, tok = make_tone_corpus(tmp_path / "c", texts)
    (tmp_path / "lm.txt").write_text("ab ba\nabba ab\nba ab ba\na b\n", encoding="utf-8")
    assert cli(["lm", "train", "--text", str(tmp_path / "lm.txt"), "--order", "2",
                "--out", str(tmp_path / "lm")]) == 0
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("ab\ta b\nba\tb a\nabba\ta b b a\na\ta\nb\tb\n", encoding="utf-8")
    final = whistle.train(_config(whistle, cuts, tok, tmp_path / "exp", lm=str(tmp_path / "lm"),
                                  lexicon=str(lexicon))).final_dir
    meta = json.loads((final / "config.json").read_text())
    assert set(meta["parts"]) == {"tokenizer", "lexicon", "graph"}

    model = speechfm.load(final)
    wave, sr = sf.read(str(tmp_path / "c" / "en_0.wav"))
    lm_words = {"ab", "ba", "abba", "a", "b"}
    stored = model.transcribe((wave, sr), method="graph")
    assert set(stored.split()) <= lm_words
    assert model.transcribe((wave, sr), lm=tmp_path / "lm", lexicon=lexicon) == stored
    spelled = model.transcribe([(wave, sr)] * 2, lm=tmp_path / "lm")  # char model: no lexicon
    assert len(spelled) == 2 and all(set(t.split()) <= lm_words for t in spelled)
    with pytest.raises(ValueError, match="timestamps"):
        model.transcribe((wave, sr), method="graph", timestamps=True)

    out = tmp_path / "decode"
    assert cli(["decode", str(final), "--cuts", str(cuts), "--out-dir", str(out),
                "--method", "graph", "--acoustic-scale", "0.5"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["graph"] == {"kind": "tlg", "acoustic_scale": 0.5, "beam": 16.0}
    assert results["targets"] == "text" and "wer" in results["overall"]
    for line in (out / "hyps.txt").read_text(encoding="utf-8").splitlines():
        assert set(line.split()[1:]) <= lm_words


def test_lexicon_free_decoding_with_a_character_lm(whistle, tmp_path):
    """An LM over the model's own tokens (``speechfm lm train --unit char``) gives the
    lexicon-free graph: the output is characters the LM allows, words need no list."""
    import soundfile as sf
    from reference_corpus import make_tone_corpus

    import speechfm
    from speechfm.cli import main as cli
    from speechfm.decode.graph import graph_for_model
    from speechfm.text import load_tokenizer

    cuts, tok = make_tone_corpus(tmp_path / "c", {"en": ["ab ba", "abba", "a b", "ba ab"]})
    (tmp_path / "lm.txt").write_text("ab ba\nabba ab\nba ab ba\na b\n", encoding="utf-8")
    assert cli(["lm", "train", "--text", str(tmp_path / "lm.txt"), "--order", "3",
                "--unit", "char", "--out", str(tmp_path / "lm")]) == 0
    graph = graph_for_model(load_tokenizer(tok), None, tmp_path / "lm")
    assert graph.kind == "tg"
    final = whistle.train(_config(whistle, cuts, tok, tmp_path / "exp")).final_dir
    wave, sr = sf.read(str(tmp_path / "c" / "en_1.wav"))
    text = speechfm.load(final).transcribe((wave, sr), lm=tmp_path / "lm")
    assert set(text) <= {"a", "b", " "}


def test_test_time_lexicon_extension_by_g2p(tmp_path):
    """A partial lexicon is extended by G2P with the LM's missing words before the graph
    is built (``graph_for_model(g2p=)``, ``speechfm decode --g2p-lang``)."""
    from reference_corpus import make_tone_corpus

    from speechfm.cli import main as cli
    from speechfm.decode.graph import graph_for_model
    from speechfm.text import load_tokenizer

    _, tok = make_tone_corpus(tmp_path / "c", {"en": ["ab ba", "abba"]})
    (tmp_path / "lm.txt").write_text("ab ba\nabba ab\n", encoding="utf-8")
    assert cli(["lm", "train", "--text", str(tmp_path / "lm.txt"), "--order", "2",
                "--out", str(tmp_path / "lm")]) == 0
    asked = []

    def g2p(words):
        asked.extend(words)
        return [list(w) for w in words]

    graph = graph_for_model(load_tokenizer(tok), {"ab": [["a", "b"]]}, tmp_path / "lm", g2p=g2p)
    assert sorted(asked) == ["abba", "ba"]  # only the LM words the lexicon lacked
    assert graph.kind == "tlg"


def test_transcribe_with_an_lm_builds_its_graph_once(whistle, tmp_path, monkeypatch):
    import soundfile as sf
    from reference_corpus import make_tone_corpus

    import speechfm
    import speechfm.decode.graph as graph_module
    from speechfm.cli import main as cli

    cuts, tok = make_tone_corpus(tmp_path / "c", {"en": ["ab ba", "abba"]})
    (tmp_path / "lm.txt").write_text("ab ba\nabba ab\n", encoding="utf-8")
    assert cli(["lm", "train", "--text", str(tmp_path / "lm.txt"), "--order", "2",
                "--out", str(tmp_path / "lm")]) == 0
    model = speechfm.load(whistle.train(_config(whistle, cuts, tok, tmp_path / "exp")).final_dir)
    builds = []
    real = graph_module.graph_for_model
    monkeypatch.setattr(graph_module, "graph_for_model",
                        lambda *a, **k: builds.append(1) or real(*a, **k))
    wave, sr = sf.read(str(tmp_path / "c" / "en_0.wav"))
    first = model.transcribe((wave, sr), lm=tmp_path / "lm")
    assert model.transcribe((wave, sr), lm=tmp_path / "lm") == first
    assert len(builds) == 1
