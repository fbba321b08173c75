"""``speechfm decode``: decode a manifest with an ASR model directory and score it.

    speechfm decode MODEL_DIR --cuts CUTS --out-dir DIR [--method greedy|beam] [--beam 4]
                    [--group-by lang|speaker|none] [--device cpu] [--max-duration S]
                    [--streaming] [--chunk-size C] [--left-context L] [--piece-frames P]
                    [--language LANG] [--first-pass] [--adapters FILE [FILE ...]]

``--method beam`` is CTC prefix beam search or transducer modified beam search.
``--streaming`` (transducers) feeds every utterance to a stream, P feature frames at a
time, decoded chunk by chunk with cached encoder state; ``--chunk-size``/``--left-context``
without it decode whole utterances with chunked attention.

``--language LANG`` runs LANG's language-dependent adapters (those of the model directory
and any ``--adapters`` files attached on top) for every cut; ``--language auto`` lets the
model's language-ID head pick each cut's language (DIR/lid.txt); ``--first-pass`` decodes a
cascaded transducer's first (causal) pass offline instead of its final pass (streaming
always runs the first pass; a model with one encoder has only one).

Writes DIR/hyps.txt (Kaldi text), DIR/refs.txt, DIR/errs-<group>-<cer|wer|per>.txt,
DIR/results.json and DIR/results.md, and prints the per-group table (CER and WER; PER
and WER for IPA models).
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "decode",
        help="decode a manifest with an ASR model and print per-language CER/WER",
        description="Decode every cut of a manifest with an ASR model directory, write "
        "hypotheses, errs files and results.json, and print per-group error rates.",
    )
    p.add_argument("model_dir", metavar="MODEL_DIR", help="model directory (exp/.../final)")
    p.add_argument("--cuts", required=True, help="lhotse manifest to decode (cuts_*.jsonl.gz)")
    p.add_argument("--out-dir", required=True, help="output folder")
    p.add_argument("--method", default="greedy", choices=("greedy", "beam", "graph"),
                   help="graph: CTC models, through a lexicon + n-gram graph (the model "
                        "directory's graph/, or --graph, or one built from --lm [--lexicon])")
    p.add_argument("--beam", type=int, default=4, help="beam width for --method beam")
    p.add_argument("--group-by", default="lang", choices=("lang", "speaker", "none"))
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--max-duration", type=float, default=200.0, help="seconds of audio per batch")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--num-threads", type=int, default=0, help="torch threads (0 = all cores)")
    p.add_argument("--streaming", action="store_true",
                   help="transducers: decode each utterance as a live stream, chunk by chunk")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="encoder frames per attention chunk (default: the model's)")
    p.add_argument("--left-context", type=int, default=None,
                   help="cached encoder frames of left context, -1 = all (default: the model's)")
    p.add_argument("--piece-frames", type=int, default=32,
                   help="--streaming: feature frames fed per piece")
    p.add_argument("--max-sym-per-frame", type=int, default=1,
                   help="transducers: most tokens emitted per encoder frame")
    p.add_argument("--graph", default=None, help="--method graph: a DecodingGraph folder")
    p.add_argument("--lm", default=None,
                   help="--method graph: a `speechfm lm train` folder to build the graph from")
    p.add_argument("--lexicon", default=None,
                   help="--method graph with --lm: lexicon.txt (default: the model's; char and "
                        "subword models spell the LM's words themselves)")
    p.add_argument("--g2p-lang", default=None,
                   help="--method graph with --lm: give the LM's words the lexicon lacks an "
                        "espeak-ng pronunciation in this language (test-time extension)")
    p.add_argument("--acoustic-scale", type=float, default=1.0,
                   help="--method graph: acoustic scale (1 / LM weight)")
    p.add_argument("--graph-beam", type=float, default=16.0, help="--method graph: search beam")
    p.add_argument("--language", default=None, metavar="LANG",
                   help="run LANG's language-dependent adapters for every cut; 'auto': the "
                        "model's language-ID head picks each cut's language (default: the "
                        "base model, language-independent adapters only)")
    p.add_argument("--first-pass", action="store_true",
                   help="cascaded transducers: decode the first (causal, streaming) pass "
                        "offline instead of the final pass")
    p.add_argument("--adapters", nargs="+", default=None, metavar="FILE",
                   help="adapter files (.safetensors) to attach to the model before decoding, "
                        "on top of those the model directory carries")
    p.set_defaults(func=_decode)


def _graph(args: argparse.Namespace):
    """The decoding graph --method graph asks for (None for other methods)."""
    from speechfm.errors import DataError
    from speechfm.models.io import PARTS, load_part

    if args.method != "graph":
        if args.graph or args.lm or args.lexicon or args.g2p_lang:
            raise DataError("--graph, --lm, --lexicon and --g2p-lang go with --method graph")
        return None
    if args.graph:
        return args.graph
    if args.lm:
        from speechfm.decode.graph import graph_for_model

        lexicon = (PARTS["lexicon"].load(args.lexicon) if args.lexicon
                   else load_part(args.model_dir, "lexicon"))
        tokenizer = load_part(args.model_dir, "tokenizer")
        g2p = None
        if args.g2p_lang:
            from speechfm.text.lexicon import espeak_g2p

            # the tokenizer's clean-up, so generated phones are the model's units
            g2p = espeak_g2p(args.g2p_lang, **{k: bool(getattr(tokenizer, k, False)) for k in
                                               ("strip_stress", "strip_length", "strip_tones")})
        return graph_for_model(tokenizer, lexicon, args.lm, g2p=g2p)
    graph = load_part(args.model_dir, "graph")
    if graph is None:
        raise DataError(f"{args.model_dir}: no decoding graph stored; pass --graph or --lm")
    return graph


def _decode(args: argparse.Namespace) -> int:
    import torch

    from speechfm.decode.asr import decode_manifest, format_results_table

    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    graph = _graph(args)
    results = decode_manifest(
        args.model_dir, args.cuts, args.out_dir,
        method="greedy" if graph is not None else args.method, beam=args.beam,
        graph=graph, graph_options={"acoustic_scale": args.acoustic_scale,
                                    "beam": args.graph_beam} if graph is not None else None,
        group_by=args.group_by, device=args.device, max_duration=args.max_duration,
        num_workers=args.num_workers, streaming=args.streaming, chunk_size=args.chunk_size,
        left_context=args.left_context, piece_frames=args.piece_frames,
        max_sym_per_frame=args.max_sym_per_frame, language=args.language,
        final_pass=not args.first_pass, adapters=args.adapters,
    )
    mode = f", streaming chunk {args.chunk_size or 'default'}" if args.streaming else ""
    if args.first_pass and not args.streaming:
        mode += ", first pass"
    if args.language:
        mode += f", language {args.language}"
    print(format_results_table(results, title=f"{args.cuts} ({args.method}{mode}, "
                               f"{results['num_utts']} utts, {results['hours']} h)"), end="")
    print(f"results: {args.out_dir}/results.json")
    return 0
