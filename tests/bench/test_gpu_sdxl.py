"""bench/gpu_sdxl.py: its whole path on the CPU with the tiny SDXL, and the real SDXL configs' size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import gpu_sdxl
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
