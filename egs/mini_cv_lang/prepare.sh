#!/usr/bin/env bash
# mini_cv_lang data preparation, shared by every task of the corpus (asr/, ...): a synthetic
# 12-language corpus (espeak-ng) -> checked data, fbank + CMVN, tokenizers.
#
#   ./prepare.sh                          # all stages, defaults from conf/corpus.conf
#   ./prepare.sh --stage 2 --stop-stage 3 --nj 4
#   ./prepare.sh --utts-per-lang 40 --data-dir /tmp/mcl   # small copy elsewhere
#
# Stages (each skipped when its .done marker exists):
#   0  synthesise the corpus        -> DATA/corpus/{train,dev,test}, cuts_*.jsonl.gz
#   1  check every split            -> DATA/clean/{split} (Kaldi), DATA/clean/cuts_*.jsonl.gz
#   2  fbank features + train CMVN  -> DATA/fbank/cuts_*.jsonl.gz, DATA/fbank/cmvn.json
#   3  tokenizers                   -> DATA/lang_bpe_<N>/, DATA/lang_ipa/, DATA/lang_char/
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

stage=0
stop_stage=100
nj=2
data_dir=data        # DATA
text_dir=            # per-language texts (default ../shared/data/udhr2 beside the repository)
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

log "Done (stages $stage..$stop_stage, data in $data)"
