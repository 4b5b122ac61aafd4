#!/usr/bin/env bash
# Pack the wheels that scripts/gpu.sh installs, for a GPU host without internet (Python 3.12, x86_64, CUDA 13).
#
# usage: [REQUIREMENTS=file] scripts/gpu_wheelhouse.sh OUTDIR [PART_MIB]
#
# Run it where pip reaches PyPI. It downloads every wheel of scripts/gpu-requirements.txt (+ nvidia-pytriton and
# the http client's compiled dependencies, which such a host lacks; or, with REQUIREMENTS set, of that file alone,
# e.g. scripts/peer-infinity-requirements.txt for the peers step) for CPython 3.12, re-stores each wheel
# uncompressed (same files, same RECORD: only the zip container changes) so that xz can compress the CUDA
# libraries inside, and writes OUTDIR/part1 ... OUTDIR/partN (each <= PART_MIB MiB, default 60), one xz stream
# split in order. Copy every part to one folder on the GPU host, then:
#     WHEEL_PARTS=that/folder scripts/gpu.sh    (the peer's: PEER_WHEEL_PARTS=that/folder)
# Keep OUTDIR out of git (.git/info/exclude): the parts are large, generated files.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,13p' "$0"; exit 2; }
out=$1
part_mib=${2:-60}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/dl" "$work/house"
plats=(--platform any --platform manylinux1_x86_64 --platform manylinux2014_x86_64)
for v in $(seq 5 39); do plats+=(--platform "manylinux_2_${v}_x86_64"); done
# --no-deps: the GPU host already has torch, transformers & co.; what it lacks is named in the requirements file
# (its "offline" lines) so the download is exactly the wheelhouse, nothing resolved behind our back.
requirements=${REQUIREMENTS:-$here/gpu-requirements.txt}
[ -f "$requirements" ] || { echo "error: REQUIREMENTS=$requirements is not a file" >&2; exit 2; }
mapfile -t reqs < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$requirements" | grep -v '^$')
[ -n "${REQUIREMENTS:-}" ] || reqs+=("$(grep -o 'nvidia-pytriton==[0-9.]*' "$here/gpu.sh")")
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${plats[@]}" -d "$work/dl" "${reqs[@]}"
"$python" - "$work/dl" "$work/house" <<'PY'
import copy, pathlib, sys, zipfile
src, dst = map(pathlib.Path, sys.argv[1:])
for wheel in sorted(src.glob("*.whl")):
    with zipfile.ZipFile(wheel) as zin, zipfile.ZipFile(dst / wheel.name, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            stored = copy.copy(info)  # the reader still needs the original's compression
            stored.compress_type = zipfile.ZIP_STORED
            zout.writestr(stored, zin.read(info))
PY
tar -C "$work/house" -cf - . | xz -T0 "-${XZ_LEVEL:-1}" > "$work/wheels.tar.xz"  # -6 saves little on CUDA code, at 4x the time
split -b "${part_mib}m" -d -a 2 "$work/wheels.tar.xz" "$work/wheels.tar.xz."
rm -rf "$out"
n=0
for p in "$work"/wheels.tar.xz.[0-9][0-9]; do
  n=$((n + 1)); mkdir -p "$out/part$n"; mv "$p" "$out/part$n/"
done
ls "$work/dl" | sed 's/^/  /'
du -sh "$out"/part* | sed 's/^/  /'
echo "$n parts in $out: copy all part*/wheels.tar.xz.* into one folder on the GPU host, then WHEEL_PARTS=<folder> scripts/gpu.sh (REQUIREMENTS=peer file: PEER_WHEEL_PARTS=<folder>)"
