#!/usr/bin/env bash
# Shim tests and figures on a real NVIDIA GPU (needs nvidia-smi, nvcc, gcc, python3; PyTorch optional).
# Builds the shim with gcc against the toolkit's cuda.h and the test program with nvcc, writes configs with
# vcuda.shimfile (PYTHONPATH = repo root), runs everything under LD_PRELOAD and prints `name: value unit`.
# Uses GPU 0 only. About 4 minutes on an H100; set GPU_TEST_SECONDS (default 5) to change each window.
# `--only colocated` (about 2 minutes): two lone-tenant cases, then the co-located pairs with the node file
# (VCUDA_NODE_DIR, as the plugin mounts it) and without it (each tenant alone in its view, the old behaviour).
set -euo pipefail
ONLY=""
if [ "${1:-}" = --only ]; then ONLY=${2:?"--only colocated"}; fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
W=${GPU_TEST_DIR:-$(mktemp -d /tmp/vcuda-gpu.XXXXXX)}
NODE_DIR="$W/node"
SECONDS_PER_RUN=${GPU_TEST_SECONDS:-5}
PY=${PYTHON:-python3}
export CUDA_VISIBLE_DEVICES=0
mkdir -p "$W" "$NODE_DIR"

NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
CUDA_INC=$(dirname "$(dirname "$(readlink -f "$NVCC")")")/include
[ -f "$CUDA_INC/cuda.h" ] || CUDA_INC=/usr/local/cuda/include
echo "# work dir $W, cuda.h from $CUDA_INC" >&2

gcc -std=gnu11 -O2 -fPIC -fvisibility=hidden -pthread -I"$CUDA_INC" -I"$ROOT/vcuda/shim" -shared \
  -Wl,-soname,libvcuda.so -Wl,-Bsymbolic -o "$W/libvcuda.so" "$ROOT"/vcuda/shim/*.c -ldl
"$NVCC" -O2 -o "$W/shim_gpu" "$ROOT/tests/gpu/shim_gpu.cu"

UUID=$(nvidia-smi --query-gpu=uuid --format=csv,noheader -i 0 | tr -d ' ')
PHYS_MIB=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits -i 0 | tr -d ' ')
HAVE_TORCH=0
"$PY" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null && HAVE_TORCH=1

# config <name> <memory MiB> <core %> [soft %]
config() {
  PYTHONPATH="$ROOT" "$PY" -c '
import sys
from vcuda.model import GpuUuid
from vcuda.shimfile import GpuLimit, ShimConfig, encode_config
path, uuid, mib, core, soft = sys.argv[1:]
limit = GpuLimit(GpuUuid(uuid), int(mib) << 20, int(core), int(soft))
open(path, "wb").write(encode_config(ShimConfig("gpu-test", "default", "gpu-test", "main", (limit,))))
' "$W/$1.cfg" "$UUID" "$2" "$3" "${4:-$3}"
  rm -f "$W/$1.usage"
}

# under <name> <command...>: run with the shim and that config
under() {
  local name=$1; shift
  LD_PRELOAD="$W/libvcuda.so" VCUDA_CONFIG_PATH="$W/$name.cfg" VCUDA_USAGE_PATH="$W/$name.usage" \
    VCUDA_NODE_DIR="${VCUDA_NODE_DIR:-$NODE_DIR}" "$@"
}

field() { sed -n "s/.*\b$1 \([0-9.]*\).*/\1/p" | head -n 1; }
metric() { printf '%s: %s %s\n' "$1" "$2" "$3"; }
calc() { "$PY" -c "print(round($1, 2))"; }

# ---- memory ---------------------------------------------------------------------------------------------
if [ -z "$ONLY" ]; then
config mem4g 4096 100
out=$(under mem4g "$W/shim_gpu" mem 256)
metric gpu_mem_limit_mib 4096 MiB
metric gpu_mem_cuda_allocated_mib "$(echo "$out" | field allocated_mib)" MiB
metric gpu_mem_cuda_meminfo_total_mib "$(echo "$out" | field total_mib)" MiB
metric gpu_mem_cuda_meminfo_free_mib "$(echo "$out" | field free_mib)" MiB
smi=$(under mem4g nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits -i 0 | tr -d ' ')
metric gpu_nvidia_smi_total_mib_in_container "$smi" MiB
metric gpu_nvidia_smi_total_mib_physical "$PHYS_MIB" MiB
if [ "$HAVE_TORCH" = 1 ]; then
  out=$(under mem4g "$PY" -c '
import torch
held, mib = [], 0
free, total = torch.cuda.mem_get_info()
try:
    while mib < 1 << 20:
        held.append(torch.empty(256 << 20, dtype=torch.uint8, device="cuda"))
        mib += 256
except torch.OutOfMemoryError:
    pass
print("allocated_mib", mib, "total_mib", total >> 20, "free_mib", free >> 20)
')
  metric gpu_mem_torch_allocated_mib "$(echo "$out" | field allocated_mib)" MiB
  metric gpu_mem_torch_meminfo_total_mib "$(echo "$out" | field total_mib)" MiB
fi
fi

# ---- compute accuracy -----------------------------------------------------------------------------------
# share = work done per second relative to the same kernels alone on the GPU without the shim.
work_rate() { "$PY" -c "import sys; w=sys.stdin.read().split(); d=dict(zip(w[::2], w[1::2])); print(int(d['kernels'])*int(d['iters'])/float(d['elapsed']))"; }
declare -A SOLO
for size in 20000 50; do
  SOLO[$size]=$("$W/shim_gpu" burn "$SECONDS_PER_RUN" "$size" | work_rate)
done
abs_sum=0; n=0
for target in 10 30 50 70 90; do
  config "c$target" 16384 "$target"
  for size in 20000 50; do
    if [ -n "$ONLY" ] && ! [ "$target$size" = 3050 ] && ! [ "$target$size" = 7020000 ]; then continue; fi
    rate=$(under "c$target" "$W/shim_gpu" burn "$SECONDS_PER_RUN" "$size" | work_rate)
    share=$(calc "100 * $rate / ${SOLO[$size]}")
    kind=$([ "$size" = 50 ] && echo tiny_50us || echo large_20ms)
    metric "gpu_share_alone_${kind}_target_${target}" "$share" "%"
    abs_sum=$(calc "$abs_sum + abs($share - $target)"); n=$((n + 1))
  done
done
metric gpu_share_alone_mae "$(calc "$abs_sum / $n")" "points"

# colocated <metric prefix>: pairs t + (100 - t) of tiny-kernel burners started together
colocated() {
  local prefix=$1 abs_sum=0 n=0
  for target in 10 30 50 70 90; do
    other=$((100 - target))
    config "a$target" 16384 "$target"; config "b$target" 16384 "$other"
    rm -f "$NODE_DIR"/*.bin
    under "a$target" "$W/shim_gpu" burn "$SECONDS_PER_RUN" 50 > "$W/a.out" &
    pa=$!
    under "b$target" "$W/shim_gpu" burn "$SECONDS_PER_RUN" 50 > "$W/b.out" &
    pb=$!
    wait "$pa" "$pb"
    sa=$(calc "100 * $(work_rate < "$W/a.out") / ${SOLO[50]}")
    sb=$(calc "100 * $(work_rate < "$W/b.out") / ${SOLO[50]}")
    metric "${prefix}_target_${target}" "$sa" "%"
    metric "${prefix}_partner_target_${other}" "$sb" "%"
    abs_sum=$(calc "$abs_sum + abs($sa - $target) + abs($sb - $other)"); n=$((n + 2))
  done
  metric "${prefix}_mae" "$(calc "$abs_sum / $n")" "points"
}
colocated gpu_share_colocated
# Ceiling: two unlimited tiny-kernel burners together (time-slicing's own cost shows as a total below 100 %).
config u1 16384 100; config u2 16384 100
under u1 "$W/shim_gpu" burn "$SECONDS_PER_RUN" 50 > "$W/a.out" & pa=$!
under u2 "$W/shim_gpu" burn "$SECONDS_PER_RUN" 50 > "$W/b.out" & pb=$!
wait "$pa" "$pb"
metric gpu_share_colocated_unlimited_pair_total \
  "$(calc "100 * ($(work_rate < "$W/a.out") + $(work_rate < "$W/b.out")) / ${SOLO[50]}")" "%"
if [ -n "$ONLY" ]; then
  VCUDA_NODE_DIR="$W/no-node-dir" colocated gpu_share_colocated_no_node_file
  exit 0
fi

# ---- overhead -------------------------------------------------------------------------------------------
config full 16384 100
best() { local b=""; for _ in 1 2 3; do v=$("$@" | field ns_per_launch); b=$("$PY" -c "print(min(float('$v'), float('${b:-inf}')))"); done; echo "$b"; }
base=$(best "$W/shim_gpu" launch 200000)
with=$(best under full "$W/shim_gpu" launch 200000)
config half 16384 50
throttled=$(best under half "$W/shim_gpu" launch 200000)
metric gpu_launch_ns_no_shim "$base" ns
metric gpu_launch_ns_shim "$with" ns
metric gpu_launch_overhead_pct "$(calc "100 * ($with - $base) / $base")" "%"
metric gpu_launch_ns_shim_limit_50 "$throttled" ns
if [ "$HAVE_TORCH" = 1 ]; then
  train='
import time, torch
torch.manual_seed(0)
m = torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range(8)]).cuda()
opt = torch.optim.SGD(m.parameters(), lr=1e-3)
x = torch.randn(256, 1024, device="cuda")
def step():
    opt.zero_grad(set_to_none=True); m(x).square().mean().backward(); opt.step()
for _ in range(50): step()
torch.cuda.synchronize(); best = 1e9
for _ in range(3):
    t = time.perf_counter()
    for _ in range(200): step()
    torch.cuda.synchronize(); best = min(best, (time.perf_counter() - t) / 200)
print("step_ms", best * 1e3)
'
  tb=$("$PY" -c "$train" | field step_ms)
  tw=$(under full "$PY" -c "$train" | field step_ms)
  metric gpu_torch_step_ms_no_shim "$tb" ms
  metric gpu_torch_step_ms_shim "$tw" ms
  metric gpu_torch_step_overhead_pct "$(calc "100 * ($tw - $tb) / $tb")" "%"
fi
