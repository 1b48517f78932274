#!/usr/bin/env bash
# The GPU check in one command (docs/runtime.md, "GPUs"): on a machine with an NVIDIA GPU, make
# sure a Python environment has the gpu extra, then run benchmarks/gpu_check.py with it.
#
#   benchmarks/gpu_check.sh [gpu_check.py options, e.g. --out runs/gpu-check]
#
# Which Python:
#   GPU_CHECK_PYTHON=PY   a Python to run with (e.g. a system python3 that has torch); what it
#                         lacks is installed into GPU_CHECK_SITE (default .gpu-site) and put first
#                         on PYTHONPATH
#   (unset)               .venv/bin/python; .venv is made (python3 -m venv) when missing, and the
#                         gpu extra (and the export extra, when torch is missing) installed into it
# Where from:
#   GPU_CHECK_WHEELS=DIR  a folder of wheels (benchmarks/gpu_wheels.sh makes one; split parts are
#                         joined first), installed without an index
#   (unset)               pip's index (PyPI), when it answers within seconds
# Exit status: gpu_check.py's (0 passed, 1 a check failed or the goal was missed); 3, with one
# line on stderr and nothing installed, when there is no GPU or nothing to install from.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 3
missing() { echo "gpu_check: $*" >&2; exit 3; }

# 1. an NVIDIA GPU, before anything is installed
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L 2>/dev/null | grep -q '^GPU ' || missing "no NVIDIA GPU: nvidia-smi lists none"
elif ! { [ -e /proc/driver/nvidia/version ] || ldconfig -p 2>/dev/null | grep -q 'libnvidia-ml\.so\.1'; }; then
    missing "no NVIDIA GPU: no NVIDIA driver here (no nvidia-smi, /proc/driver/nvidia or libnvidia-ml.so.1)"
fi

# 2. the Python, and what it lacks
ORT_VERSION=$(sed -n 's/^ *"onnxruntime==\([0-9.]*\)",.*/\1/p' pyproject.toml | head -n1)
[ -n "$ORT_VERSION" ] || missing "pyproject.toml pins no onnxruntime version"
TARGET=""
if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
    PY="$GPU_CHECK_PYTHON"
    command -v "$PY" >/dev/null 2>&1 || missing "GPU_CHECK_PYTHON=$PY is not a program"
    TARGET="${GPU_CHECK_SITE:-$PWD/.gpu-site}"
    export PYTHONPATH="$TARGET${PYTHONPATH:+:$PYTHONPATH}"
else
    PY=.venv/bin/python
    if [ ! -x "$PY" ]; then
        command -v python3 >/dev/null 2>&1 || missing "no python3 to make .venv with"
        python3 -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] < (3, 14))' \
            || missing "python3 is $(python3 -V 2>&1); the project needs Python 3.10 to 3.13"
    fi
fi
lacks() {  # what $PY cannot do yet: base (the project's pins), gpu (CUDA provider), export (torch)
    [ -x "$PY" ] || command -v "$PY" >/dev/null 2>&1 || { echo "base gpu export"; return; }
    "$PY" - <<'EOF' 2>/dev/null || echo "base gpu export"
import importlib.util as u
need = []
try:
    import numpy, onnxruntime
    base = int(numpy.__version__.split(".")[0]) < 2 and all(
        u.find_spec(m) for m in ("tritonclient.grpc", "ortools", "pytriton", "flask", "dns", "pynvml", "onnx"))
    gpu = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
except ImportError:
    base = gpu = False
need += [] if base else ["base"]
need += [] if gpu else ["gpu"]
need += [] if u.find_spec("torch") and u.find_spec("torchvision") else ["export"]
print(" ".join(need))
EOF
}
NEED=$(lacks)

# 3. install what is lacking, from the wheel folder or from the index
if [ -n "$NEED" ]; then
    SRC=()
    if [ -n "${GPU_CHECK_WHEELS:-}" ]; then
        [ -d "$GPU_CHECK_WHEELS" ] || missing "GPU_CHECK_WHEELS=$GPU_CHECK_WHEELS is not a folder"
        WHEELS=$(mktemp -d) || exit 3
        [ -n "$(find "$GPU_CHECK_WHEELS" -name '*.whl*' -print -quit)" ] \
            || missing "GPU_CHECK_WHEELS=$GPU_CHECK_WHEELS holds no wheels"
        find "$GPU_CHECK_WHEELS" -name '*.whl' -exec cp {} "$WHEELS/" \;
        for first in $(find "$GPU_CHECK_WHEELS" -name '*.whl.part-00'); do  # parts in part order, whatever folder
            name=$(basename "${first%.part-00}")
            cat $(find "$GPU_CHECK_WHEELS" -name "$name.part-*" -printf '%f\t%p\n' | sort | cut -f2) > "$WHEELS/$name"
        done
        SRC=(--no-index --find-links "$WHEELS")
    else
        PIPPY=$([ -x "$PY" ] && echo "$PY" || echo python3)
        timeout 60 "$PIPPY" -m pip index versions --retries 0 --timeout 5 "onnxruntime-gpu" >/dev/null 2>&1 \
            || missing "cannot install the gpu extra (lacking: $NEED): pip's index does not answer and" \
                       "GPU_CHECK_WHEELS is not set (a folder made with benchmarks/gpu_wheels.sh)"
    fi
    echo "gpu_check: installing (lacking: $NEED) ${GPU_CHECK_WHEELS:+from $GPU_CHECK_WHEELS}" >&2
    if [ -n "$TARGET" ]; then  # a foreign Python: everything it lacks goes into the target folder
        mkdir -p "$TARGET" || exit 3
        if [ -n "${GPU_CHECK_WHEELS:-}" ]; then
            "$PY" -m pip install -q --no-deps --upgrade --target "$TARGET" "$WHEELS"/*.whl || exit 3
        else
            "$PY" -m pip install -q --upgrade --target "$TARGET" ".[gpu]" || exit 3
            "$PY" -m pip install -q --no-deps --upgrade --force-reinstall --target "$TARGET" \
                "onnxruntime-gpu==$ORT_VERSION" || exit 3
        fi
    else
        [ -x "$PY" ] || python3 -m venv .venv || exit 3
        EXTRAS=gpu
        case " $NEED " in *" export "*) EXTRAS="export,gpu" ;; esac
        "$PY" -m pip install -q "${SRC[@]}" -e ".[$EXTRAS]" || exit 3
        # onnxruntime and onnxruntime-gpu share the onnxruntime/ folder: the GPU build's files must win
        "$PY" -m pip install -q "${SRC[@]}" --no-deps --force-reinstall "onnxruntime-gpu==$ORT_VERSION" || exit 3
    fi
    NEED=$(lacks)
    case " $NEED " in *" base "*|*" gpu "*) missing "after installing, $PY still lacks: $NEED";; esac
fi

# 4. the check
export PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu_check.py "$@"
