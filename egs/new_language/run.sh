#!/usr/bin/env bash
# A new language from a multilingual speechfm model, with `speechfm finetune`, the way a
# user with a few minutes of transcribed speech would do it; and the same flow on real
# recordings. Reproduces at small scale the comparison of "Adapting Multilingual Speech
# Representation Model for a New, Underresourced Language through Multilingual Fine-tuning
# and Continued Pretraining" (fine-tune only / continued pretraining then fine-tune /
# multilingual fine-tuning with a related language), at two label amounts.
#
#   ./run.sh                                   # every stage (about 1 h on 2 CPU cores,
#                                              # plus the base model when it is missing)
#   ./run.sh --lang kk --related ky            # another new language
#   ./run.sh --stage 3 --stop-stage 4          # only the real-speech part, and the tables
#
# Stages (each skips the runs its .done markers say are done):
#   0  the base model: --base DIR; the default, ../mini_cv_lang/asr's multilingual CTC
#      model (10 seen languages + pl, id; not --lang), is trained by
#      ../mini_cv_lang/asr/run.sh --stop-stage 1 when it is missing
#   1  data: --lang synthesised by the mini_cv_lang machinery (espeak-ng, its own voices per
#      split: train / dev / test are voice- and text-disjoint) -> DATA/<lang>/corpus, the
#      nested labelled subsets -> DATA/<lang>/train_<M>min.jsonl.gz; --related's labelled
#      training data from ../mini_cv_lang/data -> DATA/related_<related>.jsonl.gz;
#      festvox_ru (real read Russian, one speaker) -> DATA/festvox/*.tsv (local/
#      prepare_festvox.py: >= 11 min test, 4 min dev, nested 5/15/30 min training sets, text-
#      disjoint); FSDD (real English digits, speaker-disjoint) -> DATA/fsdd/{train,dev,test}
#   2  the synthetic new language, for every --amounts M (minutes of labels), three systems
#      with the same fine-tuning updates (--steps) and seed:
#        EXP/<lang>_<M>min_ft      speechfm finetune (fine-tune only)
#        EXP/<lang>_<M>min_cpt     continued w2v-BERT pretraining on the language's
#                                  unlabelled audio (--unlabelled: the whole training split's
#                                  audio, --pretrain-steps), then the same fine-tuning; the
#                                  continued encoder of the first amount is reused after it
#        EXP/<lang>_<M>min_multi   fine-tuning with --related-data mixed in (1:1 in audio)
#      and the base without adaptation on the same test set -> EXP/base_<lang>; and a check of
#      what continued pretraining did to the encoder: the base's own CTC head on the
#      continued encoder, on --related's dev utterances the base was trained to recognise
#      (--diag-cuts), next to the base -> EXP/diag_cpt/{base,cpt}
#   3  real speech: festvox_ru, fine-tuning the base on 5 / 15 / 30 min vs training the same
#      architecture from scratch (speechfm finetune --from-scratch) on the same minutes, and
#      the base before adaptation; FSDD digits, the same three -> EXP/festvox_*, EXP/fsdd_*
#   4  RESULTS.md tables (local/write_results.py)
set -euo pipefail
__run_cmd="$0$(printf ' %q' "$@")"
cd "$(dirname "${BASH_SOURCE[0]}")"

stage=0
stop_stage=100
nj=2
data_dir=data             # DATA
exp_dir=exp               # EXP
base=../mini_cv_lang/asr/exp/ctc/final   # the multilingual model every run starts from
base_args=                # extra options of ../mini_cv_lang/asr/run.sh (stage 0, base missing)
lang=uk                   # the new language (an espeak-ng voice and UDHR text: uk, kk, ...)
related=ru                # its related language among the base's (uk: ru; kk: ky or tt)
utts=1300                 # synthesised utterances of --lang (80 % train: ~55 min of audio)
seed=0                    # corpus voices/texts, subsets, splits and training seeds
amounts="10 30"           # minutes of labelled --lang speech
steps="10:300 30:600"     # fine-tuning updates per amount (the same for the three systems)
pretrain_steps=400        # continued pretraining updates (system cpt, once)
related_ratio=1.0         # related audio per new-language training audio (system multi)
related_data=             # its labelled data (default: --related's mini_cv_lang training cuts)
diag_cuts=../mini_cv_lang/data/clean/cuts_dev.jsonl.gz  # the base's dev data (stage 2 check)
real=true                 # stage 3: the real-speech runs
festvox_root=             # default ../shared/data/festvox_ru beside the repository
festvox_amounts="5 15 30"
festvox_test_minutes=11   # held out (text-disjoint); dev: early stopping and averaging
festvox_dev_minutes=4
festvox_steps="5:300 15:450 30:600"
fsdd_root=                # default ../shared/data/fsdd beside the repository
fsdd_steps=400
finetune_args=            # extra options of every speechfm finetune (e.g. "--threads 1")
results_md=RESULTS.md
. ../utils/parse_options.sh
. ../utils/log.sh
. ./path.sh

data=$data_dir
exp=$exp_dir
shared=$(cd ../.. && pwd)/../shared/data
festvox_root=${festvox_root:-$shared/festvox_ru}
default_base=../mini_cv_lang/asr/exp/ctc/final
mkdir -p "$data" "$exp"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

steps_for() {  # "M:N ..." table, amount -> N
  local table=$1 amount=$2 pair
  for pair in $table; do
    [ "${pair%%:*}" = "$amount" ] && { echo "${pair#*:}"; return 0; }
  done
  log "no updates for amount $amount in '$table'"; return 1
}

finetune() {  # exp dir, what it is, speechfm finetune options...
  local dir=$1 what=$2 resume=
  shift 2
  if [ -f "$dir/.done" ]; then
    log "$dir is done"
    return 0
  fi
  [ -f "$dir/finetune.json" ] && resume=--resume  # killed before: continue where it stopped
  log "$what${resume:+ (resumed)} -> $dir"
  # shellcheck disable=SC2086  # resume, finetune_args: words
  speechfm finetune --out "$dir" --seed "$seed" --nj "$nj" --num-workers 0 $resume "$@" \
    $finetune_args
  echo "$__run_cmd" > "$dir/run_command.txt"
  touch "$dir/.done"
}

decode_model() {  # model dir, out dir, cuts, what it is: skipped when decoded after the model
  local model=$1 out=$2 cuts=$3 what=$4
  if [ -f "$out/results.json" ] && [ "$out/results.json" -nt "$model/model.safetensors" ]; then
    return 0
  fi
  log "$what on $cuts -> $out"
  speechfm decode "$model" --cuts "$cuts" --out-dir "$out" > /dev/null
}

decode_base() {  # out dir, test cuts: the base before any adaptation
  decode_model "$base" "$1" "$2" "the base without adaptation"
}

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  if [ ! -f "$base/config.json" ]; then
    if [ "$base" != "$default_base" ]; then
      log "Stage 0: --base $base is not a speechfm model directory (no config.json)"; exit 1
    fi
    log "Stage 0: no $base: training it (../mini_cv_lang/asr/run.sh --stop-stage 1 $base_args)"
    # shellcheck disable=SC2086
    bash ../mini_cv_lang/asr/run.sh --stage 0 --stop-stage 1 $base_args
  fi
  log "Stage 0: base model $base"
fi
if [ ! -f "$base/config.json" ]; then
  log "no base model $base: run stage 0"; exit 1
fi

corpus=$data/$lang/corpus
related_cuts=${related_data:-$data/related_$related.jsonl.gz}
if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  if [ ! -f "$corpus/.done" ]; then
    log "Stage 1: synthesise $lang ($utts utterances, seed $seed) -> $corpus"
    speechfm prepare mini_cv_lang --out "$corpus" --langs "$lang" --utts-per-lang "$utts" \
      --seed "$seed" --nj "$nj"
    touch "$corpus/.done"
  fi
  for m in $amounts; do
    python ../mini_cv_lang/local/select_cuts.py minutes --cuts "$corpus/cuts_train.jsonl.gz" \
      --lang "$lang" --minutes "$m" --seed "$seed" --out "$data/$lang/train_${m}min.jsonl.gz"
  done
  if [ ! -f "$related_cuts" ]; then
    mcl=../mini_cv_lang/data/clean/cuts_train.jsonl.gz
    if [ ! -f "$mcl" ]; then
      log "Stage 1: no $mcl: preparing the mini_cv_lang data (../mini_cv_lang/prepare.sh)"
      bash ../mini_cv_lang/prepare.sh --stop-stage 1 --nj "$nj"
    fi
    log "Stage 1: $related training data of mini_cv_lang -> $related_cuts"
    python ../mini_cv_lang/local/select_cuts.py langs --cuts "$mcl" --langs "$related" \
      --out "$related_cuts" --drop-features
  fi
  if [ "$real" = true ]; then
    log "Stage 1: festvox_ru splits -> $data/festvox"
    python local/prepare_festvox.py --root "$festvox_root" --out "$data/festvox" \
      --train-minutes "$(echo "$festvox_amounts" | tr ' ' ,)" --seed "$seed" \
      --test-minutes "$festvox_test_minutes" --dev-minutes "$festvox_dev_minutes"
    if [ ! -f "$data/fsdd/.done" ]; then
      log "Stage 1: FSDD, speaker-disjoint (dev: nicolas, test: theo, yweweler) -> $data/fsdd"
      speechfm prepare fsdd --out "$data/fsdd" --dev-speakers nicolas \
        --test-speakers theo,yweweler ${fsdd_root:+--root "$fsdd_root"}
      touch "$data/fsdd/.done"
    fi
  fi
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  dev=$corpus/cuts_dev.jsonl.gz
  test=$corpus/cuts_test.jsonl.gz
  cpt_base=
  for m in $amounts; do
    n=$(steps_for "$steps" "$m")
    train=$data/$lang/train_${m}min.jsonl.gz
    common=(--base "$base" --data "$train" --dev "$dev" --test "$test" --lang "$lang"
            --max-steps "$n")
    finetune "$exp/${lang}_${m}min_ft" "Stage 2: $lang, $m min: fine-tune only, $n updates" \
      "${common[@]}"
    if [ -z "$cpt_base" ]; then
      finetune "$exp/${lang}_${m}min_cpt" \
        "Stage 2: $lang, $m min: continued pretraining ($pretrain_steps updates) then fine-tuning" \
        "${common[@]}" --unlabelled "$corpus/cuts_train.jsonl.gz" --pretrain-steps "$pretrain_steps"
      cpt_base=$exp/${lang}_${m}min_cpt/pretrain/merged
    else
      finetune "$exp/${lang}_${m}min_cpt" \
        "Stage 2: $lang, $m min: fine-tuning the continued-pretraining encoder ($cpt_base)" \
        "${common[@]:2}" --base "$cpt_base"
    fi
    finetune "$exp/${lang}_${m}min_multi" \
      "Stage 2: $lang, $m min: fine-tuning with $related mixed in (ratio $related_ratio)" \
      "${common[@]}" --related-data "$related_cuts" --related-ratio "$related_ratio"
  done
  decode_base "$exp/base_$lang/test" "$test"
  if [ -n "$cpt_base" ] && [ -f "$diag_cuts" ]; then
    diag=$exp/diag_cpt
    mkdir -p "$diag"
    python ../mini_cv_lang/local/select_cuts.py langs --cuts "$diag_cuts" --langs "$related" \
      --out "$diag/cuts.jsonl.gz" --drop-features > /dev/null
    decode_base "$diag/base" "$diag/cuts.jsonl.gz"
    decode_model "$cpt_base" "$diag/cpt" "$diag/cuts.jsonl.gz" \
      "Stage 2: the base's head on the continued encoder ($cpt_base), $related dev"
  fi
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ] && [ "$real" = true ]; then
  fv=$data/festvox
  for m in $festvox_amounts; do
    n=$(steps_for "$festvox_steps" "$m")
    common=(--base "$base" --data "$fv/train_${m}min.tsv" --dev "$fv/dev.tsv" --test "$fv/test.tsv"
            --lang ru --max-steps "$n")
    finetune "$exp/festvox_${m}min_ft" "Stage 3: festvox_ru, $m min: fine-tuning the base, $n updates" \
      "${common[@]}"
    finetune "$exp/festvox_${m}min_scratch" "Stage 3: festvox_ru, $m min: from scratch, $n updates" \
      "${common[@]}" --from-scratch
  done
  first=$(echo "$festvox_amounts" | awk '{print $1}')
  decode_base "$exp/base_festvox/test" "$exp/festvox_${first}min_ft/data/test.jsonl.gz"
  common=(--base "$base" --data "$data/fsdd/train" --dev "$data/fsdd/dev" --test "$data/fsdd/test"
          --lang en --max-steps "$fsdd_steps")
  finetune "$exp/fsdd_ft" "Stage 3: FSDD digits: fine-tuning the base, $fsdd_steps updates" "${common[@]}"
  finetune "$exp/fsdd_scratch" "Stage 3: FSDD digits: from scratch, $fsdd_steps updates" \
    "${common[@]}" --from-scratch
  decode_base "$exp/base_fsdd/test" "$exp/fsdd_ft/data/test.jsonl.gz"
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: tables -> $results_md"
  python local/write_results.py --exp "$exp" --data "$data" --lang "$lang" --related "$related" \
    --amounts "$amounts" --festvox-amounts "$festvox_amounts" --base "$base" \
    --out "$results_md" --command "$__run_cmd"
fi
