#!/usr/bin/env bash
# mini_cv_lang SSL: pretrain a w2v-BERT encoder on the unlabelled training audio, fine-tune it
# with CTC on small labelled subsets, and compare with the same fine-tuning budget from
# scratch on the same subsets, plus linear CTC probes on the frozen encoder (pretrained vs
# random); every model decoded and scored -> EXP/RESULTS.md.
#
#   ./run.sh                                   # all stages, corpus defaults from ../conf/corpus.conf
#   ./run.sh --budgets "40 80" --stage 3       # other label budgets (utterances per language)
#   ./run.sh --stage 2 --stop-stage 2 --init-from /path/to/converted   # continued pretraining
#
# "Scratch" means the same model trained from random weights, by the same code: stage 2 also
# writes EXP/random_init, a w2v-BERT model directory with the pretrained model's config and
# fresh weights (local/random_init.py). Every fine-tune and probe then runs
# recipes/ctc/train.py with init_from=<EXP/w2v_bert/final or EXP/random_init>
# encoder_from_init=true: identical architecture (the encoder config is read from init_from)
# and code path, differing only in the encoder weights it starts from. A probe adds
# freeze_prefixes=[encoder.] (only the linear CTC head trains).
#
# Stages (1, 2, 3, 4 skip what their .done markers say is done; 5-6 always rerun):
#   0  ../prepare.sh: corpus, checks, fbank, tokenizers -> DATA/ (shared by every task)
#   1  labelled subsets: the first N train cuts of each language after a seeded shuffle, for
#      each N in --budgets -> DATA/ssl/cuts_train_N.jsonl.gz (local/subset.py)
#   2  pretrain w2v-BERT on all train audio (--ssl-conf, --ssl-args; --init-from DIR continues
#      from a model directory's encoder, e.g. a `speechfm convert`ed one) -> EXP/w2v_bert/final;
#      a random-weight twin -> EXP/random_init
#   3  CTC fine-tunes (--ft-conf, --ft-args) for each budget N and each init
#      -> EXP/ft_pretrained_N, EXP/ft_scratch_N
#   4  linear CTC probes on the frozen encoder, largest budget (--ft-args then --probe-args):
#      its last layer -> EXP/probe_pretrained, EXP/probe_random; its first N layers for each
#      N in --probe-layers -> EXP/probe_{pretrained,random}_LN
#   5  greedy decoding of dev and test with each model -> <dir>/decode_greedy/{dev,test}
#   6  one comparison table + the pretraining summary -> EXP/RESULTS.md
# Paths given as options are relative to this folder.
set -euo pipefail
__run_cmd="$0$(printf ' %q' "$@")"  # as typed, empty arguments included
cd "$(dirname "${BASH_SOURCE[0]}")"

stage=0
stop_stage=100
nj=2
data_dir=../data     # DATA: egs/mini_cv_lang/data
text_dir=            # corpus texts for ../prepare.sh (default ../shared/data/udhr2)
exp_dir=exp          # EXP
recipes=../../../recipes   # the repository's recipes/
budgets="80 320"     # labelled utterances per language of each fine-tuning subset
subset_seed=0        # seed of the subsets' shuffle (stage 1)
ssl_conf=$recipes/w2v_bert/configs/mini_cv_lang.yaml
ssl_args=            # extra key=value overrides for the pretraining recipe (space-separated)
init_from=           # stage 2: start pretraining from this model directory's encoder
ft_conf=$recipes/ctc/configs/mini_cv_lang_finetune.yaml
ft_args=             # extra key=value overrides for every fine-tune and probe
probe_args="optimizer.lr=5e-3"   # overrides for the probes only (after --ft-args): only
                     # the linear head trains, so a higher peak rate than the fine-tunes'
probe_layers="2"     # also probe the first N layers (2 = the end of w2v_bert_small's
                     # contrastive module; the MLM layers above it serve the MLM task)
. ../conf/corpus.conf   # langs, utts_per_lang, seed, snr_db, bpe_vocab_size: passed on to ../prepare.sh
. ../../utils/parse_options.sh
. ../../utils/log.sh
. ./path.sh

data=$data_dir
exp=$exp_dir
mkdir -p "$data" "$exp"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}   # see ../asr/run.sh: 2 busy processes on 2 cores
pretrained=$exp/w2v_bert/final
random_init=$exp/random_init
largest=$(printf '%s\n' $budgets | sort -n | tail -n 1)
# name:budget:model-dir:init-dir:kind of every fine-tuned model, in table order
systems=()
for n in $budgets; do
  systems+=("ft_pretrained_$n:$n:$exp/ft_pretrained_$n:$pretrained:finetune"
            "ft_scratch_$n:$n:$exp/ft_scratch_$n:$random_init:finetune")
done
systems+=("probe_pretrained:$largest:$exp/probe_pretrained:$pretrained:probe"
          "probe_random:$largest:$exp/probe_random:$random_init:probe")
for l in $probe_layers; do
  systems+=("probe_pretrained_L$l:$largest:$exp/probe_pretrained_L$l:$pretrained:probe:$l"
            "probe_random_L$l:$largest:$exp/probe_random_L$l:$random_init:probe:$l")
done

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: shared data (../prepare.sh; skips what is done) -> $data"
  abs_data=$(cd "$data" && pwd)   # prepare.sh runs from its own folder: absolute paths
  [ -n "$text_dir" ] && text_dir=$(cd "$text_dir" && pwd)
  bash ../prepare.sh --data-dir "$abs_data" --nj "$nj" --langs "$langs" \
    --utts-per-lang "$utts_per_lang" --seed "$seed" --snr-db "$snr_db" \
    --bpe-vocab-size "$bpe_vocab_size" ${text_dir:+--text-dir "$text_dir"}
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  for n in $budgets; do
    out=$data/ssl/cuts_train_$n.jsonl.gz
    [ -f "$data/ssl/.cuts_train_$n.done" ] && continue
    log "Stage 1: labelled subset, $n utts per language (seed $subset_seed) -> $out"
    python local/subset.py --cuts "$data/fbank/cuts_train.jsonl.gz" --per-lang "$n" \
      --seed "$subset_seed" --out "$out"
    touch "$data/ssl/.cuts_train_$n.done"
  done
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  if [ ! -f "$exp/w2v_bert/.train.done" ]; then
    log "Stage 2: pretrain w2v-BERT ($ssl_conf${init_from:+, encoder from $init_from}) -> $exp/w2v_bert"
    mkdir -p "$exp/w2v_bert"
    echo "$__run_cmd" > "$exp/w2v_bert/run_command.txt"
    # shellcheck disable=SC2086  # ssl_args is a list of key=value words
    python "$recipes/w2v_bert/train.py" "$ssl_conf" --exp-dir "$exp/w2v_bert" --resume \
      train_cuts="$data/fbank/cuts_train.jsonl.gz" dev_cuts="$data/fbank/cuts_dev.jsonl.gz" \
      ${init_from:+init_from="$init_from"} $ssl_args
    touch "$exp/w2v_bert/.train.done"
    rm -rf "$random_init"   # a new pretrained model: its random twin follows its config
  fi
  if [ ! -f "$random_init/config.json" ]; then
    log "Stage 2: random-weight twin of $pretrained -> $random_init"
    python local/random_init.py --like "$pretrained" --out "$random_init" --seed 0
  fi
fi

# train one system (name:budget:dir:init:kind) with the CTC recipe
train_ctc() {
  local name budget dir init kind layers extra=() more=$ft_args
  IFS=: read -r name budget dir init kind layers <<< "$1"
  [ -f "$dir/.train.done" ] && return 0
  if [ "$kind" = probe ]; then
    extra=("freeze_prefixes=[encoder.]")
    more="$ft_args $probe_args"
    # a probe of the first N layers: the same encoder cut after block N
    [ -n "$layers" ] && extra+=("model.encoder.conformer.num_layers=$layers")
  fi
  log "Stage $2: $kind $name ($budget utts/lang, encoder from $init) -> $dir"
  mkdir -p "$dir"
  echo "$__run_cmd" > "$dir/run_command.txt"
  # shellcheck disable=SC2086  # more: the --ft-args (and --probe-args) key=value words
  python "$recipes/ctc/train.py" "$ft_conf" --exp-dir "$dir" --resume \
    train_cuts="$data/ssl/cuts_train_$budget.jsonl.gz" dev_cuts="$data/fbank/cuts_dev.jsonl.gz" \
    tokenizer="$data/lang_char" init_from="$init" encoder_from_init=true "${extra[@]}" \
    $more
  touch "$dir/.train.done"
}

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  for spec in "${systems[@]}"; do
    case $spec in *:finetune) train_ctc "$spec" 3 ;; esac
  done
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  for spec in "${systems[@]}"; do
    case $spec in *:probe|*:probe:*) train_ctc "$spec" 4 ;; esac
  done
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  for spec in "${systems[@]}"; do
    IFS=: read -r name budget dir init kind layers <<< "$spec"
    for split in dev test; do
      log "Stage 5: decode $split with $name (greedy) -> $dir/decode_greedy/$split"
      speechfm decode "$dir/final" --cuts "$data/fbank/cuts_$split.jsonl.gz" \
        --out-dir "$dir/decode_greedy/$split" --group-by lang
    done
  done
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "Stage 6: write $exp/RESULTS.md"
  sys_args=()
  for spec in "${systems[@]}"; do
    IFS=: read -r name budget dir init kind layers <<< "$spec"
    sys_args+=(--system "$name:$budget:$dir")
  done
  python local/write_ssl_results.py --pretrain-dir "$exp/w2v_bert" "${sys_args[@]}" \
    --decode greedy --splits dev,test --out "$exp/RESULTS.md"
fi

log "Done (stages $stage..$stop_stage, data in $data, models in $exp)"
