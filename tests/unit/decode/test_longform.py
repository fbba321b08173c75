"""speechfm.decode.longform: long recordings piece by piece, with bounded memory.

The planner and the stitcher are checked on their own; then ``transcribe`` on recordings
built from known pieces, with the memorising tone models of tests/unit/test_api.py (CTC)
and tests/unit/test_api_stream.py (transducer): each piece decodes to its text, so the
long-form transcript must be the per-piece transcripts joined, with every word timed
inside its own piece. Peak memory is measured in child processes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from speechfm.decode.ctc import CtcHypothesis
from speechfm.decode.longform import (
    DEFAULT_LONG_FORM_S,
    Piece,
    join_texts,
    plan_pieces,
    stitch_hypotheses,
)
from speechfm.features.vad import VoiceActivity

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

UNIT = Path(__file__).resolve().parents[1]
SR = 16000
STEP = 640  # samples per encoder frame (40 ms at 16 kHz)


def _load(name: str, file: str):
    spec = importlib.util.spec_from_file_location(name, UNIT / file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


API = _load("speechfm_test_api_longform", "test_api.py")


def _activity(speech_s: list[tuple[float, float]], seconds: float,
              quiet_at: list[float] = ()) -> VoiceActivity:
    """A detector output with speech in the given spans (seconds); levels -20 dB in
    speech, -60 dB elsewhere and at the ``quiet_at`` times."""
    frames = int(seconds * 100) - 1
    speech = np.zeros(frames, bool)
    for a, b in speech_s:
        speech[int(a * 100):int(b * 100)] = True
    level = np.where(speech, -20.0, -60.0).astype(np.float32)
    for t in quiet_at:
        level[int(t * 100)] = -70.0
    return VoiceActivity(speech, level, hop=160, frame=400, num_samples=int(seconds * SR))


# ------------------------------------------------------------------------------ planning


def test_pieces_group_utterances_between_pauses():
    # utterances of 3 s with 0.8 s pauses, then a 10 s stretch of non-speech, then more
    spans = [(1 + 3.8 * k, 4 + 3.8 * k) for k in range(12)] + [(60 + 3.8 * k, 63 + 3.8 * k)
                                                             for k in range(4)]
    act = _activity(spans, 80.0)
    pieces = plan_pieces(act, sample_rate=SR, max_s=20.0, step=STEP)
    assert all(p.end - p.start <= 20 * SR for p in pieces)
    assert all(p.start % STEP == 0 for p in pieces)
    # whole utterances in each piece; a piece never spans the long non-speech stretch
    for a, b in spans:
        owners = [p for p in pieces if p.start <= a * SR and b * SR <= p.end]
        assert len(owners) == 1, (a, b)
    assert not any(p.start < 50 * SR < p.end for p in pieces)
    # pieces do not overlap, keep all their tokens and follow pauses
    for p, q in zip(pieces, pieces[1:], strict=False):
        assert p.end <= q.start and q.after_pause
    assert not pieces[0].after_pause
    assert all(p.keep_start <= p.start and p.keep_end > p.end for p in pieces)
    # without speech there is nothing to decode
    assert plan_pieces(_activity([], 80.0), sample_rate=SR, max_s=20.0, step=STEP) == []


def test_unbroken_speech_is_cut_at_quiet_points_with_context():
    act = _activity([(0.0, 95.0)], 95.0, quiet_at=[25.0, 47.5, 70.0])
    for use_speech in (True, False):
        pieces = plan_pieces(act, sample_rate=SR, max_s=30.0, step=STEP, use_speech=use_speech)
        assert len(pieces) == 4
        assert all(p.end - p.start <= 30 * SR for p in pieces)
        assert all(p.start % STEP == 0 for p in pieces)
        # the cuts are at the quiet frames (within one encoder frame)
        cuts = [p.keep_start for p in pieces[1:]]
        assert np.allclose(np.array(cuts) / SR, [25.0, 47.5, 70.0], atol=0.05), cuts
        # the kept ranges tile the recording; each piece decodes 1 s beyond its cuts
        assert pieces[0].keep_start == 0 and pieces[-1].keep_end >= 95 * SR
        for p, q in zip(pieces, pieces[1:], strict=False):
            assert p.keep_end == q.keep_start and not q.after_pause
            assert p.end - p.keep_end == SR and q.keep_start - q.start <= SR + STEP
    # without quiet points the cuts fall where the pieces are full
    flat = _activity([(0.0, 100.0)], 100.0)
    pieces = plan_pieces(flat, sample_rate=SR, max_s=30.0, step=STEP)
    assert all(p.end - p.start <= 30 * SR for p in pieces) and len(pieces) in (4, 5)
    assert [p.keep_start for p in pieces[1:]] == [p.keep_end for p in pieces[:-1]]


def test_stitching_keeps_each_token_once_in_recording_frames():
    # piece 1 decodes frames 0..49 and keeps tokens before frame 40 (sample 25600);
    # piece 2 starts at frame 30 and keeps the rest: both saw frames 30..49
    p1 = Piece(0, 50 * STEP, 0, 40 * STEP, after_pause=False)
    p2 = Piece(30 * STEP, 90 * STEP, 40 * STEP, 91 * STEP, after_pause=False)
    p3 = Piece(120 * STEP, 150 * STEP, 120 * STEP, 151 * STEP, after_pause=True)
    h1 = CtcHypothesis([1, 5, 2, 5, 3], [5, 12, 35, 38, 45], [6, 12, 36, 38, 46],
                       [0.9, 1.0, 0.8, 1.0, 0.7])
    h2 = CtcHypothesis([5, 3, 4], [8, 15, 40], [8, 16, 41], [1.0, 0.6, 0.5])  # 38, 45, 70
    h3 = CtcHypothesis([2, 2], [3, 9], [4, 9], [0.9, 0.9])
    out = stitch_hypotheses([p1, p2, p3], [h1, h2, h3], step=STEP, separator=5)
    # token 3 at frame 45 kept once (from piece 2); the duplicated separator at frame 38
    # kept once; a separator inserted before the piece that follows a pause
    assert out.tokens == [1, 5, 2, 5, 3, 4, 5, 2, 2]
    assert out.token_frames == [5, 12, 35, 38, 45, 70, 120, 123, 129]
    assert out.token_frames == sorted(out.token_frames)
    assert all(e >= s for s, e in zip(out.token_frames, out.token_end_frames, strict=True))
    assert out.token_confidences[4] == 0.6  # piece 2's copy of the token
    # subword tokenizers (no separator): nothing inserted
    plain = stitch_hypotheses([p1, p3], [h1, h3], step=STEP)
    assert plain.tokens == [1, 5, 2, 5, 2, 2]
    assert join_texts([p1, p3], [" ab ", "", "c"]) == "ab c"


# ------------------------------------------------------------------------------ transcribe


@pytest.fixture(scope="module")
def ctc():
    from speechfm.api import SpeechModel

    module, _, tok = API.train_ctc_model()
    return SpeechModel(module, tok, family="ctc")


@pytest.fixture(scope="module")
def transducer(tmp_path_factory):
    import speechfm

    stream_tests = _load("speechfm_test_api_stream_longform", "test_api_stream.py")
    return speechfm.load(stream_tests.build_transducer_dir(tmp_path_factory.mktemp("lf_rnnt")))


def _recording(n: int, pause_s: float = 1.5, seed: int = 0):
    """``n`` synthetic utterances (cycling through TEXTS) with ``pause_s`` of faint noise
    between them: (samples, [(start_s, end_s) per utterance], [utterance samples])."""
    rng = np.random.default_rng(seed)
    clips = [API.synth(API.TEXTS[k % 3], seed=k + 1) for k in range(n)]
    parts, spans, pos = [], [], 0
    for clip in clips:
        gap = (3e-3 * rng.standard_normal(int(pause_s * SR))).astype(np.float32)
        spans.append((pos / SR, (pos + clip.shape[0]) / SR))
        parts += [clip, gap]
        pos += clip.shape[0] + gap.shape[0]
    return np.concatenate(parts), spans, clips


def _check_words_inside(tr, spans, per_piece, tol):
    """Every word lies inside its own span (seconds, +- ``tol``), in order, none lost or
    repeated."""
    by_span = [[] for _ in spans]
    for w in tr.words:
        inside = [k for k, (a, b) in enumerate(spans) if a - tol <= w.start < w.end <= b + tol]
        assert len(inside) == 1, w
        by_span[inside[0]].append(w.word)
    assert [" ".join(words) for words in by_span] == per_piece
    starts = [s for s, _ in tr.token_times]
    assert starts == sorted(starts)
    assert all(w1.end <= w2.start for w1, w2 in zip(tr.words, tr.words[1:], strict=False))


@pytest.mark.parametrize("family", ["ctc", "transducer"])
def test_long_form_equals_the_pieces_joined(family, request):
    """A ~65 s recording of 24 utterances 1.5 s apart: each utterance is one piece, and the
    long-form transcript is the pieces' own transcripts joined (the stitching neither
    loses nor repeats words), each word timed inside its utterance."""
    from speechfm.features.vad import detect_voice

    model = request.getfixturevalue(family)
    x, spans, clips = _recording(24)
    assert x.shape[0] > DEFAULT_LONG_FORM_S * SR
    per_clip = [model.transcribe(c, sample_rate=SR) for c in clips]
    right = sum(t == API.TEXTS[k % 3] for k, t in enumerate(per_clip))
    assert right >= 20, per_clip  # the model knows the texts (a few slips allowed)
    for long_form_s in (DEFAULT_LONG_FORM_S, 8.0):
        tr = model.transcribe(x, sample_rate=SR, timestamps=True, long_form_s=long_form_s)
        pieces = plan_pieces(detect_voice(x, SR), sample_rate=SR, max_s=long_form_s, step=STEP)
        assert len(pieces) == 24
        per_piece = model.transcribe([x[p.start:p.end] for p in pieces], sample_rate=SR,
                                     long_form_s=None, vad=False)
        assert tr.text == " ".join(per_piece), long_form_s
        assert tr.token_times[-1][1] <= x.shape[0] / SR
        _check_words_inside(tr, [(p.start / SR, p.end / SR) for p in pieces], per_piece, 0.0)
        if family == "ctc":
            # CTC spikes sit on the tones, and this model is robust to the pieces' edges:
            # the utterances' own texts, each word inside its utterance
            assert per_piece == per_clip == [API.TEXTS[k % 3] for k in range(24)]
            _check_words_inside(tr, spans, per_piece, 0.05)
    # beam search, and a list with a short input beside the long one, in input order
    both = model.transcribe([clips[1], x], sample_rate=SR, method="beam", batch_size=3)
    assert both == [model.transcribe(clips[1], sample_rate=SR, method="beam"),
                    model.transcribe(x, sample_rate=SR, method="beam")]
    assert len(both[1].split()) >= 24


def test_unbroken_speech_stitched_over_overlaps_equals_one_pass(ctc):
    """No pauses to cut at (utterances back to back, or the detector off): cuts inside the
    speech with 1 s of overlap give the one-pass transcript and times."""
    x = np.concatenate([API.synth(API.TEXTS[k % 3], seed=k) for k in range(14)])  # ~14 s
    one = ctc.transcribe(x, sample_rate=SR, timestamps=True, long_form_s=None)
    for vad in (True, False):
        tr = ctc.transcribe(x, sample_rate=SR, timestamps=True, long_form_s=4.0, vad=vad)
        assert tr.text == one.text != ""
        assert tr.tokens == one.tokens
        assert np.allclose(tr.token_times, one.token_times, atol=0.081)
        assert [w.word for w in tr.words] == [w.word for w in one.words]
    # short inputs keep today's exact path: the same hypothesis as the search itself
    clip = API.synth(API.TEXTS[0])
    feats, lens = ctc.module.encoder.feature_extractor()(torch.from_numpy(clip)[None],
                                                         torch.tensor([clip.shape[0]]))
    with torch.no_grad():
        (hyp,) = ctc.module.recognize(feats, lens)
    tr = ctc.transcribe(clip, sample_rate=SR, confidences=True)
    assert tr.tokens == [ctc.tokenizer.id_to_token(t) for t in hyp.tokens]
    assert tr.token_confidences == [float(c) for c in hyp.token_confidences]


def test_language_and_progress_reach_every_piece(ctc, capsys):
    x, _, clips = _recording(16)
    seen = []
    real = ctc.module.recognize

    def spy(feats, lens, **kw):
        seen.append((feats.shape[0], kw.get("language")))
        return real(feats, lens, **kw)

    ctc.module.recognize = spy
    try:
        text = ctc.transcribe(x, sample_rate=SR, lang="xx", long_form_s=10.0, batch_size=2,
                              progress=True)
    finally:
        del ctc.module.recognize
    assert text == " ".join(API.TEXTS[k % 3] for k in range(16))
    assert len(seen) >= 3 and all(n <= 2 and lang == "xx" for n, lang in seen)
    err = capsys.readouterr().err
    total = f"{x.shape[0] / SR:.0f}"
    assert "long audio" in err and f"{total}/{total} s" in err
    with pytest.raises(ValueError, match="long_form_s"):
        ctc.transcribe(x, sample_rate=SR, long_form_s=0.05)


def test_graph_decoding_of_a_long_recording(ctc, tmp_path):
    """Word decoding through a TLG graph (no token times to stitch by: pieces are cut at
    pauses without overlap) gives the pieces' words joined."""
    pytest.importorskip("kaldifst")
    pytest.importorskip("kaldi_decoder")
    pytest.importorskip("kaldilm")
    from speechfm.decode.graph import build_tlg

    words = sorted({w for t in API.TEXTS for w in t.split()})
    arpa = tmp_path / "words.arpa"
    arpa.write_text("\n".join(["\\data\\", f"ngram 1={len(words) + 2}", "", "\\1-grams:",
                               "-99.0\t<s>", "-1.0\t</s>", *(f"-1.0\t{w}" for w in words), "",
                               "\\end\\", ""]), encoding="utf-8")
    graph = build_tlg(ctc.tokenizer, {w: [list(w)] for w in words}, arpa)
    x, _, clips = _recording(14)
    per_clip = ctc.transcribe(clips, sample_rate=SR, graph=graph)
    assert per_clip == [API.TEXTS[k % 3] for k in range(14)]
    assert ctc.transcribe(x, sample_rate=SR, graph=graph, long_form_s=10.0) == " ".join(per_clip)
    noise = (0.01 * np.random.default_rng(0).standard_normal(3 * SR)).astype(np.float32)
    assert ctc.transcribe(noise, sample_rate=SR, graph=graph) == ""


# ------------------------------------------------------------------------------ memory

_CHILD = r"""
import gc, json, re, sys
import numpy as np, torch
torch.set_num_threads(1)
from speechfm.api import SpeechModel
from speechfm.models.ctc import create_ctc_model, ctc_tiny
from speechfm.text.char import CharTokenizer

minutes, long_form_s = float(sys.argv[1]), json.loads(sys.argv[2])
tok = CharTokenizer.train(["ab ca", "cab"])
torch.manual_seed(0)
model = SpeechModel(create_ctc_model(ctc_tiny(tok.vocab_size)), tok, family="ctc")
sr, rng = 16000, np.random.default_rng(0)
t = np.arange(int(0.16 * sr)) / sr
burst = lambda f: np.concatenate([0.5 * np.sin(2 * np.pi * f * t) * np.hanning(t.size),
                                  np.zeros(640)])
clip = np.concatenate([np.zeros(1600), *map(burst, (450, 900, 1600, 220, 450)), np.zeros(8000)])
clip = (clip + 3e-3 * rng.standard_normal(clip.size)).astype(np.float32)
x = np.resize(clip, int(minutes * 60 * sr))  # unbroken tone "speech", allocated once
model.transcribe(x[: 40 * sr], sample_rate=sr, batch_size=4)  # warm up
gc.collect()

def kb(key):
    return int(re.search(key + r":\s+(\d+) kB", open("/proc/self/status").read()).group(1))

try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark (VmHWM)
except OSError as e:
    print(json.dumps({"skip": f"cannot reset the peak RSS: {e}"}))
    sys.exit(0)
before = kb("VmRSS")
text = model.transcribe(x, sample_rate=sr, long_form_s=long_form_s, batch_size=4)
print(json.dumps({"growth_mb": (kb("VmHWM") - before) / 1024, "chars": len(text)}))
"""


def _peak_growth_mb(minutes: float, long_form_s: float | None) -> float:
    """Peak RSS growth (MB) of one ``transcribe`` call in a fresh process, over the RSS
    just before it (the input array already allocated). glibc's dynamic mmap threshold
    is pinned so that freed buffers go back to the system: the high-water mark then
    measures what the call holds, not allocator slack left from earlier batches."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(minutes), json.dumps(long_form_s)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(result["skip"])
    assert result["chars"] > 0
    return result["growth_mb"]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_memory_of_twenty_minutes_is_that_of_two():
    """20 minutes of unbroken (tone) speech need at most 1.5x the peak memory of 2 minutes
    (measured: ~100 MB for both, batches of 4 pieces of <= 30 s).

    The assertion can fail: the one-pass path (``long_form_s=None``, full attention over
    the whole input) grows with the square of the length, ~330 MB for 2 minutes and
    ~1.2 GB for 4 (checked below); extrapolated, 20 minutes would need ~30 GB.
    """
    two = _peak_growth_mb(2, DEFAULT_LONG_FORM_S)
    twenty = _peak_growth_mb(20, DEFAULT_LONG_FORM_S)
    assert twenty <= 1.5 * two, (two, twenty)
    one_pass_two = _peak_growth_mb(2, None)
    one_pass_four = _peak_growth_mb(4, None)
    assert one_pass_four > 2.5 * one_pass_two, (one_pass_two, one_pass_four)
    assert one_pass_two > 2 * two
