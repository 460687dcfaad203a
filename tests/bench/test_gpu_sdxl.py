"""bench/gpu_sdxl.py: its whole path on the CPU with the tiny SDXL, and the real SDXL configs' size; its
time budget and partial results; the fast-path check (bench/gpu_fastpath_check.py) on the CPU; and the GPU
session's one command (bench/gpu_device.sh) run end to end on the CPU, with no import that the GPU
machine's image and the carried wheels (bench/gpu_wheels.txt) would not have."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from bench import gpu_fastpath_check, gpu_sdxl
from bench.gpu_sdxl import SDXL, TINY, build_unet, count_flops, parameters

CONFIGS = [
    "baseline: SDPA, nothing else",
    "SDPA off (classic attention)",
    "channels_last",
    "fused QKV",
    "channels_last + fused QKV",
    "all on: + torch.compile (regional)",
]


def test_the_real_sdxl_configs_make_a_2_57_billion_parameter_unet() -> None:
    unet = build_unet(SDXL)  # on the meta device: no memory, no time
    assert next(unet.parameters()).device.type == "meta"
    assert parameters(unet) == pytest.approx(2.567e9, rel=1e-3)


def test_flops_are_counted_at_full_size_on_the_meta_device() -> None:
    small, large = count_flops(TINY, 64), count_flops(TINY, 128)
    assert set(small) == {"unet_forward", "text_encoders", "vae_decode"}
    assert all(value > 0 for value in small.values())
    # Convolutions and projections grow with the pixels (4×); the prompt's cost does not.
    assert large["vae_decode"] == pytest.approx(4 * small["vae_decode"], rel=0.05)
    assert large["unet_forward"] > 3.5 * small["unet_forward"]
    assert large["text_encoders"] == small["text_encoders"]


def test_the_cpu_path_prints_the_table_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gpu.json"
    argv = ["--tiny", "--device", "cpu", "--size", "64", "--steps", "2", "--repeats", "1", "--out", str(out)]
    assert gpu_sdxl.main(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text(encoding="utf-8"))
    assert (result["architecture"], result["device"], result["dtype"]) == ("tiny-sdxl", "cpu", "float32")
    assert (result["size"], result["steps"], result["repeats"]) == (64, 2, 1)
    assert set(result["parameters"]) == {"unet", "text_encoder", "text_encoder_2", "vae"}
    flops = result["flops"]
    assert flops["per_image"] == 2 * flops["unet_forward"] + flops["text_encoders"] + flops["vae_decode"]
    assert result["floor_s_per_image"] == pytest.approx(flops["per_image"] / result["matmul_flops_per_s"])

    assert [row["config"] for row in result["configs"] if "skipped" not in row] == [
        name for name in CONFIGS[:-1] for _ in (1, 4)
    ]
    (skipped,) = [row for row in result["configs"] if "skipped" in row]
    assert skipped["config"] == CONFIGS[-1] and "CUDA" in skipped["skipped"]
    for row in result["configs"]:
        if "skipped" in row:
            continue
        assert row["images"] in (1, 4)
        assert row["total_s"] == pytest.approx(row["text_s"] + row["unet_s"] + row["decode_s"])
        assert row["per_image_s"] == pytest.approx(row["total_s"] / row["images"])
        assert row["vs_floor"] > 0 and row["vs_baseline"] > 0
        assert row["peak_gb"] is None  # only CUDA reports memory
    fused = next(row for row in result["configs"] if row["config"] == "fused QKV")
    assert any(step.startswith("fused_qkv on") for step in fused["steps"])

    assert [row["measurement"] for row in result["vae"]] == [
        "decode 1 × 384² tiled vs untiled",
        "decode 4 × 64² sliced vs batched",
    ]
    assert set(result["load"]) == {"weights_gb", "save_s", "load_s", "park_s", "restore_s"}

    assert (
        "| configuration | images | text s | UNet s | decode s | s per image | vs baseline | vs floor |"
        in printed
    )
    assert "| baseline: SDPA, nothing else | 1 |" in printed
    assert "skipped: compiling is for CUDA" in printed
    assert "load from safetensors to the device" in printed


# --- the time budget and partial results ---------------------------------------------------------------


def test_a_budget_refuses_what_would_not_fit() -> None:
    assert gpu_sdxl.Budget(None).refuses(1e12, 1e12) is None  # no deadline
    assert gpu_sdxl.Budget(100.0).refuses(10.0, 20.0) is None
    refused = gpu_sdxl.Budget(0.0).refuses(0.0)
    assert refused is not None and refused.startswith("over the time budget")
    kept = gpu_sdxl.Budget(-1.0).refuses(30.0, 60.0)
    assert kept is not None and "needs ~30 s (+60 s kept for what matters more)" in kept


def _tiny_measure(**options: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A tiny CPU run; also every result it reported on the way, as the JSON file held it then."""
    seen: list[dict[str, Any]] = []
    result = gpu_sdxl.measure(
        device="cpu",
        size=64,
        steps=2,
        repeats=1,
        tiny=True,
        progress=lambda partial: seen.append(json.loads(json.dumps(partial))),
        **options,
    )
    return result, seen


def test_a_short_budget_keeps_time_for_what_matters_more(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No clock: every measurement is reckoned at 10 s, and 75 s are always left. SDPA off matters least:
    # it would need its 10 s and keep 70 s for the seven later measurements that matter more (six rows
    # and the VAE alone), 80 > 75, so it is skipped; every other measurement fits with what it keeps.
    monkeypatch.setattr(gpu_sdxl.Budget, "left", lambda _self: 75.0)
    monkeypatch.setattr(gpu_sdxl.Run, "estimate", lambda _self, _config, _images: 10.0)
    monkeypatch.setattr(gpu_sdxl, "vae_estimate", lambda _run: 10.0)
    result, seen = _tiny_measure(budget_s=75.0)

    rows = {(row["config"], row.get("images")): row for row in result["configs"]}
    for images in (1, 4):
        skipped = rows[("SDPA off (classic attention)", images)]
        assert "over the time budget: needs ~10 s (+70 s kept for what matters more)" in skipped["skipped"]
        for name in CONFIGS[:1] + CONFIGS[2:5]:
            assert "skipped" not in rows[(name, images)], name
    assert result["vae"] and result["load"] and result["skipped"] == {}
    assert result["complete"] is True

    # The JSON was written before and after every measurement, and every version of it makes a table.
    assert seen[0]["complete"] is False and seen[0]["stage"] == "counting FLOPs"
    assert seen[-1] == json.loads(json.dumps(result))
    counts = [len(partial["configs"]) for partial in seen]
    assert counts == sorted(counts) and counts[-1] == len(result["configs"])
    stopped = next(partial for partial in seen if partial["stage"] == "fused QKV, 1 image(s)")
    saved = tmp_path / "killed.json"
    saved.write_text(json.dumps(stopped), encoding="utf-8")
    assert gpu_sdxl.main(["--table-from", str(saved)]) == 0
    table = capsys.readouterr().out
    assert "INCOMPLETE: the run stopped while fused QKV, 1 image(s)" in table
    assert "| baseline: SDPA, nothing else | 4 |" in table
    assert "| fused QKV | 1 |" not in table
    assert "skipped: over the time budget" in table


def test_with_no_time_left_nothing_is_measured_and_every_row_says_why(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result, _seen = _tiny_measure(budget_s=0.0)
    assert result["complete"] is True
    configs = result["configs"]
    assert [(row["config"], row.get("images")) for row in configs] == [
        *((name, images) for name in CONFIGS[:-1] for images in (1, 4)),
        (CONFIGS[-1], None),
    ]
    assert all(row["skipped"].startswith("over the time budget") for row in configs[:-1])
    assert set(result["skipped"]) == {"load", "vae"}
    table = gpu_sdxl.table(result)
    assert "VAE alone: skipped: over the time budget" in table
    assert "Load, park and restore: skipped: over the time budget" in table


# --- the fast-path check -------------------------------------------------------------------------------

CASES = [
    "plain, again",
    "channels_last",
    "fused QKV",
    "compile",
    "worker fast path",
    "parked and restored",
    "identity adapter",
]


def test_the_fast_path_check_passes_on_the_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fastpath.json"
    argv = [
        "--device",
        "cpu",
        "--size",
        "64",
        "--steps",
        "2",
        "--out",
        str(out),
        "--models-dir",
        str(tmp_path),
    ]
    assert gpu_fastpath_check.main(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text(encoding="utf-8"))
    assert (result["device"], result["dtype"], result["compile_backend"]) == ("cpu", "float32", "eager")
    assert result["complete"] is True and result["passed"] is True and result["reference_finite"] is True
    assert result["dtype_noise"] == {"latents": 0.0, "image": 0.0}  # float32 is its own reference
    assert [row["case"] for row in result["cases"]] == CASES
    for row in result["cases"]:
        assert row["status"] == "ok" and row["finite"] is True, row
        assert row["image_max_abs_diff"] <= result["limit"]["image"]
        assert row["latents_max_abs_diff"] <= result["limit"]["latents"]
    assert result["cases"][0]["image_max_abs_diff"] == 0.0  # the same pipeline twice: bit for bit
    worker = next(row for row in result["cases"] if row["case"] == "worker fast path")
    assert any(step.startswith("fused_qkv on") for step in worker["steps"])
    assert any(step.startswith("compile on") for step in worker["steps"])
    assert any(step.startswith("warm_up on") for step in worker["steps"])
    assert "| compile | ok |" in printed
    identity = next(row for row in result["cases"] if row["case"] == "identity adapter")
    assert identity["recompiles"] == 0
    assert any(step.startswith("identity_adapter on") for step in identity["steps"])
    assert any("(2 faces)" in step for step in identity["steps"] if step.startswith("warm_up on"))

    assert gpu_fastpath_check.main(["--table-from", str(out)]) == 0
    assert capsys.readouterr().out.strip() == printed.strip()


def test_in_half_precision_the_limit_follows_the_dtype_s_own_rounding(tmp_path: Path) -> None:
    result = gpu_fastpath_check.check(
        device="cpu", dtype="bfloat16", size=64, steps=2, compile_backend="none", models_dir=tmp_path
    )
    assert result["dtype"] == "bfloat16" and result["compile_backend"] is None
    assert [row["case"] for row in result["cases"]] == [c for c in CASES if c != "compile"]
    noise, limit = result["dtype_noise"], result["limit"]
    assert noise["image"] > 0 and noise["latents"] > 0  # bfloat16 is not float32
    assert limit["image"] >= gpu_fastpath_check.NOISE_FACTOR * noise["image"]
    assert result["passed"] is True, result["cases"]


def test_a_nan_fails_the_check() -> None:
    reference = gpu_fastpath_check.Output(torch.zeros(1, 4, 8, 8), torch.zeros(1, 3, 64, 64))
    broken = gpu_fastpath_check.Output(torch.zeros(1, 4, 8, 8), torch.full((1, 3, 64, 64), float("nan")))
    row = gpu_fastpath_check._row("broken", broken, reference, (1.0, 1.0), 0.0, [])
    assert row["status"] == "NaN or inf" and row["finite"] is False
    far = gpu_fastpath_check.Output(torch.zeros(1, 4, 8, 8), torch.ones(1, 3, 64, 64))
    assert gpu_fastpath_check._row("far", far, reference, (1.0, 0.5), 0.0, [])["status"] == "differs"


# --- the GPU session's one command, end to end on the CPU ----------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
# The Python packages of the GPU machine's image ('cuda', as read on 2026-11-17: the device README's
# KINDS.md); the carried wheels add bench/gpu_wheels.txt.
GPU_IMAGE_TEXT = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt
jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities
linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx
onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client
propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions
pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl
tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop
wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
"""
GPU_IMAGE = GPU_IMAGE_TEXT.split()
OURS = {"bench", "jobs", "router", "bot", "characters", "tests", "sitecustomize"}
# Imported when installed, else done without: torch's inductor imports redis (and redis its speedups)
# for its remote cache; this project's bot brings redis here.
OPTIONAL = {"redis", "hiredis", "pyjwt"}
# Required by a wheel's metadata but never imported on Python 3.12: diffusers imports importlib_metadata
# only before Python 3.8 (the standard library's importlib.metadata after).
UNUSED = {"importlib-metadata"}
# Records, as each Python process of the script exits, the top-level modules it imported.
MODULE_DUMP = """import atexit, os, sys

def _dump():
    path = os.path.join(os.environ["LIKENESS_MODULES_DUMP"], f"{os.getpid()}.txt")
    with open(path, "w", encoding="utf-8") as out:
        out.write("\\n".join(sorted({name.split(".")[0] for name in list(sys.modules)})))

atexit.register(_dump)
"""


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _wheels() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "bench" / "gpu_wheels.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"bench/gpu_wheels.txt: {line!r} is not NAME==VERSION"
            assert _normal(name) not in pins, f"bench/gpu_wheels.txt names {name} twice"
            pins[_normal(name)] = version
    return pins


def _required_by(
    names: set[str], unused: frozenset[str] = frozenset(), given: frozenset[str] = frozenset()
) -> set[str]:
    """`names` and everything they require (extras and `unused` aside), as installed here; what the
    packages in `given` require is left out (they come with their own)."""
    found, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in found or name in unused:
            continue
        found.add(name)
        if name in given:
            continue
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for requirement in requires:
            if "extra ==" not in requirement:
                todo.append(_normal(re.split(r"[\s;<>=!~\[(]", requirement.strip(), maxsplit=1)[0]))
    return found


def _device_script(tmp_path: Path, **settings: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    out, hook, dump = tmp_path / "out", tmp_path / "hook", tmp_path / "modules"
    for folder in (out, hook, dump):
        folder.mkdir()
    (hook / "sitecustomize.py").write_text(MODULE_DUMP, encoding="utf-8")
    env = {
        **os.environ,
        "OUT": str(out),
        "PYTHONPATH": str(hook),
        "LIKENESS_MODULES_DUMP": str(dump),
        "LIKENESS_GPU_PYTHON": sys.executable,
        "LIKENESS_GPU_WHEELS": str(tmp_path / "no-wheels"),  # this environment has them installed
        "LIKENESS_GPU_CHECK_ARGS": "--device cpu --size 64 --steps 2 --compile-backend eager",
        "LIKENESS_GPU_BENCH_ARGS": "--tiny --device cpu --size 64 --steps 2 --repeats 1",
        **settings,
    }
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_device.sh")], env=env, capture_output=True, text=True, check=False
    )
    return done, out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_device_command_runs_end_to_end_and_prints_the_table_last(tmp_path: Path) -> None:
    done, out = _device_script(tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert sorted(path.name for path in out.iterdir()) == [
        "env.txt",
        "fastpath.json",
        "fastpath.log",
        "gpu.json",
        "gpu_sdxl.log",
        "gpu_table.md",
    ]
    assert "imports: all there" in (out / "env.txt").read_text(encoding="utf-8")
    assert json.loads((out / "fastpath.json").read_text(encoding="utf-8"))["passed"] is True
    result = json.loads((out / "gpu.json").read_text(encoding="utf-8"))
    assert result["complete"] is True and result["budget_s"] > 0
    table = (out / "gpu_table.md").read_text(encoding="utf-8").strip()
    assert table.startswith("tiny-sdxl on ")
    assert done.stdout.rstrip().endswith(table)  # the last thing printed
    assert "| worker fast path | ok |" in done.stdout

    # Every distribution the script's processes imported is on the GPU machine, travels as a wheel,
    # or comes with one that is there (a library imports its own requirements when they are installed).
    names = set()
    for dump in (tmp_path / "modules").iterdir():
        names |= set(dump.read_text(encoding="utf-8").split())
    assert {"diffusers", "pydantic_settings", "bench", "jobs"} <= names
    distributions = importlib.metadata.packages_distributions()
    image, wheels = {_normal(name) for name in GPU_IMAGE}, set(_wheels())
    there = _required_by(image & {_normal(d.metadata["Name"]) for d in importlib.metadata.distributions()})
    missing = {}
    for name in names - OURS - set(sys.stdlib_module_names):
        for distribution in distributions.get(name, []):
            if _normal(distribution) not in image | wheels | there | OPTIONAL | {"likeness"}:
                missing[name] = distribution
    assert not missing, f"imported, but neither on the GPU machine nor in bench/gpu_wheels.txt: {missing}"
    # ... and each wheel's own requirements are there too (those of the image's packages are its own).
    for wheel in wheels:
        for needed in _required_by({wheel}, frozenset(UNUSED), frozenset(image)) - {wheel}:
            assert needed in image | wheels, f"{wheel} needs {needed}: add it to bench/gpu_wheels.txt"


def test_with_no_time_the_device_command_skips_its_steps_and_says_so(tmp_path: Path) -> None:
    done, out = _device_script(tmp_path, LIKENESS_GPU_DEADLINE_S="0")
    assert done.returncode != 0
    assert "fast-path check: skipped, only" in done.stdout
    assert "bench/gpu_sdxl.py: skipped, only" in done.stdout
    assert done.stdout.rstrip().endswith("bench/gpu_sdxl.py: no results (see " + str(out) + "/gpu_sdxl.log)")
    assert sorted(path.name for path in out.iterdir()) == ["env.txt"]


def test_the_wheel_list_is_one_pinned_version_of_each_package() -> None:
    pins = _wheels()
    assert {"diffusers", "pydantic", "pydantic-core", "pydantic-settings"} <= set(pins)
    assert all(re.fullmatch(r"[0-9][0-9A-Za-z.+]*", version) for version in pins.values())


@pytest.mark.parametrize("content", [None, "not json", "[1]"], ids=["missing", "not-json", "not-results"])
def test_a_table_from_a_file_that_is_not_a_results_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None
) -> None:
    path = tmp_path / "gpu.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    for script in (gpu_sdxl, gpu_fastpath_check):
        with pytest.raises(SystemExit) as exited:
            script.main(["--table-from", str(path)])
        assert exited.value.code == 2
        assert f"--table-from {path}: " in capsys.readouterr().err
