#!/usr/bin/env bash
# GPU check of a `--features cuda` build, for a machine that has an NVIDIA GPU and the CUDA 13
# libraries but no Rust toolchain (build here with scripts/build-cuda.sh, then ship the binary):
#
#   scripts/build-cuda.sh                                   # -> target/cuda/release/ianvs
#   mkdir -p .devcarry && strip -o /tmp/ianvs target/cuda/release/ianvs \
#     && xz -T2 -6 -c /tmp/ianvs > .devcarry/ianvs.xz \
#     && sha256sum /tmp/ianvs > .devcarry/ianvs.sha256
#   # on the GPU machine, from a checkout of this repo with .devcarry/ beside it:
#   OUT=/tmp/gpu-check bash scripts/gpu-check.sh
#
# It prints nvidia-smi and nvcc, finds libcublas/libcurand/libcudart (pip's nvidia/cu13 wheels
# first) for LD_LIBRARY_PATH, checks the binary's sha256 and ldd, then runs with `device: cuda`:
# a one-case smoke job of the trained pair, testenvs/speculative-decoding/benchmark-cuda.yaml
# (every verifier on cpu and cuda) and testenvs/mnist-joint-inference/benchmark-cuda.yaml
# (cloud CNN on cpu and cuda), and an edge-on-CPU / cloud-on-GPU run over TCP (`ianvs serve
# --device cuda` + the `Tcp` link, section 7; speculative decoding with the verifier there, 8). A case that falls back to the CPU counts as a failure. $OUT gets
# check.log, smoke.log, scenario.log, joint.log (capped) and the leaderboards. Exit status 0
# only when every CHECK passed. On an H200 (2026-11-26) the whole script took 50 s.
OUT="${OUT:-/tmp/check-out}"
mkdir -p "$OUT"
main() {
set -x
status=0
# Panics keep their backtrace; candle errors (e.g. a failed cuda open) do not carry one.
export RUST_BACKTRACE=1 RUST_LIB_BACKTRACE=0
cap() { # cap FILE: keep the first and last 150 lines of a log
    local f="$1"
    if [[ $(wc -l <"$f") -gt 300 ]]; then
        { head -n 150 "$f"; echo "... [$(wc -l <"$f") lines, cut] ..."; tail -n 150 "$f"; } >"$f.cut" && mv "$f.cut" "$f"
    fi
}

# ---- 1. machine -------------------------------------------------------------------------
nvidia-smi
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv
nvcc --version || /usr/local/cuda/bin/nvcc --version

# ---- 2. CUDA libraries the binary is linked against ---------------------------------------
# NEEDED: libcuda.so.1 (driver), libcurand.so.10, libcublas.so.13 (-> libcublasLt.so.13),
#         libcudart.so.13 (CUDA 13; PyTorch cu130's wheels carry them). libnvrtc is not needed.
# The pip wheels' folder (site-packages/nvidia/cu13/lib) first, then whatever find turns up.
libdirs=()
pydir="$(python3 - <<'PY' 2>/dev/null
import glob, os, sys
for base in sys.path:
    for d in glob.glob(os.path.join(base, "nvidia", "cu13", "lib")) + glob.glob(os.path.join(base, "nvidia", "*", "lib")):
        if glob.glob(os.path.join(d, "libcublas.so*")):
            print(d); raise SystemExit
PY
)"
[[ -n "$pydir" ]] && libdirs+=("$pydir")
timeout 45 find / \( -path /proc -o -path /sys -o -path /dev \) -prune -o \
    \( -name 'libcublas.so*' -o -name 'libcublasLt.so*' -o -name 'libcurand.so*' \
       -o -name 'libnvrtc.so*' -o -name 'libcudart.so*' -o -name 'libcuda.so*' \) -print 2>/dev/null \
    | sort >/tmp/cuda-libs.txt
head -n 40 /tmp/cuda-libs.txt
for lib in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcudart.so.13; do
    d="$(grep "/$lib\$" /tmp/cuda-libs.txt | grep -v -e /stubs/ -e /compat/ | head -n 1 | xargs -r dirname)"
    if [[ -z "$d" ]]; then
        echo "CHECK: $lib NOT FOUND on this machine"
        status=1
    fi
    [[ -n "$d" ]] && libdirs+=("$d")
done
# The driver's libcuda.so.1: normally in the loader cache; else its folder from find.
if ! ldconfig -p | grep -q 'libcuda\.so\.1 '; then
    d="$(grep '/libcuda\.so\.1$' /tmp/cuda-libs.txt | grep -v -e /stubs/ -e /compat/ | head -n 1 | xargs -r dirname)"
    [[ -n "$d" ]] && libdirs+=("$d") || { echo "CHECK: the driver's libcuda.so.1 NOT FOUND"; status=1; }
fi
LD_LIBRARY_PATH="$(printf '%s\n' "${libdirs[@]}" | awk '!seen[$0]++' | paste -sd:)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

# ---- 3. the binary ------------------------------------------------------------------------
if command -v xz >/dev/null; then
    xz -dc .devcarry/ianvs.xz >/tmp/ianvs
else
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' .devcarry/ianvs.xz /tmp/ianvs
fi
chmod +x /tmp/ianvs
sha256sum -c .devcarry/ianvs.sha256 || status=1
ldd /tmp/ianvs
if ldd /tmp/ianvs | grep -q 'not found'; then
    echo "CHECK: unresolved libraries (see ldd above)"
    status=1
fi
/tmp/ianvs --version || status=1
/tmp/ianvs list modules >/tmp/modules.txt 2>&1 || status=1
head -n 60 /tmp/modules.txt

# ---- 4. GPU smoke: the committed speculative-decoding pair with device: cuda --------------
# One case (draft 4 tokens, 2 ms RTT) of the project's own trained Llama pair, drafter and
# verifier both on `cuda`. ianvs falls back to the CPU with a "running on the CPU instead"
# warning when it cannot open the GPU; that counts as a failure here.
smoke=.devcarry/smoke
mkdir -p "$smoke"
cat >"$smoke/speculative-cuda.yaml" <<'YAML'
algorithm:
  paradigm_type: "speculativedecoding"
  modules:
    - type: "drafter"
      name: "LLM"
      hyperparameters:
        - model:
            values: ["../../datasets/lm/draft"]
        - device:
            values: ["cuda"]
        - draft_tokens_per_step:
            values: [4]
    - type: "verifier"
      name: "LLM"
      hyperparameters:
        - model:
            values: ["../../datasets/lm/verifier"]
        - device:
            values: ["cuda"]
        - verification:
            values: ["greedy"]
        - temperature:
            values: [0.0]
    - type: "link"
      name: "Emulated"
      hyperparameters:
        - rtt_ms:
            values: [2]
        - uplink_mbps:
            values: [100]
YAML
cat >"$smoke/benchmark.yaml" <<'YAML'
benchmarkingjob:
  name: "cuda-smoke"
  workspace: "./ws"
  testenv: "../../testenvs/speculative-decoding/testenv.yaml"
  test_object:
    type: "algorithms"
    algorithms:
      - name: "speculative-cuda"
        url: "./speculative-cuda.yaml"
  rank:
    sort_by:
      - { "token-throughput": "descend" }
    selected_dataitem:
      paradigms: [ "all" ]
      modules: [ "all" ]
      hyperparameters: [ "all" ]
      metrics: [ "all" ]
    save_mode: "selected_and_all"
YAML
timeout 90 /tmp/ianvs run -f "$smoke/benchmark.yaml" --workspace "$OUT/smoke-ws" --quiet >"$OUT/smoke.log" 2>&1
echo "smoke exit: $?"
cap "$OUT/smoke.log"
cat "$OUT/smoke.log"
if grep -q 'running on the CPU' "$OUT/smoke.log"; then
    echo "CHECK: GPU SMOKE FELL BACK TO THE CPU"
    status=1
fi
cp "$OUT"/smoke-ws/*/rank/leaderboard.md "$OUT/smoke-leaderboard.md" 2>/dev/null || status=1
rm -rf "$OUT/smoke-ws"

# ---- 5. THE LEAD'S GPU SCENARIO -----------------------------------------------------------
# >>>>>>>>>> testenvs/speculative-decoding/benchmark-cuda.yaml is written by the lead. <<<<<<<<<<
if [[ -f testenvs/speculative-decoding/benchmark-cuda.yaml ]]; then
    nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv
    timeout 300 /tmp/ianvs run -f testenvs/speculative-decoding/benchmark-cuda.yaml \
        --workspace "$OUT/ws" --quiet >"$OUT/scenario.log" 2>&1
    echo "scenario exit: $?"
    cap "$OUT/scenario.log"
    tail -n 80 "$OUT/scenario.log"
    if grep -q 'running on the CPU' "$OUT/scenario.log"; then
        echo "CHECK: SCENARIO FELL BACK TO THE CPU"
        status=1
    fi
    for f in "$OUT"/ws/*/rank/leaderboard.md; do
        [[ -f "$f" ]] || { status=1; continue; }
        job="$(basename "$(dirname "$(dirname "$f")")")"
        cp "$f" "$OUT/leaderboard-$job.md"
        cat "$f"
    done
    # Only the leaderboards come back: the workspace itself stays on the machine.
    rm -rf "$OUT/ws"
else
    echo "CHECK: testenvs/speculative-decoding/benchmark-cuda.yaml missing; scenario skipped"
fi
# >>>>>>>>>> end of the lead's GPU scenario <<<<<<<<<<

# ---- 6. joint inference with the cloud CNN trained and run on the GPU -----------------------
timeout 150 /tmp/ianvs run -f testenvs/mnist-joint-inference/benchmark-cuda.yaml \
    --workspace "$OUT/jws" --quiet >"$OUT/joint.log" 2>&1
echo "joint exit: $?"
cap "$OUT/joint.log"
tail -n 30 "$OUT/joint.log"
grep -q 'running on the CPU' "$OUT/joint.log" && { echo "CHECK: JOINT FELL BACK TO THE CPU"; status=1; }
cp "$OUT"/jws/*/rank/leaderboard.md "$OUT/leaderboard-joint-cuda.md" 2>/dev/null || status=1
cat "$OUT/leaderboard-joint-cuda.md"
rm -rf "$OUT/jws"
# ---- 7. edge on the CPU, cloud on the GPU: two processes over TCP (issue 14) -------------------
# A cloud worker on this machine's GPU (`ianvs serve --device cuda`, token required), and an
# edge `ianvs run` that keeps its MLP on the CPU and reaches the worker's CNN over TCP (the
# `Tcp` link with `spawn: none`). On a real deployment the edge runs on another (CPU) machine
# with `endpoint: <gpu-host>:7447`; here both are on one host over loopback, which still
# separates the processes and the devices. Not run in CI (no GPU there): a documented check.
IANVS_TOKEN=gpu-check-token /tmp/ianvs serve --bind 127.0.0.1:7448 --require-token --device cuda \
    >"$OUT/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 50); do grep -q 'listening on' "$OUT/serve.log" && break; sleep 0.2; done
net=.devcarry/net
mkdir -p "$net"
sed -e 's/name: "Emulated"/name: "Tcp"/' \
    -e 's#values: \["../links/lan.yaml", "../links/wan.yaml"\]#values: ["'"$PWD/$net"'/remote.yaml"]#' \
    testenvs/mnist-joint-inference/algorithms/threshold.yaml >"$net/threshold-remote.yaml"
cat >"$net/remote.yaml" <<'YAML'
spawn: "none"
endpoint: "127.0.0.1:7448"
token: "gpu-check-token"
deadline_ms: 2000
YAML
cat >"$net/benchmark.yaml" <<YAML
benchmarkingjob:
  name: "cuda-network"
  workspace: "./ws"
  testenv: "$PWD/testenvs/mnist-joint-inference/testenv.yaml"
  test_object:
    type: "algorithms"
    algorithms:
      - name: "edge-cpu-cloud-gpu"
        url: "./threshold-remote.yaml"
  rank:
    sort_by:
      - { "accuracy": "descend" }
    selected_output_columns: [ "rank", "algorithm", "accuracy", "samples-transfer-ratio", "latency-mean", "latency-p95", "link-time-mean", "cloud-time-mean", "fallback-ratio" ]
YAML
timeout 300 /tmp/ianvs run -f "$net/benchmark.yaml" --workspace "$OUT/nws" --quiet >"$OUT/network.log" 2>&1
echo "network exit: $?"
# ---- 8. speculative decoding: drafter on the CPU (edge), verifier on the GPU worker ------------
# The same worker hosts the trained pair's verifier on cuda; the edge drafts on the CPU and sends
# each round over TCP; each prompt's verifier-only baseline runs in the worker too (paired).
cat >"$net/spec-remote.yaml" <<YAML
algorithm:
  paradigm_type: "speculativedecoding"
  modules:
    - type: "drafter"
      name: "LLM"
      hyperparameters:
        - model: { values: ["$PWD/datasets/lm/draft"] }
        - device: { values: ["cpu"] }
        - draft_tokens_per_step: { values: [2, 4] }
    - type: "verifier"
      name: "LLM"
      hyperparameters:
        - model: { values: ["$PWD/datasets/lm/verifier"] }
    - type: "link"
      name: "Tcp"
      hyperparameters:
        - spawn: { values: ["none"] }
        - endpoint: { values: ["127.0.0.1:7448"] }
        - token: { values: ["gpu-check-token"] }
        - deadline_ms: { values: [30000] }
YAML
cat >"$net/spec-benchmark.yaml" <<YAML
benchmarkingjob:
  name: "cuda-network-speculative"
  workspace: "./ws"
  testenv: "$PWD/testenvs/speculative-decoding/testenv-network.yaml"
  test_object:
    type: "algorithms"
    algorithms:
      - name: "drafter-cpu-verifier-gpu"
        url: "./spec-remote.yaml"
  rank:
    sort_by:
      - { "token-throughput": "descend" }
    selected_output_columns: [ "rank", "algorithm", "drafter-draft_tokens_per_step", "token-throughput", "speed-up", "lossless", "near-tie-divergences", "acceptance-rate", "draft-time-share", "link-time-share", "verify-time-share" ]
YAML
timeout 300 /tmp/ianvs run -f "$net/spec-benchmark.yaml" --workspace "$OUT/sws" --quiet >"$OUT/network-spec.log" 2>&1
echo "network speculative exit: $?"
cap "$OUT/network-spec.log"; tail -n 30 "$OUT/network-spec.log"
grep -h '"device"\|"model"' "$OUT"/sws/*/*/*/real_link.json 2>/dev/null | head -n 4
cp "$OUT"/sws/*/rank/leaderboard.md "$OUT/leaderboard-network-spec-cuda.md" 2>/dev/null || status=1
cat "$OUT/leaderboard-network-spec-cuda.md"
rm -rf "$OUT/sws"
kill "$serve_pid" 2>/dev/null; wait "$serve_pid" 2>/dev/null
cap "$OUT/network.log"; cap "$OUT/serve.log"
tail -n 30 "$OUT/network.log"; cat "$OUT/serve.log"
grep -q 'running on the CPU' "$OUT/serve.log" && { echo "CHECK: THE WORKER FELL BACK TO THE CPU"; status=1; }
grep -h '"device"' "$OUT"/nws/*/*/*/runtime.json 2>/dev/null | head -n 3
cp "$OUT"/nws/*/rank/leaderboard.md "$OUT/leaderboard-network-cuda.md" 2>/dev/null || status=1
cat "$OUT/leaderboard-network-cuda.md"
rm -rf "$OUT/nws"
nvidia-smi --query-gpu=memory.used,utilization.gpu,clocks.sm --format=csv

echo "CHECK STATUS: $status (0 = all good)"
return "$status"
}
# Everything also goes to $OUT/check.log.
main 2>&1 | tee "$OUT/check.log"
exit "${PIPESTATUS[0]}"
