"""Reporting for the benchmarks: ``BENCH …`` lines as results come, a markdown table at the end.

Lines go through pytest's terminal reporter, so they show with or without ``-s``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest


@dataclass
class BenchReport:
    rows: list[tuple[str, str]] = field(default_factory=list)
    config: pytest.Config | None = None

    def line(self, text: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter") if self.config else None
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(text)

    def row(self, what: str, figure: str) -> None:
        """One row of the README's performance table (``| what | figure |``)."""
        self.rows.append((what, figure))


REPORT = BenchReport()


@pytest.fixture(scope="session")
def bench(pytestconfig: pytest.Config) -> BenchReport:
    REPORT.config = pytestconfig
    return REPORT


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REPORT.rows:
        return
    terminalreporter.section("benchmark table (README performance)")
    terminalreporter.write_line("| what | figure |")
    terminalreporter.write_line("|---|---|")
    for what, figure in REPORT.rows:
        terminalreporter.write_line(f"| {what} | {figure} |")
