"""Structured JSON logs on stdout, one line per event, in the shape Cloud Logging understands.

``severity`` is what Cloud Logging reads for the level, and
``logging.googleapis.com/trace`` ties a line to the request's trace in Cloud Run.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_configured = False


def _severity(_: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event["severity"] = method.upper() if method != "exception" else "ERROR"
    return event


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    global _configured
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _severity,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    if not _configured:
        # Library loggers (uvicorn errors, alembic) go to stderr as plain lines; the access log is
        # replaced by our own request line, which carries the request id and route.
        logging.basicConfig(
            level=numeric, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
        )
        logging.getLogger("uvicorn.access").disabled = True
        _configured = True


def cloud_trace(header: str | None, project: str | None) -> dict[str, str]:
    """Fields linking a log line to a Cloud Run trace (``TRACE_ID/SPAN_ID;o=1``)."""
    if not header:
        return {}
    trace_id = header.split("/", 1)[0].strip()
    if not trace_id or len(trace_id) > 64 or not trace_id.isalnum():
        return {}
    value = f"projects/{project}/traces/{trace_id}" if project else trace_id
    return {"logging.googleapis.com/trace": value}
