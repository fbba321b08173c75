#!/usr/bin/env bash
# mini_cv_lang Whistle: weakly phonetic (IPA) multilingual CTC pretraining on the ten seen
# languages, crosslingual fine-tuning to the two unseen ones (pl, id) with 1, 5 and 20
# minutes of audio, against subword (BPE) pretraining, self-supervised (w2v-BERT)
# pretraining and training from scratch; PER and WER (greedy, and through a lexicon +
# 3-gram word LM) -> EXP/RESULTS.md.
#
#   ./run.sh                                     # all stages
#   ./run.sh --minutes "1 5" --langs-unseen pl   # fewer fine-tunes
#   ./run.sh --stage 5 --ft-args "max_steps=200" # other fine-tuning budget
#
# Systems (every fine-tune: recipes/whistle/train.py with recipes/whistle/configs/
# mini_cv_lang_finetune.yaml, the same encoder architecture, data, budget and seed; only
# the starting weights and the output units differ):
#   phoneme   encoder + output layer from the phoneme-pretrained model, rows of shared
#             phones copied (head_from_init), IPA targets               [Whistle]
#   subword   encoder from the BPE-pretrained model, a new head over the language's
#             BPE pieces                                                [subword baseline]
#   ssl       encoder from the w2v-BERT model of ../ssl (--ssl-model), new IPA head
#             (skipped when that model does not exist)
#   scratch   random weights, IPA targets                              [the floor]
#
# Stages (0-4 skip what their .done markers say is done; 6-7 always rerun):
#   0  ../prepare.sh: the 12-language corpus (only the ten seen languages are used here)
#   1  seen-language manifests + tokenizers from their training transcripts only:
#      IPA phones and BPE (--bpe-seen) -> DATA/whistle/seen/{lang_ipa,lang_bpe_<N>}
#   2  the unseen-language corpus: pl and id with more audio (--unseen-utts per language:
#      80/10/10 % train/dev/test), fbank; per language nested training subsets of
#      --minutes minutes; dev/test manifests; IPA and BPE tokenizers from the largest
#      subset's transcripts -> DATA/whistle/unseen/
#   3  per language (unseen, and seen for the pretrained models' WER): LM text (training
#      transcripts + UDHR training split + wordfreq, never a dev/test sentence), 3-gram
#      word LM (speechfm lm train), pronunciation lexicon (speechfm lexicon build), OOV
#      rates -> DATA/whistle/lm_<lang>/
#   4  pretraining on the seen languages: phoneme and subword (--pt-args)
#      -> EXP/pt_phoneme, EXP/pt_subword_bpe<N>
#   5  fine-tunes: every system x unseen language x minutes (--ft-args) -> EXP/ft_*
#   6  decoding: seen-language dev/test with the pretrained models (PER / CER greedy, WER
#      through each language's lexicon + LM; skipped with --decode-seen false); unseen dev/test with every fine-tune: greedy, CTC prefix beam
#      search (beam 4), and words through lexicon + LM
#   7  EXP/RESULTS.md
set -euo pipefail
__run_cmd="$0$(printf ' %q' "$@")"
cd "$(dirname "${BASH_SOURCE[0]}")"

stage=0
stop_stage=100
nj=2
data_dir=../data                 # DATA: egs/mini_cv_lang/data
exp_dir=exp                      # EXP
text_dir=                        # corpus texts for ../prepare.sh (default ../shared/data/udhr2)
recipes=../../../recipes
seen_langs=en,es,fr,it,ky,nl,ru,sv,tr,tt
langs_unseen="pl id"
unseen_utts=1000                 # per unseen language, all splits (800/100/100)
unseen_seed=1                    # corpus seed of the unseen-language corpus
minutes="1 5 20"                 # fine-tuning amounts per unseen language
subset_seed=0
bpe_seen=150                     # BPE vocabulary of the subword pretraining (500 stayed on
                                 # CTC's blank plateau at this budget: RESULTS.md)
bpe_unseen=100                   # BPE vocabulary of a subword fine-tune
lm_order=3
lm_wordfreq=3000                 # wordfreq word sequences added to each LM's text
# Whistle's lexicon clean-up (CAT egs/cv-lang10): stress and tone marks removed, so that a
# phone is one unit across languages (espeak attaches the stress mark to the nucleus,
# which would split every vowel in two); length marks kept (they are phonemic in several
# of the languages). Applied to the phone tokenizers and the lexicons alike.
ipa_strip="--strip-stress --strip-tones"
systems="phoneme subword ssl scratch"
ssl_model=../ssl/exp/w2v_bert/final   # the w2v-BERT model of ../ssl (same encoder shape)
pt_conf=$recipes/whistle/configs/mini_cv_lang.yaml
ft_conf=$recipes/whistle/configs/mini_cv_lang_finetune.yaml
decode_seen=true                 # stage 6: also decode the seen languages with the pretrained models
pt_args=                         # extra key=value overrides of both pretrainings
ft_args=                         # extra key=value overrides of every fine-tune
. ../conf/corpus.conf
. ../../utils/parse_options.sh
. ../../utils/log.sh
. ./path.sh

data=$data_dir
exp=$exp_dir
[ -n "$text_dir" ] && text_dir=$(cd "$text_dir" && pwd)
wdata=$data/whistle
seen=$wdata/seen
unseen=$wdata/unseen
mkdir -p "$wdata" "$exp"
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
largest=$(printf '%s\n' $minutes | sort -g | tail -n 1)
pt_subword=pt_subword_bpe$bpe_seen   # EXP/<this>: the subword-pretrained model

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: shared data (../prepare.sh; skips what is done) -> $data"
  bash ../prepare.sh --data-dir "$(cd "$data" && pwd)" --nj "$nj" --langs "$langs" \
    --utts-per-lang "$utts_per_lang" --seed "$seed" --snr-db "$snr_db" \
    --bpe-vocab-size "$bpe_vocab_size" ${text_dir:+--text-dir "$text_dir"}
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ] && [ ! -f "$seen/.done" ]; then
  log "Stage 1: the ten seen languages ($seen_langs): manifests and tokenizers"
  for split in train dev test; do
    python ../local/select_cuts.py langs --cuts "$data/fbank/cuts_$split.jsonl.gz" \
      --langs "$seen_langs" --out "$seen/cuts_$split.jsonl.gz"
  done
  # shellcheck disable=SC2086  # ipa_strip: flags
  speechfm tokenizer train --kind ipa --cuts "$seen/cuts_train.jsonl.gz" $ipa_strip \
    --out "$seen/lang_ipa"
  speechfm tokenizer train --kind bpe --cuts "$seen/cuts_train.jsonl.gz" --vocab-size "$bpe_seen" \
    --out "$seen/lang_bpe_$bpe_seen"
  touch "$seen/.done"
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ] && [ ! -f "$unseen/.done" ]; then
  langs_csv=$(echo $langs_unseen | tr ' ' ',')
  log "Stage 2: unseen-language corpus ($langs_csv, $unseen_utts utts/lang, seed $unseen_seed)"
  mkdir -p "$unseen"
  bash ../prepare.sh --data-dir "$(cd "$unseen" && pwd)" --langs "$langs_csv" \
    --utts-per-lang "$unseen_utts" --seed "$unseen_seed" --snr-db "$snr_db" --stop-stage 2 \
    --nj "$nj" ${text_dir:+--text-dir "$text_dir"}
  for lang in $langs_unseen; do
    for split in dev test; do
      python ../local/select_cuts.py langs --cuts "$unseen/fbank/cuts_$split.jsonl.gz" \
        --langs "$lang" --out "$unseen/cuts_${split}_$lang.jsonl.gz"
    done
    for m in $minutes; do
      python ../local/select_cuts.py minutes --cuts "$unseen/fbank/cuts_train.jsonl.gz" \
        --lang "$lang" --minutes "$m" --seed "$subset_seed" \
        --out "$unseen/cuts_train_${lang}_${m}min.jsonl.gz"
    done
    # tokenizers from the transcripts of the largest subset only (nothing else is labelled)
    # shellcheck disable=SC2086
    speechfm tokenizer train --kind ipa --cuts "$unseen/cuts_train_${lang}_${largest}min.jsonl.gz" \
      $ipa_strip --out "$unseen/lang_ipa_$lang"
    speechfm tokenizer train --kind bpe --cuts "$unseen/cuts_train_${lang}_${largest}min.jsonl.gz" \
      --vocab-size "$bpe_unseen" --out "$unseen/lang_bpe_$lang"
  done
  touch "$unseen/.done"
fi

# LM text, word n-gram LM and lexicon of one language: lang corpus-dir corpus-seed
make_lm() {
  local lang=$1 corpus=$2 corpus_seed=$3
  local lm=$wdata/lm_$lang
  [ -f "$lm/.done" ] && return 0
  log "Stage 3: $lang: LM text, ${lm_order}-gram word LM, lexicon -> $lm"
  bash ../local/make_word_lm.sh "$lang" "$corpus" "$corpus_seed" "$lm" "$lm_order" "$lm_wordfreq" \
    "$text_dir"
  # shellcheck disable=SC2086
  speechfm lexicon build --extra-text "$lm/lm_text.txt" --lang "$lang" $ipa_strip \
    --out "$lm/lexicon.txt" --cache-dir "$wdata/lexicon_cache"
  touch "$lm/.done"
}

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  for lang in $langs_unseen; do make_lm "$lang" "$unseen" "$unseen_seed"; done
  # the seen languages' LMs: word error rates of the pretrained models
  for lang in ${seen_langs//,/ }; do make_lm "$lang" "$data" "$seed"; done
fi

# train one model with the Whistle recipe: name config key=value...
whistle_train() {
  local name=$1 conf=$2; shift 2
  local dir=$exp/$name
  [ -f "$dir/.train.done" ] && return 0
  mkdir -p "$dir"
  echo "$__run_cmd" > "$dir/run_command.txt"
  python "$recipes/whistle/train.py" "$conf" --exp-dir "$dir" --resume "$@"
  touch "$dir/.train.done"
}

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: phoneme pretraining on the seen languages -> $exp/pt_phoneme"
  # shellcheck disable=SC2086
  whistle_train pt_phoneme "$pt_conf" train_cuts="$seen/cuts_train.jsonl.gz" \
    dev_cuts="$seen/cuts_dev.jsonl.gz" tokenizer="$seen/lang_ipa" $pt_args
  log "Stage 4: subword (BPE $bpe_seen) pretraining on the seen languages -> $exp/$pt_subword"
  # shellcheck disable=SC2086
  whistle_train "$pt_subword" "$pt_conf" train_cuts="$seen/cuts_train.jsonl.gz" \
    dev_cuts="$seen/cuts_dev.jsonl.gz" tokenizer="$seen/lang_bpe_$bpe_seen" $pt_args
fi

# the fine-tune runs: name:system:lang:minutes
runs=()
for lang in $langs_unseen; do
  for m in $minutes; do
    for s in $systems; do
      if [ "$s" = ssl ] && [ ! -f "$ssl_model/config.json" ]; then continue; fi
      runs+=("ft_${s}_${lang}_${m}min:$s:$lang:$m")
    done
  done
done

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  [ -f "$ssl_model/config.json" ] || log "Stage 5: no $ssl_model: the ssl system is skipped"
  for spec in "${runs[@]}"; do
    IFS=: read -r name s lang m <<< "$spec"
    common=(train_cuts="$unseen/cuts_train_${lang}_${m}min.jsonl.gz"
            dev_cuts="$unseen/cuts_dev_$lang.jsonl.gz"
            lexicon="$wdata/lm_$lang/lexicon.txt" lm="$wdata/lm_$lang")
    case $s in
      phoneme) init=(tokenizer="$unseen/lang_ipa_$lang" init_from="$exp/pt_phoneme/final"
                     encoder_from_init=true head_from_init=true) ;;
      subword) init=(tokenizer="$unseen/lang_bpe_$lang" init_from="$exp/$pt_subword/final"
                     encoder_from_init=true lexicon=null) ;;
      ssl)     init=(tokenizer="$unseen/lang_ipa_$lang" init_from="$ssl_model"
                     encoder_from_init=true) ;;
      scratch) init=(tokenizer="$unseen/lang_ipa_$lang") ;;
    esac
    log "Stage 5: fine-tune $name ($s, $lang, $m min)"
    # shellcheck disable=SC2086
    whistle_train "$name" "$ft_conf" "${common[@]}" "${init[@]}" $ft_args
  done
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  for pt in pt_phoneme "$pt_subword"; do
    [ "$decode_seen" = true ] || continue
    for split in dev test; do
      log "Stage 6: decode seen $split with $pt (greedy, and words through each language's LM)"
      speechfm decode "$exp/$pt/final" --cuts "$seen/cuts_$split.jsonl.gz" \
        --out-dir "$exp/$pt/decode_greedy/$split" --group-by lang
      parts=()
      for lang in ${seen_langs//,/ }; do
        out=$exp/$pt/decode_lm/$split/$lang
        lex=()
        [ "$pt" = pt_phoneme ] && lex=(--lexicon "$wdata/lm_$lang/lexicon.txt")
        python ../local/select_cuts.py langs --cuts "$seen/cuts_$split.jsonl.gz" --langs "$lang" \
          --out "$out/cuts.jsonl.gz" > /dev/null
        speechfm decode "$exp/$pt/final" --cuts "$out/cuts.jsonl.gz" --out-dir "$out" \
          --method graph --lm "$wdata/lm_$lang" "${lex[@]}" --group-by lang > /dev/null
        parts+=(--part "$lang:$out")
      done
      python ../local/merge_results.py "${parts[@]}" --out "$exp/$pt/decode_lm/$split"
    done
  done
  for spec in "${runs[@]}"; do
    IFS=: read -r name s lang m <<< "$spec"
    for split in dev test; do
      log "Stage 6: decode $lang $split with $name (greedy, prefix beam 4, words through the LM)"
      speechfm decode "$exp/$name/final" --cuts "$unseen/cuts_${split}_$lang.jsonl.gz" \
        --out-dir "$exp/$name/decode_greedy/$split" --group-by lang
      speechfm decode "$exp/$name/final" --cuts "$unseen/cuts_${split}_$lang.jsonl.gz" \
        --out-dir "$exp/$name/decode_beam/$split" --group-by lang --method beam --beam 4
      speechfm decode "$exp/$name/final" --cuts "$unseen/cuts_${split}_$lang.jsonl.gz" \
        --out-dir "$exp/$name/decode_lm/$split" --group-by lang --method graph
    done
  done
fi

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  log "Stage 7: write $exp/RESULTS.md"
  run_args=()
  for spec in "${runs[@]}"; do run_args+=(--run "$spec"); done
  python local/write_whistle_results.py --exp "$exp" --data "$wdata" "${run_args[@]}" \
    --pretrained pt_phoneme --pretrained "$pt_subword" --command "$__run_cmd" \
    --out "$exp/RESULTS.md"
fi

log "Done (stages $stage..$stop_stage, models in $exp)"
