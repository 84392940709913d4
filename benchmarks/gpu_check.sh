#!/usr/bin/env bash
# The GPU check of the performance issue, as one script for a lent GPU machine (the `device` tool):
#   1. the tiny pipeline (tests/e2e/params_tiny.yaml) on cuda with runtime.precision bf16, stage by stage,
#   2. the default pipeline on cuda with bf16 (teacher, distill, baseline timed),
#   3. `benchmarks/bench.py --device cuda --precision bf16` (step ratios on the GPU, GPU latency per model;
#      on that machine's CPU: every student at batch 1 with and without flushing denormals, which tests the
#      README's explanation of MobileViT's 31 ms there, and the int8 ONNX file against fp32).
# DVC orchestrates on the CPU and is not needed there: each stage runs its dvc.yaml command in DAG order.
# Missing Python packages (mlflow, soundfile, ...) travel as wheels in .whl, installed to /tmp/site.
# GPU_CHECK_DEVICE=cpu dry-runs the script's mechanics on a machine without a GPU.
# Usage there: bash benchmarks/gpu_check.sh OUTDIR
set -uo pipefail
OUT=${1:?output folder}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PYTHONUNBUFFERED=1
if [ -d "$ROOT/.whl" ] && [ "${GPU_CHECK_DEVICE:-cuda}" = cuda ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$ROOT"/.whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$ROOT/src
else
  export PYTHONPATH=$ROOT/src
fi
nvidia-smi -L
python3 -c "import torch, transformers, mlflow, soundfile, torchaudio; print('torch', torch.__version__, \
'transformers', transformers.__version__, 'mlflow', mlflow.__version__, torch.cuda.is_available())" || exit 1

pipeline() {  # $1 folder, $2 params file: run every dvc.yaml stage command in order, timed
  local dir=$1
  mkdir -p "$dir"
  cp -r "$ROOT/stages" "$ROOT/dvc.yaml" "$dir/"
  cp "$2" "$dir/params.yaml"
  (
    cd "$dir" || exit 1
    export MLFLOW_TRACKING_URI="sqlite:///$dir/mlruns/mlflow.db" AUDIOKD_CHECKPOINT_DIR="$dir/.ckpt"
    mkdir -p mlruns
    python3 - <<'EOF' > cmds.txt
import yaml
stages = yaml.safe_load(open("dvc.yaml"))["stages"]
for name, st in stages.items():
    cmd = " ".join(st["cmd"].split())
    print(name + "\t" + ("python3 " + cmd[len("python "):] if cmd.startswith("python ") else cmd))
EOF
    while IFS=$'\t' read -r name cmd; do
      start=$(date +%s.%N)
      bash -c "$cmd" > "log-$name.txt" 2>&1 || { echo "STAGE $name FAILED"; tail -30 "log-$name.txt"; exit 1; }
      echo "stage $name $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s"
    done < cmds.txt
    grep -h "best epoch\|distributed\|device" log-*.txt | tail -8
    PYTHONPATH=$PYTHONPATH python3 -m audiokd.cli summary reports/metrics.json
  )
}

gpu_params() {  # $1 source params, $2 destination: the same with runtime on cuda in bf16
  python3 - "$1" "$2" <<'EOF'
import sys, yaml
p = yaml.safe_load(open(sys.argv[1]))
import os
p["runtime"].update(device=os.environ.get("GPU_CHECK_DEVICE", "cuda"), precision="bf16", num_threads=0)
yaml.safe_dump(p, open(sys.argv[2], "w"), sort_keys=False)
EOF
}

echo "== tiny pipeline, cuda, bf16"
gpu_params "$ROOT/tests/e2e/params_tiny.yaml" /tmp/tiny.yaml
time pipeline /tmp/gpu-tiny /tmp/tiny.yaml
cp /tmp/gpu-tiny/reports/metrics.json "$OUT/tiny_metrics.json" 2>/dev/null

echo "== default pipeline, cuda, bf16"
gpu_params "$ROOT/params.yaml" /tmp/default.yaml
time timeout 300 bash -c "$(declare -f pipeline); ROOT=$ROOT; pipeline /tmp/gpu-default /tmp/default.yaml"
cp /tmp/gpu-default/reports/metrics.json "$OUT/default_metrics.json" 2>/dev/null

echo "== bench, cuda, bf16"
cd "$ROOT" && time timeout 240 python3 benchmarks/bench.py --device cuda --precision bf16 --repeats 5 \
  --clips 48 --out "$OUT/bench_gpu.json"
