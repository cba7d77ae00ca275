#!/usr/bin/env bash
# The README's main job: set up .venv if needed, then run the offline demo (simulated Stretch,
# the full ROS 2 node graph in one process, the default small model, one task, a recorded bag).
# Arguments go to vlm2vla-demo (e.g. --out DIR, --task "put the red block in the bowl").
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup_env.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( RANDOM % 100 + 100 ))}
exec "${VLM2VLA_VENV:-.venv}/bin/vlm2vla-demo" "$@"
