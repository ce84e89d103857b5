#!/bin/bash
# Run a command on a share of the CPUs, as on a slower machine: a cgroup with a CFS quota.
#
#   bash bench/slow_cpu.sh 0.4 .venv/bin/python bench/stream_latency.py --runs 2 --interim on
#
# The first argument is how many CPUs' worth of time the command and its children get (0.4:
# 40 ms in every 100 ms, shared by all their threads). At 0.4, tiny.en decodes a stream's
# utterance under 8 s in about 1.6 s and its encoder takes about 1.0 s here, where the 2 vCPUs
# of an "AMD EPYC" that CI once ran on took 1.58 s and 1.23 s (`bench/utterance_decode.py
# --model tiny.en`): a stand-in for such a machine, not the same one (the quota runs in bursts,
# where a slow core is slow all the time). Needs root and a cgroup v1 `cpu` controller or
# cgroup v2 with `cpu` enabled.
set -euo pipefail
share=$1
shift
quota=$(python3 -c "print(int(float('$share') * 100000))")
if [ -d /sys/fs/cgroup/cpu ] && [ -f /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
    group=/sys/fs/cgroup/cpu/speechgw-slow
    mkdir -p "$group"
    echo 100000 > "$group/cpu.cfs_period_us"
    echo "$quota" > "$group/cpu.cfs_quota_us"
elif [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    group=/sys/fs/cgroup/speechgw-slow
    mkdir -p "$group"
    echo "$quota 100000" > "$group/cpu.max"
else
    echo "slow_cpu: no cgroup cpu controller here" >&2
    exit 1
fi
echo $$ > "$group/cgroup.procs"
exec "$@"
