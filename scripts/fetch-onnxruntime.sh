#!/usr/bin/env bash
# Fetch the ONNX Runtime shared library (1.31.1, CPU) from the PyPI wheel `onnxruntime==1.31.1`.
#
# ianvs runs ONNX models through the `ort` crate with `load-dynamic`: the library is loaded at
# run time, never linked, and the `ort` default of downloading binaries from a non-registry
# host is off. PyPI is reachable, and the onnxruntime wheel ships the library as
# `onnxruntime/capi/libonnxruntime.so.1.31.1`. The wheel is checked against a pinned sha256
# before anything is extracted; the library lands in `datasets/models/onnxruntime/`
# (git-ignored; never commit it), where ianvs finds it without `ORT_DYLIB_PATH`.
#
# The wheel is picked by platform tags, not by the local Python, so every machine gets the
# same pinned file: manylinux_2_28 x86_64 (glibc >= 2.28). On another architecture, install
# the `onnxruntime` wheel yourself and point `ORT_DYLIB_PATH` at its libonnxruntime.so.*.
#
# Idempotent: when the library is already there and matches LIB_SHA256, nothing is downloaded.
#
# Usage: scripts/fetch-onnxruntime.sh [DEST_DIR]
#   DEST_DIR defaults to datasets/models/onnxruntime (relative to the repo root).
set -euo pipefail

readonly PACKAGE="onnxruntime==1.31.1"
readonly WHEEL_SHA256="5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f"
readonly MEMBER="onnxruntime/capi/libonnxruntime.so.1.31.1"
readonly LIB_SHA256="fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest_dir="${1:-$repo_root/datasets/models/onnxruntime}"
dest="$dest_dir/libonnxruntime.so.1.31.1"

# shellcheck source=lib/fetch-wheel-member.sh
source "$repo_root/scripts/lib/fetch-wheel-member.sh"
if [[ -f "$dest" && "$(sha256_of "$dest")" == "$LIB_SHA256" ]]; then
    echo "fetch-onnxruntime: $dest already present and verified"
    exit 0
fi

if [[ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]]; then
    echo "fetch-onnxruntime: error: the pinned wheel is for Linux x86_64, this is $(uname -s) $(uname -m);" >&2
    echo "  install the onnxruntime wheel for your platform and set ORT_DYLIB_PATH to its libonnxruntime shared library" >&2
    exit 1
fi

fetch_wheel_member fetch-onnxruntime "$PACKAGE" "$WHEEL_SHA256" "$MEMBER" "$LIB_SHA256" "$dest" \
    --only-binary=:all: --platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp --abi cp311
