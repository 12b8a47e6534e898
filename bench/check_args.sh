# Sourced by bench/gpu_check.sh and bench/scale_check.sh: their shared flags
# (--bin DIR, --data DIR, --out DIR, --budget SECONDS, --quick, --help) and
# how they find the programs they run. The caller sets `out` (its default
# folder) and `budget` (its default seconds in all) first; `deadline` is when
# that budget is spent (bash's SECONDS): a lent machine's session is short, and
# one hung run must not take the rest of it. A bundle for a machine without
# the project's libraries (bin/, lib/, data/ and env.sh: docs/benchmarks.md
# "Reproduce") is a --bin too: its env.sh is sourced (the libraries' and UCX's
# modules' paths) and its data is the default --data. `--parts` (scale_check
# only) sets `parts`.
here=$(cd "$(dirname "$0")" && pwd)
bin="" data="" quick=0 parts=""
while [ $# -gt 0 ]; do
  # A flag of a value, last: "$2: unbound variable" from bash, not which flag.
  case $1 in --bin | --budget | --data | --out | --bundle | --parts) [ $# -ge 2 ] ||
    { echo "$(basename "$0"): $1 needs a value (see --help)" >&2; exit 2; } ;;
  esac
  case $1 in
    --bin) bin=$2; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --parts) parts=$2; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "$(basename "$0"): unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$bin" ] || { [ -d "$here/../build" ] && bin=$here/../build; }
# Absolute: the runs are handed on to scripts that cd (straggler.sh), where a relative one failed every run.
[ -z "$bin" ] || [ ! -e "$bin" ] || bin=$(cd "$bin" && pwd)
[ -z "$data" ] || [ ! -e "$data" ] || data=$(cd "$data" && pwd)
if [ -n "$bin" ] && [ -f "$bin/env.sh" ]; then
  set +u  # an env.sh may extend LD_LIBRARY_PATH unset here; the callers run under set -u
  # shellcheck disable=SC1091
  source "$bin/env.sh"
  set -u
fi
[ -n "$data" ] || data=${RDMAPS_DATA:-}
[[ $budget =~ ^[1-9][0-9]*$ ]] || { echo "$(basename "$0"): --budget '$budget' is not a whole number of seconds" >&2; exit 2; }
deadline=$((SECONDS + budget))
part_deadline=""  # where set (bash's SECONDS), a part's own end, before the budget's

time_left() {  # $1: a run's own limit in seconds -> the smaller of it and what the budget leaves (0: spent)
  local end=$deadline
  [ -n "$part_deadline" ] && [ "$part_deadline" -lt "$end" ] && end=$part_deadline
  local left=$((end - SECONDS))
  [ $left -gt 10 ] || { echo 0; return; }
  echo $(($1 < left ? $1 : left))
}

spent() {  # NAME LIMIT: true (and NAME logged and recorded in `failed` as not run) when LIMIT is 0
  [ "$2" -eq 0 ] || return 1
  echo "== $1: not run: the --budget of $budget s is spent" | tee -a "$log"
  failed+=("$1 (not run: --budget spent)")
}

find_tool() {  # $1: program name -> its path under --bin (a build tree or one folder), else PATH, else empty
  local b
  for b in "$bin" "$bin/bin" "$bin/bench" "$bin/src" "$bin/tests"; do
    [ -n "$bin" ] && [ -x "$b/$1" ] && { echo "$b/$1"; return; }
  done
  command -v "$1" || true
}
