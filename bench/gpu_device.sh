#!/usr/bin/env bash
# The GPU session's one command (docs/benchmarks.md, "SDXL on a GPU"): install the carried wheels, say
# what the machine is, check the CUDA fast path on the tiny pipelines, then run bench/gpu_sdxl.py in what
# is left of the deadline. Every step is bounded; logs and JSON go to $OUT as they are made, so a kill
# leaves what was done. The last thing printed is the benchmark's table.
#
# On the GPU machine, after bench/gpu_wheels.sh here:
#   run(command="bash bench/gpu_device.sh", carry=[".whl"], timeout_s=600)
#
# Settings (environment), for a smoke run elsewhere (tests/bench/test_gpu_sdxl.py runs one on a CPU):
#   LIKENESS_GPU_PYTHON       the interpreter (python3)
#   LIKENESS_GPU_WHEELS       the wheels to install (.whl; a missing folder installs nothing)
#   LIKENESS_GPU_SITE         where they are installed, put first on PYTHONPATH (/tmp/site)
#   LIKENESS_GPU_DEADLINE_S   seconds for the whole script (480)
#   LIKENESS_GPU_CHECK_S      at most this many seconds for the fast-path check (150)
#   LIKENESS_GPU_CHECK_ARGS   bench/gpu_fastpath_check.py's arguments (--device cuda)
#   LIKENESS_GPU_BENCH_ARGS   bench/gpu_sdxl.py's, less --budget-s and --out
#                             (--device cuda --size 1024 --steps 30 --repeats 2)
#   OUT                       where the logs and JSON go (a new temporary folder when unset)
set -uo pipefail # not -e: a step that fails is reported, and the next one still runs

started=$SECONDS
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root" || exit 2
py="${LIKENESS_GPU_PYTHON:-python3}"
wheels="${LIKENESS_GPU_WHEELS:-.whl}"
site="${LIKENESS_GPU_SITE:-/tmp/site}"
deadline="${LIKENESS_GPU_DEADLINE_S:-480}"
check_s="${LIKENESS_GPU_CHECK_S:-150}"
read -r -a check_args <<<"${LIKENESS_GPU_CHECK_ARGS:---device cuda}"
read -r -a bench_args <<<"${LIKENESS_GPU_BENCH_ARGS:---device cuda --size 1024 --steps 30 --repeats 2}"
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"

export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 TOKENIZERS_PARALLELISM=false
# Nothing outside the GPU machine can be reached: never let a library wait on the network.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1

say() { echo "[gpu_device $((SECONDS - started))s] $*"; }
left() { echo $((deadline - (SECONDS - started))); }
# bounded SECONDS COMMAND...: the command, stopped after SECONDS (killed 10 s later if it lingers).
bounded() {
    local seconds="$1"
    shift
    if command -v timeout >/dev/null 2>&1; then
        timeout --kill-after=10 "$seconds" "$@"
    else
        "$@"
    fi
}

# --- 1. the wheels ------------------------------------------------------------------------------------
if compgen -G "$wheels/*.whl" >/dev/null; then
    found=("$wheels"/*.whl)
    say "installing ${#found[@]} wheels from $wheels into $site"
    bounded 120 "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" "$wheels"/*.whl || {
        say "FAILED: the wheels did not install"
        exit 2
    }
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
else
    say "no wheels in $wheels: using $py's packages as they are"
fi

# --- 2. the machine, and every import the benchmark makes ---------------------------------------------
{
    say "machine"
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
    else
        echo "no nvidia-smi"
    fi
    echo "$(uname -srm); $(nproc) CPUs; $(free -g 2>/dev/null | awk '/^Mem:/ { print $2 " GiB memory" }')"
    bounded 120 "$py" - <<'PY'
import importlib
import platform
import sys

print(f"Python {platform.python_version()} at {sys.executable}")
import torch

where = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}): {where}")
missing = []
# What bench/gpu_sdxl.py and bench/gpu_fastpath_check.py import, at the top and inside their functions.
for name in (
    "diffusers",
    "transformers",
    "accelerate",
    "safetensors",
    "huggingface_hub",
    "tokenizers",
    "pydantic",
    "pydantic_core",
    "pydantic_settings",
    "typing_extensions",
    "numpy",
    "PIL",
    "msgpack",
    "filelock",
    "jobs.acceleration",
    "jobs.pipelines",
    "jobs.tiny",
    "bench.gpu_sdxl",
    "bench.gpu_fastpath_check",
):
    try:
        module = importlib.import_module(name)
    except Exception as exc:
        missing.append(name)
        print(f"MISSING {name}: {type(exc).__name__}: {exc}")
        continue
    version = getattr(module, "__version__", None) or getattr(module, "VERSION", None)
    if version is not None:
        print(f"{name} {version} ({getattr(module, '__file__', '?')})")
try:
    from diffusers import AutoencoderKL, DiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer
except Exception as exc:
    missing.append("the pipeline classes")
    print(f"MISSING the pipeline classes: {type(exc).__name__}: {exc}")
if missing:
    sys.exit(f"cannot run: {', '.join(missing)} would not import")
print("imports: all there")
PY
} 2>&1 | tee "$OUT/env.txt"
if [ "${PIPESTATUS[0]}" != 0 ]; then
    say "FAILED: the environment is not complete (see above; nothing was benchmarked)"
    exit 2
fi

# --- 3. the fast path keeps the images --------------------------------------------------------------------
# Its progress goes to the console and the log; its table is printed at the end, from its JSON.
remaining="$(left)"
[ "$remaining" -lt "$check_s" ] && check_s="$remaining"
check_rc=skipped
if [ "$check_s" -ge 10 ]; then
    say "fast-path check, at most ${check_s}s: ${check_args[*]}"
    bounded "$check_s" "$py" bench/gpu_fastpath_check.py "${check_args[@]}" --out "$OUT/fastpath.json" \
        2>&1 >/dev/null | tee "$OUT/fastpath.log"
    check_rc="${PIPESTATUS[0]}"
else
    say "fast-path check: skipped, only ${remaining}s left"
fi
say "fast-path check: exit status $check_rc"

# --- 4. the benchmark, in what is left ----------------------------------------------------------------
# bench/gpu_sdxl.py's budget starts after its imports, and its table is printed after it: room for both.
remaining="$(left)"
bench_rc=skipped
if [ "$remaining" -ge 90 ]; then
    say "bench/gpu_sdxl.py, budget $((remaining - 40))s: ${bench_args[*]}"
    bounded "$((remaining - 15))" "$py" bench/gpu_sdxl.py "${bench_args[@]}" --budget-s "$((remaining - 40))" \
        --out "$OUT/gpu.json" 2>&1 >"$OUT/gpu_table.md" | tee "$OUT/gpu_sdxl.log"
    bench_rc="${PIPESTATUS[0]}"
else
    say "bench/gpu_sdxl.py: skipped, only ${remaining}s left"
fi
say "bench/gpu_sdxl.py: exit status $bench_rc"

# --- 5. the tables, the benchmark's last --------------------------------------------------------------
echo
if [ -s "$OUT/fastpath.json" ]; then
    "$py" bench/gpu_fastpath_check.py --table-from "$OUT/fastpath.json" 2>/dev/null
else
    echo "fast-path check: no results (see $OUT/fastpath.log)"
fi
echo
if [ ! -s "$OUT/gpu_table.md" ] && [ -s "$OUT/gpu.json" ]; then # stopped early: its partial table
    "$py" bench/gpu_sdxl.py --table-from "$OUT/gpu.json" >"$OUT/gpu_table.md" 2>/dev/null
fi
say "done: fast-path check $check_rc, benchmark $bench_rc; logs and JSON in $OUT: $(find "$OUT" -maxdepth 1 -type f -printf '%f ')"
echo
if [ -s "$OUT/gpu_table.md" ]; then
    cat "$OUT/gpu_table.md"
else
    echo "bench/gpu_sdxl.py: no results (see $OUT/gpu_sdxl.log)"
fi
[ "$check_rc" = 0 ] && [ "$bench_rc" = 0 ]
