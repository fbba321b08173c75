#!/usr/bin/env bash
# The recipes/ast_adapters overrides of a method name used in the classification run.sh
# tables (adapter_<placement>_<seq|par> spell out the bottleneck-adapter variants).
case $1 in
  adapter_pfeiffer_seq) echo "method=adapter adapter_placement=pfeiffer adapter_mode=sequential" ;;
  adapter_pfeiffer_par) echo "method=adapter adapter_placement=pfeiffer adapter_mode=parallel" ;;
  adapter_houlsby_seq) echo "method=adapter adapter_placement=houlsby adapter_mode=sequential" ;;
  adapter_houlsby_par) echo "method=adapter adapter_placement=houlsby adapter_mode=parallel" ;;
  conv_adapter) echo "method=conv_adapter adapter_placement=pfeiffer adapter_mode=parallel" ;;
  full_lr1e-3) echo "method=full lr=1e-3" ;;   # full fine-tuning at a rate tuned on dev
  *) echo "method=$1" ;;
esac
