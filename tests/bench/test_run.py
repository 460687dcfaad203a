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


async def test_slack_acknowledgements_are_timed_against_the_floor() -> None:
    from bench import slack_ack

    latencies = await slack_ack.measure(rounds=1, concurrent=5)
    assert set(latencies) == {"no-op (floor)", "/portrait"}
    assert all(len(values) == 5 and min(values) > 0 for values in latencies.values())
    figures = run.ack_figures("Slack", 1, latencies["no-op (floor)"], latencies["/portrait"])
    assert [f.measurement for f in figures] == [
        "Slack /portrait acknowledgement p50, 5 at once × 1 (slack_ack)",
        "Slack /portrait acknowledgement p99, 5 at once × 1 (slack_ack)",
        "Slack: the same p99 against the platform's limit",
    ]
    assert figures[2].baseline == "3000 ms (limit)"
    assert figures[1].numbers["p99_ms"] == max(latencies["/portrait"])
