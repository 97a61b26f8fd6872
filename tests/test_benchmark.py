"""The benchmark script runs (on a tiny setting) and writes its JSON; no timing is asserted."""

import json
import subprocess
import sys

from conftest import ROOT


def test_benchmark_runs_tiny(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--tiny", f"--out={out}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    results = json.loads(out.read_text())
    assert set(results["cells"]) == {"rnn", "gru", "lstm"}
    for cell in results["cells"].values():
        assert cell["train_tokens_per_sec_median"] > 0 and cell["compile_s"] > 0
        assert cell["generate_compiled_s"] > 0 and cell["generate_loop_s"] > 0
    assert results["peak_rss_mib"] > 0
