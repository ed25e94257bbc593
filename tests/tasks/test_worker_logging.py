"""The worker drops saq's per-job INFO lines (ours say the same) and keeps all its others."""

from __future__ import annotations

import logging

import pytest

from backend.tasks.worker import _drop_saq_per_job_lines


@pytest.mark.parametrize(
    ("level", "msg", "kept"),
    [
        (logging.INFO, "Processing %s", False),
        (logging.INFO, "Finished %s", False),
        (logging.INFO, "Enqueuing %s", False),
        (logging.INFO, "Worker starting: %s", True),
        (logging.INFO, "Retrying %s", True),
        (logging.ERROR, "Finished %s", True),
        (logging.ERROR, "Error processing job %s", True),
    ],
)
def test_saq_filter(level: int, msg: str, kept: bool) -> None:
    record = logging.LogRecord("saq", level, __file__, 1, msg, ("job",), None)
    assert _drop_saq_per_job_lines(record) is kept
