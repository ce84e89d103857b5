#!/usr/bin/env bash
# Issue 17's GPU figures in one call 2 of the ../shared/gpu recipe (about 7 minutes):
#
#   bash ../shared/gpu/prep.sh
#   .venv/bin/pip download --no-deps -d .gpu2 py-spy      # for the GIL figure (optional)
#   run, carrying .gpu1:  bash .gpu1/setup.sh
#   run, carrying .gpu2:  bash .gpu2/run.sh bash bench/gpu_issue17.sh     (timeout 590)
#
# 1. bench/batching.py: in-process WhisperModel and BatchedInferencePipeline against the
#    gateway, segments timed by timestamp tokens (batch_size 1) and by pauses (batch sizes 1,
#    8, 32); 1, 16 and 64 clients; texts compared. (2026-12-04 measured tokens at 1, 8, 32:
#    batching did not pay with timestamp tokens; BENCHMARKS.md "Batched Whisper on the GPU".)
#    Then 2 model workers (two batches in flight: one is formed while the other runs), 64
#    clients, pauses at batch sizes 16 and 32, sentences at 32.
# 2. bench/stream_capacity.py: 64 and 200 real-time streams (limits.max_streams raised from
#    its default 64), batch_size 32, segments by pauses, then tokens at the default batch 8.
# 3. bench/gil_budget.py: the gateway's GIL time per audio second on the GPU, 64 clients,
#    batch_size 32, segments by pauses.
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
levels=1,16,64 tokens=1 more=pauses:1,pauses:8,pauses:32 jobs=128 clients=64 batch=32
seconds=20 streams=64,200 stream_batch=32 top=64 more2=pauses:16,pauses:32,sentences:32
if [ "${QUICK:-}" = 1 ]; then
  device=cpu compute=int8
  levels=1,2 tokens=1 more=pauses:2 jobs=4 clients=4 batch=2 seconds=5 streams=1,2
  stream_batch=2 top=2 more2=pauses:2,sentences:2
fi
cuda=(--device $device --compute-type $compute --model "$model" --audio "$audio")

# a gateway config for the streams: the model, batching, segment times, room for 512 streams
streams_config() { # FILE BATCH_SIZE SEGMENT_TIMES
  cat >"$1" <<YAML
backends:
  whisper:
    type: whisper
    model: $model
    device: $device
    compute_type: $compute
    concurrency: 1
    batch_size: $2
    segment_times: $3
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
  echo "== batching ($(date +%T))"
  timeout 260 python3 bench/batching.py "${cuda[@]}" --levels $levels --batch-sizes $tokens \
    --more-gateways $more --jobs $jobs --workers 1 --out /tmp/issue17-batching
  cp /tmp/issue17-batching/batching.md /tmp/issue17-batching/batching.json "$out"/ 2>/dev/null
  echo "== batching, 2 model workers, $top clients ($(date +%T))"
  timeout 80 python3 bench/batching.py "${cuda[@]}" --levels $top --batch-sizes "" \
    --more-gateways $more2 --jobs $jobs --workers 2 --out /tmp/issue17-batching2
  cp /tmp/issue17-batching2/batching.md "$out"/batching-2-workers.md 2>/dev/null
  streams_config /tmp/issue17-pauses.yaml $stream_batch pauses
  streams_config /tmp/issue17-tokens.yaml 8 tokens
  for kind in pauses tokens; do
    echo "== streams, segment_times $kind ($(date +%T))"
    timeout 90 python3 bench/stream_capacity.py --config /tmp/issue17-$kind.yaml \
      --audio "$audio" --clips 2 --levels $streams
  done
  echo "== GIL budget ($(date +%T))"
  if command -v py-spy >/dev/null; then
    timeout 45 python3 bench/gil_budget.py "${cuda[@]}" --batch-size $batch --clients $clients \
      --segment-times pauses --seconds $seconds --detail 5
  else
    echo "py-spy is not here: skipped"
  fi
  echo "== done ($(date +%T))"
} 2>&1 | tee "$log"
