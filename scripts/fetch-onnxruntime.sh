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

sha256_of() {
    sha256sum "$1" | cut -d' ' -f1
}

if [[ -f "$dest" ]]; then
    if [[ "$(sha256_of "$dest")" == "$LIB_SHA256" ]]; then
        echo "fetch-onnxruntime: $dest already present and verified"
        exit 0
    fi
    echo "fetch-onnxruntime: $dest has an unexpected sha256, fetching again" >&2
fi

if [[ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]]; then
    echo "fetch-onnxruntime: error: the pinned wheel is for Linux x86_64, this is $(uname -s) $(uname -m);" >&2
    echo "  install the onnxruntime wheel for your platform and set ORT_DYLIB_PATH to its libonnxruntime shared library" >&2
    exit 1
fi

for tool in python3 sha256sum; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "fetch-onnxruntime: error: '$tool' is required but not installed" >&2
        exit 1
    fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "fetch-onnxruntime: downloading $PACKAGE (manylinux_2_28_x86_64) from PyPI"
python3 -m pip download --quiet --no-deps --disable-pip-version-check --only-binary=:all: \
    --platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp --abi cp311 \
    -d "$work" "$PACKAGE"

shopt -s nullglob
wheels=("$work"/*.whl)
if [[ ${#wheels[@]} -ne 1 ]]; then
    echo "fetch-onnxruntime: error: expected exactly one wheel in $work, found ${#wheels[@]}" >&2
    exit 1
fi
wheel="${wheels[0]}"

actual="$(sha256_of "$wheel")"
if [[ "$actual" != "$WHEEL_SHA256" ]]; then
    echo "fetch-onnxruntime: error: sha256 mismatch for $(basename "$wheel")" >&2
    echo "  expected $WHEEL_SHA256" >&2
    echo "  actual   $actual" >&2
    exit 1
fi

# A wheel is a zip file; Python's zipfile avoids depending on `unzip` being installed.
mkdir -p "$dest_dir"
python3 - "$wheel" "$MEMBER" "$dest.part" <<'PY'
import shutil
import sys
import zipfile

wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, length=1 << 20)
PY
actual="$(sha256_of "$dest.part")"
if [[ "$actual" != "$LIB_SHA256" ]]; then
    rm -f "$dest.part"
    echo "fetch-onnxruntime: error: sha256 mismatch for the extracted $MEMBER" >&2
    echo "  expected $LIB_SHA256" >&2
    echo "  actual   $actual" >&2
    exit 1
fi
mv "$dest.part" "$dest"
echo "fetch-onnxruntime: wrote $dest ($(du -h "$dest" | cut -f1))"
