#!/usr/bin/env bash
# Packs what bench/gpu_check.py needs on a lent GPU machine that has no network into
# .gpupack/ (ignored through .git/info/exclude): onnxruntime-gpu (CUDA 13), the wheels the
# machine lacks (pydantic and its kin, orjson, aws-lambda-powertools and jmespath), and the
# embed model's fp32 artifacts. One tar, compressed with zstd, cut into parts that each fit
# one call's 64 MiB (with the working tree): .gpupack/pN/part-NN, one folder per call.
# The last folder also holds SHA256SUMS and the zstandard wheel (to decompress where the
# machine has no zstd); bench/gpu_device/run.sh puts it all together there.
#
#   bash bench/gpu_device/pack.sh        # rebuilds .gpupack/ from scratch; same inputs, same bytes
#
# ORT_WHEEL names the onnxruntime-gpu wheel (default: /tmp/ortgpu/...); ZSTD_LEVEL (10) and
# FOLDER_MIB (58: the most one folder may hold) may be changed. The parts are as few as
# fit, and of one size, so that the last folder, with the extras, is no bigger than the rest.
set -euo pipefail

die() { echo "pack.sh: $*" >&2; exit 1; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
PACK=.gpupack
PYTHON=${PYTHON:-.venv/bin/python}
ORT_WHEEL=${ORT_WHEEL:-/tmp/ortgpu/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl}
ZSTD_LEVEL=${ZSTD_LEVEL:-10}
FOLDER_MIB=${FOLDER_MIB:-58}
CALL_MIB=64 # what one call carries: the working tree and the carried folder together
MODEL_DIR=build/models/embed/1
# Small wheels the GPU machine lacks, at the versions .venv holds (what the tests run).
PACKAGES=(pydantic pydantic-core annotated-types typing-inspection typing-extensions orjson
  aws-lambda-powertools jmespath)
DECOMPRESSOR=zstandard==0.25.0

for tool in zstd split sha256sum tar; do
  command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install $tool)"
done
[[ -x $PYTHON ]] || die "$PYTHON not found: run make install first (or set PYTHON)"
[[ -f $ORT_WHEEL ]] || die "onnxruntime-gpu wheel not found at $ORT_WHEEL (set ORT_WHEEL)"
for file in model.onnx tokenizer.json; do
  [[ -f $MODEL_DIR/$file ]] || die "$MODEL_DIR/$file not found: run make models first"
done

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF "/$PACK/" "$exclude" 2>/dev/null || echo "/$PACK/" >>"$exclude"

rm -rf "$PACK/stage" "$PACK"/p[0-9]* "$PACK"/part-* "$PACK/gpupack.tar.zst"
mkdir -p "$PACK/stage/wheels" "$PACK/stage/unpacked" "$PACK/stage/models/embed/1" \
  "$PACK/cache"

# --- the small wheels: cp312, manylinux x86-64 (the GPU machine's Python 3.12) ---------
pins=()
for package in "${PACKAGES[@]}"; do
  version=$("$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" \
    "$package") || die "$package is not installed in $PYTHON"
  pins+=("$package==$version")
done
echo "wheels: ${pins[*]} $DECOMPRESSOR"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --abi cp312 --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any \
  -d "$PACK/cache" "${pins[@]}" "$DECOMPRESSOR" 2> >(grep -v "is ignored: it is neither" >&2)
for pin in "${pins[@]}"; do
  name=${pin%%==*}
  version=${pin##*==}
  pattern="${name//-/_}-${version}-*.whl"
  # shellcheck disable=SC2206  # the pattern is a glob on purpose
  matches=("$PACK"/cache/$pattern)
  [[ ${#matches[@]} -eq 1 && -f ${matches[0]} ]] || die "no single wheel $pattern in $PACK/cache"
  cp "${matches[0]}" "$PACK/stage/wheels/"
done

# --- onnxruntime-gpu, unpacked: its .so files compress by a fifth with zstd (the wheel's
# deflate does less); run.sh zips the same files back into the wheel and pip installs it.
wheel_name=$(basename "$ORT_WHEEL" .whl)
"$PYTHON" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" \
  "$ORT_WHEEL" "$PACK/stage/unpacked/$wheel_name"

# --- the model: embed v1 (fp32), checked against the manifest the build wrote ----------
cp "$MODEL_DIR/model.onnx" "$MODEL_DIR/tokenizer.json" "$PACK/stage/models/embed/1/"
cp build/models/manifest.json "$PACK/stage/models/"
"$PYTHON" - "$PACK/stage/models" <<'EOF'
import hashlib, json, sys
from pathlib import Path

models = Path(sys.argv[1])
files = json.loads((models / "manifest.json").read_text())["models"]["embed"]["1"]["files"]
for entry in files.values():
    digest = hashlib.sha256((models / entry["path"]).read_bytes()).hexdigest()
    if digest != entry["sha256"]:
        sys.exit(f"pack.sh: {entry['path']} differs from build/models/manifest.json: rebuild it")
EOF

# --- one tar (same inputs, same bytes), zstd, parts ---------------------------------------
started=$SECONDS
tar -C "$PACK/stage" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - . |
  zstd -q -T0 "-$ZSTD_LEVEL" -o "$PACK/gpupack.tar.zst"
echo "compressed $(du -sb "$PACK/stage" | cut -f1) bytes to $(stat -c %s "$PACK/gpupack.tar.zst") in $((SECONDS - started)) s (zstd -$ZSTD_LEVEL)"
whole=$(sha256sum "$PACK/gpupack.tar.zst" | cut -d' ' -f1)
compressed=$(stat -c %s "$PACK/gpupack.tar.zst")
extras=$(($(stat -c %s "$PACK"/cache/zstandard-*.whl) + 4096)) # + SHA256SUMS, PARTS
count=$(((compressed + extras + FOLDER_MIB * 1048576 - 1) / (FOLDER_MIB * 1048576)))
part_size=$(((compressed + extras + count - 1) / count))
part_size=$(((part_size + 65535) / 65536 * 65536))
split -b "$part_size" -d -a 2 --numeric-suffixes=1 "$PACK/gpupack.tar.zst" "$PACK/part-"
rm -rf "$PACK/stage" "$PACK/gpupack.tar.zst"

parts=("$PACK"/part-*)
((${#parts[@]} == count)) || die "split made ${#parts[@]} parts, not $count"
last=$PACK/p$count
for part in "${parts[@]}"; do
  number=$((10#${part##*-}))
  mkdir -p "$PACK/p$number"
  ln "$part" "$PACK/p$number/"
done
cp "$PACK"/cache/zstandard-*.whl "$last/"
(
  cd "$PACK"
  sha256sum part-*
  echo "$whole  gpupack.tar.zst"
) >"$last/SHA256SUMS"
echo "$count" >"$last/PARTS"

tree=$(git ls-files -co --exclude-standard -z | du --files0-from=- -cb 2>/dev/null | tail -1 | cut -f1)
for folder in "$PACK"/p*/; do
  bytes=$(du -sbL "$folder" | cut -f1)
  ((bytes + tree <= CALL_MIB * 1048576)) ||
    die "$folder ($bytes bytes) and the working tree ($tree) exceed $CALL_MIB MiB: lower FOLDER_MIB"
done
echo
echo "$count parts of $part_size bytes at most in $PACK (sha256 of the whole: $whole);"
echo "the working tree that travels with each: $tree bytes"
for number in $(seq 1 "$count"); do
  printf '  %-14s %s bytes: %s\n' "$PACK/p$number" "$(du -sbL "$PACK/p$number" | cut -f1)" \
    "$(cd "$PACK/p$number" && echo *)"
done
echo
echo "On the GPU machine, one call per folder, in order (each carries only its folder):"
for number in $(seq 1 "$((count - 1))"); do
  echo "  carry [\"$PACK/p$number\"]: bash bench/gpu_device/run.sh stage"
done
echo "  carry [\"$PACK/p$count\"]: bash bench/gpu_device/run.sh"
