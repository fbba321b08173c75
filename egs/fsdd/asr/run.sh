#!/usr/bin/env bash
# FSDD (Free Spoken Digit Dataset: real English digits, 6 speakers) -> CTC ASR, scored on
# speakers never heard in training (test: theo + yweweler, dev: nicolas).
#
#   ./run.sh                                   # all stages
#   ./run.sh --stage 4 --train-args "max_steps=200"
#
# Stages (0-4 skipped when their .done marker exists):
#   0  prepare FSDD (16 kHz, speaker-disjoint splits) -> DATA/corpus/{train,dev,test}
#   1  check every split                             -> DATA/clean/{split}, cuts_*.jsonl.gz
#   2  fbank features + train CMVN                   -> DATA/fbank/cuts_*.jsonl.gz, cmvn.json
#   3  character tokenizer on train transcripts      -> DATA/lang_char
#   4  train a small CTC model (recipes/ctc, conf/ctc.yaml) -> EXP/final, EXP/train_summary.json
#   5  decode dev and test, scored per speaker       -> EXP/decode_<method>/{dev,test}
#   6  speaker-disjoint WER/CER + run details        -> EXP/RESULTS.md (or --results-md FILE)
set -euo pipefail
__run_cmd="$0$(printf ' %q' "$@")"  # as typed, empty arguments included
cd "$(dirname "${BASH_SOURCE[0]}")"

stage=0
stop_stage=100
nj=2
data_dir=data
fsdd_root=           # default: ../shared/data/fsdd beside the repository
dev_speakers=nicolas
test_speakers=theo,yweweler
exp_dir=exp/ctc
train_conf=conf/ctc.yaml
train_args=          # extra key=value overrides for recipes/ctc/train.py (space-separated)
decode_method=greedy # greedy | beam
beam=4
results_md=          # default EXP/RESULTS.md
. ../../utils/parse_options.sh
. ../../utils/log.sh
. ./path.sh

data=$data_dir
splits="train dev test"
mkdir -p "$data"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ] && [ ! -f "$data/corpus/.done" ]; then
  log "Stage 0: prepare FSDD (dev: $dev_speakers, test: $test_speakers)"
  speechfm prepare fsdd --out "$data/corpus" --dev-speakers "$dev_speakers" \
    --test-speakers "$test_speakers" ${fsdd_root:+--root "$fsdd_root"}
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

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ] && [ ! -f "$data/lang_char/.done" ]; then
  log "Stage 3: character tokenizer on train transcripts"
  speechfm tokenizer train --kind char --text "$data/clean/train/text" --out "$data/lang_char"
  touch "$data/lang_char/.done"
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ] && [ ! -f "$exp_dir/.train.done" ]; then
  log "Stage 4: train CTC ($train_conf) -> $exp_dir"
  mkdir -p "$exp_dir"
  echo "$__run_cmd" > "$exp_dir/run_command.txt"
  # Passive OpenMP waits keep a shared CPU from stalling (see egs/mini_cv_lang/asr/run.sh).
  # shellcheck disable=SC2086  # train_args is a list of key=value words
  OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE} python ../../../recipes/ctc/train.py "$train_conf" \
    --exp-dir "$exp_dir" --resume \
    train_cuts="$data/fbank/cuts_train.jsonl.gz" dev_cuts="$data/fbank/cuts_dev.jsonl.gz" \
    tokenizer="$data/lang_char" cmvn="$data/fbank/cmvn.json" $train_args
  touch "$exp_dir/.train.done"
fi

decode_dir=$exp_dir/decode_$decode_method
if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  for split in dev test; do
    log "Stage 5: decode $split ($decode_method) -> $decode_dir/$split"
    speechfm decode "$exp_dir/final" --cuts "$data/fbank/cuts_$split.jsonl.gz" \
      --out-dir "$decode_dir/$split" --method "$decode_method" --beam "$beam" --group-by speaker
  done
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "Stage 6: write ${results_md:-$exp_dir/RESULTS.md}"
  # The results writer is shared with the mini_cv_lang ASR recipe.
  python ../../mini_cv_lang/asr/local/write_results.py --exp-dir "$exp_dir" \
    --decode-dir "$decode_dir" --splits dev,test --out "${results_md:-$exp_dir/RESULTS.md}" \
    --run-command "$exp_dir/run_command.txt" \
    --title "FSDD: CTC on real English digits, speaker-disjoint dev/test"
fi

log "Done (stages $stage..$stop_stage, data in $data, model in $exp_dir)"
