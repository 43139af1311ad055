"""bench/api_ingest.py runs end to end at a tiny size (its servers, its two clients and the
direct repository writes), and prints each figure it promises."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "api_ingest.py"


def test_api_ingest_bench_runs(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_api_ingest_smoke", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        module.main(["--requests", "30", "--concurrency", "3", "--batches", "1"])
    finally:
        del sys.modules[spec.name]
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert len(lines) == 3, out
    for line in lines[:2]:
        assert re.search(r"\d+ req/s, p50 [\d.]+ ms, p99 [\d.]+ ms$", line), line
    assert re.search(r"API [\d,]+ records/s, repository directly [\d,]+ records/s", lines[2])
