#!/usr/bin/env bash
# Two builds' rdmaps-perf ps, interleaved: the hot path before and after a change.
# usage: bench/compare_hot_path.sh OLD_RDMAPS_PERF NEW_RDMAPS_PERF [REPEATS]
# Prints "REPEAT old|new TRANSPORT RULE JSON" lines and a median summary.
set -euo pipefail
usage="usage: bench/compare_hot_path.sh OLD_RDMAPS_PERF NEW_RDMAPS_PERF [REPEATS]"
old=${1:?$usage} new=${2:?$usage} repeats=${3:-3}
for b in "$old" "$new"; do
  [[ -x $b ]] || { echo "compare_hot_path.sh: $b not found (build it first)" >&2; exit 1; }
done
export UCX_NET_DEVICES=lo
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for rep in $(seq "$repeats"); do
  for cfg in "shm 16000000 dc-asgd-a" "tcp 4000000 sgd"; do
    read -r tr fl rule <<<"$cfg"
    for which in old new; do
      bin=$old; [ $which = new ] && bin=$new
      j=$("$bin" ps --transport "$tr" --floats "$fl" --rule "$rule" --server-threads 1 --iters 20 --json 2>/dev/null | tail -1) ||
        { echo "compare_hot_path.sh: $which ($bin) failed: ps --transport $tr --rule $rule, repeat $rep" >&2; exit 1; }
      echo "$rep $which $tr $rule $j" | tee -a "$out"
    done
  done
done
awk '{ match($0, /"iter_p50_s":[0-9.e-]+/); p = substr($0, RSTART + 13, RLENGTH - 13)
       r = match($0, /"ratio":[0-9.e-]+/) ? substr($0, RSTART + 8, RLENGTH - 8) : "n/a"
       k = $3 " " $4 " " $2; n[k]++; ps[k, n[k]] = p; rs[k, n[k]] = r }
     END { for (k in n) { printf "%s: iteration p50", k; for (i = 1; i <= n[k]; i++) printf " %.1f ms", ps[k, i] * 1000
                          printf ", ratio to bound"; for (i = 1; i <= n[k]; i++) printf (rs[k, i] == "n/a" ? " %s" : " %.2f"), rs[k, i]; print "" } }' "$out" | sort
