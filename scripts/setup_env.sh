#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv: everything the tests and the
# offline demo need on a machine with no ROS and no GPU. Idempotent: a second run with unchanged
# dependency files only checks a stamp and returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VLM2VLA_VENV:-.venv}
PYTHON=${PYTHON:-python3}
EXTRAS="vision,model,train,ros-offline,bags,dev"

# 3.11: the pinned versions in constraints.txt (numpy 2.4, pandas 3, transformers 5.23) need it.
# The package's own code stays Python 3.10 for the robot's Humble (test.sh checks that).
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "setup_env: Python >= 3.11 is required for the pinned environment, $PYTHON is $("$PYTHON" -V 2>&1)" \
       "(set PYTHON=python3.11; on the robot, ROS 2 Humble's Python 3.10 runs the package with apt's packages)" >&2; exit 1; }

# System packages: only venv/pip support is needed (OpenCV is the headless build, ROS comes
# as wheels). Installed only when missing and when we are root on a Debian/Ubuntu machine.
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    apt-get update -qq && apt-get install -y -qq "python$version-venv" python3-pip
  else
    echo "setup_env: $PYTHON lacks venv/ensurepip; install python3-venv (as root: apt-get install python3-venv)" >&2
    exit 1
  fi
fi

# A venv this script made (it wrote .origin) with another Python version, or in another folder (a
# moved clone: its launchers' first line names the old one), is made again from scratch. A venv
# without .origin (an older checkout's, or one VLM2VLA_VENV names) is never cleared.
mkdir -p "$VENV"
origin="Python $("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') in $(cd "$VENV" && pwd -P)"
stamp_src=$( { cat setup.py constraints.txt scripts/setup_env.sh; echo "$origin"; } | sha256sum | cut -d' ' -f1)
if [ -f "$VENV/.stamp" ] && [ "$(cat "$VENV/.stamp")" = "$stamp_src" ] && [ -x "$VENV/bin/python" ]; then
  echo "setup_env: $VENV is up to date"
  exit 0
fi

if [ -x "$VENV/bin/python" ] && [ -f "$VENV/.origin" ] && [ "$(cat "$VENV/.origin")" != "$origin" ]; then
  echo "setup_env: $VENV was made by another Python or in another folder; making it again"
  "$PYTHON" -m venv --clear "$VENV"
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
echo "$origin" > "$VENV/.origin"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
start=$(date +%s)
# torch first, on its own, from PyTorch's CPU index (its x86 builds are 2.13.0+cpu, its ARM ones
# 2.13.0), so nothing resolves it to PyPI's CUDA build (and its nvidia-* wheels) on a machine with
# no GPU. Without its dependencies, which the next step installs from the usual index.
"${PIP[@]}" install -c constraints.txt --no-deps --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
"${PIP[@]}" install -c constraints.txt -e ".[$EXTRAS]"
echo "$stamp_src" > "$VENV/.stamp"
echo "setup_env: installed into $VENV in $(( $(date +%s) - start )) s"
