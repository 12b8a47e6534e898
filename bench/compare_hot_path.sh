#!/usr/bin/env bash
# Two builds' rdmaps-perf ps, interleaved: the hot path before and after a change.
# usage: bench/compare_hot_path.sh OLD_RDMAPS_PERF NEW_RDMAPS_PERF [REPEATS]
# Prints "REPEAT old|new TRANSPORT RULE JSON" lines, then per case each
# build's iteration p50s and ratios with their medians, and the paired
# new/old ratio of each repeat with its median.
# CASES: the cases, ';'-separated "TRANSPORT FLOATS RULE [WIRE]" (default:
# "shm 16000000 dc-asgd-a;tcp 4000000 sgd"; WIRE f32 unless given, e.g. bf16).
set -euo pipefail
usage="usage: bench/compare_hot_path.sh OLD_RDMAPS_PERF NEW_RDMAPS_PERF [REPEATS]"
old=${1:?$usage} new=${2:?$usage} repeats=${3:-3}
for b in "$old" "$new"; do
  [[ -x $b ]] || { echo "compare_hot_path.sh: $b not found (build it first)" >&2; exit 1; }
done
export UCX_NET_DEVICES=lo
out=$(mktemp) err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
for rep in $(seq "$repeats"); do
  IFS=';' read -r -a cases <<<"${CASES:-shm 16000000 dc-asgd-a;tcp 4000000 sgd}"
  for cfg in "${cases[@]}"; do
    read -r tr fl rule wire <<<"$cfg"
    wire=${wire:-f32} label=$rule
    [ "$wire" = f32 ] || label=$rule/$wire
    for which in old new; do
      bin=$old; [ $which = new ] && bin=$new
      j=$("$bin" ps --transport "$tr" --floats "$fl" --rule "$rule" --wire "$wire" --server-threads 1 --iters 20 --json \
        2>"$err" | tail -1) ||
        { echo "compare_hot_path.sh: $which ($bin) failed: ps --transport $tr --rule $rule --wire $wire, repeat $rep:" >&2
          tail -n 5 "$err" >&2; exit 1; }
      echo "$rep $which $tr $label $j" | tee -a "$out"
    done
  done
done
python3 - "$out" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    rep, which, transport, rule, j = line.split(" ", 4)
    r = json.loads(j)
    rows.setdefault((transport, rule), {}).setdefault(which, {})[rep] = (r["iter_p50_s"], r.get("ratio"))
for (transport, rule), by in sorted(rows.items()):
    for which in ("old", "new"):
        p50s = [p for p, _ in by[which].values()]
        ratios = [q for _, q in by[which].values() if q is not None]
        print(f"{transport} {rule} {which}: iteration p50 " + " ".join(f"{p * 1000:.1f}" for p in p50s) +
              f" ms (median {statistics.median(p50s) * 1000:.1f}), ratio to bound " +
              (" ".join(f"{q:.2f}" for q in ratios) + f" (median {statistics.median(ratios):.2f})" if ratios else "n/a"))
    paired = [by["new"][rep][0] / by["old"][rep][0] for rep in by["old"] if rep in by["new"]]
    print(f"{transport} {rule}: new/old per repeat " + " ".join(f"{x:.2f}" for x in paired) +
          f", median {statistics.median(paired):.2f}")
PY
