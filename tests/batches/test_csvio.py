"""Product CSV parsing and the result CSV: formats people upload, every way a file is wrong."""

from __future__ import annotations

import codecs
import csv
import io
from typing import Any

import pytest

from backend.batches import csvio
from backend.batches.csvio import (
    ERRORS_COLUMN,
    HEADER,
    OUTPUT_COLUMN,
    BatchRow,
    CsvLimits,
    CsvRejected,
    Outcome,
    ParsedCsv,
    RowError,
    parse,
    write_output,
)

HEAD = "S. No.,Product Name,Input Image Urls"
A = "https://img.example.com/a.jpg"
B = "https://img.example.com/b.png"
C = "http://cdn.example.org:8080/c.webp?size=large"


def csv_bytes(*lines: str, newline: str = "\n", bom: bool = False) -> bytes:
    text = newline.join(lines) + newline
    return (codecs.BOM_UTF8 if bom else b"") + text.encode("utf-8")


def rejected(data: bytes, limits: CsvLimits | None = None) -> CsvRejected:
    with pytest.raises(CsvRejected) as caught:
        parse(data, limits or CsvLimits())
    return caught.value


def error_lines(exc: CsvRejected) -> list[int]:
    return sorted({error.line for error in exc.errors})


def messages_on(exc: CsvRejected, line: int) -> str:
    return " | ".join(error.message for error in exc.errors if error.line == line)


# --- good files ------------------------------------------------------------------------------


def test_quoted_url_list_is_split_and_values_kept() -> None:
    parsed = parse(csv_bytes(HEAD, f'1,Blue shirt,"{A}, {B} ,{C}"', f"2,Red hat,{A}"))

    assert parsed.header == list(HEADER)
    first, second = parsed.rows
    assert first == BatchRow(
        line=2,
        serial="1",
        product_name="Blue shirt",
        urls=[A, B, C],
        values=["1", "Blue shirt", f"{A}, {B} ,{C}"],
    )
    assert second.line == 3
    assert second.urls == [A]


def test_bom_and_crlf() -> None:
    parsed = parse(csv_bytes(HEAD, f'1,Shirt,"{A},{B}"', f"2,Hat,{C}", newline="\r\n", bom=True))

    assert parsed.header == list(HEADER)
    assert [row.line for row in parsed.rows] == [2, 3]
    assert parsed.rows[0].urls == [A, B]
    assert parsed.rows[1].values == ["2", "Hat", C]


def test_blank_and_comma_only_lines_are_skipped_but_counted() -> None:
    data = csv_bytes(
        "", HEAD, "", f"1,Shirt,{A}", ",,", "   ", "", f"2,Hat,{B}", "", newline="\r\n"
    )

    parsed = parse(data)

    assert [row.line for row in parsed.rows] == [4, 8]


def test_columns_in_any_order_and_header_whitespace() -> None:
    parsed = parse(csv_bytes(" Input Image Urls ,S. No.,Product Name ", f'"{A},{B}",7,Mug'))

    assert parsed.header == ["Input Image Urls", "S. No.", "Product Name"]
    row = parsed.rows[0]
    assert (row.serial, row.product_name, row.urls) == ("7", "Mug", [A, B])
    assert row.values == [f"{A},{B}", "7", "Mug"]


def test_unquoted_url_list_in_last_column_is_gathered() -> None:
    # The format's own example writes the list unquoted; the extra cells can only be URLs.
    parsed = parse(csv_bytes(HEAD, f"1,SKU1,{A},{B}", f"2,SKU2,{C}"))

    assert parsed.rows[0].urls == [A, B]
    assert parsed.rows[0].values == ["1", "SKU1", f"{A},{B}"]
    assert parsed.rows[1].urls == [C]


def test_extra_cells_when_urls_are_not_last_are_a_row_error() -> None:
    exc = rejected(csv_bytes("Input Image Urls,S. No.,Product Name", f"{A},{B},1,Mug"))

    assert exc.code == "batch.csv_rows"
    assert error_lines(exc) == [2]
    assert "4 cells" in messages_on(exc, 2)


def test_missing_cells_are_a_row_error() -> None:
    exc = rejected(csv_bytes(HEAD, "1,Shirt", f"2,Hat,{A}"))

    assert error_lines(exc) == [2]
    assert "2 cells" in messages_on(exc, 2)


def test_duplicate_urls_in_a_row_are_kept_once_and_empty_entries_dropped() -> None:
    parsed = parse(csv_bytes(HEAD, f'1,Shirt,"{A},,{B}, {A} ,,"'))

    assert parsed.rows[0].urls == [A, B]


def test_multiline_product_name_is_kept() -> None:
    parsed = parse(csv_bytes(HEAD, f'1,"Shirt\nwith two lines",{A}', f"2,Hat,{B}"))

    assert parsed.rows[0].product_name == "Shirt\nwith two lines"
    assert [row.line for row in parsed.rows] == [2, 4]


def test_space_before_a_quoted_cell_still_quotes_it() -> None:
    parsed = parse(csv_bytes(HEAD, f'1, Shirt, "{A}, {B}"'))

    assert parsed.rows[0].urls == [A, B]
    assert parsed.rows[0].product_name == "Shirt"


@pytest.mark.parametrize(
    "url",
    [
        "HTTPS://IMG.EXAMPLE.COM/A.JPG",
        "http://example.com",
        "https://example.com:8443/p/q.jpg?x=1&y=2#frag",
        "https://bücher.example/ß.jpg",
        "http://[2001:db8::1]/a.jpg",
        "https://example.com/" + "a" * 2000,
    ],
)
def test_acceptable_url_forms(url: str) -> None:
    assert parse(csv_bytes(HEAD, f'1,Item,"{url}"')).rows[0].urls == [url]


# --- whole-file refusals ---------------------------------------------------------------------


def test_too_large_is_refused_before_parsing() -> None:
    data = csv_bytes(HEAD, f"1,Shirt,{A}")

    exc = rejected(data, CsvLimits(max_bytes=len(data) - 1))

    assert exc.code == "batch.csv_too_large"
    assert parse(data, CsvLimits(max_bytes=len(data))).rows


@pytest.mark.parametrize(
    "data",
    [
        HEAD.encode() + "\n1,Café,".encode("latin-1") + A.encode() + b"\n",
        f"{HEAD}\n1,Shirt,{A}\n".encode("utf-16"),
        b"\xff\xfe\x00\x00garbage",
    ],
    ids=["latin-1", "utf-16", "binary"],
)
def test_non_utf8_is_refused(data: bytes) -> None:
    exc = rejected(data)

    assert exc.code == "batch.csv_encoding"


def test_encoding_error_names_its_line() -> None:
    data = (HEAD + "\n" + f"1,Shirt,{A}\n2,Caf").encode() + b"\xe9" + f",{B}\n".encode()

    assert "line 3" in rejected(data).message


@pytest.mark.parametrize(
    "data",
    [b"", b"\n\r\n\n", codecs.BOM_UTF8, codecs.BOM_UTF8 + b"  \r\n", b",,\n,,\n"],
    ids=["nothing", "blank-lines", "bom-only", "bom-and-space", "commas-only"],
)
def test_empty_file(data: bytes) -> None:
    assert rejected(data).code == "batch.csv_empty"


def test_header_without_rows_is_empty() -> None:
    assert rejected(csv_bytes(HEAD, "", ",,")).code == "batch.csv_empty"


@pytest.mark.parametrize(
    ("header", "mentioned"),
    [
        ("S. No.,Product Name", ["missing", "Input Image Urls"]),
        ("Product Name,Input Image Urls", ["missing", "S. No."]),
        (HEAD + ",Price", ["unexpected", "Price"]),
        (HEAD + ",", ["unexpected", "''"]),
        ("S. No.,Product name,Input Image Urls", ["rename 'Product name' to 'Product Name'"]),
        ("S No,Product Name,Input Image Urls", ["missing", "S. No.", "unexpected", "S No"]),
        ("S. No.,Product Name,Input Image URLs", ["rename 'Input Image URLs'"]),
        (HEAD + ",Product Name", ["repeated", "Product Name"]),
        ("S. No.;Product Name;Input Image Urls", ["';'"]),
        (f"1,Shirt,{A}", ["missing", "S. No."]),
    ],
    ids=[
        "no-urls",
        "no-serial",
        "extra",
        "extra-empty",
        "case",
        "misspelled",
        "urls-case",
        "repeated",
        "semicolons",
        "no-header",
    ],
)
def test_header_must_match_exactly(header: str, mentioned: list[str]) -> None:
    exc = rejected(csv_bytes(header, f"1,Shirt,{A}"))

    assert exc.code == "batch.csv_header"
    for text in mentioned:
        assert text in exc.message
    assert [error.line for error in exc.errors] == [1]


def test_header_line_is_the_first_non_blank_line() -> None:
    exc = rejected(csv_bytes("", "", "S. No.,Name,Input Image Urls", f"1,Shirt,{A}"))

    assert exc.errors == [RowError(3, exc.errors[0].message)]
    assert "line 3" in exc.message


def test_too_many_rows_stops_early(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    real_read_row = csvio._read_row

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return real_read_row(*args, **kwargs)

    monkeypatch.setattr(csvio, "_read_row", counting)
    data = csv_bytes(HEAD, *(f"{n},Item {n},{A}?n={n}" for n in range(1, 10_001)))

    exc = rejected(data, CsvLimits(max_rows=1000, max_urls_total=100_000))

    assert exc.code == "batch.too_many_rows"
    assert "1000" in exc.message
    assert calls == 1000


def test_row_limit_counts_bad_rows_and_not_blank_lines() -> None:
    limits = CsvLimits(max_rows=3)
    rows = [f"1,Shirt,{A}", "", ",,", "2,,x", f"3,Hat,{B}"]

    assert rejected(csv_bytes(HEAD, *rows), limits).code == "batch.csv_rows"
    assert rejected(csv_bytes(HEAD, *rows, f"4,Cap,{C}"), limits).code == "batch.too_many_rows"
    assert len(parse(csv_bytes(HEAD, f"1,Shirt,{A}", "", f"2,Hat,{B}"), limits).rows) == 2


def test_too_many_urls_in_total() -> None:
    limits = CsvLimits(max_urls_total=5)
    rows = [f'{n},Item,"{A}?{n}a,{A}?{n}b"' for n in range(1, 4)]

    exc = rejected(csv_bytes(HEAD, *rows), limits)

    assert exc.code == "batch.too_many_urls"
    assert len(parse(csv_bytes(HEAD, *rows[:2], f"3,Item,{C}"), limits).rows) == 3


# --- row errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://files.example.com/a.jpg", "http:// or https://"),
        ("javascript:alert(1)", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("data:image/png;base64,AAAA", "http:// or https://"),
        ("gopher://example.com/", "http:// or https://"),
        ("//example.com/a.jpg", "http:// or https://"),
        ("example.com/a.jpg", "http:// or https://"),
        ("http://", "no host"),
        ("https:///a.jpg", "no host"),
        ("http://exa mple.com/a.jpg", "spaces or control"),
        ("http://example.com/a b.jpg", "spaces or control"),
        ("http://example.com/a\tb.jpg", "spaces or control"),
        ("http://example.com/\x1b[31m.jpg", "spaces or control"),
        ("http://example.com/\u0085.jpg", "spaces or control"),
        ("http://example.com\\@internal/a.jpg", "backslash"),
        ("http://user:pw@example.com/a.jpg", "user name or password"),
        ("http://example.com:99999/a.jpg", "not a valid URL"),
        ("http://example.com:port/a.jpg", "not a valid URL"),
        ("http://[::1/a.jpg", "not a valid URL"),
        ("https://example.com/" + "a" * 2030, "longer than 2048"),
    ],
)
def test_bad_urls(url: str, problem: str) -> None:
    exc = rejected(csv_bytes(HEAD, f'1,Item,"{A},{url}"'))

    assert exc.code == "batch.csv_rows"
    message = messages_on(exc, 2)
    assert "URL 2" in message
    assert problem in message


def test_empty_product_name_and_serial() -> None:
    exc = rejected(csv_bytes(HEAD, f"1,  ,{A}", f'"   ",Hat,{A}', f",,{A}"))

    assert error_lines(exc) == [2, 3, 4]
    assert "Product Name is empty" in messages_on(exc, 2)
    assert "S. No. is empty" in messages_on(exc, 3)
    assert "S. No. is empty" in messages_on(exc, 4)
    assert "Product Name is empty" in messages_on(exc, 4)


def test_no_url_in_a_row() -> None:
    exc = rejected(csv_bytes(HEAD, '1,Shirt," , ,"', "2,Hat,"))

    assert error_lines(exc) == [2, 3]
    assert "no URL" in messages_on(exc, 2)


def test_too_many_urls_in_a_row() -> None:
    limits = CsvLimits(max_urls_per_row=3)
    urls = ",".join(f"{A}?{n}" for n in range(4))

    exc = rejected(csv_bytes(HEAD, f'1,Shirt,"{urls}"', f"2,Hat,{B}"), limits)

    assert exc.code == "batch.csv_rows"
    assert error_lines(exc) == [2]
    assert "4 URLs" in messages_on(exc, 2)
    # Duplicates do not count against the limit: they are fetched once.
    same = ",".join([A] * 10)
    assert parse(csv_bytes(HEAD, f'1,Shirt,"{same}"'), limits).rows[0].urls == [A]


def test_a_cell_of_many_urls_is_one_error_and_cheap() -> None:
    many = ",".join(f"http://h/{n}" for n in range(8_000))  # ~110 KiB in one cell
    assert len(many) < csv.field_size_limit()

    exc = rejected(csv_bytes(HEAD, f'1,Shirt,"{many}"', "2,,ftp://x"))

    assert error_lines(exc) == [2, 3]
    assert [e.message for e in exc.errors if e.line == 2] == [
        "Input Image Urls has 8000 URLs; at most 20 are allowed."
    ]


def test_a_cell_over_the_csv_field_limit_is_reported() -> None:
    huge = "x" * (csv.field_size_limit() + 1)

    exc = rejected(csv_bytes(HEAD, f"1,Shirt,{A}", f"2,{huge},{A}"))

    assert exc.code == "batch.csv_rows"
    assert error_lines(exc) == [3]
    assert "field larger than field limit" in messages_on(exc, 3)


def test_nul_bytes_are_reported_not_crashed_on() -> None:
    exc = rejected(csv_bytes(HEAD, f"1,Sh\x00irt,{A}", f"2,Hat,{A}\x00", f"3,Cap,{B}"))

    assert exc.code == "batch.csv_rows"
    assert error_lines(exc) == [2, 3]
    assert "NUL" in messages_on(exc, 2)
    assert rejected(csv_bytes("S. No.\x00,Product Name,Input Image Urls")).code == (
        "batch.csv_header"
    )


def test_every_bad_row_is_listed_with_its_line() -> None:
    lines = [
        HEAD,  # 1
        f"1,Good,{A}",  # 2
        "2,Bad URL,ftp://x/a.jpg",  # 3: bad
        "",  # 4
        '3,"A name over',  # 5: bad, the row spans lines 5-6
        'two lines",javascript:void(0)',  # 6
        "",  # 7
        f",No serial,{B}",  # 8: bad
        f'4,"Quoted ""name""","{A}, {B}"',  # 9
        '5,"Two',  # 10
        f'lines",{C}',  # 11
        f"6,,{C}",  # 12: bad
        ",,",  # 13
        f"7,Fine,{C}",  # 14
        "8,Spaces,http://a b.example/x.jpg",  # 15: bad
    ]

    exc = rejected(csv_bytes(*lines, newline="\r\n"))

    assert exc.code == "batch.csv_rows"
    assert error_lines(exc) == [3, 5, 8, 12, 15]
    assert "ftp://" in messages_on(exc, 3)
    assert "javascript:" in messages_on(exc, 5)
    assert "S. No. is empty" in messages_on(exc, 8)
    assert "Product Name is empty" in messages_on(exc, 12)
    assert "spaces" in messages_on(exc, 15)
    assert "5 rows" in exc.message


def test_line_numbers_follow_quoted_newlines_of_every_kind() -> None:
    data = (
        HEAD.encode()
        + b"\r\n"
        + b'1,"a\r\nb\nc\rd",'
        + A.encode()
        + b"\n"
        + b"2,,"
        + B.encode()
        + b"\r\n"
    )

    exc = rejected(data)

    assert error_lines(exc) == [6]


def test_unterminated_quote_is_reported_where_it_starts() -> None:
    exc = rejected(csv_bytes(HEAD, "1,Shirt,ftp://x", f'2,"Hat,{A}', f"3,Cap,{B}", f"4,Mug,{C}"))

    assert exc.code == "batch.csv_rows"
    assert error_lines(exc) == [2, 3]
    assert "never closed" in messages_on(exc, 3)


def test_broken_quoting_is_reported_and_ends_the_report() -> None:
    exc = rejected(csv_bytes(HEAD, f'1,"Shirt"XL,{A}', "2,,ftp://x"))

    assert error_lines(exc) == [2]
    assert "quoting" in messages_on(exc, 2)


def test_broken_header_quoting() -> None:
    exc = rejected(csv_bytes('"S. No.,Product Name,Input Image Urls'))

    assert exc.code == "batch.csv_header"


def test_formula_looking_cells_are_accepted_as_input() -> None:
    parsed = parse(csv_bytes(HEAD, f'=1+1,"=HYPERLINK(""http://evil"",""x"")",{A}', f"@SUM,-2,{B}"))

    assert parsed.rows[0].serial == "=1+1"
    assert parsed.rows[1].product_name == "-2"


def test_rejection_carries_code_and_errors() -> None:
    exc = CsvRejected("nope", code="batch.csv_rows", errors=[RowError(2, "x")])

    assert (str(exc), exc.code, exc.errors) == ("nope", "batch.csv_rows", [RowError(2, "x")])
    assert CsvRejected("nope", code="batch.csv_empty").errors == []


# --- output ----------------------------------------------------------------------------------


def read_output(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def ok(url: str) -> Outcome:
    return Outcome(output_url=url)


def bad(code: str) -> Outcome:
    return Outcome(error_code=code)


def test_output_round_trips_with_quoting() -> None:
    parsed = parse(csv_bytes(HEAD, f'1,"Shirt, blue",{A}', f'2,"Hat\nwide","{B},{C}"'))
    out_a = "https://atelier.example/o/1.jpg"
    out_b, out_c = "https://atelier.example/o/2.jpg", "https://atelier.example/o/3.jpg"

    data = write_output(parsed, {2: {A: ok(out_a)}, 3: {B: ok(out_b), C: ok(out_c)}})

    assert not data.startswith(codecs.BOM_UTF8)
    assert data.startswith(b"S. No.,Product Name,Input Image Urls,Output Image Urls,Errors\r\n")
    assert read_output(data) == [
        [*HEADER, OUTPUT_COLUMN, ERRORS_COLUMN],
        ["1", "Shirt, blue", A, out_a, ""],
        ["2", "Hat\nwide", f"{B},{C}", f"{out_b},{out_c}", ""],
    ]
    # The output can be uploaded again once the extra columns are dropped.
    again = parse(
        "\r\n".join(
            ",".join(_quote(cell) for cell in row[:3]) for row in read_output(data)
        ).encode()
    )
    assert [row.urls for row in again.rows] == [row.urls for row in parsed.rows]


def _quote(cell: str) -> str:
    return '"' + cell.replace('"', '""') + '"'


def test_output_keeps_one_slot_per_input_url_and_names_failures() -> None:
    parsed = parse(csv_bytes(HEAD, f'1,Shirt,"{A},{B},{C}"', f"2,Hat,{A}", f'3,Cap,"{B},{C}"'))

    data = write_output(
        parsed,
        {
            2: {A: bad("fetch.http_status"), B: ok("https://o/2"), C: bad("upload.bad_magic")},
            3: {A: bad("fetch.timeout")},
            4: {B: ok("https://o/4"), C: Outcome()},  # C not tried yet
        },
    )

    rows = read_output(data)
    assert [row[3:] for row in rows[1:]] == [
        [",https://o/2,", f"{A}: fetch.http_status; {C}: upload.bad_magic"],
        ["", f"{A}: fetch.timeout"],
        ["https://o/4,", ""],
    ]
    # The n-th output slot belongs to the n-th input URL.
    for row in rows[1:]:
        assert len(row[3].split(",")) == len(row[2].split(","))


def test_output_slots_follow_the_cell_as_written() -> None:
    # Repeats and stray commas in the input: the items are per distinct URL, the slots per
    # URL as written, and a failed URL is named once.
    parsed = parse(csv_bytes(HEAD, f'1,Shirt,"{A}, ,{B},{A}"'))

    rows = read_output(write_output(parsed, {2: {A: ok("https://o/a"), B: bad("fetch.dns")}}))

    assert rows[1][3:] == ["https://o/a,,https://o/a", f"{B}: fetch.dns"]


def test_output_keeps_the_uploaded_column_order_and_values() -> None:
    parsed = parse(csv_bytes("Product Name, Input Image Urls ,S. No.", f'Mug ," {A} , {B}",  9'))

    rows = read_output(write_output(parsed, {2: {A: ok("https://o/1"), B: ok("https://o/2")}}))

    assert rows[0] == ["Product Name", "Input Image Urls", "S. No.", OUTPUT_COLUMN, ERRORS_COLUMN]
    assert rows[1] == ["Mug ", f" {A} , {B}", "9", "https://o/1,https://o/2", ""]


@pytest.mark.parametrize(
    "cell",
    [
        "=1+1",
        '=HYPERLINK("http://evil.example","click")',
        "+SUM(A1)",
        "-2+3",
        "@SUM(A1)",
        "\t=1",
        "\r=1",
        "\uff1d1+1",
    ],
)
def test_output_neutralises_formulas(cell: str) -> None:
    parsed = ParsedCsv(header=list(HEADER), rows=[BatchRow(2, cell, cell, [A], [cell, cell, A])])

    rows = read_output(write_output(parsed, {2: {A: ok("https://o/1")}}))

    assert rows[1] == ["'" + cell, "'" + cell, A, "https://o/1", ""]


def test_output_leaves_ordinary_cells_alone() -> None:
    cells = ["1", "Shirt = good", "it's", "'quoted", " =spaced", "a-b", "#1"]
    parsed = ParsedCsv(header=list(HEADER), rows=[BatchRow(2, c, c, [A], [c, c, A]) for c in cells])

    rows = read_output(write_output(parsed, {}))

    assert [row[0] for row in rows[1:]] == cells


def test_output_from_stored_rows_needs_only_line_and_values() -> None:
    # The service rebuilds rows from the database without serial, name or URLs.
    parsed = ParsedCsv(
        header=list(HEADER), rows=[BatchRow(5, "", "", [], ["1", "Shirt", f"{A},{B}"])]
    )

    rows = read_output(write_output(parsed, {5: {A: ok("https://o/a"), B: bad("fetch.dns")}}))

    assert rows[1] == ["1", "Shirt", f"{A},{B}", "https://o/a,", f"{B}: fetch.dns"]
