#!/usr/bin/env bash
# Issue 17's GPU figures in one call 2 of the ../shared/gpu recipe (about 7 minutes):
#
#   bash ../shared/gpu/prep.sh
#   .venv/bin/pip download --no-deps -d .gpu2 py-spy      # for the GIL figure (optional)
#   run, carrying .gpu1:  bash .gpu1/setup.sh
#   run, carrying .gpu2:  bash .gpu2/run.sh bash bench/gpu_issue17.sh     (timeout 600)
#
# 1. bench/batching.py: in-process WhisperModel and BatchedInferencePipeline against the
#    gateway at batch sizes 1, 8, 32; 1, 16 and 64 clients; texts compared.
# 2. bench/gil_budget.py: the gateway's GIL time per audio second on the GPU, 64 clients.
# 3. gpu_bench.py phase 5: 64 and 200 real-time streams through the batching gateway.
# Everything printed goes to $OUT/issue17.log; tables to $OUT/batching.md, $OUT/gpu_results.txt.
# Rehearse here first: bash ../shared/gpu/local.sh env QUICK=1 bash bench/gpu_issue17.sh
# (the CPU, int8, a few jobs).
set -u
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
model=$SPEECHGW_GPU_MODEL
audio=$SPEECHGW_GPU_AUDIO
log=$out/issue17.log
cuda=(--device cuda --compute-type float16 --model "$model" --audio "$audio")
levels=1,16,64 sizes=1,8,32 jobs=128 clients=64 batch=32 seconds=30 streams=64,200
if [ "${QUICK:-}" = 1 ]; then
  cuda=(--device cpu --compute-type int8 --model "$model" --audio "$audio")
  levels=1,2 sizes=1,2 jobs=4 clients=4 batch=2 seconds=5 streams=2
fi

{
  if ls .gpu2/py_spy-*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/pyspy .gpu2/py_spy-*.whl
    export PATH=/tmp/pyspy/bin:$PATH
  fi
  echo "== batching ($(date +%T))"
  timeout 300 python3 bench/batching.py "${cuda[@]}" --levels $levels --batch-sizes $sizes \
    --jobs $jobs --workers 1 --out /tmp/issue17-batching
  cp /tmp/issue17-batching/batching.md /tmp/issue17-batching/batching.json "$out"/ 2>/dev/null
  echo "== GIL budget ($(date +%T))"
  if command -v py-spy >/dev/null; then
    timeout 90 python3 bench/gil_budget.py "${cuda[@]}" --batch-size $batch --clients $clients \
      --seconds $seconds --detail 5
  else
    echo "py-spy is not here: skipped"
  fi
  echo "== streams ($(date +%T))"
  timeout 140 python3 .gpu2/gpu_bench.py "${cuda[@]:0:4}" --workers 4 --levels 1 --rounds 1 \
    --jobs 8 --streams $streams --stream-pieces 2 --deadline 130 --out /tmp/issue17-streams
  cp /tmp/issue17-streams/gpu_results.txt "$out"/ 2>/dev/null
  echo "== done ($(date +%T))"
} 2>&1 | tee "$log"
