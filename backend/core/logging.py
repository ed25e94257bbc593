"""Structured JSON logs on stdout, one line per event, in the shape Cloud Logging understands.

Every line is one JSON object with ``severity`` (what Cloud Logging reads for the level) and
``message``: our own structlog events and every stdlib logger alike (uvicorn, saq, botocore,
alembic, asyncio, ``warnings``), and an uncaught exception becomes one line with its traceback
inside, so Cloud Logging neither loses the level nor splits a trace into one entry per line.
``logging.googleapis.com/trace`` ties a line to the request's trace in Cloud Run.
"""

from __future__ import annotations

import logging
import logging.config
import sys
import threading
from collections.abc import MutableMapping
from types import TracebackType
from typing import Any, TextIO

import structlog

_configured: tuple[str, bool] | None = None
_SEVERITY = {"exception": "ERROR", "warn": "WARNING", "fatal": "CRITICAL", "notset": "DEFAULT"}
log = logging.getLogger("atelier")


def _severity(_: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event["severity"] = _SEVERITY.get(method, method.upper())
    return event


# Run on structlog's own events and on stdlib records alike, before rendering.
_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    _severity,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def _rendering(json: bool) -> list[Any]:
    """The last processors of every line, after ``_SHARED``: JSON or the console's form."""
    if not json:
        # The console renderer prints tracebacks itself.
        return [structlog.dev.ConsoleRenderer()]
    # JSON wants a traceback as one string field, and Cloud Logging reads "message".
    return [
        structlog.processors.format_exc_info,
        structlog.processors.EventRenamer("message"),
        structlog.processors.JSONRenderer(),
    ]


def make_formatter(json: bool = True) -> structlog.stdlib.ProcessorFormatter:
    """The one formatter of the root handler (also named in uvicorn's ``log_config``): stdlib
    records (uvicorn, saq, botocore…) rendered as our own lines are."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *_rendering(json)],
    )


# Every line written to stdout, stdlib's and structlog's alike, is written under this lock, so
# two threads' lines never interleave.
_STDOUT_LOCK = threading.RLock()


class StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at the time (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__()

    def createLock(self) -> None:  # noqa: N802 (logging's name)
        self.lock = _STDOUT_LOCK

    @property
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


class LineWriter:
    """structlog's final logger: writes a line its processors rendered straight to stdout.

    Our own events skip stdlib logging: a ``LogRecord`` built (twice, the formatter copies it)
    and passed through a logger and a handler cost more than rendering the line, and every
    request writes one. Level filtering is structlog's (``make_filtering_bound_logger``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def msg(self, message: str) -> None:
        with _STDOUT_LOCK:
            stream = sys.stdout
            stream.write(message + "\n")
            stream.flush()

    debug = info = warning = warn = error = exception = critical = fatal = log = msg


def _line_writer(name: str | None = None, *_args: Any) -> LineWriter:
    return LineWriter(name or "atelier")


def logging_config(level: str = "INFO", *, json: bool = True) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict: every logger goes to one JSON handler on stdout.

    ``atelier serve`` hands this to uvicorn as its ``log_config``, so uvicorn's own set-up
    does not put its plain-text handlers back.
    """
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"structured": {"()": make_formatter, "json": json}},
        "handlers": {"stdout": {"()": StdoutHandler, "formatter": "structured"}},
        "root": {"handlers": ["stdout"], "level": level},
        "loggers": {
            # Reset uvicorn's loggers (it configures them with handlers of their own) so they
            # propagate to the root handler. Its access log is replaced by our own request line,
            # which carries the request id, the route template and the trace.
            "uvicorn": {"handlers": [], "propagate": True, "level": level},
            "uvicorn.error": {"handlers": [], "propagate": True, "level": level},
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "WARNING"},
            # Per-call chatter (credentials found, each request's retry handler) is noise.
            "botocore": {"level": "WARNING" if level in ("INFO", "DEBUG") else level},
            "boto3": {"level": "WARNING" if level in ("INFO", "DEBUG") else level},
            "alembic.runtime.plugins": {"level": "WARNING"},
            # libvips' own info messages ("threadpool completed with 1 workers"), one a
            # compression: noise in the logs and CPU on every image.
            "pyvips": {"level": "WARNING"},
        },
    }


def _excepthook(
    kind: type[BaseException], value: BaseException, trace: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, trace)
        return
    log.critical("uncaught_exception %s: %s", kind.__name__, value, exc_info=(kind, value, trace))


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    thread = args.thread.name if args.thread else "?"
    log.critical(
        "uncaught_exception_in_thread %s",
        thread,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def _unraisablehook(unraisable: Any) -> None:
    exc = unraisable.exc_value
    log.error(
        "unraisable_exception %s: %r",
        unraisable.err_msg or "Exception ignored in",
        unraisable.object,
        exc_info=(type(exc), exc, unraisable.exc_traceback) if exc is not None else None,
    )


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    global _configured
    if _configured == (level, json):
        return
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    logging.config.dictConfig(logging_config(level, json=json))
    # No line carries the caller's file and line, the process or the thread, yet stdlib logging
    # gathers them for every record (walking the stack, two getpid calls): about a third of a
    # request log line's cost. These are the switches the logging HOWTO's "Optimization" lists.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # `warnings.warn` goes to the "py.warnings" logger instead of raw stderr.
    logging.captureWarnings(True)
    structlog.configure(
        processors=[*_SHARED, *_rendering(json)],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_line_writer,
        cache_logger_on_first_use=True,
    )
    _configured = (level, json)


def install_exception_hooks() -> None:
    """Uncaught exceptions as one log line with the trace inside (processes the CLI starts;
    test runners keep their own hooks)."""
    sys.excepthook = _excepthook
    threading.excepthook = _thread_excepthook
    sys.unraisablehook = _unraisablehook


def cloud_trace(header: str | None, project: str | None) -> dict[str, str]:
    """Fields linking a log line to a Cloud Run trace (``TRACE_ID/SPAN_ID;o=1``)."""
    if not header:
        return {}
    trace_id = header.split("/", 1)[0].strip()
    if not trace_id or len(trace_id) > 64 or not trace_id.isalnum():
        return {}
    value = f"projects/{project}/traces/{trace_id}" if project else trace_id
    return {"logging.googleapis.com/trace": value}
