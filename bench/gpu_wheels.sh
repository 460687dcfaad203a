#!/usr/bin/env bash
# Download the wheels bench/gpu_device.sh installs on the GPU machine (the list: bench/gpu_wheels.txt)
# into ./.whl, for CPython 3.12 on x86-64, and print their total size. Idempotent: wheels already there
# are kept, and any other file there (another version, another Python) is removed, so the folder always
# holds one version of each package and nothing else. See docs/benchmarks.md, "SDXL on a GPU".
#
#   bench/gpu_wheels.sh                                   # ./.whl for the GPU machine
#   LIKENESS_WHEELS_DIR=/tmp/w LIKENESS_WHEELS_PYTHON=3.11 bench/gpu_wheels.sh   # the same set for 3.11
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
dest="${LIKENESS_WHEELS_DIR:-.whl}"
version="${LIKENESS_WHEELS_PYTHON:-3.12}"
target="cp${version/./} x86_64"
mapfile -t wanted < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' bench/gpu_wheels.txt | grep -v '^$')

# The folder travels to the GPU machine as an ignored path (run's carry), never as a tracked file.
if [ "$dest" = ".whl" ] && exclude="$(git rev-parse --git-path info/exclude 2>/dev/null)"; then
    mkdir -p "$(dirname "$exclude")"
    grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >>"$exclude"
fi

mkdir -p "$dest"
# Wheels made for another Python do not install beside these: start afresh when the target changes.
if [ "$(cat "$dest/.target" 2>/dev/null)" != "$target" ]; then
    rm -f "$dest"/*.whl
    echo "$target" >"$dest/.target"
fi

"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$version" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$dest" "${wanted[@]}"

# Keep exactly the listed NAME==VERSION pairs (wheel file names spell names with '_', in lower case).
keep=()
for pin in "${wanted[@]}"; do
    name="${pin%%==*}"
    name="$(echo "$name" | tr '[:upper:].-' '[:lower:]__')"
    keep+=("${name}-${pin##*==}-")
done
for file in "$dest"/*; do
    base="$(basename "$file")"
    lower="$(echo "$base" | tr '[:upper:]' '[:lower:]')"
    ok=0
    for prefix in "${keep[@]}"; do
        case "$lower" in "$prefix"*.whl) ok=1 ;; esac
    done
    if [ "$ok" = 0 ]; then
        echo "removing $base (not in bench/gpu_wheels.txt)"
        rm -rf "$file"
    fi
done

got=("$dest"/*.whl)
if [ "${#got[@]}" != "${#wanted[@]}" ]; then
    echo "expected ${#wanted[@]} wheels in $dest, found ${#got[@]}" >&2
    exit 1
fi
total=0
for file in "${got[@]}"; do
    size="$(stat -c %s "$file")"
    total=$((total + size))
    printf "%10d  %s\n" "$size" "$file"
done
echo "${#got[@]} wheels for $target in $dest: $((total / 1024)) KiB in all (a run may carry 64 MiB)"
