"""bench/run: the sections that take seconds, end to end, into one table and one JSON file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import run


def test_quick_sections_make_one_table_and_one_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.json"
    assert run.main(["--quick", "--out", str(out), "--skip", "chat", "queue", "upscale"]) == 0
    printed = capsys.readouterr().out
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["mode"] == "quick"
    assert set(document["section_seconds"]) == {"residency", "routing", "fleet", "gpu"}
    figures = document["figures"]
    assert {f["section"] for f in figures} == {"residency", "routing", "fleet", "gpu"}
    for figure in figures:
        assert set(figure) == {"section", "measurement", "value", "baseline", "ratio", "target", "numbers"}
    parked = next(f for f in figures if f["section"] == "residency")
    assert parked["value"] == "2 loads + 8 restores" and parked["baseline"].startswith("10 loads")
    assert parked["ratio"] == "0.20"
    (gpu,) = [f for f in figures if f["section"] == "gpu"]
    assert gpu["measurement"].startswith("skipped: no CUDA")
    assert "| section | measurement | value | baseline / limit | ratio | target |" in printed
    assert "| fleet | wait p95, placement vs FIFO" in printed
    assert "| routing | route(request, catalog, characters), per prompt |" in printed
