#!/usr/bin/env bash
# Stragglers, real processes: time to 85 % test accuracy of BSP, SSP(3) with
# DC-ASGD-a and fully asynchronous DC-ASGD-a with 4 worker processes, the
# three modes interleaved REPS times so that drift in the machine's speed
# falls on all of them alike. Prints one row per run and the median ratios.
#
#   bench/straggler.sh [BUILD_DIR] [STRAGGLER] [REPS] [extra rdmaps-train flags...]
#   STRAGGLER: random:4 (default: each step, each worker 4x slower with chance
#   1/4) or K:4 (worker K always 4x slower)
#   Environment: OUT (default straggler-out), TRAIN (the program; default
#   BUILD_DIR/src/rdmaps-train), VIRTUAL=N (N virtual workers instead of 4
#   processes: the schedule plays the straggler and the bound, time is in
#   step times on its clock, as with a core per worker, and rep R is seed R,
#   since a seed repeats bit for bit), EVALS (test passes per epoch, default 8:
#   85 % is crossed in epoch 2 or 3, and half-epoch steps would date it only
#   to within a fifth of its time; on the 2-core VM 8 passes an epoch made
#   the runs about 12 % longer than 2, in every mode).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
straggler=${2:-random:4}
reps=${3:-3}
shift $(( $# < 3 ? $# : 3 )) || true
extra=(--evals-per-epoch "${EVALS:-8}" "$@")
train=${TRAIN:-$build/src/rdmaps-train}
virtual=${VIRTUAL:-}
[ -z "$virtual" ] || extra+=(--virtual-workers "$virtual")
out=${OUT:-straggler-out}
mkdir -p "$out"
failed=0
modes=("BSP:--sync --dc off" "SSP3-DC-a:--staleness 3 --dc adaptive" "async-DC-a:--async --dc adaptive")
: >"$out/runs.jsonl"
# The table of the runs so far: at the end, or where a time limit stops the
# runs (timeout's TERM): cut off, the whole table was lost with them.
table() {
python3 - "$out/runs.jsonl" "$straggler" "$virtual" "$failed" <<'PY'
import json, math, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
modes = ["BSP", "SSP3-DC-a", "async-DC-a"]
virtual = sys.argv[3]
# Virtual workers: the schedule's clock, in step times; processes: this machine's seconds.
time_key, total, unit = ("virtual_time_to_85", "virtual_time", "steps") if virtual else ("time_to_85_s", "seconds", "s")
who = f"{virtual} virtual workers (rep R: seed R; time in step times)" if virtual else "4 worker processes"
print(f"straggler {sys.argv[2]}, {who}, 15 epochs unless set otherwise")
print("| rep | " + " | ".join(f"{m} to 85 % / final / {unit}" for m in modes) + " | SSP / BSP | SSP / async | async / BSP |")
print("|---:|" + "---|" * len(modes) + "---:|---:|---:|")
ratios = {"ssp_bsp": [], "ssp_async": [], "async_bsp": []}
t = lambda r: r.get(time_key) if not (r.get("diverged") or r.get("failed")) else None
for rep in sorted({r["rep"] for r in runs}):
    by = {r["mode"]: r for r in runs if r["rep"] == rep}
    cells = []
    for m in modes:
        # A mode a time limit stopped before it ran (the table of a cut-off run) is not run, not diverged.
        r = by.get(m, {"not_run": True})
        cells.append("not run" if r.get("not_run") else "failed (see its .err)" if r.get("failed") else
                     "diverged" if r.get("diverged") else
                     ("never" if t(r) is None else f"{round(t(r), 2)} {unit}") + f" / {100 * r['final_test_accuracy']:.2f} % / {r[total]:.1f}")
    def ratio(a, b, key):
        # A mode that never reached 85 % where the other did counts (inf, or 0):
        # left out, a missed target looked met in the medians.
        ra, rb = by.get(a, {"not_run": True}), by.get(b, {"not_run": True})
        if any(r.get("failed") or r.get("not_run") for r in (ra, rb)):  # says nothing of the mode: left out
            return "—"
        x, y = t(ra), t(rb)
        if x is None and y is None:
            return "—"
        v = math.inf if x is None else 0.0 if y is None else x / y
        ratios[key].append(v)
        return f"{v:.2f}"
    print(f"| {rep} | " + " | ".join(cells) + f" | {ratio('SSP3-DC-a', 'BSP', 'ssp_bsp')} | "
          f"{ratio('SSP3-DC-a', 'async-DC-a', 'ssp_async')} | {ratio('async-DC-a', 'BSP', 'async_bsp')} |")
reps = len({r["rep"] for r in runs})
print("medians (min-max; pairs where either reached 85 %, inf: only the second did): " +
      ", ".join(f"{k} {statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f}; {len(v)} of {reps})"
                for k, v in ratios.items() if v))
if int(sys.argv[4]):
    print(f"{sys.argv[4]} run(s) failed other than by diverging (see their .err files)")
    sys.exit(1)
PY
}
trap 'echo "straggler.sh: stopped: the table holds the runs so far" >&2; table || true; exit 124' TERM
for rep in $(seq 1 "$reps"); do
  for m in "${modes[@]}"; do
    name=${m%%:*}
    read -r -a flags <<<"${m#*:}"
    seed=()
    [ -z "$virtual" ] || seed=(--seed "$rep")
    if ! json=$("$train" "${flags[@]}" --straggler "$straggler" "${seed[@]}" --json --out "$out/$name-$rep" \
      "${extra[@]}" 2>"$out/$name-$rep.err" | tail -1); then
      # Only a run the loss stopped diverged; any other failure is said, its
      # cell marked, and the rest still run (a lent machine's minutes).
      if grep -q 'training diverged' "$out/$name-$rep.err"; then
        json='{"diverged":true}'
      else
        echo "straggler.sh: $name rep $rep failed (see $out/$name-$rep.err):" >&2
        tail -n 3 "$out/$name-$rep.err" >&2
        json='{"failed":true}'
        failed=$((failed + 1))
      fi
    fi
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r.update(mode=sys.argv[2], rep=int(sys.argv[3])); print(json.dumps(r))' \
      "$json" "$name" "$rep" | tee -a "$out/runs.jsonl" >/dev/null
    echo "rep $rep $name: $(tail -1 "$out/runs.jsonl" | cut -c1-160)" >&2
  done
done
table
