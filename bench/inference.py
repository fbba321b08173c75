"""Real-time factor on one CPU core: PyTorch (``speechfm.load``) vs sherpa-onnx fp32 / int8.

One model directory is exported with ``speechfm.export.export_onnx`` (int8 included) and
the same utterances are decoded three ways, each single-threaded
(``torch.set_num_threads(1)``, sherpa-onnx ``num_threads=1``), one utterance at a time,
features included:

- PyTorch: ``speechfm.load(dir).transcribe`` (offline exports) or ``.stream()`` fed
  100 ms pieces (streaming transducers, same chunk and left context as the export);
- sherpa-onnx with the fp32 files, and with the int8 files.

RTF = decoding seconds / audio seconds (the best of ``--repeat`` passes; the passes
alternate the three paths so that outside load hits them alike). Speed-up = PyTorch RTF /
sherpa-onnx RTF. Texts are compared with PyTorch's (identical count) and, when the audio
comes with transcripts, scored (CER).

Usage (repository root)::

    .venv/bin/python bench/inference.py [MODEL_DIR] [--num-utts 40] [--repeat 3]

MODEL_DIR defaults to egs/mini_cv_lang/asr/exp/transducer/final when it exists (else
transducer_offline, else ctc); audio defaults to that corpus' test cuts, else synthetic
tones. Needs the ``export`` extra.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
EXP = REPO / "egs" / "mini_cv_lang" / "asr" / "exp"
DEFAULT_MODELS = (EXP / "transducer" / "final", EXP / "transducer_offline" / "final",
                  EXP / "ctc" / "final")
DEFAULT_CUTS = REPO / "egs" / "mini_cv_lang" / "data" / "clean" / "cuts_test.jsonl.gz"
PIECE_S = 0.1


def load_audio(cuts_path: Path | None, num_utts: int, sample_rate: int
               ) -> tuple[list[np.ndarray], list[str] | None]:
    """``num_utts`` utterances spread over a lhotse cut manifest (with their transcripts),
    or synthetic tone sequences (no transcripts) when there is none."""
    if cuts_path is not None and cuts_path.is_file():
        import lhotse

        cuts = list(lhotse.load_manifest_lazy(cuts_path))
        step = max(1, len(cuts) // num_utts)
        cuts = cuts[::step][:num_utts]
        audio = []
        for cut in cuts:
            if cut.sampling_rate != sample_rate:
                cut = cut.resample(sample_rate)
            audio.append(cut.load_audio()[0].astype(np.float32))
        texts = [" ".join(s.text for s in cut.supervisions) for cut in cuts]
        return audio, texts
    rng = np.random.default_rng(0)
    audio = []
    for _ in range(num_utts):
        tones = [0.3 * np.sin(2 * np.pi * f * np.arange(int(0.2 * sample_rate)) / sample_rate)
                 for f in rng.uniform(200, 3000, size=int(rng.integers(5, 20)))]
        audio.append((np.concatenate(tones) + 1e-3 * rng.standard_normal(1)).astype(np.float32))
    return audio, None


def cer(refs: list[str], hyps: list[str]) -> float:
    import kaldialign

    errors = sum(kaldialign.edit_distance(list(r), list(h))["total"]
                 for r, h in zip(refs, hyps, strict=True))
    return 100.0 * errors / max(1, sum(len(r) for r in refs))


def _norm(text: str) -> str:
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model_dir", nargs="?", default=None, help="speechfm model directory")
    p.add_argument("--cuts", default=str(DEFAULT_CUTS),
                   help="lhotse cut manifest to take utterances from (default: mini_cv_lang "
                   "test; synthetic tones when absent)")
    p.add_argument("--num-utts", type=int, default=40, help="utterances decoded")
    p.add_argument("--repeat", type=int, default=3, help="timed passes (the best is kept)")
    p.add_argument("--chunk-size", type=int, default=None, help="streaming export chunk")
    p.add_argument("--left-context", type=int, default=None, help="streaming left context")
    p.add_argument("--export-dir", default=None, help="where to export (default: a temp dir)")
    args = p.parse_args(argv)

    import speechfm
    from speechfm.export import create_recognizer, export_onnx, recognize, tail_padding_s

    model_dir = Path(args.model_dir) if args.model_dir else next(
        (d for d in DEFAULT_MODELS if d.is_dir()), None)
    if model_dir is None:
        print("no model directory given and none of the defaults exists: "
              + ", ".join(map(str, DEFAULT_MODELS)), file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    tmp = tempfile.TemporaryDirectory() if args.export_dir is None else None
    out = Path(args.export_dir or tmp.name)
    t0 = time.perf_counter()
    info = export_onnx(model_dir, out, int8=True, chunk_size=args.chunk_size,
                       left_context=args.left_context)
    export_s = time.perf_counter() - t0
    model = speechfm.load(model_dir)
    rate = model.sample_rate
    audio, refs = load_audio(Path(args.cuts) if args.cuts else None, args.num_utts, rate)
    if refs is not None:  # scored as the model's tokenizer sees text (case, punctuation)
        refs = [_norm(model.tokenizer.normalize(r)) for r in refs]
    total_s = sum(a.shape[0] for a in audio) / rate
    online = info["kind"] == "online_transducer"
    tail = tail_padding_s(out)

    if online:
        def pytorch(a: np.ndarray) -> str:
            stream = model.stream(chunk_size=info["chunk_size"],
                                  left_context=info["left_context"])
            padded = np.concatenate([a, np.zeros(int(tail * rate), np.float32)])
            step = int(PIECE_S * rate)
            for start in range(0, padded.shape[0], step):
                stream.accept_waveform(padded[start : start + step], rate)
            return stream.finalize()
    else:
        def pytorch(a: np.ndarray) -> str:
            return model.transcribe(a, sample_rate=rate, batch_size=1)

    def sherpa(int8: bool) -> Callable[[np.ndarray], str]:
        rec = create_recognizer(out, int8=int8, num_threads=1)
        return lambda a: recognize(rec, a, rate, piece_s=PIECE_S, tail_s=tail)

    paths = {"pytorch": pytorch, "sherpa-onnx fp32": sherpa(False),
             "sherpa-onnx int8": sherpa(True)}
    best = dict.fromkeys(paths, float("inf"))
    texts: dict[str, list[str]] = {}
    for fn in paths.values():  # warm-up
        fn(audio[0])
    for _ in range(args.repeat):
        for name, fn in paths.items():
            start = time.perf_counter()
            texts[name] = [_norm(fn(a)) for a in audio]
            best[name] = min(best[name], time.perf_counter() - start)

    what = (f"streaming, chunk {info['chunk_size']} frames, left context "
            f"{info['left_context']}" if online else "offline")
    print(f"model: {model_dir} ({info['family']}, export {info['kind']}: {what}; "
          f"sherpa-onnx type {info['sherpa_model_type']!r}; exported in {export_s:.1f} s)")
    print(f"audio: {len(audio)} utterances, {total_s:.1f} s; 1 thread; best of "
          f"{args.repeat} passes; torch {torch.__version__}")
    pt = best["pytorch"] / total_s
    header = f"{'path':<18} {'RTF':>8} {'speed-up':>9} {'same text as PyTorch':>21}"
    print(header + (f" {'CER %':>7}" if refs else ""))
    for name in paths:
        rtf = best[name] / total_s
        same = sum(a == b for a, b in zip(texts[name], texts["pytorch"], strict=True))
        row = f"{name:<18} {rtf:>8.4f} {pt / rtf:>8.2f}x {f'{same}/{len(audio)}':>21}"
        print(row + (f" {cer(refs, texts[name]):>7.2f}" if refs else ""))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
