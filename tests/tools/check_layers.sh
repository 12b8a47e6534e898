#!/usr/bin/env bash
# Layers point down only (docs/architecture.md): every quoted #include of a
# folder must name a folder that folder may use. Prints each include that
# does not, with its file and line, and fails.
#   tests/tools/check_layers.sh [SOURCE_DIR]
set -uo pipefail
cd "${1:-$(dirname "$0")/../..}"
# folder -> the folders (include prefixes) its code may include; "!x/" forbids x/ even under an allowed prefix.
declare -A allowed=(
  [include/rdmaps]="rdmaps/"
  [math]="math/ rdmaps/"
  [transport]="transport/ rdmaps/ rdmaps_config.h !transport/ucx/"
  [transport/ucx]="transport/ rdmaps/ rdmaps_config.h"
  [cuda]="cuda/ math/ rdmaps/ rdmaps_config.h"
  [src]="src/ transport/ cuda/ math/ rdmaps/ rdmaps_config.h !transport/ucx/"
  [python/ext]="python/ src/ transport/ cuda/ math/ rdmaps/ rdmaps_config.h !transport/ucx/"
)
violations=0
while IFS= read -r file; do
  folder=""
  for f in "${!allowed[@]}"; do  # the longest folder that holds the file
    if [[ $file == "$f"/* ]] && [ ${#f} -gt ${#folder} ]; then folder=$f; fi
  done
  [ -n "$folder" ] || continue
  while IFS=: read -r line include; do
    ok=0
    for rule in ${allowed[$folder]}; do
      if [[ $rule == !* ]]; then
        [[ $include == "${rule#!}"* ]] && { ok=0; break; }
      elif [[ $include == "$rule"* ]]; then
        ok=1
      fi
    done
    if [ $ok = 0 ]; then
      echo "$file:$line: $folder/ may not include \"$include\" (allowed: ${allowed[$folder]})"
      violations=$((violations + 1))
    fi
  done < <(grep -noE '^#include "[^"]+"' "$file" | sed -E 's/^([0-9]+):#include "([^"]+)"/\1:\2/')
done < <(find include math transport cuda src python/ext -type f \( -name '*.h' -o -name '*.cc' -o -name '*.cu' -o -name '*.c' \) | sort)
if [ $violations -gt 0 ]; then
  echo "$violations include(s) point the wrong way"
  exit 1
fi
echo "layers: every include points down"
