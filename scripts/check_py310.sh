#!/usr/bin/env bash
# The robot runs Python 3.10 (Ubuntu 22.04, ROS 2 Humble). Two checks:
#  1. vermin: no language feature or standard-library API newer than 3.10, in any shipped file;
#  2. where a CPython 3.10 exists on this machine, byte-compile everything with it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLM2VLA_VENV:-.venv}
files=$(git ls-files -co --exclude-standard -- '*.py' | grep -v '^benchmarks/.*_gpu' || true)
# shellcheck disable=SC2086
"$VENV/bin/vermin" -t=3.10- --no-tips --violations --eval-annotations --no-parse-comments -q $files
echo "vermin: no construct newer than Python 3.10 in $(echo "$files" | wc -w) files"

py310=""
for candidate in python3.10 "${HOME:-/root}/.pyenv/versions/3.10"*/bin/python3.10; do
  # pyenv shims exist even when their version is not selected: ask the interpreter itself.
  if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1; then
    py310=$candidate; break
  fi
done
if [ -n "$py310" ]; then
  tmp=$(mktemp -d)
  # shellcheck disable=SC2086
  "$py310" - "$tmp" $files <<'PY'
import py_compile, sys
out, files = sys.argv[1], sys.argv[2:]
for i, f in enumerate(files):
    py_compile.compile(f, cfile=f"{out}/{i}.pyc", doraise=True)
print(f"python3.10: {len(files)} files compile")
PY
  rm -rf "$tmp"
else
  echo "python3.10 not found: relying on vermin alone"
fi
