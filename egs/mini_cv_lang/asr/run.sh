#!/usr/bin/env bash
# mini_cv_lang ASR: one multilingual CTC model and two transducers (streaming-capable and
# full-context) on the corpus's shared data (../prepare.sh), decoded and scored per language.
#
#   ./run.sh                          # all stages, corpus defaults from ../conf/corpus.conf
#   ./run.sh --utts-per-lang 40 --data-dir /tmp/mcl   # small copy elsewhere
#   ./run.sh --stage 1 --exp-dir exp/ctc_bpe --unit bpe --train-args "optimizer.lr=1e-3"
#
# Stages (0, 1 and 4 skip what their .done markers say is done; 2-3, 5-6 always rerun):
#   0  ../prepare.sh: corpus, checks, fbank + CMVN, tokenizers -> DATA/ (shared by every task)
#   1  train the multilingual CTC model (recipes/ctc, configs/mini_cv_lang.yaml) -> EXP/final,
#      EXP/train_summary.json (resumes from EXP/checkpoints; EXP/.train.done when finished)
#   2  decode dev and test (greedy, or --decode-method beam) -> EXP/decode_<method>/{dev,test};
#      and words through a per-language lexicon + word 3-gram LM graph (--word-lm true; char
#      and bpe units): each language's LM is estimated from its training transcripts plus
#      everyday text, never a dev/test sentence (../local/lm_text.py, speechfm lm train)
#      -> DATA/lm_word/<lang>/, EXP/decode_lm/{dev,test} (merged over the languages)
#   3  per-language CER/WER tables + run details -> EXP/RESULTS.md (or --results-md FILE)
#   4  train two transducers (pruned RNN-T + auxiliary CTC, recipes/transducer), their
#      encoders started from the stage-1 CTC model's (--transducer-init, "none" = from
#      scratch): a streaming-capable one (causal convolution, dynamic chunks; --transducer-conf,
#      "" to skip) -> TEXP/final and a full-context one (--offline-transducer-conf, "" to
#      skip) -> OEXP/final
#   5  decode dev and test: greedy and modified beam (full context) with both, and
#      streaming greedy chunk by chunk (--stream-chunk encoder frames) with the streaming
#      one -> TEXP/decode_*/{dev,test}, OEXP/decode_*/{dev,test}
#   6  per-language tables of those decodings -> TEXP/RESULTS.md, OEXP/RESULTS.md
set -euo pipefail
__run_cmd="$0$(printf ' %q' "$@")"  # as typed, empty arguments included
cd "$(dirname "${BASH_SOURCE[0]}")"

stage=0
stop_stage=100
nj=2
data_dir=../data     # DATA: egs/mini_cv_lang/data
text_dir=            # corpus texts for ../prepare.sh (default ../shared/data/udhr2)
exp_dir=exp/ctc      # EXP
recipes=../../../recipes   # the repository's recipes/
train_conf=$recipes/ctc/configs/mini_cv_lang.yaml
train_args=          # extra key=value overrides for the CTC recipe (space-separated)
unit=char            # char | bpe | ipa: which ../prepare.sh tokenizer the models predict
decode_method=greedy # greedy | beam
beam=4
word_lm=true         # stage 2: also decode words through per-language lexicon + 3-gram LM graphs
lm_order=3
lm_wordfreq=3000     # wordfreq word sequences added to each language's LM text
results_md=          # default EXP/RESULTS.md
transducer_exp_dir=exp/transducer   # TEXP
transducer_conf=$recipes/transducer/configs/mini_cv_lang.yaml
offline_transducer_exp_dir=exp/transducer_offline   # OEXP
offline_transducer_conf=$recipes/transducer/configs/mini_cv_lang_offline.yaml
transducer_init=     # encoder weights for stage 4: default EXP/final (the CTC model); none
transducer_args=     # extra key=value overrides for the transducer recipe (both models)
stream_chunk=16      # streaming decoding: encoder frames per chunk (x 40 ms)
. ../conf/corpus.conf   # langs, utts_per_lang, seed, snr_db, bpe_vocab_size: passed on to ../prepare.sh
. ../../utils/parse_options.sh
. ../../utils/log.sh
. ./path.sh

data=$data_dir
mkdir -p "$data"
case $unit in
  char) lang_dir=$data/lang_char ;;
  bpe) lang_dir=$data/lang_bpe_$bpe_vocab_size ;;
  ipa) lang_dir=$data/lang_ipa ;;
  *) log "unknown --unit $unit (char, bpe or ipa)"; exit 1 ;;
esac
# what every training stage passes to its recipe (key=value overrides of its config)
data_args=(train_cuts="$data/fbank/cuts_train.jsonl.gz" dev_cuts="$data/fbank/cuts_dev.jsonl.gz"
  tokenizer="$lang_dir" cmvn="$data/fbank/cmvn.json")

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: shared data (../prepare.sh; skips what is done) -> $data"
  # prepare.sh runs from its own folder: absolute paths
  abs_data=$(cd "$data" && pwd)
  [ -n "$text_dir" ] && text_dir=$(cd "$text_dir" && pwd)
  bash ../prepare.sh --data-dir "$abs_data" --nj "$nj" --langs "$langs" \
    --utts-per-lang "$utts_per_lang" --seed "$seed" --snr-db "$snr_db" \
    --bpe-vocab-size "$bpe_vocab_size" ${text_dir:+--text-dir "$text_dir"}
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ] && [ ! -f "$exp_dir/.train.done" ]; then
  log "Stage 1: train CTC ($train_conf, $unit units) -> $exp_dir"
  mkdir -p "$exp_dir"
  echo "$__run_cmd" > "$exp_dir/run_command.txt"
  # Passive OpenMP waits: on a shared CPU, spinning threads of two busy processes stall
  # each other (steps measured 5x slower with the default policy while another job ran
  # 2 threads on this 2-core machine).
  # shellcheck disable=SC2086  # train_args is a list of key=value words
  OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} python "$recipes/ctc/train.py" "$train_conf" \
    --exp-dir "$exp_dir" --resume "${data_args[@]}" $train_args
  touch "$exp_dir/.train.done"
fi

decode_dir=$exp_dir/decode_$decode_method
if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  for split in dev test; do
    log "Stage 2: decode $split ($decode_method) -> $decode_dir/$split"
    speechfm decode "$exp_dir/final" --cuts "$data/fbank/cuts_$split.jsonl.gz" \
      --out-dir "$decode_dir/$split" --method "$decode_method" --beam "$beam" --group-by lang
  done
  if [ "$word_lm" = true ] && [ "$unit" != ipa ]; then
    for lang in ${langs//,/ }; do
      lm=$data/lm_word/$lang
      if [ ! -f "$lm/.done" ]; then
        log "Stage 2: $lang word ${lm_order}-gram LM -> $lm"
        bash ../local/make_word_lm.sh "$lang" "$data" "$seed" "$lm" "$lm_order" "$lm_wordfreq" \
          "$text_dir"
        touch "$lm/.done"
      fi
    done
    for split in dev test; do
      parts=()
      for lang in ${langs//,/ }; do
        log "Stage 2: decode $split $lang through the lexicon + LM graph -> $exp_dir/decode_lm/$split/$lang"
        python ../local/select_cuts.py langs --cuts "$data/fbank/cuts_$split.jsonl.gz" \
          --langs "$lang" --out "$exp_dir/decode_lm/$split/$lang/cuts.jsonl.gz" > /dev/null
        speechfm decode "$exp_dir/final" --cuts "$exp_dir/decode_lm/$split/$lang/cuts.jsonl.gz" \
          --out-dir "$exp_dir/decode_lm/$split/$lang" --method graph \
          --lm "$data/lm_word/$lang" --group-by lang > /dev/null
        parts+=(--part "$lang:$exp_dir/decode_lm/$split/$lang")
      done
      python ../local/merge_results.py "${parts[@]}" --out "$exp_dir/decode_lm/$split"
    done
  fi
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: write ${results_md:-$exp_dir/RESULTS.md}"
  lm_dirs=()
  [ -f "$exp_dir/decode_lm/test/results.json" ] && lm_dirs=(--decode-dir "$exp_dir/decode_lm")
  python local/write_results.py --exp-dir "$exp_dir" --decode-dir "$decode_dir" "${lm_dirs[@]}" \
    --splits dev,test --out "${results_md:-$exp_dir/RESULTS.md}" \
    --run-command "$exp_dir/run_command.txt" --title "mini_cv_lang: multilingual CTC ($unit units)"
fi

[ -z "$transducer_init" ] && transducer_init=$exp_dir/final
init_arg=
[ "$transducer_init" != none ] && init_arg="init_from=$transducer_init"
# name:config:dir of each transducer this recipe trains
models=
[ -n "$transducer_conf" ] && models="streaming:$transducer_conf:$transducer_exp_dir"
[ -n "$offline_transducer_conf" ] && models="$models offline:$offline_transducer_conf:$offline_transducer_exp_dir"

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  for spec in $models; do
    IFS=: read -r kind conf dir <<< "$spec"
    [ -f "$dir/.train.done" ] && continue
    log "Stage 4: train the $kind transducer ($conf, $unit units, encoder from $transducer_init) -> $dir"
    mkdir -p "$dir"
    echo "$__run_cmd" > "$dir/run_command.txt"
    # shellcheck disable=SC2086  # init_arg / transducer_args are lists of key=value words
    OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} python "$recipes/transducer/train.py" "$conf" \
      --exp-dir "$dir" --resume "${data_args[@]}" $init_arg $transducer_args
    touch "$dir/.train.done"
  done
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  for spec in $models; do
    IFS=: read -r kind conf dir <<< "$spec"
    for split in dev test; do
      log "Stage 5: decode $split with the $kind transducer (greedy, beam $beam$([ $kind = streaming ] && echo ", streaming chunk $stream_chunk"))"
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

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  for spec in $models; do
    IFS=: read -r kind conf dir <<< "$spec"
    log "Stage 6: write $dir/RESULTS.md"
    decodes=(--decode-dir "$dir/decode_greedy" --decode-dir "$dir/decode_beam")
    title="mini_cv_lang: multilingual full-context transducer ($unit units)"
    if [ "$kind" = streaming ]; then
      decodes+=(--decode-dir "$dir/decode_streaming_c$stream_chunk")
      title="mini_cv_lang: multilingual streaming-capable transducer ($unit units), offline and streaming"
    fi
    python local/write_results.py --exp-dir "$dir" "${decodes[@]}" --splits dev,test \
      --out "$dir/RESULTS.md" --run-command "$dir/run_command.txt" --title "$title"
  done
fi

log "Done (stages $stage..$stop_stage, data in $data)"
