"""benchmarks/soak.py runs end to end (a few seconds at a low rate) and reports zero errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_short_soak_passes(tmp_path):
    out = tmp_path / "soak.json"
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}
    result = subprocess.run([sys.executable, "benchmarks/soak.py", "--minutes", "0.1", "--rate", "10",
                             "--json", str(out)], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(out.read_text())
    assert summary["requests"] == 60 and summary["errors"] == 0
    assert summary["per_minute"][0]["p99_ms"] > 0
