# Sourced by bench/gpu_check.sh and bench/scale_check.sh: their shared flags
# (--bin DIR, --data DIR, --out DIR, --quick, --help) and how they find the
# programs they run. The caller sets `out` (its default folder) first.
here=$(cd "$(dirname "$0")" && pwd)
bin="" data="" quick=0
while [ $# -gt 0 ]; do
  case $1 in
    --bin) bin=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "$(basename "$0"): unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$bin" ] || { [ -d "$here/../build" ] && bin=$here/../build; }

find_tool() {  # $1: program name -> its path under --bin (a build tree or one folder), else PATH, else empty
  local b
  for b in "$bin" "$bin/bench" "$bin/src" "$bin/tests"; do
    [ -n "$bin" ] && [ -x "$b/$1" ] && { echo "$b/$1"; return; }
  done
  command -v "$1" || true
}
