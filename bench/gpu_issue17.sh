#!/usr/bin/env bash
# Issue 17's GPU figures in one call 2 of the ../shared/gpu recipe (about 7 minutes):
#
#   bash bench/gpu_prep.sh          # ../shared/gpu/prep.sh, and the uvloop and py-spy wheels
#   run, carrying .gpu1:  bash .gpu1/setup.sh
#   run, carrying .gpu2:  bash .gpu2/run.sh bash bench/gpu_issue17.sh     (timeout 590)
#
# Measured 2026-12-04 (BENCHMARKS.md "Batched Whisper on the GPU", both runs): timestamp tokens
# keep batching from paying; text alone (segment_times pauses/sentences) batched by 32 reached
# 921 audio s/s at 64 clients on one worker, 1,336 on three, and levelled off there (the GIL,
# 51% held); 200 streams p95 1.44 s on one process. This run, what comes next:
# 1. bench/batching.py, one model worker: in-process WhisperModel and BatchedInferencePipeline
#    against the gateway with sentences and pauses at batch 32 (the CUDA defaults now), 1, 16
#    and 64 clients. sentences' word timing (align) now joins the batches too (session 37),
#    on the window's kept encoder output (session 38: one encoder pass per window, not two):
#    the last run had sentences 22% under pauses, one batch-of-one align per window.
# 2. The same with 2 model workers in each of 2 gateway processes (`speechgw serve --processes
#    2`, session 39: one port, the kernel deals the connections out), 64 and 128 clients: past
#    one interpreter's GIL.
# 3. bench/stream_capacity.py: 200 and 300 real-time streams over 2 gateway processes (pauses,
#    batch 32; --processes 2 as above), then 200 on one process left to the CUDA defaults (no
#    batch_size, no segment_times in its config).
# 4. bench/gil_budget.py: the GIL per audio second with sentences, batch 32, 64 clients.
# 5. bench/kept_encodings.py: sentences in-process, unbatched and batched by 32, 128 jobs: the
#    same segments in float16, and the time (session 38: each window encoded once).
# Everything printed goes to $OUT/issue17.log; tables to $OUT/batching.md.
# Rehearse here first: bash ../shared/gpu/local.sh env QUICK=1 bash bench/gpu_issue17.sh
# (the CPU, int8, a few jobs).
set -u
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
model=$SPEECHGW_GPU_MODEL
audio=$SPEECHGW_GPU_AUDIO
log=$out/issue17.log
device=cuda compute=float16
levels=1,16,64 more=sentences:32,pauses:32 jobs=128 clients=64 batch=32
seconds=20 streams=200,300 one_stream=200 top=64,128 jobs2=256
if [ "${QUICK:-}" = 1 ]; then
  device=cpu compute=int8
  levels=1,2 more=sentences:2,pauses:2 jobs=4 clients=4 batch=2 seconds=5 streams=1,2
  one_stream=2 top=2 jobs2=4
fi
cuda=(--device $device --compute-type $compute --model "$model" --audio "$audio")

# a gateway config for the streams: the model, room for 512 streams; BATCH_SIZE and
# SEGMENT_TIMES, or the device's defaults where they are empty
streams_config() { # FILE BATCH_SIZE SEGMENT_TIMES
  cat >"$1" <<YAML
backends:
  whisper:
    type: whisper
    model: $model
    device: $device
    compute_type: $compute
    concurrency: 1
${2:+    batch_size: $2}
${3:+    segment_times: $3}
routing:
  - backend: whisper
store:
  path: null
limits:
  max_streams: 512
  max_connections: 1024
logging:
  level: INFO
YAML
}

{
  if ls .gpu2/py_spy-*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --target /tmp/pyspy .gpu2/py_spy-*.whl
    export PATH=/tmp/pyspy/bin:$PATH
  fi
  python3 -c "import uvloop; print('event loop: uvloop', uvloop.__version__)" 2>/dev/null ||
    echo "event loop: asyncio's (uvloop is not here: bench/gpu_prep.sh carries it)"
  echo "== batching ($(date +%T))"
  timeout 200 python3 bench/batching.py "${cuda[@]}" --levels $levels --batch-sizes "" \
    --more-gateways $more --jobs $jobs --workers 1 --out /tmp/issue17-batching
  cp /tmp/issue17-batching/batching.md /tmp/issue17-batching/batching.json "$out"/ 2>/dev/null
  echo "== batching, 2 gateway processes of 2 model workers ($(date +%T))"
  timeout 130 python3 bench/batching.py "${cuda[@]}" --levels $top --batch-sizes "" \
    --more-gateways $more --jobs $jobs2 --workers 2 --processes 2 --out /tmp/issue17-batching2
  cp /tmp/issue17-batching2/batching.md "$out"/batching-2-processes.md 2>/dev/null
  streams_config /tmp/issue17-pauses.yaml $batch pauses
  streams_config /tmp/issue17-defaults.yaml "" ""
  echo "== streams, 2 gateway processes, segment_times pauses ($(date +%T))"
  timeout 90 python3 bench/stream_capacity.py --config /tmp/issue17-pauses.yaml \
    --audio "$audio" --clips 2 --levels $streams --processes 2
  echo "== streams, 1 gateway process, the CUDA defaults ($(date +%T))"
  timeout 75 python3 bench/stream_capacity.py --config /tmp/issue17-defaults.yaml \
    --audio "$audio" --clips 2 --levels $one_stream
  echo "== GIL budget ($(date +%T))"
  if command -v py-spy >/dev/null; then
    timeout 45 python3 bench/gil_budget.py "${cuda[@]}" --batch-size $batch --clients $clients \
      --segment-times sentences --seconds $seconds --detail 5
  else
    echo "py-spy is not here: skipped"
  fi
  echo "== sentences in-process, unbatched and batched: kept encodings ($(date +%T))"
  timeout 75 python3 bench/kept_encodings.py --model "$model" --audio "$audio" \
    --batch-size $batch --jobs $jobs --rounds 1
  echo "== done ($(date +%T))"
} 2>&1 | tee "$log"
