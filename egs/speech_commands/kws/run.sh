#!/usr/bin/env bash
# Twelve-class keyword spotting (Speech Commands v0.02: yes no up down left right on off stop
# go, _unknown_, _silence_) on 2,744 real clips of 376 speakers, split by speaker: ASiT
# self-supervised pretraining of a spectrogram transformer on unlabelled training audio, then
# every parameter-efficient transfer method of PETL-AST on the frozen backbone, full
# fine-tuning, a linear probe, training from scratch, a Conformer classifier on the shared
# encoder, few-shot rows and the ASiT loss ablation -> RESULTS.md.
#
#   ./run.sh                                  # everything (about 2.5 hours on 2 CPU cores)
#   ./run.sh --stage 3 --methods "linear lora" --ft-args "max_steps=300"
#
# Stages (each skips what its .done markers say is done; 7 scores only models not yet
# scored; 8 always reruns):
#   0  data: Speech Commands 12 (speaker-disjoint train/dev/test), FSDD digits of the
#      training speakers, a small mini_cv_lang corpus (espeak-ng) -> DATA/
#   1  unlabelled pool: SC train + FSDD train speakers + 1-s windows of mini_cv_lang train
#      (local/make_pool.py; no test audio, no labels) -> DATA/pool.jsonl.gz
#   2  ASiT pretraining on the pool (recipes/asit, --asit-conf) -> EXP/asit; the loss
#      ablation (reconstruction only; + local) at the same budget -> EXP/asit_recon,
#      EXP/asit_recon_local; a random-weight twin of the backbone -> EXP/random_init
#   3  PETL matrix on the ASiT backbone, full training split (recipes/ast_adapters,
#      --ft-conf): every method in --methods -> EXP/petl/<method>; --long-method again
#      with --long-steps updates -> EXP/long/<method>, and with mixup (--long-mixup)
#      -> EXP/long/<method>_mixup
#   4  the same recipe from the random twin (scratch): full fine-tuning (lr 1e-3), a
#      linear probe and --best-adapter -> EXP/scratch/<method>; and the Conformer
#      classifier (the shared encoder, family classifier; --conformer-conf) from random
#      weights -> EXP/conformer/full_lr1e-3_mixup
#   5  few-shot: --shots examples per class, --fewshot-methods, ASiT backbone
#      -> EXP/fewshot/<k>shot_<method>
#   6  loss ablation: a linear probe and full fine-tuning (lr 1e-3) of each ablation backbone
#      -> EXP/ablation/<backbone>_<method>
#   7  test-set scoring of every model (speechfm classify) -> <model>/test/results.json
#   8  the tables -> RESULTS.md (local/write_results.py); a real clip through
#      speechfm.load(best).classify()
# Paths given as options are relative to this folder.
set -euo pipefail
__run_cmd=$0  # as typed
[ $# -eq 0 ] || __run_cmd="$0$(printf ' %q' "$@")"
cd "$(dirname "${BASH_SOURCE[0]}")"

stage=0
stop_stage=100
nj=2
data_dir=data
exp_dir=exp
recipes=../../../recipes
sc_root=             # default ../shared/data/speech_commands_v2_test12 beside the repository
fsdd_root=           # default ../shared/data/fsdd
mcl_utts=40          # mini_cv_lang sentences per language for the pool (12 languages)
pool_windows=2000    # 1-s mini_cv_lang windows in the pool
asit_conf=conf/asit.yaml
asit_args=           # extra key=value overrides of the ASiT runs
ft_conf=conf/finetune.yaml
ft_args=             # extra key=value overrides of every classification run
methods="linear full full_lr1e-3 bitfit adapter_pfeiffer_seq adapter_pfeiffer_par adapter_houlsby_seq adapter_houlsby_par conv_adapter lora prompt prefix"
best_adapter=auto   # the PETL method repeated from scratch and few-shot; auto = the
                     # adapter-type method of stage 3 with the best dev accuracy
adapter_methods="adapter_pfeiffer_seq adapter_pfeiffer_par adapter_houlsby_seq adapter_houlsby_par conv_adapter lora prompt prefix"
shots="1 5 10"
fewshot_methods="linear full_lr1e-3"
fewshot_steps=300
long_method=full_lr1e-3  # stage 3 also trains this method for --long-steps updates
long_steps=3000
long_mixup=0.3       # and once more with mixup at this alpha (0 = not)
conformer_conf=conf/classifier.yaml  # stage 4's Conformer classifier ('' = skip it)
conformer_args=      # extra key=value overrides of that run (after --ft-args)
results_md=RESULTS.md
. ../../utils/parse_options.sh
. ../../utils/log.sh
. ./path.sh

data=$data_dir
exp=$exp_dir
mkdir -p "$data" "$exp"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  if [ ! -f "$data/sc12/.done" ]; then
    log "Stage 0: Speech Commands 12, speaker-disjoint -> $data/sc12"
    speechfm prepare speech_commands12 --out "$data/sc12" ${sc_root:+--root "$sc_root"}
    touch "$data/sc12/.done"
  fi
  for k in $shots; do
    out=$data/sc12/cuts_train_${k}shot.jsonl.gz
    [ -f "$out" ] || speechfm data few-shot --cuts "$data/sc12/cuts_train.jsonl.gz" --out "$out" \
      --k "$k" --seed 0
  done
  if [ ! -f "$data/fsdd_digit/.done" ]; then
    log "Stage 0: FSDD digits (their training speakers join the pool) -> $data/fsdd_digit"
    speechfm prepare fsdd_classify --task digit --out "$data/fsdd_digit" ${fsdd_root:+--root "$fsdd_root"}
    touch "$data/fsdd_digit/.done"
  fi
  if [ ! -f "$data/mini_cv_lang/.done" ]; then
    log "Stage 0: a small mini_cv_lang corpus ($mcl_utts utts/lang) -> $data/mini_cv_lang"
    speechfm prepare mini_cv_lang --out "$data/mini_cv_lang" --utts-per-lang "$mcl_utts" --nj "$nj"
    touch "$data/mini_cv_lang/.done"
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ] && [ ! -f "$data/.pool.done" ]; then
  log "Stage 1: unlabelled pool (training audio only) -> $data/pool.jsonl.gz"
  python local/make_pool.py --out "$data/pool.jsonl.gz" \
    --cuts "$data/sc12/cuts_train.jsonl.gz" "$data/fsdd_digit/cuts_train.jsonl.gz" \
    --window-cuts "$data/mini_cv_lang/cuts_train.jsonl.gz" --max-windows "$pool_windows"
  touch "$data/.pool.done"
fi

pretrain() {  # name, extra overrides
  local dir=$exp/$1
  [ -f "$dir/.train.done" ] && return 0
  log "Stage 2: ASiT pretraining $1 ($asit_conf $2) -> $dir"
  mkdir -p "$dir"
  echo "$__run_cmd" > "$dir/run_command.txt"
  # shellcheck disable=SC2086
  python "$recipes/asit/train.py" "$asit_conf" --exp-dir "$dir" --resume \
    train_cuts="$data/pool.jsonl.gz" dev_cuts="$data/sc12/cuts_dev.jsonl.gz" $2 $asit_args
  touch "$dir/.train.done"
}

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  pretrain asit ""
  pretrain asit_recon "model.loss.global_weight=0 model.loss.local_weight=0"
  pretrain asit_recon_local "model.loss.global_weight=0"
  if [ ! -f "$exp/random_init/config.json" ]; then
    log "Stage 2: random-weight twin of $exp/asit/final -> $exp/random_init"
    python ../../mini_cv_lang/ssl/local/random_init.py --like "$exp/asit/final" --out "$exp/random_init" --seed 0
  fi
fi

finetune() {  # dir, backbone, train cuts, stage, method, extra overrides
  local dir=$1
  [ -f "$dir/.train.done" ] && return 0
  log "Stage $4: $5 from $2 on $(basename "$3") -> $dir"
  mkdir -p "$dir"
  echo "$__run_cmd" > "$dir/run_command.txt"
  # shellcheck disable=SC2046,SC2086
  python "$recipes/ast_adapters/train.py" "$ft_conf" --exp-dir "$dir" --resume \
    train_cuts="$3" dev_cuts="$data/sc12/cuts_dev.jsonl.gz" backbone="$2" \
    $(bash local/method_args.sh "$5") $6 $ft_args
  touch "$dir/.train.done"
}

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  for m in $methods; do
    finetune "$exp/petl/$m" "$exp/asit/final" "$data/sc12/cuts_train.jsonl.gz" 3 "$m" ""
  done
  if [ -n "$long_method" ]; then
    finetune "$exp/long/$long_method" "$exp/asit/final" "$data/sc12/cuts_train.jsonl.gz" 3 \
      "$long_method" "max_steps=$long_steps valid_every=500 save_every=500"
    if [ "$long_mixup" != 0 ]; then
      finetune "$exp/long/${long_method}_mixup" "$exp/asit/final" \
        "$data/sc12/cuts_train.jsonl.gz" 3 "$long_method" \
        "max_steps=$long_steps valid_every=500 save_every=500 mixup=$long_mixup"
    fi
  fi
fi

if [ "$best_adapter" = auto ] && [ $stop_stage -ge 4 ]; then
  best_adapter=$(python local/best_method.py --exp-group "$exp/petl" --methods "$adapter_methods")
  log "best adapter on dev (stage 3): $best_adapter"
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  for m in full_lr1e-3 linear $best_adapter; do
    finetune "$exp/scratch/$m" "$exp/random_init" "$data/sc12/cuts_train.jsonl.gz" 4 "$m" ""
  done
  dir=$exp/conformer/full_lr1e-3_mixup
  if [ -n "$conformer_conf" ] && [ ! -f "$dir/.train.done" ]; then
    log "Stage 4: the Conformer classifier from random weights ($conformer_conf) -> $dir"
    mkdir -p "$dir"
    echo "$__run_cmd" > "$dir/run_command.txt"
    # shellcheck disable=SC2086
    python "$recipes/ast_adapters/train.py" "$conformer_conf" --exp-dir "$dir" --resume \
      train_cuts="$data/sc12/cuts_train.jsonl.gz" dev_cuts="$data/sc12/cuts_dev.jsonl.gz" \
      $ft_args $conformer_args
    touch "$dir/.train.done"
  fi
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  for k in $shots; do
    for m in $fewshot_methods $best_adapter; do
      finetune "$exp/fewshot/${k}shot_$m" "$exp/asit/final" \
        "$data/sc12/cuts_train_${k}shot.jsonl.gz" 5 "$m" \
        "max_steps=$fewshot_steps valid_every=$fewshot_steps save_every=$fewshot_steps"
    done
  done
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  for b in asit_recon asit_recon_local; do
    for m in linear full_lr1e-3; do
      finetune "$exp/ablation/${b}_$m" "$exp/$b/final" "$data/sc12/cuts_train.jsonl.gz" 6 "$m" ""
    done
  done
fi

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  log "Stage 7: test-set accuracy of every model"
  for f in "$exp"/*/*/final/config.json; do
    [ -f "$f" ] || continue
    dir=$(dirname "$(dirname "$f")")
    # scored already, and the model unchanged since
    [ "$dir/test/results.json" -nt "$dir/final/model.safetensors" ] && continue
    speechfm classify "$dir/final" --cuts "$data/sc12/cuts_test.jsonl.gz" --out-dir "$dir/test" \
      > /dev/null
  done
fi

if [ $stage -le 8 ] && [ $stop_stage -ge 8 ]; then
  log "Stage 8: tables -> $results_md"
  python local/write_results.py --exp "$exp" --data "$data" --out "$results_md" \
    --command "$__run_cmd"
fi
