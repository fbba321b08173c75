#!/usr/bin/env bash
# Kaldi-style option parsing, sourced by run.sh scripts after they set their defaults:
#
#   stage=0; stop_stage=100; nj=2
#   . ../../utils/parse_options.sh
#
# Every "--some-name value" (or "--some-name=value") sets the shell variable
# some_name, which must already exist (a typo is an error, not a silent new
# variable). "--help" prints the defaults. Remaining positional arguments are left
# in "$@".

__usage_vars=$(set -o posix; set | sed -n 's/^\([a-z][a-z0-9_]*\)=.*/\1/p')

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      echo "Options (current values):"
      for __v in $__usage_vars; do
        case "$__v" in __*|_*) ;; *) printf '  --%s %s\n' "${__v//_/-}" "${!__v}";; esac
      done
      exit 0;;
    --*=*)
      __name=${1%%=*}; __name=${__name#--}; __name=${__name//-/_}; __value=${1#*=}; shift;;
    --*)
      __name=${1#--}; __name=${__name//-/_}
      if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" >&2; exit 1; fi
      __value=$2; shift 2;;
    *) break;;
  esac
  if ! declare -p "$__name" >/dev/null 2>&1; then
    echo "$0: unknown option --${__name//_/-}" >&2; exit 1
  fi
  printf -v "$__name" '%s' "$__value"
done
unset __name __value __v __usage_vars
true
