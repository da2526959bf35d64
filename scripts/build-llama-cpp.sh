#!/usr/bin/env bash
# Build llama.cpp's `llama-bench` for the CPU from the sources vendored in the llama-cpp-python
# sdist on PyPI (pinned by version and sha256), for the side-by-side decode bench only:
#
#   bash scripts/build-llama-cpp.sh            # -> target/llama.cpp/bin/llama-bench
#   IANVS_LLAMA_BENCH=target/llama.cpp/bin/llama-bench cargo bench --bench llm_decode
#
# llama.cpp is never a dependency of ianvs and its sources are never committed: they are
# unpacked under target/ (git-ignored). Needs a C/C++ compiler and cmake (installed from PyPI
# when missing). Idempotent: an existing build is kept. Takes ~5 minutes on 2 cores.
set -euo pipefail

readonly VERSION="0.3.36"
readonly SDIST="llama_cpp_python-$VERSION.tar.gz"
readonly SDIST_SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
readonly CMAKE_PIN="cmake==4.1.0"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$repo_root/target/llama.cpp}"
bench="$out/bin/llama-bench"
if [[ -x "$bench" ]]; then
  echo "build-llama-cpp: $bench already built"
  exit 0
fi
for tool in python3 sha256sum c++ make; do
  command -v "$tool" >/dev/null 2>&1 || { echo "build-llama-cpp: error: '$tool' is required" >&2; exit 1; }
done
if ! command -v cmake >/dev/null 2>&1; then
  echo "build-llama-cpp: installing $CMAKE_PIN from PyPI"
  python3 -m pip install --quiet "$CMAKE_PIN"
  hash -r
fi

work="$out/src"
mkdir -p "$work"
tarball="$work/$SDIST"
if [[ ! -f "$tarball" || "$(sha256sum "$tarball" | cut -d' ' -f1)" != "$SDIST_SHA256" ]]; then
  echo "build-llama-cpp: downloading $SDIST from PyPI"
  url="$(python3 - "$VERSION" "$SDIST" <<'PY'
import json, sys, urllib.parse, urllib.request
version, name = sys.argv[1], sys.argv[2]
api = "https://pypi.org/pypi/llama-cpp-python/json"
with urllib.request.urlopen(api, timeout=60) as r:
    data = json.load(r)
for u in data.get("releases", {}).get(version, []):
    if u["filename"] == name:
        print(urllib.parse.urljoin(api, u["url"]))
        break
else:
    sys.exit(f"{name} is not listed for llama-cpp-python {version}")
PY
)"
  python3 - "$url" "$tarball.part" <<'PY'
import shutil, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=300) as r, open(sys.argv[2], "wb") as f:
    shutil.copyfileobj(r, f)
PY
  mv "$tarball.part" "$tarball"
fi
actual="$(sha256sum "$tarball" | cut -d' ' -f1)"
if [[ "$actual" != "$SDIST_SHA256" ]]; then
  echo "build-llama-cpp: error: sha256 mismatch for $SDIST (expected $SDIST_SHA256, got $actual)" >&2
  exit 1
fi

src="$work/llama_cpp_python-$VERSION/vendor/llama.cpp"
if [[ ! -d "$src" ]]; then
  tar -xzf "$tarball" -C "$work" "llama_cpp_python-$VERSION/vendor/llama.cpp"
fi
jobs="$(nproc 2>/dev/null || echo 2)"
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
  -DBUILD_SHARED_LIBS=OFF >"$work/cmake-configure.log" 2>&1
cmake --build "$work/build" --target llama-bench -j "$jobs" >"$work/cmake-build.log" 2>&1 || { echo "build-llama-cpp: error: the build failed; see $work/cmake-build.log" >&2; exit 1; }
mkdir -p "$out/bin"
cp "$work/build/bin/llama-bench" "$bench"
echo "build-llama-cpp: built $bench (llama.cpp from llama-cpp-python $VERSION)"
