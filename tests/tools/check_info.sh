#!/usr/bin/env bash
# rdmaps-info: the JSON parses, its UCX version is the library's (ucx_info),
# host memory is listed, the GPU path agrees with the devices, PMIx with the
# build, bad flags fail.
#   check_info.sh RDMAPS_INFO [yes|no: meson found PMIx]
set -euo pipefail
info=${1:?rdmaps-info path} built_pmix=${2:-}  # yes|no: what meson found
fail() { echo "check_info: FAIL: $*" >&2; exit 1; }
json=$("$info" --json)
/usr/bin/python3 - "$json" <<'PY' || fail "JSON report inconsistent: $json"
import json, subprocess, sys
r = json.loads(sys.argv[1])
ucx = subprocess.run(["ucx_info", "-v"], capture_output=True, text=True).stdout
assert f"# Version {r['ucx']['version']}\n" in ucx, (r["ucx"], ucx)
assert "host" in r["ucx"]["memory_types"], r["ucx"]
gpus = len(r["cuda"]["devices"])
if gpus == 0:
    assert r["gpu_path"] == "none" and r["cuda"]["reason"], r
else:
    direct = r["ucx"]["cuda"] and tuple(map(int, r["ucx"]["version"].split(".")[:2])) >= (1, 16)
    assert r["gpu_path"] == ("direct" if direct else "staged"), r
PY
text=$("$info")
grep -q "^UCX .*memory types: .*host" <<<"$text" || fail "text report lacks the UCX line: $text"
grep -q "^GPU path: " <<<"$text" || fail "text report lacks the GPU path: $text"
# The build's PMIx, as the library answers it: yes where meson found libpmix (Debian: libpmix-dev).
pmix=$(/usr/bin/python3 -c 'import json, sys; print("yes" if json.loads(sys.argv[1])["pmix"] else "no")' "$json")
grep -q "^Launchers: PMIx $pmix " <<<"$text" || fail "text report's PMIx line disagrees with the JSON ($pmix): $text"
[ -z "$built_pmix" ] || [ "$pmix" = "$built_pmix" ] || fail "meson found PMIx: $built_pmix; the library says $pmix"
if "$info" --bogus 2>/tmp/check_info.$$; then fail "--bogus was accepted"; fi
grep -q "unknown flag '--bogus'" /tmp/check_info.$$ || fail "bad flag message: $(cat /tmp/check_info.$$)"
if "$info" --json on 2>/tmp/check_info.$$; then fail "--json on was accepted"; fi
grep -q "unexpected argument 'on' (--json and --version take no value" /tmp/check_info.$$ ||
  fail "a value after --json: $(cat /tmp/check_info.$$)"
# A report that did not reach standard output (a full disk) is an error, never exit 0.
if "$info" --json >/dev/full 2>/tmp/check_info.$$; then fail "a report written to /dev/full exited 0"; fi
grep -q "its output did not reach standard output (No space left on device)" /tmp/check_info.$$ ||
  fail "an unwritten report's message: $(cat /tmp/check_info.$$)"
rm -f /tmp/check_info.$$
echo "check_info: ok"
