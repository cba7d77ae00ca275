#!/usr/bin/env bash
# The README's test command: set up .venv if needed, then lint, check Python 3.10 (the robot's
# ROS 2 Humble) compatibility, run pytest (unit, integration over real DDS, fault tests) and
# build the package with colcon to check the ROS install layout. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup_env.sh
VENV=${VLM2VLA_VENV:-.venv}
PY="$VENV/bin/python"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
# Each run gets its own DDS domain so parallel or leftover ROS processes cannot cross-talk
# (10-99: ROS 2's safe range on Linux is 0-101; higher ones can meet ephemeral ports).
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( RANDOM % 90 + 10 ))}
# The tiny test model is built into the checkout, not a HOME that may be read-only.
export VLM2VLA_CACHE=${VLM2VLA_CACHE:-$PWD/.cache/vlm2vla_ros}

echo "== ruff"
"$VENV/bin/ruff" check .

echo "== python 3.10 compatibility"
./scripts/check_py310.sh

echo "== pytest"
"$PY" -m pytest "$@"
