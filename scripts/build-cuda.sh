#!/usr/bin/env bash
# Build ianvs with `--features cuda` on a Linux x86_64 machine that has no CUDA toolkit and no
# GPU, from pinned PyPI wheels (CUDA 13.0).
#
# What the build needs, and where it comes from:
#   * candle-kernels (build.rs, via `cudaforge`) runs nvcc twice: PTX for the element-wise
#     kernels, embedded in the binary, and a static `libmoe.a` (GGUF/MoE kernels, SASS).
#     nvcc, ptxas, cicc, the CUDA headers and CCCL (thrust/cub/libcu++) come from the wheels
#     nvidia-cuda-nvcc, nvidia-cuda-crt, nvidia-nvvm, nvidia-cuda-runtime, nvidia-cuda-cccl.
#   * candle-core turns on cudarc's `dynamic-linking` feature (not dlopen), so the binary is
#     LINKED against libcuda, libnvrtc, libcurand, libcublas, libcublasLt and (for libmoe.a)
#     libcudart. The last five come from the wheels nvidia-cuda-runtime, nvidia-cuda-nvrtc,
#     nvidia-curand, nvidia-cublas; for nvrtc, curand and cublas the first CUDA 13.0 releases
#     are linked, so any CUDA 13.x copy of these libraries serves at run time (e.g. PyTorch
#     cu130's wheels); libcudart matches the compiler (CUDA 13.0 Update 2).
#     No wheel carries the driver library, so a stub `libcuda.so` (soname libcuda.so.1, one
#     function per driver entry point that cudarc declares, each returning
#     CUDA_ERROR_NO_DEVICE) is generated for the link, like the toolkit's own
#     lib64/stubs/libcuda.so; at run time the real libcuda.so.1 of the NVIDIA driver is used.
#   * cudarc's CUDA version is pinned with CUDARC_CUDA_VERSION=13000 rather than parsed from
#     `nvcc --version`; the compute capability with CUDA_COMPUTE_CAP (default 90: H100/H200;
#     cudaforge turns 90 into the arch-specific sm_90a, which runs on sm_90 GPUs only).
#
# Every wheel is checked against a pinned sha256 (pip --require-hashes) before extraction.
# The toolkit is assembled, outside the repository, as a CUDA_ROOT layout:
#   $IANVS_CUDA_TOOLKIT/{bin/nvcc, nvvm/, include/, lib/, lib64 -> lib, lib/stubs/libcuda.so}
# Idempotent: a complete toolkit (stamp file matching the pins) is not fetched again.
#
# At run time the binary needs (readelf NEEDED; the linker's --as-needed drops libnvrtc):
# libcuda.so.1 (driver), libcurand.so.10, libcublas.so.13 (which loads libcublasLt.so.13),
# libcudart.so.13, libstdc++.so.6. Point LD_LIBRARY_PATH at the folders holding them (pip
# wheels: site-packages/nvidia/cu13/lib). The kernels are PTX ISA 9.0 for sm_90a plus sm_90a
# machine code: they need a CUDA 13 driver (>= 580) and a compute-capability 9.0 GPU unless
# CUDA_COMPUTE_CAP names another.
#
# Usage: scripts/build-cuda.sh [--fetch-only] [extra cargo build args...]
# Environment:
#   IANVS_CUDA_TOOLKIT  where the toolkit is assembled (default: $HOME/.cache/ianvs/cuda-13.0)
#   CUDA_COMPUTE_CAP    GPU compute capability to build kernels for (default: 90)
#   CARGO_TARGET_DIR    cargo target dir (default: <repo>/target/cuda, apart from the CPU build)
# Needs: python3 with pip, sha256sum, cc (gcc), cargo. About 0.7 GB download (to a temporary
# folder), 1.1 GB toolkit on disk. A first build takes about 20 minutes on 2 cores.
set -euo pipefail

# package==version  wheel sha256 (manylinux x86_64)
readonly PINS=(
    "nvidia-cuda-nvcc==13.0.88     56fe502eb77625a12f25172caa3cdddb4e4c8ba2c8c17dba44b164761b380f03"
    "nvidia-cuda-crt==13.0.88      2c8043c7c9e02492716426e9919fc78d2c5b3b2a7a768a88e952676b08aa55a4"
    "nvidia-nvvm==13.0.88          c5f41ffeb6466944a026dfa5317d7d85355c119bbec279205d22f1869d1054e0"
    "nvidia-cuda-runtime==13.0.96  7f82250d7782aa23b6cfe765ecc7db554bd3c2870c43f3d1821f1d18aebf0548"
    "nvidia-cuda-cccl==13.0.85     e0da7ad981f3a8aff08241b5bfc1af868742a63e2762f53a5171c492ef242649"
    "nvidia-cuda-nvrtc==13.0.48    87e13d186905a35e7c04ad553a2abded0fba22f93b43d02e5da6f6cf73fb4d0a"
    "nvidia-curand==10.4.0.35      1aee33a5da6e1db083fe2b90082def8915f30f3248d5896bcec36a579d941bfc"
    "nvidia-cublas==13.0.0.19      f6723af2e8e2600a11dc384037d90d9bf93070e346c24ef2e8f9001658c99896"
)
# Unversioned names the linker looks for (-lfoo), pointing at the wheels' versioned libraries.
readonly LINK_NAMES=(
    "libcudart.so   libcudart.so.13"
    "libnvrtc.so    libnvrtc.so.13"
    "libcurand.so   libcurand.so.10"
    "libcublas.so   libcublas.so.13"
    "libcublasLt.so libcublasLt.so.13"
)
readonly CUDARC_VERSION="0.19.10"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
toolkit="${IANVS_CUDA_TOOLKIT:-$HOME/.cache/ianvs/cuda-13.0}"
fetch_only=0
if [[ "${1:-}" == "--fetch-only" ]]; then
    fetch_only=1
    shift
fi

log() { echo "build-cuda: $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ "$(uname -s)-$(uname -m)" == "Linux-x86_64" ]] \
    || die "the pinned wheels are for Linux x86_64, this is $(uname -s) $(uname -m)"
for tool in python3 sha256sum cc cargo; do
    command -v "$tool" >/dev/null 2>&1 || die "'$tool' is required but not installed"
done

stamp_want="$(printf '%s\n' "${PINS[@]}" "cudarc $CUDARC_VERSION" | sha256sum | cut -d' ' -f1)"
stamp="$toolkit/.ianvs-toolkit-stamp"

work=""
trap 'if [[ -n "$work" ]]; then rm -rf "$work"; fi' EXIT

fetch_toolkit() {
    local req pkg sha
    work="$(mktemp -d)"
    req="$work/requirements.txt"
    for pin in "${PINS[@]}"; do
        read -r pkg sha <<<"$pin"
        echo "$pkg --hash=sha256:$sha" >>"$req"
    done
    log "downloading ${#PINS[@]} CUDA 13.0 wheels from PyPI (sha256-pinned)"
    python3 -m pip download --quiet --no-deps --disable-pip-version-check --only-binary=:all: \
        --require-hashes -r "$req" \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 \
        --python-version 3.11 --implementation cp --abi cp311 -d "$work/wheels"

    # pip checked the hashes; check again, so that a pip without --require-hashes support
    # cannot slip an unverified wheel through.
    shopt -s nullglob
    local wheels=("$work"/wheels/*.whl)
    shopt -u nullglob
    [[ ${#wheels[@]} -eq ${#PINS[@]} ]] || die "expected ${#PINS[@]} wheels, got ${#wheels[@]}"
    for pin in "${PINS[@]}"; do
        read -r pkg sha <<<"$pin"
        grep -qx "$sha" < <(sha256sum "${wheels[@]}" | cut -d' ' -f1) \
            || die "no downloaded wheel matches the sha256 pinned for $pkg"
    done

    log "assembling the toolkit in $toolkit"
    rm -rf "$toolkit.part"
    mkdir -p "$toolkit.part"
    # Wheels are zip files; extract nvidia/cu13/* to the toolkit root, keeping exec bits,
    # skipping what the build never uses (static libs, cmake files, the .alt nvrtc, nvblas).
    python3 - "$toolkit.part" "${wheels[@]}" <<'PY'
import os
import shutil
import sys
import zipfile

dest, wheels = sys.argv[1], sys.argv[2:]
prefix = "nvidia/cu13/"
skip = ("lib/cmake/", "lib/libcudart_static.a", "lib/libnvblas", ".alt.so", ".metadata/")
for wheel in wheels:
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            name = info.filename
            if not name.startswith(prefix) or name.endswith("/"):
                continue
            rel = name[len(prefix):]
            if any(s in rel for s in skip):
                continue
            out = os.path.join(dest, rel)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with zf.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
            mode = (info.external_attr >> 16) & 0o777
            os.chmod(out, mode if mode else 0o644)
PY
    find "$toolkit.part/bin" "$toolkit.part/nvvm/bin" -maxdepth 1 -type f ! -name "*.profile" -exec chmod +x {} +
    ln -s lib "$toolkit.part/lib64"
    local name target
    for pair in "${LINK_NAMES[@]}"; do
        read -r name target <<<"$pair"
        [[ -f "$toolkit.part/lib/$target" ]] || die "wheel layout changed: lib/$target missing"
        ln -sf "$target" "$toolkit.part/lib/$name"
    done

    # Link-time stub of the driver library: every driver entry point cudarc declares, each
    # returning CUDA_ERROR_NO_DEVICE (100). Never on a run-time search path (the driver's
    # libcuda.so.1 is used there). To smoke-test the binary on a machine without a GPU,
    # symlink it as libcuda.so.1 in a scratch folder and put that folder and lib/ on
    # LD_LIBRARY_PATH: `device: cuda` then falls back to the CPU with a message.
    local cudarc_src
    cudarc_src="$(cd "$repo_root" && cargo metadata --format-version 1 --locked --features cuda 2>/dev/null \
        | python3 -c '
import json, os, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "cudarc" and p["version"] == sys.argv[1]:
        print(os.path.dirname(p["manifest_path"]))
' "$CUDARC_VERSION")"
    [[ -n "$cudarc_src" && -f "$cudarc_src/src/driver/sys/mod.rs" ]] \
        || die "cudarc $CUDARC_VERSION sources not found (run 'cargo fetch --locked' first)"
    mkdir -p "$toolkit.part/lib/stubs"
    grep -oE '^[[:space:]]+fn cu[A-Za-z0-9_]+\(' "$cudarc_src/src/driver/sys/mod.rs" \
        | sed -E 's/^[[:space:]]+fn (cu[A-Za-z0-9_]+)\(/\1/' | sort -u \
        | sed 's/.*/int &(void) { return 100; }/' >"$work/libcuda_stub.c"
    [[ $(wc -l <"$work/libcuda_stub.c") -gt 100 ]] || die "too few driver symbols found in cudarc"
    cc -shared -fPIC -O0 -Wl,-soname,libcuda.so.1 -o "$toolkit.part/lib/stubs/libcuda.so" \
        "$work/libcuda_stub.c"

    "$toolkit.part/bin/nvcc" --version | grep -q 'release 13.0,' || die "nvcc is not CUDA 13.0"
    echo "$stamp_want" >"$toolkit.part/.ianvs-toolkit-stamp"
    rm -rf "$toolkit"
    mv "$toolkit.part" "$toolkit"
    log "toolkit ready: $("$toolkit/bin/nvcc" --version | grep release)"
}

if [[ -f "$stamp" && "$(cat "$stamp")" == "$stamp_want" && -x "$toolkit/bin/nvcc" ]]; then
    log "toolkit in $toolkit already present (pins match)"
else
    fetch_toolkit
fi

export CUDA_ROOT="$toolkit" CUDA_HOME="$toolkit" CUDA_PATH="$toolkit"
export NVCC="$toolkit/bin/nvcc"
export PATH="$toolkit/bin:$PATH"
export CUDARC_CUDA_VERSION=13000
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo_root/target/cuda}"

if [[ $fetch_only -eq 1 ]]; then
    cat <<EOF
export CUDA_ROOT=$CUDA_ROOT CUDA_HOME=$CUDA_HOME CUDA_PATH=$CUDA_PATH
export NVCC=$NVCC PATH=$toolkit/bin:\$PATH
export CUDARC_CUDA_VERSION=$CUDARC_CUDA_VERSION CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP
EOF
    exit 0
fi

log "cargo build --release --locked --features cuda (CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP, target dir $CARGO_TARGET_DIR)"
cd "$repo_root"
cargo build --release --locked --features cuda "$@"
bin="$CARGO_TARGET_DIR/release/ianvs"
log "built $bin ($(du -h "$bin" | cut -f1)); dynamic dependencies:"
readelf -d "$bin" | grep NEEDED >&2 || true
