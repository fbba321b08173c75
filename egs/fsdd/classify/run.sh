#!/usr/bin/env bash
# FSDD (real English digits, 6 speakers, 8 kHz) as two classification tasks for the
# spectrogram transformer: speaker identification (every speaker in every split, split by
# take: 0-39 train, 40-44 dev, 45-49 test) and digit classification (speaker-disjoint:
# dev nicolas, test theo + yweweler). ASiT-pretrained vs random initialisation, for full
# fine-tuning and the KWS recipe's best adapter (speakers), full fine-tuning (digits)
# -> RESULTS.md.
#
#   ./run.sh                       # needs (and if missing runs) the KWS pretraining:
#                                  # ../../speech_commands/kws/run.sh --stop-stage 2
#
# Stages (each skips what its .done markers say is done; 3 scores only models not yet
# scored; 4 always reruns):
#   0  data: both tasks (16 kHz copies; the upper mel bins of 8 kHz audio stay empty)
#   1  the ASiT backbone and its random twin of the KWS recipe (its stages 0-2)
#   2  fine-tune each (task, backbone, method) -> EXP/<task>/<backbone>_<method>
#   3  test-set accuracy of every model (speechfm classify)
#   4  the table -> RESULTS.md
set -euo pipefail
__run_cmd=$0  # as typed
[ $# -eq 0 ] || __run_cmd="$0$(printf ' %q' "$@")"
cd "$(dirname "${BASH_SOURCE[0]}")"

stage=0
stop_stage=100
data_dir=data
exp_dir=exp
recipes=../../../recipes
kws=../../speech_commands/kws     # the KWS recipe folder (ASiT backbone, random twin)
fsdd_root=
ft_conf=conf/finetune.yaml
ft_args=
tasks="speaker digit"
speaker_methods="full_lr1e-3 auto"   # auto: the KWS recipe's best adapter on its dev set
digit_methods="full_lr1e-3"
adapter_methods="adapter_pfeiffer_seq adapter_pfeiffer_par adapter_houlsby_seq adapter_houlsby_par conv_adapter lora prompt prefix"
results_md=RESULTS.md
. ../../utils/parse_options.sh
. ../../utils/log.sh
. ./path.sh

data=$data_dir
exp=$exp_dir
mkdir -p "$data" "$exp"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  for task in $tasks; do
    [ -f "$data/$task/.done" ] && continue
    log "Stage 0: FSDD $task classification -> $data/$task"
    speechfm prepare fsdd_classify --task "$task" --out "$data/$task" ${fsdd_root:+--root "$fsdd_root"}
    touch "$data/$task/.done"
  done
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  if [ ! -f "$kws/exp/asit/.train.done" ] || [ ! -f "$kws/exp/random_init/config.json" ]; then
    log "Stage 1: the KWS recipe's ASiT backbone ($kws, stages 0-2)"
    bash "$kws/run.sh" --stop-stage 2
  fi
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  best=
  for task in $tasks; do
    field=text
    methods=$digit_methods
    [ "$task" = speaker ] && field=speaker && methods=$speaker_methods
    if [[ " $methods " == *" auto "* ]]; then
      [ -n "$best" ] || best=$(python "$kws/local/best_method.py" --exp-group "$kws/exp/petl" \
        --methods "$adapter_methods")
      log "Stage 2: the KWS recipe's best adapter on its dev set: $best"
      methods=$(echo " $methods " | sed "s/ auto / $best /")
    fi
    for init in asit random_init; do
      backbone=$kws/exp/$init
      [ "$init" = asit ] && backbone=$kws/exp/asit/final
      for m in $methods; do
        dir=$exp/$task/${init}_$m
        [ -f "$dir/.train.done" ] && continue
        log "Stage 2: $task, $m from $backbone -> $dir"
        mkdir -p "$dir"
        echo "$__run_cmd" > "$dir/run_command.txt"
        # shellcheck disable=SC2046,SC2086
        python "$recipes/ast_adapters/train.py" "$ft_conf" --exp-dir "$dir" --resume \
          train_cuts="$data/$task/cuts_train.jsonl.gz" dev_cuts="$data/$task/cuts_dev.jsonl.gz" \
          backbone="$backbone" label_field="$field" $(bash "$kws/local/method_args.sh" "$m") \
          $ft_args
        touch "$dir/.train.done"
      done
    done
  done
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: test-set accuracy of every model"
  for task in $tasks; do
    field=text
    [ "$task" = speaker ] && field=speaker
    for f in "$exp/$task"/*/final/config.json; do
      [ -f "$f" ] || continue
      dir=$(dirname "$(dirname "$f")")
      # scored already, and the model unchanged since
      [ "$dir/test/results.json" -nt "$dir/final/model.safetensors" ] && continue
      speechfm classify "$dir/final" --cuts "$data/$task/cuts_test.jsonl.gz" \
        --label-field "$field" --out-dir "$dir/test" > /dev/null
    done
  done
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: table -> $results_md"
  python local/write_results.py --exp "$exp" --tasks "$tasks" --out "$results_md" \
    --command "$__run_cmd"
fi
