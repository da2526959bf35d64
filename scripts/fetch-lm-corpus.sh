#!/usr/bin/env bash
# Re-create (or verify) the English corpus the project's draft/verifier LMs are trained on:
# the fortune files of Debian's `fortunes` package (BSD licence), committed under
# datasets/lm/corpus/fortunes/.
#
# The corpus is committed, so training never needs this script; it documents exactly where the
# files come from and lets anyone check them. Without arguments it verifies the committed files
# against datasets/lm/corpus/SHA256SUMS (no network). With `--fetch` it downloads the pinned
# Debian package with apt, checks the .deb's sha256, extracts it and copies the fortune files
# over the committed ones (then verifies them).
#
# Kept: every fortune file of `fortunes` 1:1.99.1-7.3 (`/usr/share/games/fortunes/*`) except
# `ascii-art` (drawings, not prose) and `translate-me` (mostly Latin/French one-liners). The
# `.dat` index files and `.u8` links are skipped. The files are copied byte for byte; cleaning
# (backspace overstrikes, control characters, trailing spaces, duplicates) happens in
# `ianvs train-lm`'s corpus loader, so the committed text is exactly upstream's.
#
# Usage: scripts/fetch-lm-corpus.sh [--fetch]
set -euo pipefail

readonly PACKAGE="fortunes"
readonly VERSION="1:1.99.1-7.3"
readonly DEB_SHA256="41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5"
readonly EXCLUDE=("ascii-art" "translate-me")

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
corpus="$repo_root/datasets/lm/corpus"
dest="$corpus/fortunes"

verify() {
    (cd "$corpus" && sha256sum --quiet -c SHA256SUMS)
    echo "fetch-lm-corpus: $(wc -l <"$corpus/SHA256SUMS") files in $dest verified"
}

if [[ "${1:-}" != "--fetch" ]]; then
    verify
    exit 0
fi

for tool in apt-get dpkg-deb sha256sum; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "fetch-lm-corpus: error: '$tool' is required (a Debian/Ubuntu machine)" >&2
        exit 1
    fi
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download "$PACKAGE=$VERSION" >/dev/null)
deb="$(ls "$work"/*.deb)"
got="$(sha256sum "$deb" | cut -d' ' -f1)"
if [[ "$got" != "$DEB_SHA256" ]]; then
    echo "fetch-lm-corpus: error: $deb has sha256 $got, expected $DEB_SHA256" >&2
    exit 1
fi
dpkg-deb -x "$deb" "$work/x"
mkdir -p "$dest"
src="$work/x/usr/share/games/fortunes"
for f in "$src"/*; do
    name="$(basename "$f")"
    [[ -L "$f" || "$name" == *.dat ]] && continue
    for skip in "${EXCLUDE[@]}"; do
        [[ "$name" == "$skip" ]] && continue 2
    done
    cp "$f" "$dest/$name"
done
verify
