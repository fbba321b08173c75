#!/usr/bin/env bash
# InSerter ("Speech Instruction Following with Unsupervised Interleaved Pre-training") at
# small scale, in English: a speech LM (a frozen English-capable speech encoder + adaptor +
# a small Llama) learns text instructions from text only; its speech pre-training is ASR
# alignment, InSerter's interleaved text | speech | text sequences made by TTS from the
# same text corpus, or both; then each follows *spoken* instructions only by transfer.
# Scored by rule on a benchmark with a held-out rule family, spoken by unseen voices.
#
#   ./run.sh                                   # every stage (about 2 h on 2 CPU cores)
#   ./run.sh --stage 5 --limit-per-family 5    # a quick evaluation of what is trained
#
# Stages (each skips what its .done markers say is done; 6 always reruns):
#   0  the base speech encoder: --encoder DIR, a speechfm model directory; the default,
#      ../asr's multilingual CTC model (it covers English), is trained by
#      ../asr/run.sh --stop-stage 1 when it is missing
#   1  data (recipes/inserter/data.py): the interleaved corpus from the English UDHR
#      (--udhr) + --generated-docs wordfreq documents (+ --text-files) -> DATA/interleaved;
#      the benchmark, --n-per-family items per rule family, clean and noisy audio by the
#      test voice pool -> DATA/bench; with --encoder-adapt-steps N > 0 (the default), the
#      encoder is first adapted to English: speechfm finetune of --encoder on the corpus's
#      spoken spans (local/asr_manifest.py; train voices only), N updates -> EXP/encoder_en,
#      whose encoder every speech LM uses (frozen) and which is the cascade's ASR; the
#      encoder's outputs for the corpus and the benchmark, computed once
#      (local/cache_encoder.py) -> DATA/interleaved/encoder_cache, DATA/bench/encoder_cache
#   2  the LM tokenizer (byte-level BPE; skipped with --lm-from) -> DATA/lm_tokenizer, and
#      the text stage (corpus text + text instructions) -> EXP/text
#   3  the speech stage from EXP/text, one per --modes (asr, interleave, both)
#      -> EXP/speech_<mode>
#   4  the same text-only instruction stage after each -> EXP/<mode>_instruct
#   5  the benchmark (recipes/inserter/evaluate.py): text input, speech clean and noisy, for
#      EXP/text (the text-only reference; its speech adaptor never trained), every
#      EXP/<mode>_instruct and (--eval-before-instruct) every EXP/speech_<mode>; and the
#      cascade: the ASR model transcribes, EXP/text answers -> EXP/eval/<system>/results.json
#   6  RESULTS.md tables (local/write_results.py)
# Budgets: --text-steps/--text-minutes etc. (the configs' max_steps / max_minutes); other
# key=value overrides of recipes/inserter/configs/<stage>.yaml via --text-args,
# --speech-args, --instruct-args. A run killed mid-way continues (--resume) on a rerun; to
# retrain one, delete its EXP/<run>/.done (and the runs after it).
set -euo pipefail
__run_cmd="$0$(printf ' %q' "$@")"
cd "$(dirname "${BASH_SOURCE[0]}")"

stage=0
stop_stage=100
nj=2
data_dir=data             # DATA
exp_dir=exp               # EXP
recipes=../../../recipes
encoder=../asr/exp/ctc/final  # the base speech encoder (any speechfm model dir with one)
encoder_adapt_steps=600   # stage 1: English ASR fine-tuning of --encoder (0: use it as it is)
asr=                      # the cascade's ASR model; default: the speech encoder's model;
                          # none = no cascade
asr_args=                 # extra options of ../asr/run.sh (stage 0, default encoder missing)
seed=0                    # corpus plan: spans, voices, noise, generated documents
udhr=true                 # the English UDHR in the corpus
generated_docs=1000       # wordfreq documents of 12 sentences each
text_files=               # more text files / folders (*.txt) for the corpus
speech_ratio=0.3          # fraction of the corpus sentences spoken
n_per_family=30           # benchmark items per rule family (15 families, one held out)
bench_seed=1
lm_from=                  # a local transformers causal-LM dir to plug in (no tokenizer stage)
tokenizer_vocab=2000
modes="asr interleave both"
text_steps=4000           # the budgets: updates and wall-clock minutes per run (text: 3,679
                          # updates in 22 min gave 68 % text accuracy; 1,500 gave 34 %)
text_minutes=22
speech_steps=1000
speech_minutes=30
instruct_steps=300
instruct_minutes=10
text_args=                # extra key=value overrides (also given to the tokenizer stage)
speech_args=
instruct_args=
eval_before_instruct=true # stage 5: also the speech systems before the instruction stage
limit_per_family=         # stage 5: the first N benchmark items of each family (empty: all)
max_new_tokens=24
eval_batch_size=16
results_md=RESULTS.md
. ../../utils/parse_options.sh
. ../../utils/log.sh
. ./path.sh

data=$data_dir
exp=$exp_dir
corpus=$data/interleaved
bench=$data/bench
default_encoder=../asr/exp/ctc/final
speech_encoder=$encoder   # what the speech LMs use: --encoder, or its English adaptation
[ "$encoder_adapt_steps" -gt 0 ] && speech_encoder=$exp/encoder_en/final
[ -z "$asr" ] && asr=$speech_encoder
mkdir -p "$data" "$exp"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  if [ ! -f "$encoder/config.json" ]; then
    if [ "$encoder" != "$default_encoder" ]; then
      log "Stage 0: --encoder $encoder is not a speechfm model directory (no config.json)"
      exit 1
    fi
    log "Stage 0: no $encoder: training it (../asr/run.sh --stop-stage 1 $asr_args)"
    # shellcheck disable=SC2086
    bash ../asr/run.sh --stage 0 --stop-stage 1 $asr_args
  fi
  log "Stage 0: base speech encoder $encoder; the speech LMs use $speech_encoder, the cascade $asr"
fi
if [ ! -f "$encoder/config.json" ] && [ $stage -le 5 ] && [ $stop_stage -ge 1 ]; then
  log "no speech encoder $encoder: run stage 0 (or ../asr/run.sh --stop-stage 1)"; exit 1
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  if [ ! -f "$corpus/.done" ]; then
    log "Stage 1: interleaved corpus (UDHR $udhr, $generated_docs generated documents${text_files:+, $text_files}, speech ratio $speech_ratio) -> $corpus"
    udhr_flag=
    [ "$udhr" = true ] && udhr_flag=--udhr
    # shellcheck disable=SC2086  # text_files is a list of paths
    python "$recipes/inserter/data.py" corpus $text_files --out "$corpus" $udhr_flag \
      --generated-docs "$generated_docs" --speech-ratio "$speech_ratio" --seed "$seed" \
      --num-workers "$nj"
    touch "$corpus/.done"
  fi
  if [ ! -f "$bench/.done" ]; then
    log "Stage 1: benchmark ($n_per_family items per family, clean + noisy audio) -> $bench"
    python "$recipes/inserter/data.py" benchmark --out "$bench" --n-per-family "$n_per_family" \
      --seed "$bench_seed" --num-workers "$nj"
    touch "$bench/.done"
  fi
  if [ "$encoder_adapt_steps" -gt 0 ] && [ ! -f "$exp/encoder_en/.done" ]; then
    resume=
    [ -f "$exp/encoder_en/finetune.json" ] && resume=--resume
    log "Stage 1: adapt $encoder to English on the corpus's spoken spans ($encoder_adapt_steps updates${resume:+, resumed}) -> $exp/encoder_en"
    python local/asr_manifest.py --corpus "$corpus" --out "$data/encoder_asr.tsv"
    # shellcheck disable=SC2086  # resume: empty or one word
    speechfm finetune --base "$encoder" --data "$data/encoder_asr.tsv" --lang en \
      --out "$exp/encoder_en" --tokenizer char --max-steps "$encoder_adapt_steps" \
      --batch-seconds 90 --num-workers 0 $resume
    touch "$exp/encoder_en/.done"
  fi
  log "Stage 1: encoder outputs of the corpus and the benchmark (once per encoder)"
  python local/cache_encoder.py --encoder "$speech_encoder" --corpus "$corpus" --bench "$bench"
fi
if [ ! -f "$speech_encoder/config.json" ] && [ $stage -le 5 ] && [ $stop_stage -ge 2 ]; then
  log "no speech encoder $speech_encoder: run stage 1"; exit 1
fi

train() {  # stage, exp dir, config, what it is, key=value overrides...
  local n=$1 dir=$2 conf=$3 what=$4 resume=
  shift 4
  if [ -f "$dir/.done" ]; then
    log "Stage $n: $dir is done"
    return 0
  fi
  [ -d "$dir" ] && resume=--resume  # killed before: continue from its last checkpoint
  log "Stage $n: $what${resume:+ (resumed)} -> $dir"
  mkdir -p "$dir"
  echo "$__run_cmd" > "$dir/run_command.txt"
  # shellcheck disable=SC2086  # resume: empty or one word
  python "$recipes/inserter/train.py" "$conf" --exp-dir "$dir" $resume "$@"
  touch "$dir/.done"
}
conf=$recipes/inserter/configs
tokenizer=$data/lm_tokenizer
[ -n "$lm_from" ] && tokenizer=null

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  if [ -z "$lm_from" ] && [ ! -f "$tokenizer/.done" ]; then
    log "Stage 2: LM tokenizer ($tokenizer_vocab tokens at most) -> $tokenizer"
    # shellcheck disable=SC2086
    python "$recipes/inserter/train.py" "$conf/text.yaml" stage=tokenizer \
      interleaved_dir="$corpus" lm_tokenizer="$tokenizer" tokenizer_vocab="$tokenizer_vocab" \
      $text_args
    touch "$tokenizer/.done"
  fi
  # shellcheck disable=SC2086
  train 2 "$exp/text" "$conf/text.yaml" "text stage, $text_steps steps / $text_minutes min" \
    interleaved_dir="$corpus" lm_tokenizer="$tokenizer" \
    encoder_from="$speech_encoder" ${lm_from:+lm_from="$lm_from"} max_steps="$text_steps" \
    max_minutes="$text_minutes" $text_args
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  for mode in $modes; do
    # shellcheck disable=SC2086
    train 3 "$exp/speech_$mode" "$conf/speech.yaml" \
      "speech stage, mode $mode, from $exp/text, $speech_steps steps / $speech_minutes min" \
      mode="$mode" init_from="$exp/text/final" \
      interleaved_dir="$corpus" max_steps="$speech_steps" max_minutes="$speech_minutes" \
      $speech_args
  done
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  for mode in $modes; do
    # shellcheck disable=SC2086
    train 4 "$exp/${mode}_instruct" "$conf/instruct.yaml" \
      "instruction stage from $exp/speech_$mode, $instruct_steps steps / $instruct_minutes min" \
      init_from="$exp/speech_$mode/final" max_steps="$instruct_steps" \
      max_minutes="$instruct_minutes" $instruct_args
  done
fi

evaluate() {  # system name, model dir, more evaluate.py options...
  local name=$1 model=$2 out=$exp/eval/$1
  shift 2
  local settings="limit=$limit_per_family max_new_tokens=$max_new_tokens $*"
  if [ -f "$out/results.json" ] && [ "$out/results.json" -nt "$model/model.safetensors" ] \
      && [ "$(cat "$out/.done" 2>/dev/null)" = "$settings" ]; then
    log "Stage 5: $name is evaluated ($out)"
    return 0
  fi
  log "Stage 5: evaluate $name ($model${limit_per_family:+, $limit_per_family per family}) -> $out"
  python "$recipes/inserter/evaluate.py" "$model" --bench "$bench" --out "$out" \
    --encoder-cache "$bench/encoder_cache" --max-new-tokens "$max_new_tokens" \
    --batch-size "$eval_batch_size" ${limit_per_family:+--limit-per-family "$limit_per_family"} "$@"
  echo "$settings" > "$out/.done"
}

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  cascade=()
  [ "$asr" != none ] && cascade=(--asr "$asr")
  evaluate text "$exp/text/final" "${cascade[@]}"
  for mode in $modes; do
    [ "$eval_before_instruct" = true ] && evaluate "speech_$mode" "$exp/speech_$mode/final"
    evaluate "${mode}_instruct" "$exp/${mode}_instruct/final"
  done
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "Stage 6: tables -> $results_md"
  python local/write_results.py --exp "$exp" --data "$data" --modes "${modes// /,}" \
    --encoder "$speech_encoder" --asr "$asr" --out "$results_md" --command "$__run_cmd"
fi
