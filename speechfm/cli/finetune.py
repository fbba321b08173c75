"""``speechfm finetune``: a new language from a base model in one command.

    speechfm finetune --base MODEL --data DIR --lang xx [--method auto|full|adapter|lora|phoneme]
        [--dev DIR --test DIR] [--unlabelled DIR] [--related-data DIR [--related-ratio R]]
        [--out EXP] [--minutes N] [--max-steps N | --epochs N] [--resume] [--dry-run] ...

Reads and validates the data (bad items reported by name and left out), holds out dev and
test sets when none are given, chooses the method, tokenizer and training settings by the
size of the data (:mod:`speechfm.finetune.plan`; the table of choices is printed before
training, ``--dry-run`` prints it and stops), optionally continues the base encoder's
self-supervised pretraining on ``--unlabelled`` audio, fine-tunes with the matching recipe,
and writes EXP/final (``speechfm.load(EXP/final).transcribe(...)``) and EXP/RESULTS.md
(dev/test WER/CER, the command, the data and the settings). ``--resume`` continues an
interrupted run where it stopped.
"""

from __future__ import annotations

import argparse
import shlex
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune a base model to a new language in one command (data check, split, "
             "plan, [pretraining], training, evaluation, RESULTS.md)",
        description=__doc__.split("\n\n", 2)[2].split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io = p.add_argument_group("inputs and output")
    io.add_argument("--base", required=True, metavar="MODEL",
                    help="base model directory: CTC, transducer (an LDA merged model too), "
                         "Whistle IPA-CTC, w2v-BERT / encoder-only, or a converted w2v-BERT 2.0 "
                         "(speechfm convert)")
    io.add_argument("--data", required=True, metavar="DIR",
                    help="labelled data of the new language: Kaldi data dir, lhotse manifest "
                         "(cuts file, or a directory of cuts or recordings + supervisions), "
                         "TSV (path<TAB>text, with or without a header) or path-JSONL")
    io.add_argument("--lang", required=True, help="the new language's ISO 639 code (e.g. ky)")
    io.add_argument("--out", metavar="EXP", default=None,
                    help="output directory (default exp/finetune_<lang>)")
    io.add_argument("--dev", metavar="DIR", help="dev set (default: held out from --data)")
    io.add_argument("--test", metavar="DIR", help="test set (default: held out from --data)")
    io.add_argument("--unlabelled", metavar="DIR",
                    help="audio of the new language: continue the base encoder's "
                         "self-supervised (w2v-BERT) pretraining on it first")
    io.add_argument("--related-data", metavar="DIR",
                    help="labelled data of a related language, mixed into the training set")
    io.add_argument("--related-ratio", type=float, default=1.0, metavar="R",
                    help="related audio used, as a multiple of the new language's training audio")
    how = p.add_argument_group("method (default: by the base model and the data size)")
    how.add_argument("--method", default="auto",
                     choices=("auto", "full", "adapter", "lora", "phoneme"),
                     help="full: new head, everything trains; adapter / lora: new adapters on "
                          "the frozen base; phoneme: a Whistle base's IPA head re-mapped")
    how.add_argument("--tokenizer", default="auto", choices=("auto", "char", "bpe", "ipa"),
                     help="output units (auto: characters under 1 h of data, BPE above)")
    how.add_argument("--vocab-size", type=int, help="BPE vocabulary size")
    how.add_argument("--adapter-size", type=int, help="adapter bottleneck width / LoRA rank")
    budget = p.add_argument_group("budgets and settings (default: the data-size rules)")
    budget.add_argument("--minutes", type=float, help="wall-clock budget of the fine-tuning stage")
    budget.add_argument("--max-steps", type=int, help="optimizer updates of the fine-tuning stage")
    budget.add_argument("--epochs", type=int, help="epochs of the fine-tuning stage")
    budget.add_argument("--pretrain-steps", type=int, help="updates of continued pretraining")
    budget.add_argument("--pretrain-minutes", type=float,
                        help="wall-clock budget of continued pretraining")
    budget.add_argument("--lr", type=float, help="peak learning rate")
    budget.add_argument("--batch-seconds", type=float, help="seconds of audio per batch")
    budget.add_argument("--specaugment", default="auto", choices=("auto", "on", "off"))
    budget.add_argument("--freeze-encoder-steps", type=int,
                        help="updates training the new head alone first (method full)")
    budget.add_argument("--patience", type=int,
                        help="early stopping: validations without dev improvement")
    budget.add_argument("--min-duration", type=float, default=0.1,
                        help="shorter utterances are reported and left out (s)")
    budget.add_argument("--max-duration", type=float, default=30.0,
                        help="longer utterances are reported and left out (s)")
    budget.add_argument("--seed", type=int, default=42, help="seed of the split and the training")
    budget.add_argument("--from-scratch", action="store_true",
                        help="the control run: the base's architecture with fresh weights "
                             "(only its feature normalisation is kept), trained the same way")
    run = p.add_argument_group("running")
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted run in --out (finished stages are skipped)")
    run.add_argument("--dry-run", action="store_true",
                     help="check the data, print the plan and exit (nothing written)")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    run.add_argument("--threads", type=int, default=0, help="torch threads (0: all usable cores)")
    run.add_argument("--num-workers", type=int, default=1, help="data loader processes")
    run.add_argument("--nj", type=int, default=2, help="threads decoding audio for the data check")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_finetune)


def _finetune(args: argparse.Namespace) -> int:
    from speechfm.finetune.pipeline import finetune
    from speechfm.finetune.plan import FinetuneOptions

    fields = {k: v for k, v in vars(args).items()
              if k not in ("func", "command", "no_progress")}
    options = FinetuneOptions(**fields, progress=not args.no_progress,
                              command="speechfm " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    finetune(options, echo=lambda line: print(line, flush=True))
    return 0
