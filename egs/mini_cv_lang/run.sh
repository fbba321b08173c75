#!/usr/bin/env bash
# mini_cv_lang: synthetic 12-language corpus (espeak-ng) -> checked data, fbank, tokenizers,
# then one multilingual CTC model and one streaming-capable transducer, decoded and scored
# per language.
#
#   ./run.sh                          # all stages, defaults from conf/corpus.conf
#   ./run.sh --stage 2 --stop-stage 3 --nj 4
#   ./run.sh --utts-per-lang 40 --data-dir /tmp/mcl   # small copy elsewhere
#   ./run.sh --stage 4 --exp-dir exp/ctc_bpe --unit bpe --train-args "optimizer.lr=1e-3"
#
# Stages (0-4 and 7 are skipped when their .done marker exists; 5-6, 8-9 always rerun):
#   0  synthesise the corpus        -> DATA/corpus/{train,dev,test}, cuts_*.jsonl.gz
#   1  check every split            -> DATA/clean/{split} (Kaldi), DATA/clean/cuts_*.jsonl.gz
#   2  fbank features + train CMVN  -> DATA/fbank/cuts_*.jsonl.gz, DATA/fbank/cmvn.json
#   3  tokenizers                   -> DATA/lang_bpe_<N>/, DATA/lang_ipa/, DATA/lang_char/
#   4  train the multilingual CTC model (conf/ctc.yaml) -> EXP/final, EXP/train_summary.json
#      (resumes from EXP/checkpoints when interrupted; EXP/.train.done when finished)
#   5  decode dev and test (greedy, or --decode-method beam) -> EXP/decode_<method>/{dev,test}
#   6  per-language CER/WER tables + run details -> EXP/RESULTS.md (or --results-md FILE)
#   7  train two transducers (pruned RNN-T + auxiliary CTC, recipes/transducer), their
#      encoders started from the stage-4 CTC model's (--transducer-init, "none" = from
#      scratch): a streaming-capable one (causal convolution, dynamic chunks) -> TEXP/final
#      and a full-context one (--offline-transducer-conf, "" to skip) -> OEXP/final
#   8  decode dev and test: greedy and modified beam (full context) with both, and
#      streaming greedy chunk by chunk (--stream-chunk encoder frames) with the streaming
#      one -> TEXP/decode_*/{dev,test}, OEXP/decode_*/{dev,test}
#   9  per-language tables of those decodings -> TEXP/RESULTS.md, OEXP/RESULTS.md
set -euo pipefail
__run_cmd="$0 $*"
cd "$(dirname "${BASH_SOURCE[0]}")"

stage=0
stop_stage=100
nj=2
data_dir=data
text_dir=
exp_dir=exp/ctc
train_conf=conf/ctc.yaml
train_args=          # extra key=value overrides for speechfm train (space-separated)
unit=char            # char | bpe | ipa: which stage-3 tokenizer the model predicts
decode_method=greedy # greedy | beam
beam=4
results_md=          # default EXP/RESULTS.md
transducer_exp_dir=exp/transducer   # TEXP
transducer_conf=../../recipes/transducer/configs/mini_cv_lang.yaml
offline_transducer_exp_dir=exp/transducer_offline   # OEXP
offline_transducer_conf=../../recipes/transducer/configs/mini_cv_lang_offline.yaml
transducer_init=     # encoder weights for stage 7: default EXP/final (the CTC model); none
transducer_args=     # extra key=value overrides for the transducer recipe (both models)
stream_chunk=16      # streaming decoding: encoder frames per chunk (x 40 ms)
. conf/corpus.conf
. ../utils/parse_options.sh
. ../utils/log.sh
. ./path.sh

data=$data_dir
splits="train dev test"
mkdir -p "$data"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ] && [ ! -f "$data/corpus/.done" ]; then
  log "Stage 0: synthesise mini_cv_lang ($langs, $utts_per_lang utts/lang, seed $seed)"
  speechfm prepare mini_cv_lang --out "$data/corpus" --langs "$langs" \
    --utts-per-lang "$utts_per_lang" --seed "$seed" --snr-db "$snr_db" --nj "$nj" \
    ${text_dir:+--text-dir "$text_dir"}
  python local/corpus_stats.py "$data/corpus"
  touch "$data/corpus/.done"
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ] && [ ! -f "$data/clean/.done" ]; then
  log "Stage 1: check audio and transcripts of every split"
  for split in $splits; do
    if ! speechfm data check "$data/corpus/$split" --out "$data/clean/$split" --nj "$nj"; then
      log "Stage 1: $split has bad items; see $data/clean/$split/bad_items.tsv"
      exit 1
    fi
    speechfm data import "$data/clean/$split" --out "$data/clean/cuts_$split.jsonl.gz" --nj "$nj"
  done
  touch "$data/clean/.done"
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ] && [ ! -f "$data/fbank/.done" ]; then
  log "Stage 2: fbank features and CMVN statistics"
  mkdir -p "$data/fbank"
  for split in $splits; do
    speechfm features compute --cuts "$data/clean/cuts_$split.jsonl.gz" \
      --out-cuts "$data/fbank/cuts_$split.jsonl.gz" --storage "$data/fbank/feats_$split" --nj "$nj"
  done
  speechfm features cmvn --cuts "$data/fbank/cuts_train.jsonl.gz" --out "$data/fbank/cmvn.json"
  touch "$data/fbank/.done"
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  lang_bpe=$data/lang_bpe_$bpe_vocab_size
  if [ ! -f "$lang_bpe/.done" ]; then
    log "Stage 3: BPE tokenizer (V=$bpe_vocab_size) on train transcripts"
    speechfm tokenizer train --kind bpe --text "$data/clean/train/text" \
      --vocab-size "$bpe_vocab_size" --out "$lang_bpe"
    touch "$lang_bpe/.done"
  fi
  if [ ! -f "$data/lang_ipa/.done" ]; then
    log "Stage 3: IPA phone tokenizer on train IPA transcripts"
    speechfm tokenizer train --kind ipa --text "$data/clean/train/text_ipa" --out "$data/lang_ipa"
    touch "$data/lang_ipa/.done"
  fi
  if [ ! -f "$data/lang_char/.done" ]; then
    log "Stage 3: character tokenizer on train transcripts"
    speechfm tokenizer train --kind char --text "$data/clean/train/text" --out "$data/lang_char"
    touch "$data/lang_char/.done"
  fi
fi

case $unit in
  char) lang_dir=$data/lang_char ;;
  bpe) lang_dir=$data/lang_bpe_$bpe_vocab_size ;;
  ipa) lang_dir=$data/lang_ipa ;;
  *) log "unknown --unit $unit (char, bpe or ipa)"; exit 1 ;;
esac

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ] && [ ! -f "$exp_dir/.train.done" ]; then
  log "Stage 4: train CTC ($train_conf, $unit units) -> $exp_dir"
  mkdir -p "$exp_dir"
  echo "$__run_cmd" > "$exp_dir/run_command.txt"
  # Passive OpenMP waits: on a shared CPU, spinning threads of two busy processes stall
  # each other (steps measured 5x slower with the default policy while another job ran
  # 2 threads on this 2-core machine).
  # shellcheck disable=SC2086  # train_args is a list of key=value words
  OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} speechfm train "$train_conf" --exp-dir "$exp_dir" --resume \
    train_cuts="$data/fbank/cuts_train.jsonl.gz" dev_cuts="$data/fbank/cuts_dev.jsonl.gz" \
    tokenizer="$lang_dir" cmvn="$data/fbank/cmvn.json" $train_args
  touch "$exp_dir/.train.done"
fi

decode_dir=$exp_dir/decode_$decode_method
if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  for split in dev test; do
    log "Stage 5: decode $split ($decode_method) -> $decode_dir/$split"
    speechfm decode "$exp_dir/final" --cuts "$data/fbank/cuts_$split.jsonl.gz" \
      --out-dir "$decode_dir/$split" --method "$decode_method" --beam "$beam" --group-by lang
  done
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "Stage 6: write ${results_md:-$exp_dir/RESULTS.md}"
  python local/write_results.py --exp-dir "$exp_dir" --decode-dir "$decode_dir" \
    --splits dev,test --out "${results_md:-$exp_dir/RESULTS.md}" \
    --run-command "$exp_dir/run_command.txt" --title "mini_cv_lang: multilingual CTC ($unit units)"
fi

texp=$transducer_exp_dir
oexp=$offline_transducer_exp_dir
[ -z "$transducer_init" ] && transducer_init=$exp_dir/final
init_arg=
[ "$transducer_init" != none ] && init_arg="init_from=$transducer_init"
# name:config:dir of each transducer this recipe trains
models="streaming:$transducer_conf:$texp"
[ -n "$offline_transducer_conf" ] && models="$models offline:$offline_transducer_conf:$oexp"

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  for spec in $models; do
    IFS=: read -r kind conf dir <<< "$spec"
    [ -f "$dir/.train.done" ] && continue
    log "Stage 7: train the $kind transducer ($conf, $unit units, encoder from ${transducer_init}) -> $dir"
    mkdir -p "$dir"
    echo "$__run_cmd" > "$dir/run_command.txt"
    # shellcheck disable=SC2086  # init_arg / transducer_args are lists of key=value words
    OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} python ../../recipes/transducer/train.py \
      "$conf" --exp-dir "$dir" --resume \
      train_cuts="$data/fbank/cuts_train.jsonl.gz" dev_cuts="$data/fbank/cuts_dev.jsonl.gz" \
      tokenizer="$lang_dir" cmvn="$data/fbank/cmvn.json" $init_arg $transducer_args
    touch "$dir/.train.done"
  done
fi

if [ $stage -le 8 ] && [ $stop_stage -ge 8 ]; then
  for spec in $models; do
    IFS=: read -r kind conf dir <<< "$spec"
    for split in dev test; do
      log "Stage 8: decode $split with the $kind transducer (greedy, beam $beam$([ $kind = streaming ] && echo ", streaming chunk $stream_chunk"))"
      cuts=$data/fbank/cuts_$split.jsonl.gz
      speechfm decode "$dir/final" --cuts "$cuts" --out-dir "$dir/decode_greedy/$split" --group-by lang
      speechfm decode "$dir/final" --cuts "$cuts" --out-dir "$dir/decode_beam/$split" \
        --method beam --beam "$beam" --group-by lang
      if [ "$kind" = streaming ]; then
        speechfm decode "$dir/final" --cuts "$cuts" --out-dir "$dir/decode_streaming_c$stream_chunk/$split" \
          --streaming --chunk-size "$stream_chunk" --group-by lang
      fi
    done
  done
fi

if [ $stage -le 9 ] && [ $stop_stage -ge 9 ]; then
  for spec in $models; do
    IFS=: read -r kind conf dir <<< "$spec"
    log "Stage 9: write $dir/RESULTS.md"
    if [ "$kind" = streaming ]; then
      python local/write_results.py --exp-dir "$dir" --decode-dir "$dir/decode_greedy" \
        --decode-dir "$dir/decode_beam" --decode-dir "$dir/decode_streaming_c$stream_chunk" \
        --splits dev,test --out "$dir/RESULTS.md" --run-command "$dir/run_command.txt" \
        --title "mini_cv_lang: multilingual streaming-capable transducer ($unit units), offline and streaming"
    else
      python local/write_results.py --exp-dir "$dir" --decode-dir "$dir/decode_greedy" \
        --decode-dir "$dir/decode_beam" \
        --splits dev,test --out "$dir/RESULTS.md" --run-command "$dir/run_command.txt" \
        --title "mini_cv_lang: multilingual full-context transducer ($unit units)"
    fi
  done
fi

log "Done (stages $stage..$stop_stage, data in $data)"
