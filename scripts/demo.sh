#!/usr/bin/env bash
# The README's main job: set up .venv if needed, then run the offline demo (simulated Stretch,
# the full ROS 2 node graph in one process, the default small model, one task, a recorded bag).
# Arguments go to vlm2vla-demo (e.g. --out DIR, --task "put the red block in the bowl").
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd -P)
"$root/scripts/setup_env.sh"
venv=${VLM2VLA_VENV:-.venv}
[ "${venv#/}" != "$venv" ] || venv="$root/$venv"  # (setup_env.sh takes a relative one from the repository)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# 10-99: ROS 2's safe domain range on Linux is 0-101 (higher ones can meet ephemeral ports)
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( RANDOM % 90 + 10 ))}
exec "$venv/bin/vlm2vla-demo" "$@"  # from the caller's folder: a relative --out is the caller's
