"""recipes/inserter: the stages (tokenizer -> text -> speech asr / interleave / both ->
instruct), the encoder-output cache, the loss on text only, an overfit run, exact resume
and the spoken-instruction evaluation (text, speech, cascade).

A tiny corpus (4 documents, 8 sequences, 8 spoken sentences by espeak-ng), a tiny CTC
model with random weights (the frozen speech encoder, and the cascade's ASR) and
``speech_lm_tiny`` (a 2 x 64 Llama) keep every run to a few steps of a second or so.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from speechfm.config import config_from_dict

pytestmark = pytest.mark.usefixtures("one_thread")

DOCS = {
    "river": "The River\n\nThe river runs past the old mill. Children play on the bank. "
             "The water is cold in spring. Birds sing in the trees.",
    "market": "The Market\n\nThe market opens early. Farmers bring fresh bread. "
              "People buy apples and pears. Everyone goes home at noon.",
    "school": "School\n\nThe school bell rings at eight. Pupils walk into the hall. "
              "The teacher reads a story. Then they write a letter.",
    "winter": "Winter\n\nSnow falls on the quiet town. The roads are white and soft. "
              "We light a warm fire. The night is long and dark.",
}

COMMON = dict(max_steps=3, save_every=3, valid_every=3, progress=False, num_threads=1,
              model_size="speech_lm_tiny", log_every=1, keep_last=2, average="last",
              average_last=2, scheduler={"kind": "constant", "warmup_steps": 0},
              optimizer={"lr": 3e-3}, max_duration=5.0, num_instructions=40, seed=5)


@pytest.fixture(scope="module")
def ins(recipe):
    return recipe("inserter")


@pytest.fixture(scope="module")
def corpus(ins, tmp_path_factory):
    """(root, interleaved build) of the tiny corpus; ``root/ctc`` a tiny CTC model."""
    from speechfm.models.ctc import create_ctc_model
    from speechfm.models.ctc.config import ctc_tiny
    from speechfm.models.io import save_model_dir
    from speechfm.text.char import CharTokenizer

    root = tmp_path_factory.mktemp("inserter")
    (root / "texts").mkdir()
    for name, text in DOCS.items():
        (root / "texts" / f"{name}.txt").write_text(text, encoding="utf-8")
    built = ins._data().build_corpus([str(root / "texts")], root / "interleaved",
                                     speech_ratio=0.3, max_sequence_sentences=3, seed=3,
                                     synth_batch_size=8, progress=False)
    tok = CharTokenizer(list("abcdefghijklmnopqrstuvwxyz'"))
    torch.manual_seed(0)
    config = ctc_tiny(tok.vocab_size)
    save_model_dir(root / "ctc", create_ctc_model(config), config, parts={"tokenizer": tok})
    return root, built


def _config(ins, corpus, **kw):
    root, built = corpus
    return config_from_dict(ins.InserterConfig, {**COMMON, "interleaved_dir": str(built), **kw})


@pytest.fixture(scope="module")
def text_model(ins, corpus):
    """The tokenizer stage, then the text stage: its RunResult."""
    root, _ = corpus
    tok = ins.train(_config(ins, corpus, stage="tokenizer", lm_tokenizer=str(root / "tok"),
                            tokenizer_vocab=300))
    assert (tok / "tokenizer.json").is_file()
    return ins.train(_config(ins, corpus, stage="text", lm_tokenizer=str(tok),
                             encoder_from=str(root / "ctc"), instruct_ratio=0.5,
                             exp_dir=str(root / "text")))


@pytest.fixture(scope="module")
def loaded(ins, corpus, text_model):
    """(model, tokenizer, build lines, encoder cache) of the text stage's export."""
    from speechfm.models.io import load_model_dir, load_part

    data = ins._data()
    model = load_model_dir(text_model.final_dir).module
    tok = load_part(text_model.final_dir, "lm_tokenizer")
    lines = data.read_build(corpus[1])
    root = corpus[0] / "cache"
    cache = data.EncoderCache(data.build_encoder_cache(model, data.speech_cuts(lines), root,
                                                       progress=False))
    return model, tok, lines, cache


def test_config_is_checked(ins, corpus):
    for kw, match in [(dict(stage="bogus"), "stage"), (dict(mode="x"), "mode"),
                      (dict(stage="speech"), "init_from"),
                      (dict(stage="speech", init_from="x", interleaved_dir=None),
                       "interleaved_dir"),
                      (dict(stage="text", lm_tokenizer=None), "lm_tokenizer"),
                      (dict(stage="instruct", init_from="x", freeze_lm=True), "freeze_lm"),
                      (dict(stage="speech", init_from="x", model={"adaptor_dim": 8}), "fresh"),
                      (dict(lm_tokenizer="t", speed_perturb=True), "speed_perturb"),
                      (dict(lm_tokenizer="t", model={"lm": {"vocab_size": 5}}), "tokenizer"),
                      (dict(lm_tokenizer="t", instruct_ratio=1.5), "instruct_ratio")]:
        with pytest.raises(ValueError, match=match):
            _config(ins, corpus, **kw).validate()
    # instructions only need no corpus
    _config(ins, corpus, stage="instruct", init_from="x", instruct_ratio=1.0,
            interleaved_dir=None).validate()
    repo = Path(ins.__file__).parent / "configs"
    for name, extra in (("text", []), ("speech", ["init_from=x"]), ("instruct", ["init_from=x"])):
        assert ins.main([str(repo / f"{name}.yaml"), "--print-config", *extra]) == 0


def _text_lines(n: int) -> list[dict]:
    """``n`` build lines of one text segment each (all ``text_view`` reads)."""
    return [{"id": f"doc-{k:04d}", "segments": [{"kind": "text", "text": f"line {k}"}]}
            for k in range(n)]


def test_text_stage_mix_fixes_the_instructions_and_resamples_the_corpus(ins):
    """``num_instructions`` instructions, each once; the corpus side is subsampled or
    cycled so that instructions are ``instruct_ratio`` of the training examples."""
    def examples(lines, **kw):
        config = config_from_dict(ins.InserterConfig, {
            **COMMON, "stage": "text", "lm_tokenizer": "t", "interleaved_dir": "x",
            "num_instructions": 300, **kw})
        return ins.stage_examples(config, lines)

    pairs = ins._data().sibling("instruct").training_pairs(300, 1)
    all_ids = {f"ins-{i.id}" for i in pairs}
    for n_lines, ratio in [(10, 0.8), (2000, 0.5), (10, 0.25), (2000, 0.9)]:
        train, dev = examples(_text_lines(n_lines), instruct_ratio=ratio)
        instr = [i for i, s in train if s["kind"] == "instruct"]
        text = [i for i, s in train if s["kind"] == "text"]
        dev_instr = [i for i, s in dev if s["kind"] == "instruct"]
        # the instructions: training_pairs(num_instructions), each once, the dev share apart
        assert len(instr) == len(set(instr)) and set(instr) <= all_ids
        held = {s["instruction"] for i, s in dev if s["kind"] == "instruct"}
        assert len(instr) == sum(i.instruction not in held for i in pairs) >= 250
        assert dev_instr and not set(dev_instr) & set(instr)
        # the corpus: sized to the ratio, subsampled (large corpus) or cycled (small one)
        assert len(text) == round(len(instr) * (1 - ratio) / ratio)
        assert len({i for i, _ in train}) == len(train)  # repeats get -r<k> suffixes
        repeated = [i for i in text if "-r" in i]
        assert bool(repeated) == (len(text) > n_lines)
        assert abs(len(instr) / len(train) - ratio) < 0.01
    assert examples(_text_lines(10), instruct_ratio=0.8) == examples(
        _text_lines(10), instruct_ratio=0.8)  # deterministic
    # ratio 1: instructions only; ratio 0: the corpus only, every sequence once
    train, _ = examples([], instruct_ratio=1.0, stage="instruct", init_from="x",
                        lm_tokenizer=None, interleaved_dir=None)
    assert {s["kind"] for _, s in train} == {"instruct"} and 250 <= len(train) <= 300
    train, dev = examples(_text_lines(50), instruct_ratio=0.0)
    assert {s["kind"] for _, s in train} == {"text"} and len(train) + len(dev) == 50
    with pytest.raises(ValueError, match="num_instructions"):
        config_from_dict(ins.InserterConfig, {**COMMON, "stage": "text", "lm_tokenizer": "t",
                                              "interleaved_dir": "x", "instruct_ratio": 0.5,
                                              "num_instructions": 0}).validate()


def test_data_fingerprint_covers_the_instructions(ins, monkeypatch):
    from types import SimpleNamespace

    config = config_from_dict(ins.InserterConfig, {
        **COMMON, "stage": "instruct", "init_from": "x", "instruct_ratio": 1.0,
        "interleaved_dir": None})
    tok = SimpleNamespace(backend_tokenizer=SimpleNamespace(to_str=lambda: "tok"))
    model_config = SimpleNamespace(stack=2)
    fp = ins._fingerprint(config, tok, model_config, None)
    assert fp["instructions"]["sha256"] and fp == ins._fingerprint(config, tok, model_config,
                                                                   None)
    # other wordings (same settings) are other data: a stale data folder is not reused
    items = ins._instruction_items(config, config.num_instructions)
    monkeypatch.setattr(ins, "_instruction_items", lambda c, n: items[:-1] + items[:1])
    assert ins._fingerprint(config, tok, model_config, None) != fp


def test_text_stage_trains_the_lm_only(ins, corpus, text_model):
    import speechfm

    s = text_model.summary
    params = s["parameters"]
    assert params["encoder"] > 0 and params["adaptor"] > 0 and params["lm"] > 0
    assert s["num_params"] == sum(params.values())
    # encoder frozen, adaptor and speech markers get no data: only the LM trains
    assert s["num_trainable_params"] == params["lm"]
    assert 260 <= s["lm_tokenizer"]["vocab_size"] <= 300
    assert set(s["data"]["train"]["by_kind"]) == {"text", "instruct"}
    assert s["data"]["dev"]["sequences"] >= 1 and s["final_valid_last_weights"]["loss"] > 0
    info = json.loads((text_model.final_dir / "inserter.json").read_text())
    assert info["stages"] == [{"stage": "text", "mode": None, "exp_dir": s["config"]["exp_dir"]}]
    assert info["framing"]["prompt_after"] == "\nanswer: "
    model = speechfm.load(text_model.final_dir)
    answer = model.respond(text="say apple two times", prompt_before="instruction: ",
                           prompt_after="\nanswer: ", max_new_tokens=4)
    assert isinstance(answer, str)


def test_text_stage_plugs_in_a_local_causal_lm(ins, corpus, tmp_path):
    """``lm_from``: a saved transformers Llama + tokenizer instead of the fresh small LM."""
    from transformers import LlamaConfig, LlamaForCausalLM

    import speechfm
    from speechfm.models.speech_lm import train_lm_tokenizer

    root, _ = corpus
    torch.manual_seed(0)
    tok = train_lm_tokenizer(list(DOCS.values()) * 3, 300, None)
    lm = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok) + 4, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    lm.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    with pytest.raises(ValueError, match="lm_from"):
        _config(ins, corpus, stage="speech", init_from="x", lm_from="y").validate()
    result = ins.train(_config(ins, corpus, stage="text", lm_tokenizer=None,
                               lm_from=str(tmp_path / "lm"), encoder_from=str(root / "ctc"),
                               instruct_ratio=0.5, exp_dir=str(tmp_path / "text")))
    s = result.summary
    assert s["lm_from"] == str(tmp_path / "lm") and s["steps"] == 3
    assert s["lm_tokenizer"]["vocab_size"] == len(tok)
    # the plugged-in LM trains, the rest stays frozen; the adaptor has speech_lm_tiny's shape
    assert s["num_trainable_params"] == s["parameters"]["lm"] == sum(
        p.numel() for p in lm.parameters())
    config = json.loads((result.final_dir / "config.json").read_text())["model"]
    assert config["lm"]["hidden_size"] == 32 and config["lm"]["vocab_size"] == len(tok) + 4
    assert config["stack"] == 2 and config["adaptor_dim"] == 64
    model = speechfm.load(result.final_dir)
    assert model.lm_tokenizer.encode("the river") == tok.encode("the river")
    answer = model.respond(text="say apple two times", prompt_before="instruction: ",
                           prompt_after="\nanswer: ", max_new_tokens=4)
    assert isinstance(answer, str)


def test_encoder_cache_matches_a_fresh_pass_and_resumes(ins, corpus, loaded, tmp_path):
    from speechfm.errors import DataError

    data = ins._data()
    model, _, lines, _ = loaded
    cuts = data.speech_cuts(lines)
    assert 4 <= len(cuts) <= 10
    # several shards, several batches per shard
    out = data.build_encoder_cache(model, cuts, tmp_path, batch_seconds=3.0, shard_size=3,
                                   progress=False)
    cache = data.EncoderCache(out)
    assert len(cache) == len(cuts) and cache.fingerprint == data.encoder_fingerprint(model.encoder)
    fbank = model.encoder.feature_extractor()
    with torch.no_grad():
        for cut in cuts:
            wave = torch.from_numpy(cut.load_audio()[0])[None]
            feats, n = fbank(wave, torch.tensor([wave.shape[1]]))
            fresh, fresh_lens = model.run_encoder(feats, n)
            got = cache.get(cut.id)
            assert got.dtype == torch.float16
            assert got.shape == (int(fresh_lens[0]), model.encoder.dim)
            assert cache.frames(cut.id) == got.shape[0]
            torch.testing.assert_close(got.float(), fresh[0, : int(fresh_lens[0])],
                                       atol=2e-3, rtol=2e-3)
    shards = sorted(out.glob("enc-*.safetensors"))
    assert len(shards) == 3
    before = {p.name: p.read_bytes() for p in shards}
    stamp = shards[0].stat().st_mtime_ns
    shards[1].unlink()
    (out / "index.json").unlink()
    again = data.build_encoder_cache(model, cuts, tmp_path, batch_seconds=3.0, shard_size=3,
                                     progress=False)
    assert again == out and shards[0].stat().st_mtime_ns == stamp  # done shards skipped
    assert {p.name: p.read_bytes() for p in sorted(out.glob("enc-*.safetensors"))} == before
    with pytest.raises(DataError, match="other cuts"):
        data.build_encoder_cache(model, cuts[:2], tmp_path, shard_size=3, progress=False)


def test_the_loss_is_on_text_positions_only(ins, corpus, loaded):
    from speechfm.models.speech_lm import IGNORE, SpeechSegment, TextSegment, text_ids

    data = ins._data()
    model, tok, lines, cache = loaded
    framing = ins.framing(_config(ins, corpus, lm_tokenizer="t"))
    dataset = data.SequenceDataset(tok, framing, cache=cache)
    line = next(q for q in lines if any(s["kind"] == "speech" for s in q["segments"]))
    item = data.sibling("instruct").training_pairs(1, 1)[0]
    views = {"interleave": data.interleave_view(line), "asr": data.asr_views(line)[0],
             "instruct": data.instruction_view(item), "text": data.text_view(line)}
    texts = [s["text"] for s in line["segments"]]
    expected = {
        "interleave": sum(len(text_ids(tok, (" " if k else "") + t)) for k, t in enumerate(texts)
                          if line["segments"][k]["kind"] == "text") + 1,
        "asr": len(text_ids(tok, views["asr"]["text"])) + 1,
        "instruct": len(text_ids(tok, item.answer)) + 1,
        "text": len(text_ids(tok, " ".join(texts))) + 1,
    }
    for kind, spec in views.items():
        cut = data.sequence_cut(f"x-{kind}", spec, 0)
        batch = dataset[[cut]]
        (segs,) = batch["sequences"]
        inputs = model.build_inputs([segs])
        labels = inputs.labels[0]
        assert int((labels != IGNORE).sum()) == expected[kind], kind
        # every labelled position holds the id of a trainable text token
        trained = torch.cat([torch.as_tensor(s.ids) for s in segs
                             if isinstance(s, TextSegment) and s.train])
        assert torch.equal(labels[labels != IGNORE], trained), kind
        speech = [s for s in segs if isinstance(s, SpeechSegment)]
        assert len(speech) == {"interleave": sum(s["kind"] == "speech" for s in line["segments"]),
                               "asr": 1}.get(kind, 0)
        assert all(s.encoded.dtype == torch.float16 for s in speech)
        with torch.no_grad():
            _, count, _ = model(batch)
        assert count == expected[kind]
        # the cut's length proxy is the real number of LM positions
        def placeholder(seg):
            return SpeechSegment(encoded=torch.empty(cache.frames(seg["id"]), 0))

        n = data.count_positions(data.sequence_segments(spec, tok, framing, placeholder),
                                 model.adaptor.stack)
        assert n == int(inputs.lengths[0]), kind


def _two_sequence_cuts(ins, loaded, path: Path) -> Path:
    from lhotse import CutSet

    data = ins._data()
    from speechfm.models.speech_lm import SpeechSegment

    model, tok, lines, cache = loaded
    framing = ins.framing(ins.InserterConfig(train_cuts="x"))
    cuts = []
    for line in [q for q in lines if any(s["kind"] == "speech" for s in q["segments"])][:2]:
        spec = data.interleave_view(line)
        segs = data.sequence_segments(spec, tok, framing, lambda seg: SpeechSegment(
            encoded=torch.empty(cache.frames(seg["id"]), 0)))
        cuts.append(data.sequence_cut(f"il-{line['id']}", spec,
                                      data.count_positions(segs, model.adaptor.stack)))
    CutSet.from_cuts(cuts).to_file(path)
    return path


# lhotse's bucketer averages an empty list of bins for a two-cut set (harmless)
@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:invalid value encountered")
def test_interleaved_stage_overfits_two_sequences(ins, corpus, text_model, loaded, tmp_path):
    cuts = _two_sequence_cuts(ins, loaded, tmp_path / "two.jsonl.gz")
    result = ins.train(_config(ins, corpus, stage="speech", mode="interleave",
                               init_from=str(text_model.final_dir), train_cuts=str(cuts),
                               dev_cuts=None, max_steps=30, save_every=30, valid_every=30,
                               optimizer={"lr": 1e-2}, encoder_cache=str(corpus[0] / "cache"),
                               exp_dir=str(tmp_path / "exp")))
    losses = [v for _, v in result.summary["loss_curve"]["train/loss"]]
    assert len(losses) == 30
    assert losses[-1] < 0.5 * losses[0], losses


def test_resume_is_exact(ins, corpus, text_model, tmp_path):
    import yaml

    from speechfm.models.io import read_weights

    settings = dict(COMMON, stage="speech", mode="both", interleaved_dir=str(corpus[1]),
                    init_from=str(text_model.final_dir), max_steps=6, save_every=2,
                    valid_every=100, max_duration=1.0)
    straight = ins.train(config_from_dict(ins.InserterConfig,
                                          dict(settings, exp_dir=str(tmp_path / "straight"))))
    assert straight.summary["epochs_completed"] == 0  # the kill falls mid-epoch
    yml = tmp_path / "split.yaml"
    yml.write_text(yaml.safe_dump(dict(settings, exp_dir=str(tmp_path / "split"))))
    assert ins.main([str(yml), "max_steps=4"]) == 0  # killed after 4 updates
    assert ins.main([str(yml), "--resume"]) == 0
    a = read_weights(tmp_path / "straight" / "checkpoints" / "step-000006")
    b = read_weights(tmp_path / "split" / "checkpoints" / "step-000006")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    with pytest.raises(ValueError, match="data settings changed"):
        ins.main([str(yml), "--resume", "asr_fraction=0.25", "max_steps=8"])


@pytest.mark.slow
def test_stages_end_to_end_and_the_evaluation(ins, corpus, text_model, tmp_path):
    from speechfm.models.io import read_weights

    root, _ = corpus
    data = ins._data()
    ev = data.sibling("evaluate")
    finals, caches = {}, set()
    for mode in ("asr", "interleave", "both"):
        speech = ins.train(_config(ins, corpus, stage="speech", mode=mode,
                                   init_from=str(text_model.final_dir),
                                   exp_dir=str(tmp_path / mode)))
        s = speech.summary
        kinds = s["data"]["train"]["by_kind"]
        assert set(kinds) == ({"asr", "interleave"} if mode == "both" else {mode})
        if mode == "both":
            assert kinds["asr"] == kinds["interleave"]  # asr_fraction 0.5: an even mixture
        assert s["num_trainable_params"] == s["parameters"]["adaptor"] + s["parameters"]["lm"]
        caches.add(s["encoder_cache"])
        # the frozen encoder is the text stage's, unchanged
        before, after = read_weights(text_model.final_dir), read_weights(speech.final_dir)
        assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("encoder."))
        instruct = ins.train(_config(ins, corpus, stage="instruct", instruct_ratio=1.0,
                                     interleaved_dir=None, init_from=str(speech.final_dir),
                                     exp_dir=str(tmp_path / f"{mode}_instruct")))
        assert set(instruct.summary["data"]["train"]["by_kind"]) == {"instruct"}
        stages = json.loads((instruct.final_dir / "inserter.json").read_text())["stages"]
        assert [(x["stage"], x["mode"]) for x in stages] == [
            ("text", None), ("speech", mode), ("instruct", None)]
        finals[mode] = instruct.final_dir
    assert len(caches) == 1  # one encoder, one cache for the three systems
    frozen_lm = ins.train(_config(ins, corpus, stage="speech", mode="asr", freeze_lm=True,
                                  init_from=str(text_model.final_dir),
                                  exp_dir=str(tmp_path / "frozen_lm"))).summary
    assert frozen_lm["num_trainable_params"] == frozen_lm["parameters"]["adaptor"]

    bench = data.build_benchmark(tmp_path / "bench", n_per_family=2, seed=1, progress=False)
    items = data.sibling("instruct").read_jsonl(bench["bench"])
    out = tmp_path / "eval"
    assert ev.main([str(finals["interleave"]), "--bench", str(tmp_path / "bench"), "--out",
                    str(out), "--asr", str(root / "ctc"), "--max-new-tokens", "6",
                    "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["num_items"] == len(items) and results["prompt_after"] == "\nanswer: "
    families = {i.family for i in items}
    for cond in ev.CONDITIONS:
        r = results[cond]
        assert {"seen", "unseen", "all", "families"} <= set(r), cond
        assert r["all"]["total"] == len(items) and set(r["families"]) == families
        assert r["unseen"]["total"] == sum(i.unseen_family for i in items) > 0
        rows = [json.loads(x) for x in (out / f"responses_{cond}.jsonl").read_text().splitlines()]
        assert [x["id"] for x in rows] == [i.id for i in items]
        assert sum(x["correct"] for x in rows) == r["all"]["correct"]
    assert 0 <= results["cascade_noisy"]["asr_wer"]
    table = ev.format_results(results)
    assert "last_letter (unseen)" in table and "cascade_noisy" in table
    # the encoder-cache path: the training cache function on the benchmark audio
    cached = ev.evaluate(finals["asr"], ev.first_per_family(items, 1), tmp_path / "cached",
                         clean_cuts=bench["clean"], encoder_cache=tmp_path / "bench_cache",
                         max_new_tokens=4, progress=False)
    assert cached["speech_clean"]["all"]["total"] == len(families)
    assert cached["speech_noisy"] is None and cached["cascade_clean"] is None
    assert list((tmp_path / "bench_cache" / "clean").glob("*/index.json"))
