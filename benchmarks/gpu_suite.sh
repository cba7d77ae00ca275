#!/usr/bin/env bash
# The GPU benchmarks in one go, sized for a short lease on one H100/H200: cycle latency of the
# Gemma-3-12B-shaped model (prefix reuse on and off, constrained chunks) and its training step
# (LoRA as VLM2VLA trains, full fine-tuning as the paper's baseline). Each benchmark runs under
# its own time limit and writes NAME.json (its report) and NAME.log; one that fails or runs out
# of time leaves the others' results. About 8 minutes on an H200 for the eager runs; the static
# cache runs compile first. Run from the repository root:
#   benchmarks/gpu_suite.sh OUT_DIR DATASET_DIR [ONLY]
# ONLY, an extended regular expression, runs just the benchmarks whose names match it
# (for example 'static' for the compiled-decode runs alone).
# DATASET_DIR is a folder that `vlm2vla-dataset build` wrote (its train.jsonl and images); the
# measured run used `vlm2vla-dataset sim --out EP --kinds pick_up put_in --episodes 2` and then
# `vlm2vla-dataset build EP --out DATASET_DIR` (536 KB, small enough to carry to a lent GPU).
set -uo pipefail
out=${1:?usage: gpu_suite.sh OUT_DIR DATASET_DIR [ONLY]}
data=${2:?usage: gpu_suite.sh OUT_DIR DATASET_DIR [ONLY]}
only=${3:-.}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
python3 - > "$out/environment.json" <<'PY'
import json, platform, torch, transformers, peft
print(json.dumps({"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
                  "peft": peft.__version__, "cuda": torch.version.cuda,
                  "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}))
PY
cat "$out/environment.json"

bench() {  # NAME SECONDS SCRIPT ARGS...
  local name=$1 limit=$2; shift 2
  [[ $name =~ $only ]] || return 0
  local start=$SECONDS
  timeout "$limit" python3 "$@" > "$out/$name.json" 2> "$out/$name.log"
  local rc=$?
  echo "$name: rc $rc in $((SECONDS - start)) s: $(tail -c 600 "$out/$name.json")"
  [ $rc = 0 ] || tail -5 "$out/$name.log"
}

# --max-seconds ends a benchmark's timed loop and reports what it did; timeout is the backstop.
bench latency_reuse 150 benchmarks/gemma3_12b_latency.py --cycles 20 --warmup 1 --max-seconds 90
bench latency_no_adapter 100 benchmarks/gemma3_12b_latency.py --cycles 10 --warmup 1 --max-seconds 45 --no-adapter
bench train_lora_b1 80 benchmarks/gemma3_12b_train_step.py --data "$data" --steps 8
bench train_lora_b8 80 benchmarks/gemma3_12b_train_step.py --data "$data" --steps 6 --batch-size 8 --no-checkpointing
bench latency_no_reuse 90 benchmarks/gemma3_12b_latency.py --cycles 6 --warmup 1 --max-seconds 40 --no-reuse
bench latency_constrained 100 benchmarks/gemma3_12b_latency.py --cycles 5 --warmup 1 --max-seconds 50 --constrained
bench train_full_b1 70 benchmarks/gemma3_12b_train_step.py --data "$data" --steps 5 --full
# One preallocated key/value cache: generate() compiles the decode step (CUDA graphs). The warm-up
# cycles compile (the adapter-on graph); --max-seconds counts the timed cycles only.
bench latency_static_constrained 330 benchmarks/gemma3_12b_latency.py --cycles 20 --warmup 2 --max-seconds 45 --constrained --static-cache 1024
bench latency_static_no_adapter 240 benchmarks/gemma3_12b_latency.py --cycles 10 --warmup 2 --max-seconds 30 --no-adapter --static-cache 1024
