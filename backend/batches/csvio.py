"""Product CSV files: parse and validate an upload, write the result CSV.

Pure: bytes in, values out. The input has the three columns of the product-CSV format,
``S. No.``, ``Product Name`` and ``Input Image Urls`` (a comma-separated list in one cell); the
output is the same rows with ``Output Image Urls`` (one slot per input URL) and ``Errors``
columns added.

Every problem a user can fix is reported at once, each with the line number a spreadsheet or a
text editor shows, so one upload round trip is enough to correct a file.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

HEADER = ("S. No.", "Product Name", "Input Image Urls")
OUTPUT_COLUMN = "Output Image Urls"
ERRORS_COLUMN = "Errors"

SERIAL, PRODUCT_NAME, INPUT_URLS = HEADER

MAX_URL_CHARS = 2048
# How much of a bad value is echoed back in an error message.
_ECHO_CHARS = 80

# csv.field_size_limit() is deliberately left alone: it is process-global, so changing it here
# would change every other csv user in the process depending on import order. Its default
# (128 KiB) is already far above the longest legitimate cell (20 URLs of 2 KiB), and the whole
# file is bounded by CsvLimits.max_bytes before the reader sees it, so memory stays bounded
# whatever the limit is. A cell over the limit surfaces as a csv.Error, reported with its line.

# Whitespace and control characters: a URL containing them was mangled on the way into the
# sheet, and servers and our fetcher would disagree on what it means.
_BAD_URL_CHAR = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
# Cells a spreadsheet would evaluate as a formula (OWASP's list plus the full-width forms that
# some spreadsheet locales also treat as operators).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


@dataclass(frozen=True)
class CsvLimits:
    max_bytes: int = 5 * 1024 * 1024
    max_rows: int = 1000
    max_urls_per_row: int = 20
    max_urls_total: int = 5000


@dataclass(frozen=True)
class BatchRow:
    line: int  # 1-based physical line where the row starts, as an editor shows it
    serial: str
    product_name: str
    urls: list[str]  # validated, de-duplicated, in file order
    values: list[str]  # the cells as uploaded, one per header column, for the output CSV


@dataclass(frozen=True)
class RowError:
    line: int
    message: str


@dataclass(frozen=True)
class ParsedCsv:
    header: list[str]
    rows: list[BatchRow]


class CsvRejected(Exception):
    """The file cannot be used; ``code`` is stable, ``errors`` lists per-row problems."""

    def __init__(self, message: str, *, code: str, errors: list[RowError] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.errors: list[RowError] = list(errors or [])

    def __repr__(self) -> str:
        return f"CsvRejected({self.code!r}, {self.message!r}, errors={len(self.errors)})"


# --- parsing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Columns:
    header: list[str]
    serial: int
    name: int
    urls: int

    @property
    def extra_cells_are_urls(self) -> bool:
        # The product-CSV format's own example writes URL lists unquoted, so their commas split
        # them into extra cells. That is unambiguous only when the URL column is the last one.
        return self.urls == len(self.header) - 1


def parse(data: bytes, limits: CsvLimits = CsvLimits()) -> ParsedCsv:
    """Validated rows of a product CSV, or ``CsvRejected`` saying everything that is wrong."""
    if len(data) > limits.max_bytes:
        raise CsvRejected(
            f"The CSV file is larger than the {limits.max_bytes} bytes allowed.",
            code="batch.csv_too_large",
        )
    text = _decode(data)
    if not text.strip():
        raise CsvRejected("The CSV file is empty.", code="batch.csv_empty")

    records = _records(text)
    first = next(records, None)
    if first is None:
        raise CsvRejected("The CSV file is empty.", code="batch.csv_empty")
    line, cells, broken = first
    if broken is not None:
        raise CsvRejected(
            f"The CSV header on line {line} cannot be read: {broken}",
            code="batch.csv_header",
            errors=[RowError(line, broken)],
        )
    columns = _read_header(line, cells)

    rows: list[BatchRow] = []
    errors: list[RowError] = []
    bad_rows = 0
    total_urls = 0
    for line, cells, broken in records:
        if broken is not None:
            # The reader cannot resynchronise after broken quoting: everything after it is
            # unreliable, so this is the last error reported.
            errors.append(RowError(line, broken))
            bad_rows += 1
            break
        # Counted before any work on the row, so an oversized file is refused after reading
        # one row more than allowed rather than after validating all of it.
        if len(rows) + bad_rows >= limits.max_rows:
            raise CsvRejected(
                f"The CSV file has more than the {limits.max_rows} product rows allowed.",
                code="batch.too_many_rows",
            )
        row, row_errors = _read_row(line, cells, columns, limits)
        if row is None:
            errors.extend(row_errors)
            bad_rows += 1
            continue
        rows.append(row)
        total_urls += len(row.urls)
        if total_urls > limits.max_urls_total:
            raise CsvRejected(
                f"The CSV file lists more than the {limits.max_urls_total} image URLs "
                "allowed in one batch.",
                code="batch.too_many_urls",
            )

    if errors:
        raise CsvRejected(
            f"{bad_rows} row{'s' if bad_rows != 1 else ''} of the CSV file "
            f"{'have' if bad_rows != 1 else 'has'} problems.",
            code="batch.csv_rows",
            errors=errors,
        )
    if not rows:
        raise CsvRejected("The CSV file has a header but no product rows.", code="batch.csv_empty")
    return ParsedCsv(header=columns.header, rows=rows)


def _decode(data: bytes) -> str:
    body = data.removeprefix(codecs.BOM_UTF8)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = body[: exc.start].count(b"\n") + 1
        raise CsvRejected(
            f"The CSV file is not UTF-8 text (first invalid byte on line {line}); "
            "save it as 'CSV UTF-8'.",
            code="batch.csv_encoding",
        ) from None


def _records(text: str) -> Iterator[tuple[int, list[str], str | None]]:
    """(starting line, cells, None) for each non-blank record, or (line, [], why) for a record
    the csv module cannot read, after which nothing more is produced.

    The reader's ``line_num`` counts physical lines consumed so far, so a record starts on the
    line after the previous record ended, even when a quoted cell spans several lines.
    """
    # strict: a stray quote is reported where it is instead of silently merging cells or
    # swallowing the rest of the file into one. skipinitialspace: `a, "b,c"` is quoted as
    # people mean it.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True, skipinitialspace=True)
    consumed = 0
    while True:
        start = consumed + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                why = "A quoted cell starting on this line is never closed."
            else:
                why = f"The CSV quoting is broken from this line on ({exc})."
            yield start, [], why
            return
        consumed = reader.line_num
        # Spreadsheets export emptied rows as a line of commas; those are blank lines too.
        if any(cell.strip() for cell in cells):
            yield start, cells, None


def _read_header(line: int, cells: list[str]) -> _Columns:
    names = [cell.strip() for cell in cells]
    # A BOM can survive inside the first cell when the file was concatenated or re-encoded.
    if names:
        names[0] = names[0].lstrip("\ufeff").strip()
    problems: list[str] = []
    missing = [name for name in HEADER if name not in names]
    extra = [name for name in names if name not in HEADER]
    duplicated = sorted({name for name in names if name in HEADER and names.count(name) > 1})
    if missing:
        problems.append("missing " + _quoted_list(missing))
    if extra:
        problems.append("unexpected " + _quoted_list(extra))
    if duplicated:
        problems.append("repeated " + _quoted_list(duplicated))
    if problems:
        hint = _header_hint(missing, extra)
        raise CsvRejected(
            f"The CSV header on line {line} must have exactly the columns "
            f"{_quoted_list(list(HEADER))}: {'; '.join(problems)}.{hint}",
            code="batch.csv_header",
            errors=[RowError(line, "; ".join(problems))],
        )
    return _Columns(
        header=names,
        serial=names.index(SERIAL),
        name=names.index(PRODUCT_NAME),
        urls=names.index(INPUT_URLS),
    )


def _header_hint(missing: Sequence[str], extra: Sequence[str]) -> str:
    if len(extra) == 1 and ";" in extra[0]:
        return " The file seems to use ';' between columns; save it with commas."
    folded = {name.casefold().replace(" ", ""): name for name in missing}
    for name in extra:
        wanted = folded.get(name.casefold().replace(" ", ""))
        if wanted is not None:
            return f" Column names are matched exactly: rename {_quote(name)} to {_quote(wanted)}."
    return ""


def _read_row(
    line: int, cells: list[str], columns: _Columns, limits: CsvLimits
) -> tuple[BatchRow | None, list[RowError]]:
    width = len(columns.header)
    if len(cells) > width and columns.extra_cells_are_urls:
        cells = [*cells[: width - 1], ",".join(cells[width - 1 :])]
    if len(cells) != width:
        return None, [
            RowError(
                line,
                f"The row has {len(cells)} cells but the header has {width}; "
                "put the image URL list in double quotes if it contains commas.",
            )
        ]

    errors: list[str] = []
    if any("\x00" in cell for cell in cells):
        # Text columns in PostgreSQL cannot hold NUL, and no spreadsheet writes one: this is a
        # damaged or binary file, better said here than failing at insert time.
        errors.append("The row contains a NUL character.")
    serial = cells[columns.serial].strip()
    product_name = cells[columns.name].strip()
    if not serial:
        errors.append(f"{SERIAL} is empty.")
    if not product_name:
        errors.append(f"{PRODUCT_NAME} is empty.")

    # dict.fromkeys keeps the first occurrence in order in linear time: one cell can hold tens
    # of thousands of entries before the per-row limit is checked.
    stripped = (candidate.strip() for candidate in cells[columns.urls].split(","))
    urls = list(dict.fromkeys(url for url in stripped if url))
    if not urls:
        errors.append(f"{INPUT_URLS} has no URL.")
    elif len(urls) > limits.max_urls_per_row:
        # Validating each of thousands of URLs would only bury this, the real problem.
        errors.append(
            f"{INPUT_URLS} has {len(urls)} URLs; at most {limits.max_urls_per_row} are allowed."
        )
    else:
        for position, url in enumerate(urls, start=1):
            problem = url_problem(url)
            if problem is not None:
                errors.append(f"URL {position} ({_quote(url)}) {problem}.")

    if errors:
        return None, [RowError(line, message) for message in errors]
    return BatchRow(
        line=line, serial=serial, product_name=product_name, urls=urls, values=list(cells)
    ), []


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be an input image URL, or None when it is acceptable as written.

    Only the form is checked here; whether its host may be contacted is decided after DNS
    resolution when it is fetched.
    """
    if len(url) > MAX_URL_CHARS:
        return f"is longer than {MAX_URL_CHARS} characters"
    if _BAD_URL_CHAR.search(url):
        return "contains spaces or control characters"
    if "\\" in url:
        # Browsers read a backslash as a slash and Python's parser does not: a host confusion
        # that SSRF filters are known to fall for.
        return "contains a backslash"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  -- raises ValueError on a malformed or out-of-range port
    except ValueError:
        return "is not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        return "must start with http:// or https://"
    if not parts.hostname:
        return "has no host name"
    if parts.username is not None or parts.password is not None:
        # Credentials would be sent to the host and stored with the batch.
        return "must not contain a user name or password"
    return None


def _quote(value: str) -> str:
    shown = value if len(value) <= _ECHO_CHARS else value[: _ECHO_CHARS - 1] + "…"
    return repr(shown)


def _quoted_list(names: Sequence[str]) -> str:
    return ", ".join(_quote(name) for name in names)


# --- writing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What became of one input URL: its output's URL once it succeeded, its code if it failed."""

    output_url: str | None = None
    error_code: str | None = None


def input_urls(cell: str) -> list[str]:
    """The URLs of an ``Input Image Urls`` cell as written, in order, repeats included."""
    return [url for url in (part.strip() for part in cell.split(",")) if url]


def write_output(parsed: ParsedCsv, outcomes: Mapping[int, Mapping[str, Outcome]]) -> bytes:
    """The uploaded rows plus ``Output Image Urls`` and ``Errors``, as UTF-8 CSV with CRLF ends.

    ``outcomes`` maps a row's line to the outcome of each of its URLs. The output cell has one
    comma-separated slot per input URL, in the input's order, empty where that URL has no
    output, so the n-th output always belongs to the n-th input. ``Errors`` names each failed
    URL with its code as ``<url>: <code>``, entries separated by ``; `` (input URLs never
    contain whitespace, so both splits are unambiguous).
    """
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    urls_at = parsed.header.index(INPUT_URLS)
    # Every cell goes through the formula guard, not only those known to come from the user:
    # our own output URLs never start with a formula character, so for them it changes nothing,
    # and a single rule cannot be forgotten when a column is added.
    writer.writerow([_neutralise(cell) for cell in [*parsed.header, OUTPUT_COLUMN, ERRORS_COLUMN]])
    for row in parsed.rows:
        found = outcomes.get(row.line, {})
        inputs = input_urls(row.values[urls_at])
        slots = [(found[url].output_url if url in found else None) or "" for url in inputs]
        # A URL listed twice is one item: named once.
        failed = dict.fromkeys(
            f"{url}: {found[url].error_code}"
            for url in inputs
            if url in found and found[url].error_code
        )
        cells = [*row.values, ",".join(slots), "; ".join(failed)]
        writer.writerow([_neutralise(cell) for cell in cells])
    # No BOM: the input was accepted with or without one, and tools reading CSV programmatically
    # (the main consumer of a result file) mostly do not expect it.
    return buffer.getvalue().encode("utf-8")


def _neutralise(cell: str) -> str:
    """Make a spreadsheet show ``cell`` as text rather than evaluate it as a formula."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell
