#!/usr/bin/env bash
# Wheels for benchmarks/gpu_check.sh on a GPU machine that cannot reach PyPI, made where pip can.
#
#   benchmarks/gpu_wheels.sh [DIR] [PYTHON_VERSION] [PART_MIB]      (defaults: .whl 3.12 56)
#
# DIR gets the project's runtime dependencies and onnxruntime-gpu for that Python on x86-64
# Linux, all of them (not only what that machine lacks), without two things the GPU machine is
# expected to have already, beside a python3 with torch and torchvision (for the export):
#   - NVIDIA's CUDA and cuDNN pip libraries (over 1 GB; model.py loads them from any nvidia/ pip
#     folder on the path, e.g. that torch's, when they are CUDA 13 and cuDNN 9);
#   - the CPU onnxruntime (onnxruntime-gpu is the same version and runs on the CPU too);
# and of tritonclient only its gRPC and HTTP clients (the orchestrator uses no other part).
# Files over PART_MIB MiB are split into NAME.part-00, NAME.part-01, ... (gpu_check.sh joins them),
# and everything is sorted into DIR/1, DIR/2, ... of at most PART_MIB MiB each, so that a
# transfer limited in size per call can carry one folder at a time. Then, on the GPU machine:
#   GPU_CHECK_PYTHON=python3 GPU_CHECK_WHEELS=DIR benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.whl}
PYV=${2:-3.12}
PART_MIB=${3:-56}
PY=${PYTHON:-python3}

# the runtime pins of pyproject.toml (dependencies and the gpu extra), less onnxruntime and the CUDA libraries
mapfile -t REQS < <("$PY" - <<'EOF'
import re, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for line in project["dependencies"] + project["optional-dependencies"]["gpu"]:
    name = re.split(r"[\[<>=!~ ;]", line, maxsplit=1)[0].lower()
    if name == "tritonclient":  # its gRPC and HTTP clients: the cuda and perf_analyzer extras go unused
        line = re.sub(r"\[[^\]]*\]", "[grpc,http]", line)
    if name != "onnxruntime" and not name.startswith("nvidia-cu"):
        print(line)
print("setuptools>=77")  # the editable install's build backend, where a venv is made from these wheels
EOF
)
PLATFORMS=()
for n in 35 34 31 28 27 24 17 5; do PLATFORMS+=(--platform "manylinux_2_${n}_x86_64"); done
PLATFORMS+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
mkdir -p "$DIR/all"
"$PY" -m pip download -q --only-binary=:all: --python-version "$PYV" --implementation cp "${PLATFORMS[@]}" \
    -d "$DIR/all" "${REQS[@]}"
# the CUDA libraries that packages pull in (cuda-toolkit, cuDNN, cuBLAS, ...): the GPU machine has its own
find "$DIR/all" \( -name 'nvidia_cu*' -o -name 'nvidia_cublas*' -o -name 'nvidia_cudnn*' -o -name 'nvidia_nvjitlink*' \
    -o -name 'nvidia_curand*' -o -name 'nvidia_cufft*' -o -name 'cuda_toolkit*' -o -name 'onnxruntime-*' \) -delete

LIMIT=$((PART_MIB * 1024 * 1024))
for f in "$DIR"/all/*.whl; do
    if [ "$(stat -c %s "$f")" -gt "$LIMIT" ]; then
        split -b "$LIMIT" -d -a 2 "$f" "$f.part-" && rm "$f"
    fi
done
n=1
mkdir -p "$DIR/1"
for f in $(ls -S "$DIR"/all/*); do  # largest first, each into the first folder with room
    size=$(stat -c %s "$f")
    placed=""
    for d in $(seq 1 "$n"); do
        room=$((LIMIT - $(du -sb "$DIR/$d" | cut -f1)))
        if [ "$size" -le "$room" ]; then mkdir -p "$DIR/$d" && mv "$f" "$DIR/$d/" && placed=1 && break; fi
    done
    if [ -z "$placed" ]; then n=$((n + 1)); mkdir -p "$DIR/$n" && mv "$f" "$DIR/$n/"; fi
done
rmdir "$DIR/all"
for d in $(seq 1 "$n"); do echo "$DIR/$d: $(du -sh "$DIR/$d" | cut -f1) ($(ls "$DIR/$d" | wc -l) files)"; done
echo "$(du -sh "$DIR" | cut -f1) in $n folder(s) of at most $PART_MIB MiB"
