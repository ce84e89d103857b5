#!/usr/bin/env bash
# Issue 17's "gateway >= 0.97 of in-process at every level", judged over rounds (a call of
# its own after bench/gpu_issue17.sh, carrying .gpu2; about 3 minutes on the H200):
#
#   run, carrying .gpu2:  bash .gpu2/run.sh bash bench/gpu_rounds.sh     (timeout 300)
#
# Single runs at one client differ by 12% on the H200 (batch 8 and 32 do the same work there
# and measured 149.6 and 132.7 audio s/s), so one run cannot say whether the gateway reaches
# 0.97 of BatchedInferencePipeline. bench/batching.py --rounds 3 measures in-process
# WhisperModel and BatchedInferencePipeline and the gateway (the CUDA default, sentences x 32,
# and pauses x 32) in turn, three times at 1, 16 and 64 clients, all started at once, and
# prints each gateway's ratio to the better in-process side of each round.
# Rehearse here: bash ../shared/gpu/local.sh env QUICK=1 bash bench/gpu_rounds.sh
set -u
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
device=cuda compute=float16 levels=1,16,64 jobs=64 more=sentences:32,pauses:32
if [ "${QUICK:-}" = 1 ]; then
  device=cpu compute=int8 levels=1,2 jobs=4 more=sentences:2,pauses:2
fi
{
  python3 -c "import uvloop; print('event loop: uvloop', uvloop.__version__)" 2>/dev/null ||
    echo "event loop: asyncio's (uvloop is not here: bench/gpu_prep.sh carries it)"
  echo "== rounds ($(date +%T))"
  timeout 280 python3 bench/batching.py --device $device --compute-type $compute \
    --model "$SPEECHGW_GPU_MODEL" --audio "$SPEECHGW_GPU_AUDIO" --levels $levels \
    --batch-sizes "" --more-gateways $more --jobs $jobs --workers 1 --rounds 3 \
    --out /tmp/issue17-rounds
  cp /tmp/issue17-rounds/batching-rounds.md "$out"/ 2>/dev/null
  echo "== done ($(date +%T))"
} 2>&1 | tee "$out/rounds.log"
