#!/usr/bin/env bash
# The README's way to use rdmaps from Python, end to end: pip builds the wheel
# (pyproject.toml, meson-python, offline), installs it into a fresh venv that
# sees Debian's torch, and module tests then import the installed package
# from a folder outside the source tree, with no PYTHONPATH.
#   check_pip_install.sh SOURCE_DIR [PYTHON]   (PYTHON: default /usr/bin/python3)
set -euo pipefail
src=$(cd "$1" && pwd)
python=${2:-/usr/bin/python3}
work=$(mktemp -d "${TMPDIR:-/tmp}/rdmaps-pip.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() {
  echo "check_pip_install: FAILED: $*" >&2
  exit 1
}
show_log() {
  echo "--- last lines of $1:" >&2
  tail -n 40 "$1" >&2
}
started=$SECONDS

"$python" -c 'import mesonpy' 2>/dev/null ||
  fail "$python has no meson-python (apt-get install python3-mesonpy; scripts/install-deps.sh)"
"$python" -m venv --system-site-packages "$work/venv" >"$work/venv.log" 2>&1 || {
  show_log "$work/venv.log"
  fail "$python -m venv failed (apt-get install python3-venv python3-pip; scripts/install-deps.sh)"
}
venv_python=$work/venv/bin/python
# Whatever a caller's environment points at must not stand in for the wheel.
unset PYTHONPATH PYTHONHOME
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

# meson-python 0.12 writes its native file and build folder into the source
# tree it builds; a copy leaves the tree, and any pip run in it, alone.
mkdir "$work/src"
if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # Tracked and new files, as a fresh checkout plus one's own edits would have them.
  git -C "$src" ls-files -z --cached --others --exclude-standard |
    tar -C "$src" --null --files-from=- --ignore-failed-read -cf - 2>/dev/null | tar -C "$work/src" -xf -
else
  tar -C "$src" --exclude='./build*' --exclude='./.mesonpy*' -cf - . | tar -C "$work/src" -xf -
fi
[ -f "$work/src/pyproject.toml" ] || fail "no pyproject.toml in $src"

build_started=$SECONDS
# This checks packaging, not code speed: the wheel compiles at -O0
# (CHECK_PIP_OPTIMIZATION=2 to change it) as a unity build (CHECK_PIP_UNITY=off):
# 119 s here at meson-python's -O2, 76 s at -O0, 52 s at -O0 in unity. A
# native file carries both, as pip 23.0 keeps one setup-args; -O0 goes in
# the compiler flags, after the -O2 that meson-python's -Doptimization=2 adds.
opt=${CHECK_PIP_OPTIMIZATION:-0}
printf "[built-in options]\nunity = '%s'\nc_args = ['-O%s']\ncpp_args = ['-O%s']\n" \
  "${CHECK_PIP_UNITY:-on}" "$opt" "$opt" >"$work/check.ini"
(cd "$work" && "$venv_python" -m pip wheel -v --no-build-isolation --no-deps --no-index \
  --config-settings=setup-args=--native-file="$work/check.ini" -w "$work/wheel" "$work/src") \
  >"$work/wheel.log" 2>&1 || {
  show_log "$work/wheel.log"
  fail "pip wheel --no-build-isolation did not build the wheel"
}
build_seconds=$((SECONDS - build_started))
wheels=("$work"/wheel/rdmaps-*.whl)
[ ${#wheels[@]} -eq 1 ] && [ -f "${wheels[0]}" ] || fail "expected one rdmaps wheel, found: $(ls "$work/wheel")"

# The wheel holds the package and its metadata, nothing else: no tools,
# headers or bundled libraries that pip would scatter over the venv.
"$venv_python" - "${wheels[0]}" <<'PY' || fail "the wheel's contents are wrong (above)"
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
need = ["rdmaps/__init__.py", "rdmaps/launch.py", "rdmaps/launcher.py", "rdmaps/torch/__init__.py",
        "rdmaps/torch/optimizer.py", "rdmaps/torch/runtime.py"]
problems = ["missing " + n for n in need if n not in names]
if not any(n.startswith("rdmaps/_rdmaps.") and n.endswith(".so") for n in names):
    problems.append("missing the extension rdmaps/_rdmaps*.so")
problems += ["unexpected " + n for n in names if not n.startswith(("rdmaps/", "rdmaps-"))
             or (n.startswith("rdmaps-") and ".dist-info/" not in n)]
for p in problems:
    print("check_pip_install:", p, file=sys.stderr)
sys.exit(1 if problems else 0)
PY

"$venv_python" -m pip install --no-deps --no-index "${wheels[0]}" >"$work/install.log" 2>&1 || {
  show_log "$work/install.log"
  fail "pip install of the wheel failed"
}

# From a folder of its own: neither the source tree nor a build tree is on sys.path.
mkdir "$work/run"
cp "$src/tests/python/test_module.py" "$src/tests/python/forked.py" "$work/run/"
cd "$work/run"
"$venv_python" - "$work/venv" <<'PY' || fail "import rdmaps, rdmaps.torch from the venv failed (above)"
import os, sys
import rdmaps, rdmaps.torch
venv = os.path.realpath(sys.argv[1])
for module in (rdmaps, rdmaps._rdmaps, rdmaps.torch):
    if not os.path.realpath(module.__file__).startswith(venv + os.sep):
        sys.exit(f"check_pip_install: {module.__name__} came from {module.__file__}, not the venv {venv}")
for name in os.listdir(os.path.dirname(rdmaps._rdmaps.__file__)):
    if name.startswith("librdmaps"):
        sys.exit(f"check_pip_install: {name} next to the extension; librdmaps belongs inside it")
print(f"check_pip_install: rdmaps {rdmaps.__version__} from {os.path.dirname(rdmaps.__file__)}")
PY
# What the install can break: the extension, its bundled library and UCX
# found from the venv, a server and workers end to end, the machine report,
# the library's log reaching Python. python-module runs the whole file
# against the build tree (49 cases, 20 s here; these 20, 5 s).
cases=(ModuleTest ConfigurationTest.test_info_reports_this_machine ConfigurationTest.test_bad_value_names_the_flag
  ConfigurationTest.test_library_log_lines_reach_python_logging)
UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo} "$venv_python" test_module.py "${cases[@]}" >"$work/test.log" 2>&1 || {
  show_log "$work/test.log"
  fail "tests/python/test_module.py ${cases[*]} against the installed package"
}
tail -n 3 "$work/test.log"
echo "check_pip_install: OK (wheel built in ${build_seconds} s, $((SECONDS - started)) s in all)"
