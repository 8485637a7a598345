"""The fuzzers' summary lines (cases run, time taken) at the end of the pytest run."""

from __future__ import annotations

import pytest

from tests.fuzz.live import SUMMARY


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    lines = config.stash.get(SUMMARY, [])
    if lines:
        terminalreporter.section("fuzzing")
        for line in lines:
            terminalreporter.write_line(line)
