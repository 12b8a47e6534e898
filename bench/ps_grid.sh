#!/usr/bin/env bash
# The server's grid against its same-run bound: `rdmaps-perf ps --json` for
# every rule x model size x workers x server threads, each cell REPEATS
# launches (interleaved: one pass over the grid per repeat), then one
# markdown row per cell with the median iteration and bound and the median
# of the launches' ratios (each launch's iteration to its own bound: not the
# one median over the other), and each direction's rate against the same
# run's transport probe (n/a where rdmaps-perf refuses it with the ratio).
#   bench/ps_grid.sh BUILD_DIR OUT.jsonl
# Environment (defaults in brackets): TRANSPORT [shm], RULES [sgd momentum
# dc-asgd-c dc-asgd-a], FLOATS [16M 64M], WORKERS [1 2], THREADS [1 2],
# REPEATS [1], EXTRA (more rdmaps-perf ps flags) [], PERF (the program)
# [BUILD_DIR/bench/rdmaps-perf].
set -euo pipefail
build=${1:?build dir}
out=${2:?output .jsonl}
perf=${PERF:-$build/bench/rdmaps-perf}
[[ -x "$perf" ]] || { echo "ps_grid.sh: $perf not found (build it first)" >&2; exit 2; }
transport=${TRANSPORT:-shm}
read -r -a rules <<<"${RULES:-sgd momentum dc-asgd-c dc-asgd-a}"
read -r -a sizes <<<"${FLOATS:-16M 64M}"
read -r -a workers <<<"${WORKERS:-1 2}"
read -r -a threads <<<"${THREADS:-1 2}"
repeats=${REPEATS:-1}
read -r -a extra <<<"${EXTRA:-}"
: >"$out"
: >"$out.err"
failed=0  # a failed cell is said and skipped: the rest of the grid and its table still come (a lent machine's minutes)
# The table of the launches so far: at the end, or where a time limit stops
# the grid (timeout's TERM): cut off, the whole table was lost with it.
table() {
python3 - "$out" "$failed" <<'EOF'
import json, statistics, sys
cells = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    key = (r["floats"], r["rule"], r["workers"], r["server_threads"])
    cells.setdefault(key, []).append(r)
print("| floats | rule | workers | T | iteration p50 ms | bound ms (wire + apply + copy-out) | ratio | intake GB/s | "
      "push / probe | pull / probe | launches |")
print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for (floats, rule, w, t), rs in sorted(cells.items()):
    med = lambda f: statistics.median(x[f] for x in rs)
    # rdmaps-perf gives no ratio where its bound leaves a cost out (no_ratio_because)
    ratios = [x["ratio"] for x in rs if x.get("ratio") is not None]
    ratio = f"{statistics.median(ratios):.2f}" if ratios else "n/a (" + rs[0].get("no_ratio_because", "") + ")"
    # null, with the ratio, where the probe was another transfer than the run's
    def vs(way):
        got = [x[f"{way}_vs_transport"] for x in rs if x.get(f"{way}_vs_transport") is not None]
        return f"{statistics.median(got):.2f}" if got else "n/a"
    print(f"| {floats / 2**20:g} M | {rule} | {w} | {t} | {med('iter_p50_s') * 1e3:.1f} | "
          f"{med('bound_s') * 1e3:.1f} ({med('bound_wire_s') * 1e3:.1f} + {med('bound_memory_s') * 1e3:.1f} + "
          f"{med('bound_copy_out_s') * 1e3:.1f}) | {ratio} | "
          f"{med('intake_GBps'):.2f} | {vs('push')} | {vs('pull')} | {len(rs)} |")
if int(sys.argv[2]):
    print(f"\n{sys.argv[2]} launch(es) failed (see the .err file): their cells are missing or have fewer launches")
    sys.exit(1)
EOF
}
trap 'echo "ps_grid.sh: stopped: the table holds the launches so far" >&2; table || true; exit 124' TERM
for ((r = 1; r <= repeats; r++)); do
  for floats in "${sizes[@]}"; do
    for rule in "${rules[@]}"; do
      for w in "${workers[@]}"; do
        for t in "${threads[@]}"; do
          if ! "$perf" ps --transport "$transport" --rule "$rule" --floats "$floats" --workers "$w" \
            --server-threads "$t" "${extra[@]}" --json >>"$out" 2>>"$out.err"; then
            echo "ps_grid.sh: failed: $rule $floats floats, $w workers, T=$t (see $out.err)" >&2
            failed=$((failed + 1))
          fi
        done
      done
    done
  done
done
table
