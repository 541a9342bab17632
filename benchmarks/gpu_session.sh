#!/usr/bin/env bash
# Every GPU check of the project in one run, for a CUDA machine lent for a few minutes.
#
#   bash benchmarks/gpu_session.sh OUT_DIR [SECONDS]      # default 480 s in all
#   DEVICE=cpu bash benchmarks/gpu_session.sh OUT_DIR     # a dry run of every step, tiny sizes, no GPU
#   CLI_ONLY=1 STEPS=15 bash benchmarks/gpu_session.sh OUT_DIR 200   # steps 1-3 only
#
# In order (each step has its own time limit, a failed step is logged and the next one runs):
#   1. the machine: nvidia-smi, torch/CUDA versions, `toolkit doctor`; then benchmarks/gpu_runtimes.py:
#      every test of the TensorRT builder and runner, the CUDA buffers and ONNX Runtime's GPU
#      providers, each reported as run or why not (which runtimes this machine lacks);
#   2. CUDA training through the CLI: 40 steps at 128 px (speed options on auto), then the same
#      run stopped at 10 steps and resumed to 20 with --deterministic, beside an uninterrupted
#      20-step run: the weights must be identical;
#   3. export of the CUDA-trained checkpoint, `toolkit infer` and `toolkit parity` with
#      --provider "$DEVICE", `toolkit bench` of the checkpoint on CUDA;
#   4. benchmarks/gpu_inference.py (torch literal/folded fp32/fp16/compile at batch 1/64/256 and
#      parity of each; the header says which GPU runtimes for ONNX exist: the ONNX rows run only
#      where onnxruntime-gpu is installed);
#   5. benchmarks/gpu_train.py (training images/s of every speed option);
#   6. the tests of training and export, on the time left.
# OUT_DIR gets gpu_session.log (everything printed), gpu_runtimes.{json,md}, parity.json,
# gpu_inference.{json,md} and gpu_train.{json,md}.
# Runs from the repository root without installing it (PYTHONPATH), so a bare machine with
# torch, onnx, onnxruntime and onnxscript will do; carry other wheels in .whl/ (see below).
set -u
OUT=${1:?usage: gpu_session.sh OUT_DIR [SECONDS]}
TOTAL=${2:-480}
mkdir -p "$OUT"
START=$(date +%s)
WORK=$(mktemp -d /tmp/toolkit-gpu.XXXXXX)
LOG="$OUT/gpu_session.log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
# DEVICE=cpu runs the same steps at tiny sizes (a dry run of this script on a machine without a GPU)
DEVICE=${DEVICE:-cuda}
DSIZE=$([ "$DEVICE" = cpu ] && echo 32 || echo 64)  # the resume check needs no big images
if [ "$DEVICE" = cpu ]; then SIZE=32 BATCH=4 STEPS=4 BENCH=1,4 SMOKE=--cpu-smoke; else SIZE=128 BATCH=16 STEPS=${STEPS:-30} BENCH=1,64,256 SMOKE=; fi
TK="$PY -m toolkit"

left() { echo $((TOTAL - ($(date +%s) - START))); }
step() {  # step NAME LIMIT_S COMMAND...: run with a limit (never past the total), log the outcome
    local name=$1 limit=$2; shift 2
    local rest; rest=$(left)
    if [ "$rest" -lt 20 ]; then echo "== $name: skipped, ${rest}s left" | tee -a "$LOG"; return; fi
    [ "$limit" -gt "$rest" ] && limit=$rest
    echo "== $name (limit ${limit}s, $(date +%T))" | tee -a "$LOG"
    local t0; t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    echo "== $name: rc=$rc in $(( $(date +%s) - t0 ))s" | tee -a "$LOG"
}

{
    echo "# gpu_session $(date -u +%FT%TZ) on $(hostname)"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
    $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'gpu', torch.cuda.get_device_name(0))" 2>&1
    $PY -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())" 2>&1
    $PY -c "import tensorrt as t; print('tensorrt', t.__version__)" 2>&1 | tail -1
    $PY -c "import cuda.bindings.runtime as r; print('cuda-python: cudaGetDeviceCount', r.cudaGetDeviceCount())" 2>&1 | tail -1
} >>"$LOG"
step "doctor" 30 $TK doctor
step "gpu_runtimes.py" 200 $PY benchmarks/gpu_runtimes.py "$OUT" --seconds 170

# -- 2. CUDA training through the CLI -------------------------------------------------------
DATA="$WORK/data"
step "train $STEPS steps on $DEVICE" 120 $TK train --device "$DEVICE" --image-size "$SIZE" --batch-size "$BATCH" \
    --epochs 200 --max-steps "$STEPS" --workers 4 --out "$WORK/run"
[ -d "$WORK/run/data" ] && DATA="$WORK/run/data"
step "train 20 steps straight (deterministic)" 60 $TK train --device "$DEVICE" --data "$DATA" --image-size "$DSIZE" \
    --batch-size 16 --epochs 200 --max-steps 20 --deterministic --workers 0 --out "$WORK/straight"
step "train 10 steps (deterministic)" 60 $TK train --device "$DEVICE" --data "$DATA" --image-size "$DSIZE" \
    --batch-size 16 --epochs 200 --max-steps 10 --deterministic --workers 0 --out "$WORK/resumed"
step "resume to 20 steps" 60 $TK train --resume "$WORK/resumed" --device "$DEVICE" --max-steps 20 --workers 0
step "resumed == straight" 30 $PY - "$WORK/straight/last.pt" "$WORK/resumed/last.pt" <<'EOF'
import sys, torch
from toolkit.checkpoint import load_checkpoint
a, b = (load_checkpoint(p) for p in sys.argv[1:])
diff = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
print("steps", a.get("step"), b.get("step"), "| tensors that differ:", len(diff), diff[:5])
sys.exit(1 if diff else 0)
EOF

# -- 3. export, infer, parity, bench of the CUDA-trained checkpoint ------------------------
CKPT="$WORK/run/best.pt"
step "export fp16 + int8" 120 $TK export "$CKPT" --out "$WORK/export" --fp16 --int8 --force
BG=$(find "$DATA/Background" -name '*.jpg' | sort | head -1)
FG=$(find "$DATA/OverlayedImages" -name '*.jpg' | sort | head -1)
step "infer on $DEVICE (.pt)" 60 $TK infer "$BG" "$FG" --model "$CKPT" --provider "$DEVICE" --out "$WORK/infer"
step "parity --provider "$DEVICE"" 90 $TK parity --model "$WORK/export/model.onnx" --model "$WORK/export/model.fp16.onnx" \
    --model "$WORK/export/model.int8.onnx" --reference "$CKPT" --data "$DATA" --provider "$DEVICE" --json "$OUT/parity.json"
step "bench .pt on $DEVICE" 60 $TK bench --model "$CKPT" --provider "$DEVICE" --batch "$BENCH" --iters 20

if [ -n "${CLI_ONLY:-}" ]; then echo "total $(( $(date +%s) - START ))s (CLI_ONLY)" | tee -a "$LOG"; rm -rf "$WORK"; exit 0; fi

# -- 4, 5. the benchmark scripts --------------------------------------------------------------
# ONNX there runs on ORT's CPU provider unless onnxruntime-gpu is installed (the header says): --no-onnx
step "gpu_inference.py" 215 $PY benchmarks/gpu_inference.py "$OUT" --budget 190 --seconds 1 --no-onnx $SMOKE
step "gpu_train.py" 135 $PY benchmarks/gpu_train.py "$OUT" --budget 110 $SMOKE

# -- 6. the tests that touch torch, export and runtimes, on what is left (the deploy and edge-
# install tests need packages or a network this machine may not have) ------------------------
[ "$DEVICE" = cpu ] || step "pytest" 600 $PY -m pytest tests/train tests/export tests/net/test_folded.py tests/net/test_model.py \
    tests/tasks/test_bench.py -q -p no:cacheprovider -n 8
echo "total $(( $(date +%s) - START ))s" | tee -a "$LOG"
rm -rf "$WORK"
