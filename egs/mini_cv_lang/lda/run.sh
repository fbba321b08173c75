#!/usr/bin/env bash
# Language-dependent adapters (LDA) for tail languages in a streaming multilingual transducer
# ("Efficient Adapter Finetuning for Tail Languages in Streaming Multilingual ASR"), on
# mini_cv_lang: a cascaded foundation trained on imbalanced data (head languages ~10x the
# tail languages' labelled utterances), then per tail language a small adapter on the frozen
# foundation (supervised, and noisy-student with pseudo-labels), full fine-tuning for
# comparison, and one merged model holding every language's best adapter -> RESULTS.md.
#
#   ./run.sh                               # every stage (about 2 hours on 2 CPU cores)
#   ./run.sh --stage 3 --tail "ky tt"      # from the adapters on, two tail languages
#
# Stages (each skips what its .done markers say is done; 7-8 always rerun):
#   0  data: the shared mini_cv_lang corpus (../prepare.sh), split by local/split_tail.py:
#      head languages all their training utterances, each tail language N/--ratio labelled
#      ones (N: the head languages' mean) and the rest as its unlabelled pool (transcripts
#      removed; kept apart only to score pseudo-labels) -> DATA_LDA/
#   1  the cascaded foundation on head + tail labelled (natural shares, or --temperature
#      sampling): first a CTC model on the same data (recipes/ctc, --ctc-conf) whose encoder
#      starts the first encoder (--foundation-init ctc; "none" = from scratch, which stayed
#      at 97 % dev CER after 3000 updates here), then the cascaded transducer
#      (recipes/transducer, --foundation-conf) with per-language dev curves
#      -> EXP/foundation_ctc, EXP/foundation
#   2  supervised adapters: per tail language and adapter size (--adapter-sizes: bottleneck
#      8 is ~0.4 % of the model, 48 ~2 %), only that language's adapter trains, on its
#      labelled utterances (recipes/lda/train.py) -> EXP/adapter_b<size>/<lang>
#   3  noisy student: the foundation + the language's supervised adapter (--student-size)
#      labels its pool (final pass), confident labels kept (--min-confidence), and a
#      student adapter trains on them + the labelled utterances with SpecAugment and speed
#      perturbation (--student-rounds rounds, each teacher the previous student)
#      -> DATA_LDA/pl/<lang>_r<k>, EXP/student_b<size>_r<k>/<lang>
#   4  full fine-tuning of the whole foundation per tail language on its labelled
#      utterances -> EXP/full/<lang>
#   5  merge: per tail language the adapter (supervised or student) best on dev (by the
#      runs' select_metric: CER in recipes/lda/configs/adapter.yaml), or no adapter when
#      the foundation itself is better on that language's dev set (an adapter's step 0)
#      -> EXP/merged (speechfm.load(EXP/merged).transcribe(x, lang=...) / .stream(lang=...)),
#      with a small language-ID head on the frozen foundation (recipes/lda/train_lid.py,
#      head + tail languages) that picks the adapter when no language is given -> EXP/lid
#   6  decode dev and test per language: every system on its tail language, final
#      (cascaded) pass offline and the first pass streamed chunk by chunk (--stream-chunk);
#      the foundation and the merged model on the head languages too, and the merged
#      model with the language from its language-ID head (--language auto) -> EXP/decode/...;
#      and the merged model streamed through the API (speechfm.load(...).stream(lang=),
#      250 ms pieces) on each tail language's test set -> EXP/api_stream
#   7  RESULTS.md tables (local/write_results.py)
set -euo pipefail
__run_cmd="$0$(printf ' %q' "$@")"
cd "$(dirname "${BASH_SOURCE[0]}")"

stage=0
stop_stage=100
nj=2
data_dir=../data          # the shared mini_cv_lang data (../prepare.sh)
lda_data=data             # DATA_LDA: this task's splits and pseudo-labels
exp_dir=exp               # EXP
recipes=../../../recipes
head="en es fr it ru tr nl pl"
tail="ky tt sv id"
ratio=10
temperature=1             # foundation sampling: 1 = the natural (imbalanced) shares, 2 =
                          # flatter (n^(1/2)), inf = language-balanced (speechfm data resample)
foundation_conf=$recipes/lda/configs/foundation.yaml
foundation_args=          # extra key=value overrides of the foundation run
foundation_init=ctc       # ctc: start the first encoder from a CTC model on the same data; none
ctc_conf=$recipes/ctc/configs/mini_cv_lang.yaml
ctc_args="model.encoder.conformer.conv_norm=layer_norm"  # the foundation's norm
adapter_conf=$recipes/lda/configs/adapter.yaml
adapter_args=             # extra key=value overrides of every adapter / full fine-tuning run
adapter_sizes="8 48"
student_size=48
student_rounds=1
min_confidence=0.5
full_args="optimizer.lr=5e-4"   # full fine-tuning: a lower learning rate for every weight
lid_per_lang=200           # language-ID head: training utterances per language
lid_steps=2000
stream_chunk=16
text_dir=
results_md=RESULTS.md
. ../conf/corpus.conf   # langs, utts_per_lang, seed, snr_db, bpe_vocab_size
. ../../utils/parse_options.sh
. ../../utils/log.sh
. ./path.sh

data=$data_dir
ldata=$lda_data
exp=$exp_dir
mkdir -p "$ldata" "$exp"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
comma() { echo "$*" | tr ' ' ','; }

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: shared data (../prepare.sh; skips what is done) -> $data"
  mkdir -p "$data"
  abs_data=$(cd "$data" && pwd)
  [ -n "$text_dir" ] && text_dir=$(cd "$text_dir" && pwd)
  (cd .. && bash prepare.sh --data-dir "$abs_data" --nj "$nj" --langs "$langs" \
    --utts-per-lang "$utts_per_lang" --seed "$seed" --snr-db "$snr_db" \
    --bpe-vocab-size "$bpe_vocab_size" ${text_dir:+--text-dir "$text_dir"})
  if [ ! -f "$ldata/.split.done" ]; then
    log "Stage 0: head ($head) / tail ($tail) split, $ratio:1 -> $ldata"
    python local/split_tail.py --cuts "$data/fbank/cuts_train.jsonl.gz" --head "$(comma $head)" \
      --tail "$(comma $tail)" --ratio "$ratio" --seed "$seed" --out "$ldata"
    touch "$ldata/.split.done"
  fi
  if [ "$temperature" != 1 ] && [ ! -f "$ldata/cuts_foundation_train_T$temperature.jsonl.gz" ]; then
    log "Stage 0: temperature-$temperature language sampling of the foundation's training set"
    speechfm data resample --cuts "$ldata/cuts_foundation_train.jsonl.gz" \
      --out "$ldata/cuts_foundation_train_T$temperature.jsonl.gz" --temperature "$temperature" \
      --seed "$seed"
  fi
fi
foundation_train=$ldata/cuts_foundation_train.jsonl.gz
[ "$temperature" != 1 ] && foundation_train=$ldata/cuts_foundation_train_T$temperature.jsonl.gz

data_args=(train_cuts="$foundation_train" dev_cuts="$data/fbank/cuts_dev.jsonl.gz"
  tokenizer="$data/lang_char" cmvn="$data/fbank/cmvn.json")
init_arg=
if [ "$foundation_init" = ctc ]; then
  init_arg="init_from=$exp/foundation_ctc/final"
  if [ $stage -le 1 ] && [ $stop_stage -ge 1 ] && [ ! -f "$exp/foundation_ctc/.train.done" ]; then
    log "Stage 1: CTC on the foundation's data ($ctc_conf) -> $exp/foundation_ctc"
    mkdir -p "$exp/foundation_ctc"
    echo "$__run_cmd" > "$exp/foundation_ctc/run_command.txt"
    # shellcheck disable=SC2086
    python "$recipes/ctc/train.py" "$ctc_conf" --exp-dir "$exp/foundation_ctc" --resume \
      "${data_args[@]}" $ctc_args
    touch "$exp/foundation_ctc/.train.done"
  fi
elif [ "$foundation_init" != none ]; then
  log "unknown --foundation-init $foundation_init (ctc or none)"; exit 1
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ] && [ ! -f "$exp/foundation/.train.done" ]; then
  log "Stage 1: the cascaded foundation ($foundation_conf${init_arg:+, $init_arg}) -> $exp/foundation"
  mkdir -p "$exp/foundation"
  echo "$__run_cmd" > "$exp/foundation/run_command.txt"
  # shellcheck disable=SC2086
  python "$recipes/transducer/train.py" "$foundation_conf" --exp-dir "$exp/foundation" --resume \
    "${data_args[@]}" "valid_languages=[$(comma $head $tail)]" $init_arg $foundation_args
  touch "$exp/foundation/.train.done"
fi

lda_train() {  # dir, language, train cuts, stage, extra overrides
  local dir=$1
  [ -f "$dir/.train.done" ] && return 0
  log "Stage $4: $2 ($5) on $(basename "$3") -> $dir"
  mkdir -p "$dir"
  echo "$__run_cmd" > "$dir/run_command.txt"
  # shellcheck disable=SC2086
  python "$recipes/lda/train.py" "$adapter_conf" --exp-dir "$dir" --resume \
    foundation="$exp/foundation/final" language="$2" train_cuts="$3" \
    dev_cuts="$data/fbank/cuts_dev.jsonl.gz" $5 $adapter_args
  touch "$dir/.train.done"
}

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  for lang in $tail; do
    for b in $adapter_sizes; do
      lda_train "$exp/adapter_b$b/$lang" "$lang" "$ldata/cuts_tail_labelled.jsonl.gz" 2 \
        "adapter.options.bottleneck=$b"
    done
  done
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  for lang in $tail; do
    teacher=$exp/adapter_b$student_size/$lang/adapter/$lang.safetensors
    for r in $(seq 1 "$student_rounds"); do
      pl=$ldata/pl/${lang}_r$r
      if [ ! -f "$pl/.done" ]; then
        log "Stage 3: $lang pseudo-labels, round $r (teacher $teacher) -> $pl"
        python "$recipes/lda/pseudo_label.py" --teacher "$exp/foundation/final" \
          --adapters "$teacher" --language "$lang" --cuts "$ldata/cuts_tail_pool.jsonl.gz" \
          --references "$ldata/cuts_tail_pool_refs.jsonl.gz" --out "$pl" \
          --min-confidence "$min_confidence" --labelled "$ldata/cuts_tail_labelled.jsonl.gz" \
          --labelled-repeat 2
        touch "$pl/.done"
      fi
      student=$exp/student_b${student_size}_r$r/$lang
      lda_train "$student" "$lang" "$pl/train.jsonl.gz" 3 \
        "adapter.options.bottleneck=$student_size speed_perturb=true"
      teacher=$student/adapter/$lang.safetensors
    done
  done
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  for lang in $tail; do
    # shellcheck disable=SC2086
    lda_train "$exp/full/$lang" "$lang" "$ldata/cuts_tail_labelled.jsonl.gz" 4 "method=full $full_args"
  done
fi

decode() {  # model dir, language, split, out dir, extra decode flags
  [ -f "$4/results.json" ] && [ "$4/results.json" -nt "$1/model.safetensors" ] && return 0
  # fbank from the audio (not the stored lilcom-compressed features): what the API computes
  python ../local/select_cuts.py langs --cuts "$data/fbank/cuts_$3.jsonl.gz" --langs "$2" \
    --drop-features --out "$4/cuts.jsonl.gz" > /dev/null
  # shellcheck disable=SC2086
  speechfm decode "$1" --cuts "$4/cuts.jsonl.gz" --out-dir "$4" --group-by lang $5 > /dev/null
}

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: merge each tail language's best adapter on dev (or none, if the foundation is better) -> $exp/merged"
  for lang in $tail; do
    decode "$exp/foundation/final" "$lang" dev "$exp/decode/foundation/dev/$lang/final" "--language $lang"
  done
  best=$(python local/best_adapters.py --exp "$exp" --langs "$(comma $tail)" \
    --foundation-dev "$exp/decode/foundation/dev")
  lid=$exp/lid/language_id.safetensors
  if [ ! -f "$exp/lid/.done" ] || [ "$exp/foundation/final/model.safetensors" -nt "$lid" ]; then
    log "Stage 5: a language-ID head on the frozen foundation -> $exp/lid"
    python "$recipes/lda/train_lid.py" --model "$exp/foundation/final" \
      --train-cuts "$ldata/cuts_foundation_train.jsonl.gz" "$ldata/cuts_tail_pool.jsonl.gz" \
      --dev-cuts "$data/fbank/cuts_dev.jsonl.gz" --langs "$(comma $head $tail)" \
      --max-per-lang "$lid_per_lang" --steps "$lid_steps" --out "$lid"
    touch "$exp/lid/.done"
  fi
  rm -rf "$exp/merged"
  # shellcheck disable=SC2086
  python "$recipes/lda/merge.py" --foundation "$exp/foundation/final" --adapters $best \
    --language-id "$lid" --out "$exp/merged"
fi


if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "Stage 6: decode dev and test per language -> $exp/decode"
  systems="foundation"
  for d in "$exp"/adapter_b* "$exp"/student_b* "$exp"/full; do [ -d "$d" ] && systems+=" $(basename "$d")"; done
  [ -d "$exp/merged" ] && systems+=" merged"
  for sys in $systems; do
    for lang in $tail $head; do
      case $sys in
        foundation) model=$exp/foundation/final ;;
        merged) model=$exp/merged ;;
        *) model=$exp/$sys/$lang/final ;;
      esac
      [ -f "$model/config.json" ] || continue
      for split in dev test; do
        out=$exp/decode/$sys/$split/$lang
        decode "$model" "$lang" "$split" "$out/final" "--language $lang"
        decode "$model" "$lang" "$split" "$out/stream" \
          "--language $lang --streaming --chunk-size $stream_chunk"
      done
    done
  done
  if [ -f "$exp/merged/language_id.safetensors" ]; then
    for lang in $tail; do  # no language given: the merged model's language-ID head picks it
      for split in dev test; do
        decode "$exp/merged" "$lang" "$split" "$exp/decode/merged_lid/$split/$lang/final" \
          "--language auto"
      done
    done
  fi
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ] && [ -d "$exp/merged" ]; then
  log "Stage 6: the merged model streamed through the API per tail language -> $exp/api_stream"
  python local/api_stream.py --model "$exp/merged" --cuts "$data/fbank/cuts_test.jsonl.gz" \
    --langs "$(comma $tail)" --chunk-size "$stream_chunk" --out "$exp/api_stream"
fi

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  log "Stage 7: tables -> $results_md"
  python local/write_results.py --exp "$exp" --data "$ldata" --head "$(comma $head)" \
    --tail "$(comma $tail)" --out "$results_md" --command "$__run_cmd"
fi
