"""``webrtc-broker bench attack`` as an operator runs it, tiny: a second per phase.

Checks behaviour only: it completes, the table and the JSON have a row for
the baseline, every attack and the baseline after, the pair's messages were
counted in each phase, each attacker reported what it sent, and every process
the bench started is gone. Latencies are not asserted: they are the
measurement.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.bench.test_bench_smoke import pid_alive
from webrtc_broker.bench.attacker import ATTACKS
from webrtc_broker.bench.cli import ATTACK_NAMES

TIMEOUT = 150.0
ROWS = ("baseline", *ATTACKS, "baseline after")


def test_attack_names_agree() -> None:
    """The CLI lists the attacks without importing the attacker; the lists must match."""
    assert ATTACK_NAMES == ATTACKS


def test_attack_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "attack.json"
    command = [
        *(sys.executable, "-m", "webrtc_broker", "bench", "attack"),
        *("--seconds", "1", "--settle", "1", "--rate", "20"),
        *("--json", str(out), "--log-dir", str(tmp_path)),
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    log = (tmp_path / "bench-attack.log").read_text(errors="replace")
    assert completed.returncode == 0, f"{completed.stdout}\n{completed.stderr}\n{log[-5000:]}"

    table = completed.stdout[completed.stdout.index("p50 ms") :].splitlines()[1:]
    assert [line.split("  ")[0].strip() for line in table[: len(ROWS)]] == list(ROWS)

    report = json.loads(out.read_text())
    phases = report["phases"]
    assert [phase["attack"] for phase in phases] == list(ROWS)
    for phase in phases:
        assert phase["sent"] > 0, phase
        assert 0 <= phase["delivered"] <= phase["sent"]
        attacker = phase["attacker"]
        if phase["attack"].startswith("baseline"):
            assert attacker is None
        else:
            assert attacker["attack"] == phase["attack"]
            assert attacker["frames"] > 0, attacker
    roles = sorted(p["role"] for p in report["processes"])
    assert roles == sorted(
        ["coordinator", "commserver", "commserver", *["attacker"] * len(ATTACKS)]
    )
    for process in report["processes"]:
        assert not pid_alive(process["pid"]), f"{process} outlived the bench"
