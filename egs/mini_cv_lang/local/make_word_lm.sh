#!/usr/bin/env bash
# A language's word n-gram LM from its LM text (the corpus's training transcripts + the
# UDHR sentences of its training split + wordfreq word sequences; never a dev/test
# sentence: local/lm_text.py), estimated with modified Kneser-Ney (speechfm lm train).
# Shared by the corpus's tasks (asr/, whistle/); run from a task folder.
#
#   bash ../local/make_word_lm.sh LANG CORPUS_DIR CORPUS_SEED OUT_DIR [ORDER] [WORDFREQ] [TEXT_DIR]
#
# CORPUS_DIR holds clean/{train,dev,test}/{text,utt2lang}; writes OUT_DIR/lm_text.txt,
# oov.json (dev/test OOV rates against the LM text's words), lm.arpa, words.txt, G.fst.
set -euo pipefail
lang=$1 corpus=$2 corpus_seed=$3 out=$4 order=${5:-3} wordfreq=${6:-3000} text_dir=${7:-}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$out"
python "$here/lm_text.py" --lang "$lang" --corpus-seed "$corpus_seed" --wordfreq "$wordfreq" \
  ${text_dir:+--text-dir "$text_dir"} \
  --train-text "$corpus/clean/train/text" --utt2lang "$corpus/clean/train/utt2lang" \
  --exclude-text "$corpus/clean/dev/text" --exclude-text "$corpus/clean/test/text" \
  --utt2lang "$corpus/clean/dev/utt2lang" --utt2lang "$corpus/clean/test/utt2lang" \
  --out "$out/lm_text.txt" --oov-out "$out/oov.json"
speechfm lm train --text "$out/lm_text.txt" --order "$order" --out "$out"
