#!/usr/bin/env bash
# On a lent GPU machine (no network): puts together what bench/gpu_device/pack.sh packed,
# installs it beside the machine's own Python, and runs bench/gpu_check.py.
#
#   bash bench/gpu_device/run.sh stage   # calls 1..N-1, each carrying .gpupack/pK: keep part K
#   bash bench/gpu_device/run.sh         # call N, carrying .gpupack/pN: stage, check, unpack,
#                                        # install, run; the result lands in $OUT
#
# Files outside the repo copy (/tmp/gpupack, /tmp/site) survive between calls while the
# machine stays warm; the last call checks every part's sha256 before using any.
# GPU_CHECK_ARGS adds options to gpu_check.py (e.g. "--texts 2000"); with ALLOW_CPU=1 it
# runs as a dry run on a machine without CUDA (to test this script anywhere).
set -euo pipefail

die() {
  echo "run.sh: FAILED: $*" >&2
  exit 1
}
step() { echo "== $* ($(date +%T))"; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STAGE=${GPUPACK_DIR:-/tmp/gpupack}
SITE=${GPUPACK_SITE:-/tmp/site}
PYTHON=${PYTHON:-python3}
MODE=${1:-run}

[[ $MODE == stage || $MODE == run ]] || die "unknown mode '$MODE' (stage or run)"
[[ $MODE == stage || -n ${OUT:-} ]] || die "OUT (the folder for the results) is not set"

step "staging the carried parts into $STAGE"
mkdir -p "$STAGE"
shopt -s nullglob
carried=("$REPO"/.gpupack/p*/*)
((${#carried[@]})) || die "no .gpupack/pK folder in this call: carry one (\"carry\": [\".gpupack/pK\"])"
cp -f "${carried[@]}" "$STAGE/"
ls -l "$STAGE"
df -h "$STAGE" | tail -1
if [[ $MODE == stage ]]; then
  echo "zstd here: $(command -v zstd || echo 'none (the zstandard wheel of the last part will do)')"
  exit 0
fi

# --- check and unpack ------------------------------------------------------------------
cd "$STAGE"
[[ -f SHA256SUMS && -f PARTS ]] ||
  die "SHA256SUMS or PARTS missing in $STAGE: this call must carry the last folder (.gpupack/pN)"
count=$(cat PARTS)
for number in $(seq 1 "$count"); do
  part=$(printf 'part-%02d' "$number")
  [[ -f $part ]] || die "$part missing in $STAGE: run 'bash bench/gpu_device/run.sh stage' carrying .gpupack/p$number first (the machine may have been given back in between: then every part again)"
done
step "checking $count parts"
grep ' part-' SHA256SUMS | sha256sum --check --quiet - || die "a part is corrupt (sha256 above)"
expected=$(awk '$2 == "gpupack.tar.zst" {print $1}' SHA256SUMS)

if [[ -f x/.unpacked && $(cat x/.unpacked) == "$expected" ]]; then
  step "already unpacked in $STAGE/x"
else
  step "unpacking"
  rm -rf x zstd-site
  mkdir x
  if command -v zstd >/dev/null; then
    decompress=(zstd -dc)
  else
    wheels=(zstandard-*.whl)
    ((${#wheels[@]} == 1)) || die "no zstd and no zstandard wheel in $STAGE"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --target zstd-site "${wheels[0]}" || die "could not install ${wheels[0]}"
    decompress=(env PYTHONPATH="$STAGE/zstd-site" "$PYTHON" -c
      "import sys, zstandard; zstandard.ZstdDecompressor().copy_stream(sys.stdin.buffer, sys.stdout.buffer)")
  fi
  parts=()
  for number in $(seq 1 "$count"); do parts+=("$(printf 'part-%02d' "$number")"); done
  whole=$(cat "${parts[@]}" | sha256sum | cut -d' ' -f1)
  [[ $whole == "$expected" ]] || die "the parts put together differ from the packed file"
  cat "${parts[@]}" | "${decompress[@]}" | tar -x -C x ||
    die "could not decompress and untar the parts"
  echo "$expected" >x/.unpacked
fi

# --- install -----------------------------------------------------------------------------
step "installing the wheels into $SITE"
rezip() {
  # The very files of the onnxruntime-gpu wheel, zipped back into it (stored: read once).
  "$PYTHON" - "$1" "$2" <<'EOF'
import sys, zipfile
from pathlib import Path

root, wheel = Path(sys.argv[1]), sys.argv[2]
files = sorted(path for path in root.rglob("*") if path.is_file())
files.sort(key=lambda path: ".dist-info/" in path.relative_to(root).as_posix())  # last
with zipfile.ZipFile(wheel + ".tmp", "w", zipfile.ZIP_STORED, strict_timestamps=False) as archive:
    for path in files:
        archive.write(path, path.relative_to(root).as_posix())
Path(wheel + ".tmp").rename(wheel)
EOF
}
for unpacked in x/unpacked/*/; do
  name=$(basename "$unpacked")
  if [[ ! -f x/wheels/$name.whl ]]; then
    rezip "$unpacked" "x/wheels/$name.whl" || die "could not rebuild $name.whl"
  fi
done
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$SITE" x/wheels/*.whl || die "pip could not install the wheels into $SITE"
# onnxruntime.preload_dlls looks for CUDA's and cuDNN's libraries in nvidia/ beside the
# onnxruntime package: point it at this Python's own nvidia-* packages (torch's CUDA 13).
system_nvidia=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia
if [[ -d $system_nvidia && ! -e $SITE/nvidia ]]; then
  ln -s "$system_nvidia" "$SITE/nvidia"
fi

export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
export STRATOSERVE_MODELS_DIR=$STAGE/x/models
export PYTHONUNBUFFERED=1

# --- what this machine is ----------------------------------------------------------------
step "the machine"
nvidia-smi -L || echo "nvidia-smi: none here"
libraries=("$SITE"/nvidia/*/lib)
if ((${#libraries[@]})); then
  echo "CUDA libraries for onnxruntime.preload_dlls: ${libraries[*]}"
else
  echo "no nvidia-* packages beside $PYTHON: onnxruntime.preload_dlls will look elsewhere"
fi
"$PYTHON" - "$SITE" <<'EOF' || die "onnxruntime does not import from $SITE"
import sys

import onnxruntime

print(f"python {sys.version.split()[0]}; onnxruntime {onnxruntime.__version__} from {onnxruntime.__file__}")
print(f"available providers: {onnxruntime.get_available_providers()}")
if not onnxruntime.__file__.startswith(sys.argv[1]):
    sys.exit(f"onnxruntime comes from {onnxruntime.__file__}, not {sys.argv[1]}")
EOF

(cd "$REPO" && "$PYTHON" -c 'import gpu_jobs.engine, functions.worker.batch, bench.worker_throughput') ||
  die "the repo's code does not import with the carried wheels (a module missing above?)"

# Does a session really run on CUDA? ORT's warnings (log level 2) say why not.
probe() {
  "$PYTHON" - "$STRATOSERVE_MODELS_DIR/embed/1/model.onnx" "$@" <<'EOF'
import sys

if "--preload-torch" in sys.argv:
    import torch  # noqa: F401  (loads CUDA 13's libraries, as a fallback)
import onnxruntime

onnxruntime.preload_dlls()
options = onnxruntime.SessionOptions()
options.log_severity_level = 2
session = onnxruntime.InferenceSession(
    sys.argv[1], sess_options=options, providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
)
print(f"probe session providers: {session.get_providers()}")
sys.exit(0 if session.get_providers()[0] == "CUDAExecutionProvider" else 1)
EOF
}
args=(--out "$OUT")
step "probing CUDA"
if probe; then
  echo "CUDA through onnxruntime.preload_dlls"
elif probe --preload-torch; then
  echo "CUDA only with torch imported first: gpu_check.py --preload-torch"
  args+=(--preload-torch)
elif [[ ${ALLOW_CPU:-0} == 1 ]]; then
  echo "no CUDA: a dry run on the CPU provider (ALLOW_CPU=1)"
  args+=(--allow-cpu)
else
  die "the CUDA provider does not take a session (messages above); nothing measured"
fi

# --- the check ---------------------------------------------------------------------------
mkdir -p "$OUT"
step "python bench/gpu_check.py ${args[*]} ${GPU_CHECK_ARGS:-}"
cd "$REPO"
status=0
# shellcheck disable=SC2086  # GPU_CHECK_ARGS is a list of options
"$PYTHON" bench/gpu_check.py "${args[@]}" ${GPU_CHECK_ARGS:-} 2>&1 | tee "$OUT/gpu_check.log" ||
  status=$?
ls -l "$OUT"
((status == 0)) || die "gpu_check.py exited $status (3: no CUDA, 4: parity failed)"
step "done: $OUT/gpu_check.json"
