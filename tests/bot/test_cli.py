"""The `likeness` command as a user runs it: real processes, the embedded default and a Redis worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs.media import read_recipe

LIKENESS = [sys.executable, "-m", "bot"]


def likeness(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LIKENESS, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=int)


def environment(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIKENESS_")}
    env.update({"LIKENESS_DATA_DIR": str(data_dir), "COLUMNS": "200", **extra})
    return env


def test_generate_writes_four_pngs_and_a_grid_that_rerun_reproduces(
    shared_data_dir: Path, tmp_path: Path
) -> None:
    env = environment(shared_data_dir)
    out = tmp_path / "out"
    done = likeness(
        "generate",
        "editorial portrait of a fisherman, weathered skin --ar 2:3 --seed 7",
        "--out",
        str(out),
        env=env,
    )
    assert done.returncode == 0, done.stderr
    pngs = sorted(out.glob("g_*_[1-4].png"))
    assert len(pngs) == 4
    assert len(list(out.glob("g_*_grid.png"))) == 1
    generation_id = pngs[0].name.rsplit("_", 1)[0]
    assert f"generation {generation_id}" in done.stdout
    assert "noise" in done.stderr  # the tiny-model banner
    assert [read_recipe(p).seed_of(k) for k, p in enumerate(pngs, start=1)] == [7, 8, 9, 10]
    assert pixels(pngs[0]).shape == (320, 192, 3)

    again = likeness("rerun", str(pngs[2]), "--out", str(tmp_path / "again"), env=env)
    assert again.returncode == 0, again.stderr
    (copy,) = (tmp_path / "again").glob("g_*_3.png")
    assert np.array_equal(pixels(copy), pixels(pngs[2]))
    assert "seed 9" in again.stdout


def test_bad_input_exits_2_with_a_clear_message(shared_data_dir: Path, tmp_path: Path) -> None:
    env = environment(shared_data_dir)
    done = likeness("generate", "a portrait --ar 7:3", "--out", str(tmp_path), env=env)
    assert done.returncode == 2
    assert "--ar 7:3 is not supported; use one of 1:1" in done.stderr
    not_png = tmp_path / "note.txt"
    not_png.write_text("hello")
    blocked = likeness("generate", "a portrait --n 1 --steps 1", "--out", str(not_png), env=env)
    assert blocked.returncode == 2
    assert f"cannot write to {not_png}" in blocked.stderr
    assert "the images are kept in" in blocked.stderr
    assert "Traceback" not in blocked.stderr
    done = likeness("rerun", str(not_png), env=env)
    assert done.returncode == 2
    assert "carries no Likeness recipe" in done.stderr


@pytest.mark.timeout(300)  # nine processes, each importing torch
def test_vary_upscale_and_animate_from_the_command_line(shared_data_dir: Path, tmp_path: Path) -> None:
    env = environment(shared_data_dir)
    made = likeness(
        "generate", "a lighthouse keeper --n 2 --steps 2 --seed 4", "--out", str(tmp_path / "a"), env=env
    )
    assert made.returncode == 0, made.stderr
    generation_id = next((tmp_path / "a").glob("g_*_1.png")).name.rsplit("_", 1)[0]

    varied = likeness("vary", generation_id, "2", "--strong", "--out", str(tmp_path / "v"), env=env)
    assert varied.returncode == 0, varied.stderr
    assert len(list((tmp_path / "v").glob("g_*_[1-4].png"))) == 4
    assert f"vary (strong) of {generation_id} #2" in varied.stdout.replace("\n", " ")

    big = likeness("upscale", generation_id, "1", "--x", "2", "--out", str(tmp_path / "u"), env=env)
    assert big.returncode == 0, big.stderr
    (upscaled,) = (tmp_path / "u").glob("g_*_1.png")
    assert pixels(upscaled).shape == (512, 512, 3)  # 256² doubled
    assert read_recipe(upscaled).parent is not None

    moving = likeness(
        "animate",
        generation_id,
        "1",
        "--seconds",
        "0.5",
        "--motion",
        "high",
        "--out",
        str(tmp_path / "m"),
        env=env,
    )
    assert moving.returncode == 0, moving.stderr
    assert len(list((tmp_path / "m").glob("g_*.mp4"))) == 1
    assert len(list((tmp_path / "m").glob("g_*_preview.*"))) == 1
    assert "animation in" in moving.stdout
    (video,) = (tmp_path / "m").glob("g_*.mp4")
    again = likeness("rerun", str(video), "--out", str(tmp_path / "m2"), env=env)
    assert again.returncode == 0, again.stderr
    (preview,) = (tmp_path / "m").glob("g_*_preview.*")
    (preview_again,) = (tmp_path / "m2").glob("g_*_preview.*")
    assert preview_again.read_bytes() == preview.read_bytes()  # same seed, same frames

    refusals = [
        (("vary", "g_zzzzzzzzzzzz", "1"), "there is no generation g_zzzzzzzzzzzz"),
        (("upscale", generation_id, "1", "--x", "3"), "upscale by 3× is not offered; use 2 or 4"),
        (("vary", generation_id, "7"), "has variations 1 to 2; there is no #7"),
        (("animate", generation_id, "1", "--seconds", "60"), "tiny-svd makes at most 8"),
        (("vary", generation_id, "1", "--server", "elsewhere"), "was made in another server"),
    ]
    for args, words in refusals:
        refused = likeness(*args, "--out", str(tmp_path / "no"), env=env)
        assert refused.returncode == 2, (args, refused.stderr)
        assert words in refused.stderr, (args, refused.stderr)
        assert "Traceback" not in refused.stderr


def test_models_list_and_route(tmp_path: Path) -> None:
    env = environment(tmp_path)
    listed = likeness("models", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "tiny-xl (default)" in listed.stdout
    assert "photoreal-xl" in listed.stdout
    routed = likeness("route", "--json", "a portrait --ar 16:9 --engine tiny-sd15", env=env)
    assert routed.returncode == 0, routed.stderr
    payload = json.loads(routed.stdout)
    assert payload["profile"] == "tiny-sd15"
    assert payload["reasons"] == ["--engine tiny-sd15 was asked for"]
    assert (payload["params"]["width"], payload["params"]["height"]) == (320, 192)


def test_generate_through_redis_and_a_separate_worker_process(
    shared_data_dir: Path, tmp_path: Path, redis_url: str
) -> None:
    env = environment(shared_data_dir, LIKENESS_REDIS_URL=redis_url)
    worker = subprocess.Popen(
        [*LIKENESS, "worker", "--profiles", "tiny-xl"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        done = likeness("generate", "a portrait --seed 5 --n 2", "--out", str(tmp_path / "out"), env=env)
        assert done.returncode == 0, done.stderr
        assert len(list((tmp_path / "out").glob("g_*_[1-2].png"))) == 2
        for _ in range(10):  # the heartbeat comes every 2 s
            fleet = likeness("fleet", env=env)
            assert fleet.returncode == 0, fleet.stderr
            if "1 live" in fleet.stdout:
                break
            time.sleep(1)
        assert "1 live" in fleet.stdout
        assert "tiny-xl" in fleet.stdout
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, output.decode()


def test_data_forget_and_export_from_the_command_line(tmp_path: Path) -> None:
    env = environment(tmp_path / "data")
    careful = likeness("data", "forget", env=env)
    assert careful.returncode == 2 and "add --yes to do it" in careful.stderr
    done = likeness("data", "forget", "--yes", env=env)
    assert done.returncode == 0, done.stderr
    assert "forgot user local on cli: 0 character(s), 0 generation(s), 0 file(s)" in done.stdout
    exported = likeness("data", "export", "s1", str(tmp_path / "s1.zip"), env=env)
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "s1.zip").is_file()


def test_bad_settings_and_unreachable_redis_are_named(tmp_path: Path) -> None:
    bad = likeness("generate", "a portrait", env=environment(tmp_path, LIKENESS_JOB_WAIT_S="0"))
    assert bad.returncode == 2
    assert "LIKENESS_JOB_WAIT_S" in bad.stderr
    assert "Traceback" not in bad.stderr
    down = likeness(
        "generate", "a portrait", env=environment(tmp_path, LIKENESS_REDIS_URL="redis://127.0.0.1:1/0")
    )
    assert down.returncode == 2
    assert "cannot reach Redis at 127.0.0.1:1" in down.stderr
    assert "Traceback" not in down.stderr


def test_models_tiny_builds_loadable_pipelines(tmp_path: Path) -> None:
    done = likeness("models", "tiny", env=environment(tmp_path))
    assert done.returncode == 0, done.stderr
    for family in ("sd15", "sdxl"):
        assert (tmp_path / "models" / f"tiny-{family}" / "model_index.json").is_file()


def test_characters_from_the_command_line(shared_data_dir: Path, tmp_path: Path) -> None:
    from skimage import data

    from jobs.identity import ensure_tiny_ip_adapter

    ensure_tiny_ip_adapter(shared_data_dir / "models")  # and the tiny SDXL it is made for
    data_dir = tmp_path / "data"
    (data_dir / "models").mkdir(parents=True)
    for built in ("tiny-sdxl", "tiny-ip-adapter"):  # reuse the session's tiny models
        (data_dir / "models" / built).symlink_to(shared_data_dir / "models" / built)
    env = environment(data_dir)
    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(data.astronaut()).save(photo)
    made = likeness(
        "characters", "create", "mara", str(photo), "--server", "guild1", "--description", "an astronaut",
        "--consent", env=env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "created @mara" in made.stdout
    out = tmp_path / "out"
    done = likeness(
        "generate", "@mara at golden hour --seed 3 --n 2", "--server", "guild1", "--out", str(out), env=env
    )
    assert done.returncode == 0, done.stderr
    assert "identity: @mara is a character → tiny-identity-xl" in done.stdout
    second = sorted(out.glob("g_*_2.png"))[0]
    recipe = read_recipe(second)
    assert [item.role for item in recipe.inputs] == ["face"]
    assert recipe.inputs[0].data == b""  # the photo never travels inside the image
    again = likeness("rerun", str(second), "--out", str(tmp_path / "again"), env=env)
    assert again.returncode == 0, again.stderr
    (copy,) = (tmp_path / "again").glob("g_*_2.png")
    assert np.array_equal(pixels(copy), pixels(second))

    elsewhere = likeness("generate", "@mara at dusk", "--server", "guild2", env=env)
    assert elsewhere.returncode == 2
    assert "no character @mara here" in elsewhere.stderr or "no characters yet" in elsewhere.stderr
    card = tmp_path / "mara.png"
    assert likeness("characters", "export", "mara", str(card), "--server", "guild1", env=env).returncode == 0
    imported = likeness("characters", "import", str(card), "--server", "guild2", env=env)
    assert imported.returncode == 0, imported.stderr
    listed = likeness("characters", "list", "--server", "guild2", env=env)
    assert "@mara" in listed.stdout
    cat = tmp_path / "cat.jpg"
    Image.fromarray(data.chelsea()).save(cat)
    refused = likeness("characters", "create", "tom", str(cat), "--consent", env=env)
    assert refused.returncode == 2
    assert "couldn't find a face" in refused.stderr


def test_eval_identity_from_the_command_line(tmp_path: Path) -> None:
    from skimage import data

    reference, mirror, cat = tmp_path / "astronaut.png", tmp_path / "mirror.png", tmp_path / "cat.png"
    Image.fromarray(data.astronaut()).save(reference)
    Image.fromarray(data.astronaut()[:, ::-1].copy()).save(mirror)
    Image.fromarray(data.chelsea()).save(cat)
    done = likeness(
        "eval", "identity", str(reference), str(mirror), str(cat), "--json", env=environment(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    by_image = {Path(c["image"]).name: c for c in report["comparisons"]}
    assert 0.1 < by_image["mirror.png"]["distance"] < 0.3
    assert by_image["mirror.png"]["same_person"] is True
    assert by_image["cat.png"]["distance"] is None
    refused = likeness("eval", "identity", str(cat), str(mirror), env=environment(tmp_path))
    assert refused.returncode == 2
    assert "no face found in the reference photo" in refused.stderr


def test_route_json_reaches_the_routing_evaluation_set(
    tmp_path: Path, routing_eval_cases: list[tuple[str, str]]
) -> None:
    from bot.studio import plan_portrait
    from router.catalog import load_catalog

    cases = routing_eval_cases
    catalog = load_catalog(probe=lambda checkpoint: True, adapter_probe=lambda adapter: True)
    right = sum(plan_portrait(prompt, catalog)[1].intent == intent for prompt, intent in cases)
    assert right / len(cases) >= 0.95, f"{right} of {len(cases)}"
    # The command itself, as the evaluation runs it: every @name counts as a known character.
    done = likeness("route", "--json", "@mara on a rooftop at night", env=environment(tmp_path))
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["intent"] == "identity"
    assert payload["profile"] == "tiny-identity-xl"
    assert payload["reasons"] == ["identity: @mara is a character → tiny-identity-xl"]
