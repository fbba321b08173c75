#!/usr/bin/env python3
"""w2v-BERT pretraining step vs the encoder alone, measured in the same run.

    python bench/w2v_bert.py [--size w2v_bert_small] [--batch 4] [--seconds 10]
        [--threads 2] [--repeat 10] [--write bench/RESULTS.md]

Times (interleaved, median of ``--repeat``) one forward+backward of

- **encoder**: the shared speech encoder alone (stacked fbank -> Conformer, unmasked),
  a mean-square stand-in loss;
- **step**: the whole pretraining step: span masking, the Gumbel quantizer, the
  contrastive loss with 100 distractors and the masked-prediction loss,

on the same random batch, and prints ``step / encoder`` and the share of the step spent
outside the encoder (``1 - encoder / step``). GPU throughput belongs to the GPU
benchmarks (bench/conformer.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch


def _time(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def run(size: str, batch: int, seconds: float, threads: int, repeat: int) -> dict:
    from speechfm.models import w2v_bert as wb

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = getattr(wb, size)()
    model = wb.create_w2v_bert_model(config).train()
    frames = int(seconds * 100)
    feats = torch.randn(batch, frames, config.encoder.fbank.feature_dim)
    lens = torch.full((batch,), frames, dtype=torch.int64)
    data = {"features": feats, "x_lens": lens, "cut_ids": [str(i) for i in range(batch)]}

    def encoder_step():
        model.zero_grad(set_to_none=True)
        out, _ = model.encoder(feats, lens)
        out.pow(2).mean().backward()

    def full_step():
        model.zero_grad(set_to_none=True)
        loss, count, _ = model(data, step=0)
        (loss / count).backward()

    for fn in (encoder_step, full_step):  # warm-up
        fn()
    enc, full = [], []
    for _ in range(repeat):  # interleaved: both see the same machine load
        enc += _time(encoder_step, 1)
        full += _time(full_step, 1)
    e, f = statistics.median(enc), statistics.median(full)
    return {"size": size, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "batch": batch, "seconds": seconds, "threads": threads, "encoder_s": e, "step_s": f,
            "ratio": f / e, "outside_share": 1 - e / f, "torch": torch.__version__}


def report(r: dict) -> str:
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"### {time.strftime('%Y-%m-%d')}: {r['size']} ({r['params_m']:.1f} M), batch "
            f"{r['batch']} x {r['seconds']:g} s on {cpu} (CPU, {r['threads']} threads)\n\n"
            f"Command: `python bench/w2v_bert.py --size {r['size']} --batch {r['batch']} "
            f"--seconds {r['seconds']:g} --threads {r['threads']}` (torch {r['torch']})\n\n"
            "| encoder fwd+bwd | pretraining step fwd+bwd | step / encoder | share outside the encoder |\n"
            "|---|---|---|---|\n"
            f"| {1000 * r['encoder_s']:.0f} ms | {1000 * r['step_s']:.0f} ms | "
            f"{r['ratio']:.2f}x | {100 * r['outside_share']:.1f} % |\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="w2v_bert_small")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--write", default=None, help="append the table to this Markdown file")
    args = p.parse_args(argv)
    result = run(args.size, args.batch, args.seconds, args.threads, args.repeat)
    text = report(result)
    print(text)
    if args.write:
        with open(args.write, "a", encoding="utf-8") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
