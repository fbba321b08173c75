#!/usr/bin/env python3
"""Stream every test utterance of each tail language through the merged model with the
public API, in pieces, and score it: what a user of the deployed model gets.

    python local/api_stream.py --model exp/merged --cuts ../data/fbank/cuts_test.jsonl.gz \\
        --langs ky,tt,sv,id --chunk-size 16 --piece-ms 250 --out exp/api_stream

For each language: ``speechfm.load(model).stream(chunk_size=..., lang=LANG)`` is fed the
recording's samples ``--piece-ms`` at a time and finalised; the hypotheses are scored
against the references normalised by the model's tokenizer (as ``speechfm decode`` does).
Writes OUT/results.json ({lang: {"cer", "wer", "num_utts"}}) and OUT/hyps_<lang>.txt.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--cuts", required=True)
    p.add_argument("--langs", required=True)
    p.add_argument("--chunk-size", type=int, default=16)
    p.add_argument("--piece-ms", type=int, default=250)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)

    from tqdm import tqdm

    import speechfm
    from speechfm.decode.scoring import score
    from speechfm.train.runner import load_cuts

    model = speechfm.load(args.model)
    tok = model.tokenizer
    cuts = load_cuts(args.cuts).to_eager()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for lang in args.langs.split(","):
        refs, hyps = {}, {}
        chosen = [c for c in cuts if c.supervisions[0].language == lang]
        for cut in tqdm(chosen, desc=f"stream {lang}"):
            audio = cut.load_audio()[0]
            rate = cut.sampling_rate
            step = max(1, rate * args.piece_ms // 1000)
            stream = model.stream(chunk_size=args.chunk_size, lang=lang)
            for start in range(0, audio.shape[0], step):
                stream.accept_waveform(audio[start:start + step], rate)
            hyps[cut.id] = stream.finalize()
            refs[cut.id] = tok.normalize(cut.supervisions[0].text)
        cer, wer = score(refs, hyps, unit="char"), score(refs, hyps, unit="word")
        results[lang] = {"cer": 100.0 * cer.errors / max(cer.ref_len, 1),
                         "wer": 100.0 * wer.errors / max(wer.ref_len, 1),
                         "num_utts": len(chosen), "chunk_size": args.chunk_size,
                         "piece_ms": args.piece_ms}
        (args.out / f"hyps_{lang}.txt").write_text(
            "".join(f"{k} {v}\n" for k, v in sorted(hyps.items())), encoding="utf-8")
        print(lang, json.dumps(results[lang]))
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n",
                                           encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
