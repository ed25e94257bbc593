"""Upload validation: declared names/types/sizes and the checks on the real bytes."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import textwrap
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from backend.images.validation import (
    ALLOWED_TYPES,
    ImageInfo,
    ValidationFailure,
    check_declared,
    inspect,
    sanitize_filename,
)
from tests.images import samples

MB = 1024 * 1024
MAX_BYTES = 25 * MB
MAX_PIXELS = 50_000_000
REPO = Path(__file__).resolve().parents[2]


def check(data: bytes, declared: str = "image/jpeg", **limits: int) -> ImageInfo:
    return inspect(
        data,
        declared_type=declared,
        max_bytes=limits.get("max_bytes", MAX_BYTES),
        max_pixels=limits.get("max_pixels", MAX_PIXELS),
    )


def refused(data: bytes, declared: str = "image/jpeg", **limits: int) -> str:
    with pytest.raises(ValidationFailure) as caught:
        check(data, declared, **limits)
    assert caught.value.message, "every failure carries words for the user"
    return caught.value.code


def outcome(data: bytes, declared: str) -> str:
    """The format on success, the failure code otherwise; any other exception propagates."""
    try:
        return check(data, declared).format
    except ValidationFailure as failure:
        return failure.code


# --- allow-list and failure type -----------------------------------------------------------


def test_allow_list_is_exactly_the_four_formats() -> None:
    assert ALLOWED_TYPES == {
        "image/jpeg": (".jpg", ".jpeg"),
        "image/png": (".png",),
        "image/webp": (".webp",),
        "image/gif": (".gif",),
    }


def test_validation_failure_carries_code_and_message() -> None:
    failure = ValidationFailure("upload.too_large", "Too big.")
    assert isinstance(failure, Exception)
    assert (failure.code, failure.message, str(failure)) == (
        "upload.too_large",
        "Too big.",
        "Too big.",
    )


# --- sanitize_filename ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("photo.jpg", "photo.jpg"),
        ("holiday/2024/photo.jpg", "photo.jpg"),
        ("../../etc/passwd.png", "passwd.png"),
        ("C:\\Users\\me\\Pictures\\cat.gif", "cat.gif"),
        ("..\\..\\windows\\system32\\x.webp", "x.webp"),
        ("mixed/dirs\\and/more\\pic.jpeg", "pic.jpeg"),
        ("ev\x00il.jpg", "evil.jpg"),
        ("tab\tand\nnewline.png", "tab and newline.png"),
        ("bell\x07\x1b[31mred.png", "bell[31mred.png"),
        (".hidden.png", "hidden.png"),
        ("...dots.png", "dots.png"),
        (".jpg", "upload.jpg"),
        ("..jpg", "upload.jpg"),
        ("a..b....c.png", "a.b.c.png"),
        ("  my   holiday \t photo .JPG  ", "my holiday photo.jpg"),
        ("photo\u202egpj.exe", "photogpj.exe"),
        ("lone\ud800surrogate.png", "lonesurrogate.png"),
        ("zero\u200bwidth.png", "zerowidth.png"),
        ('quote"and<angle>|pipe?.png', "quote_and_angle__pipe_.png"),
        ("Zoë's café.jpg", "Zoë's café.jpg"),
        ("no_extension", "no_extension"),
    ],
)
def test_sanitize_filename(raw: str, expected: str) -> None:
    assert sanitize_filename(raw) == expected


def test_sanitize_filename_caps_length_and_keeps_extension() -> None:
    name = sanitize_filename("a" * 300 + ".jpeg")
    assert len(name) == 150
    assert name == "a" * 145 + ".jpeg"


def test_sanitize_filename_caps_without_extension() -> None:
    assert sanitize_filename("b" * 300) == "b" * 150


def test_sanitize_filename_long_directory_parts_do_not_count() -> None:
    assert sanitize_filename("d" * 400 + "/short.png") == "short.png"


@pytest.mark.parametrize(
    "raw", ["", "   ", "/", "\\", "..", "../..", "dir/", "\x00\x01\x02", "..."]
)
def test_sanitize_filename_refuses_names_with_nothing_left(raw: str) -> None:
    with pytest.raises(ValidationFailure) as caught:
        sanitize_filename(raw)
    assert caught.value.code == "upload.bad_filename"


# --- check_declared ------------------------------------------------------------------------


def test_check_declared_accepts_and_returns_sanitized_name() -> None:
    assert check_declared("../x/photo.JPG", "image/jpeg", 1000, max_bytes=MAX_BYTES) == "photo.jpg"


@pytest.mark.parametrize(
    ("filename", "content_type"),
    [
        ("a.jpg", "image/jpeg"),
        ("a.jpeg", "image/jpeg"),
        ("a.png", "image/png"),
        ("a.webp", "image/webp"),
        ("a.gif", "image/gif"),
        ("a.JPG", "IMAGE/JPEG"),
        ("a.png", "image/png; charset=binary"),
    ],
)
def test_check_declared_accepts_every_allowed_pair(filename: str, content_type: str) -> None:
    check_declared(filename, content_type, 10, max_bytes=MAX_BYTES)


def test_check_declared_size_limit_is_inclusive() -> None:
    check_declared("a.png", "image/png", MAX_BYTES, max_bytes=MAX_BYTES)


@pytest.mark.parametrize(
    ("filename", "content_type", "size", "code"),
    [
        ("a.jpg", "image/jpeg", 0, "upload.empty"),
        ("a.jpg", "image/jpeg", -5, "upload.empty"),
        ("a.jpg", "image/jpeg", MAX_BYTES + 1, "upload.too_large"),
        ("book.xlsx", "application/vnd.ms-excel", 10, "upload.unsupported_type"),
        ("book.jpg", "application/vnd.ms-excel", 10, "upload.unsupported_type"),
        ("drawing.svg", "image/svg+xml", 10, "upload.unsupported_type"),
        ("drawing.svg", "image/jpeg", 10, "upload.unsupported_type"),
        ("page.html", "text/html", 10, "upload.unsupported_type"),
        ("photo.heic", "image/heic", 10, "upload.unsupported_type"),
        ("photo", "image/jpeg", 10, "upload.unsupported_type"),
        ("photo.jpg", "", 10, "upload.unsupported_type"),
        ("photo.png", "image/jpeg", 10, "upload.type_mismatch"),
        ("photo.jpg", "image/png", 10, "upload.type_mismatch"),
        ("anim.gif", "image/webp", 10, "upload.type_mismatch"),
        ("..", "image/jpeg", 10, "upload.bad_filename"),
    ],
)
def test_check_declared_refuses(filename: str, content_type: str, size: int, code: str) -> None:
    with pytest.raises(ValidationFailure) as caught:
        check_declared(filename, content_type, size, max_bytes=MAX_BYTES)
    assert caught.value.code == code


def test_check_declared_checks_size_before_type() -> None:
    for size, code in ((0, "upload.empty"), (MAX_BYTES + 1, "upload.too_large")):
        with pytest.raises(ValidationFailure) as caught:
            check_declared("x.exe", "application/x-msdownload", size, max_bytes=MAX_BYTES)
        assert caught.value.code == code


def test_check_declared_checks_allow_list_before_agreement() -> None:
    with pytest.raises(ValidationFailure) as caught:
        check_declared("x.png", "image/tiff", 10, max_bytes=MAX_BYTES)
    assert caught.value.code == "upload.unsupported_type"


# --- inspect: good files -------------------------------------------------------------------


@pytest.mark.parametrize("name", list(samples.ALL_GOOD))
def test_inspect_accepts_every_good_sample(name: str) -> None:
    fmt, mime = samples.ALL_GOOD[name]
    data: bytes = getattr(samples, name)()
    info = check(data, mime)
    with Image.open(io.BytesIO(data)) as im:
        assert (info.width, info.height) == im.size
    assert info == ImageInfo(
        format=fmt,
        mime=mime,
        width=info.width,
        height=info.height,
        frames=1,
        has_alpha=name == "png_rgba",
    )


def test_inspect_reports_stored_size_before_orientation() -> None:
    info = check(samples.oriented_jpeg(6))
    assert (info.width, info.height) == (60, 90)


def test_inspect_accepts_declared_type_with_parameters() -> None:
    assert check(samples.png(), " Image/PNG ; foo=bar").format == "png"


def test_inspect_accepts_jpeg_with_markers_inside_segments() -> None:
    # An end-of-image marker and a zip signature inside a comment are not trailing data.
    assert check(samples.jpeg_with_comment(b"\xff\xd9PK\x03\x04 not the end")).format == "jpeg"


def test_inspect_accepts_exif_heavy_jpeg_with_icc() -> None:
    assert check(samples.jpeg_with_icc_and_exif()).width == 400


def test_inspect_pixel_limit_is_inclusive() -> None:
    data = samples.png((64, 48))
    assert check(data, "image/png", max_pixels=64 * 48).width == 64
    assert refused(data, "image/png", max_pixels=64 * 48 - 1) == "upload.too_many_pixels"


# --- inspect: size, magic, declared type ---------------------------------------------------


def test_inspect_refuses_empty() -> None:
    assert refused(b"") == "upload.empty"


def test_inspect_refuses_too_large() -> None:
    data = samples.jpeg()
    assert refused(data, max_bytes=len(data) - 1) == "upload.too_large"
    assert check(data, max_bytes=len(data)).format == "jpeg"


@pytest.mark.parametrize(
    "make",
    [samples.xlsx_bytes, samples.zip_archive, samples.svg, samples.html],
    ids=["xlsx-renamed-jpg", "zip", "svg", "html"],
)
def test_inspect_refuses_non_images(make: Callable[[], bytes]) -> None:
    assert refused(make(), "image/jpeg") == "upload.unrecognized"


@pytest.mark.parametrize(
    "data",
    [b"\x00", b"\xff\xd8", b"GIF87", b"RIFF\x00\x00\x00\x00WEBX", b"BM" + b"\x00" * 60],
    ids=["one-byte", "short-jpeg-magic", "short-gif-magic", "not-webp-riff", "bmp"],
)
def test_inspect_refuses_unknown_magic(data: bytes) -> None:
    assert refused(data) == "upload.unrecognized"


@pytest.mark.parametrize(
    ("make", "declared"),
    [
        (samples.png, "image/jpeg"),
        (samples.jpeg, "image/png"),
        (samples.gif, "image/webp"),
        (samples.webp, "image/gif"),
        (samples.jpeg, "application/octet-stream"),
        (samples.jpeg, ""),
    ],
)
def test_inspect_refuses_magic_mismatch(make: Callable[[], bytes], declared: str) -> None:
    assert refused(make(), declared) == "upload.magic_mismatch"


def test_inspect_checks_size_before_magic() -> None:
    assert refused(samples.xlsx_bytes(), max_bytes=10) == "upload.too_large"


def test_inspect_checks_magic_agreement_before_pixels() -> None:
    assert refused(samples.png_bomb(), "image/jpeg") == "upload.magic_mismatch"


# --- inspect: decompression bombs ----------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "declared"),
    [
        (samples.png_bomb, "image/png"),
        (samples.jpeg_bomb, "image/jpeg"),
        (samples.gif_bomb, "image/gif"),
        (samples.webp_bomb, "image/webp"),
    ],
)
def test_inspect_refuses_decompression_bombs(make: Callable[[], bytes], declared: str) -> None:
    data = make()
    assert len(data) < 2048
    assert refused(data, declared) == "upload.too_many_pixels"


def test_png_bomb_is_refused_without_allocating() -> None:
    data = samples.png_bomb(100_000, 100_000)
    tracemalloc.start()
    try:
        code = refused(data, "image/png")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == "upload.too_many_pixels"
    assert peak < 1 * MB, f"peak traced allocation {peak} bytes"


_BOUNDED_CHILD = textwrap.dedent(
    """
    import resource, sys
    from tests.images import samples
    from backend.images.validation import ValidationFailure, inspect

    cases = [
        (samples.png_bomb(100_000, 100_000), "image/png"),
        (samples.jpeg_bomb(), "image/jpeg"),
        (samples.gif_bomb(), "image/gif"),
        (samples.webp_bomb(), "image/webp"),
    ]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Address space, not just resident memory: even a lazily-touched canvas would fail here.
    with open("/proc/self/statm") as statm:
        vm_bytes = int(statm.read().split()[0]) * resource.getpagesize()
    limit = vm_bytes + 256 * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    codes = []
    for data, declared in cases:
        try:
            inspect(data, declared_type=declared, max_bytes=10**8, max_pixels=50_000_000)
            codes.append("accepted")
        except ValidationFailure as failure:
            codes.append(failure.code)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(",".join(codes), after - before)
    """
)


def test_bombs_are_refused_under_an_address_space_limit() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _BOUNDED_CHILD],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    codes, rss_growth_kb = result.stdout.split()
    assert codes.split(",") == ["upload.too_many_pixels"] * 4
    assert int(rss_growth_kb) < 20 * 1024


def test_pillow_bomb_error_becomes_our_code(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pillow checks WebP canvases against its own global limit while opening; that error is
    # reported with our code even when the caller's limit is higher.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert refused(samples.webp((64, 48)), "image/webp", max_pixels=10**9) == (
        "upload.too_many_pixels"
    )


def test_pillow_bomb_warning_raised_as_error_becomes_our_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A GIF frame larger than its screen makes Pillow grow the canvas and run its bomb check,
    # which warns between MAX_IMAGE_PIXELS and twice that; under an "error" filter it raises.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    data = samples.gif_frame_larger_than_screen((8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert refused(data, "image/gif", max_pixels=10**9) == "upload.too_many_pixels"


def test_gif_frame_outside_screen_counts_toward_pixels() -> None:
    data = samples.gif_frame_larger_than_screen((8, 8))
    assert check(data, "image/gif").width == 64
    assert refused(data, "image/gif", max_pixels=64 * 48 - 1) == "upload.too_many_pixels"


# --- inspect: animation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "declared"),
    [
        (samples.gif_animated, "image/gif"),
        (samples.webp_animated, "image/webp"),
        (samples.apng, "image/png"),
    ],
)
def test_inspect_refuses_animated(make: Callable[[], bytes], declared: str) -> None:
    assert refused(make(), declared) == "upload.animated_unsupported"


# --- inspect: corrupt and truncated --------------------------------------------------------


def test_truncated_images_flag_is_not_enabled_globally() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize(
    ("make", "declared"),
    [
        (samples.truncated_jpeg, "image/jpeg"),
        (lambda: samples.truncated(samples.progressive_jpeg()), "image/jpeg"),
        (lambda: samples.jpeg()[:-2], "image/jpeg"),
        (lambda: samples.truncated(samples.png((300, 200)), 0.5), "image/png"),
        (lambda: samples.png()[:-12], "image/png"),
        (lambda: samples.truncated(samples.gif((300, 200)), 0.5), "image/gif"),
        (lambda: samples.truncated(samples.webp((300, 200)), 0.5), "image/webp"),
        (lambda: samples.jpeg()[:3] + b"\x00" * 200, "image/jpeg"),
        (lambda: samples.png()[:16] + b"\xff" * 64, "image/png"),
        (lambda: b"GIF89a" + b"\x01", "image/gif"),
        (lambda: b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 8, "image/webp"),
    ],
    ids=[
        "jpeg-truncated",
        "progressive-jpeg-truncated",
        "jpeg-without-eoi",
        "png-truncated",
        "png-without-iend",
        "gif-truncated",
        "webp-truncated",
        "jpeg-garbage-after-magic",
        "png-garbage-header",
        "gif-header-only",
        "webp-empty-bitstream",
    ],
)
def test_inspect_refuses_corrupt(make: Callable[[], bytes], declared: str) -> None:
    assert refused(make(), declared) == "upload.corrupt"


def test_truncated_jpeg_fails_even_if_truncation_is_tolerated_globally(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert refused(samples.truncated_jpeg()) == "upload.corrupt"


@pytest.mark.parametrize("name", ["jpeg", "progressive_jpeg", "png_rgba", "gif", "webp"])
def test_mutated_files_never_escape_as_other_exceptions(name: str) -> None:
    """Flipped bytes and cuts anywhere: the answer is an ImageInfo or a ValidationFailure."""
    fmt, mime = samples.ALL_GOOD[name]
    original: bytes = getattr(samples, name)()
    rng = random.Random(f"{name}-mutations")
    for _ in range(150):
        data = bytearray(original)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            del data[rng.randrange(1, len(data)) :]
        result = outcome(bytes(data), mime)
        assert result == fmt or result.startswith("upload."), result


# --- inspect: trailing data ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "declared"),
    [
        (samples.jpeg_zip_polyglot, "image/jpeg"),
        (lambda: samples.polyglot(samples.png()), "image/png"),
        (lambda: samples.polyglot(samples.gif()), "image/gif"),
        (lambda: samples.polyglot(samples.webp()), "image/webp"),
        (lambda: samples.polyglot(samples.mpo()), "image/jpeg"),
        (lambda: samples.jpeg() + samples.jpeg(), "image/jpeg"),
        (lambda: samples.jpeg() + b"<?php echo 1; ?>!", "image/jpeg"),
    ],
    ids=["jpeg+zip", "png+zip", "gif+zip", "webp+zip", "mpo+zip", "jpeg+jpeg", "jpeg+php"],
)
def test_inspect_refuses_trailing_data(make: Callable[[], bytes], declared: str) -> None:
    assert refused(make(), declared) == "upload.trailing_data"


@pytest.mark.parametrize("name", ["jpeg", "png", "gif", "webp"])
def test_inspect_allows_small_padding(name: str) -> None:
    _, mime = samples.ALL_GOOD[name]
    data: bytes = getattr(samples, name)()
    assert check(data + b"\x00" * 16, mime).format == name
    assert refused(data + b"\x00" * 17, mime) == "upload.trailing_data"


def test_multi_picture_jpeg_is_one_image_not_trailing_data() -> None:
    info = check(samples.mpo())
    assert (info.format, info.frames) == ("jpeg", 1)


# --- order of checks -----------------------------------------------------------------------


def test_inspect_checks_pixels_before_animation_and_decode() -> None:
    data = samples.gif_animated((64, 48))
    assert refused(data, "image/gif", max_pixels=100) == "upload.too_many_pixels"


def test_inspect_checks_animation_before_trailing_data() -> None:
    data = samples.polyglot(samples.gif_animated())
    assert refused(data, "image/gif") == "upload.animated_unsupported"


def test_inspect_checks_decode_before_trailing_data() -> None:
    assert refused(samples.polyglot(samples.truncated_jpeg())) == "upload.corrupt"


def test_failures_serialise_for_the_api() -> None:
    failure = ValidationFailure("upload.corrupt", "The image is damaged.")
    assert json.loads(json.dumps({"code": failure.code, "detail": failure.message}))


# --- lies a decoder's warnings would let through (issue 12) ----------------------------------


def real_jpeg(size: tuple[int, int] = (640, 480)) -> bytes:
    """The real photograph at ``size``: entropy data with real detail in every block."""
    from tests.photos import PHOTO

    photo = Image.open(PHOTO)
    return samples.jpeg(image=photo.convert("RGB").resize(size), quality=90)


def test_first_tenth_of_a_real_photo_plus_an_end_marker_is_corrupt() -> None:
    from tests.photos import photo_jpeg

    data = photo_jpeg(12.0)
    assert check(data).format == "jpeg"
    assert refused(data[: len(data) // 10] + b"\xff\xd9") == "upload.corrupt"


def test_frame_header_larger_than_its_body_is_corrupt() -> None:
    data = bytearray(real_jpeg((640, 480)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (7000).to_bytes(2, "big") + (7000).to_bytes(2, "big")
    # 49 MP is within the pixel budget: only reading the body finds the lie.
    assert refused(bytes(data)) == "upload.corrupt"


def test_a_restart_marker_in_the_wrong_place_is_corrupt() -> None:
    data = bytearray(real_jpeg((640, 480)))
    sos = data.index(b"\xff\xda")
    middle = sos + (len(data) - sos) // 2
    data[middle : middle + 2] = b"\xff\xd3"  # libjpeg only warns about this
    assert refused(bytes(data)) == "upload.corrupt"


def test_png_with_a_bad_row_checksum_is_corrupt() -> None:
    from backend.imaging.header import png_chunks

    data = bytearray(samples.png(image=Image.fromarray(samples.photo_like(300, 200))))
    idat = next(start for ctype, start, _, _ in png_chunks(bytes(data)) if ctype == b"IDAT")
    data[idat + 40] ^= 0x55
    assert refused(bytes(data), "image/png") == "upload.corrupt"


def _mpo_with_payload() -> tuple[bytes, bytes]:
    payload = b"\xff\xd8" + b"\xff\xfe\x00\x21<html><script>x()</script></html>" + b"\xff\xd9"
    return samples.mpo(), payload


def test_mpf_does_not_cover_an_appended_jpeg_shaped_payload() -> None:
    mpo, payload = _mpo_with_payload()
    assert check(mpo).format == "jpeg"
    assert refused(mpo + payload) == "upload.trailing_data"


def _mp_entry_offset(data: bytes) -> tuple[int, int, str]:
    """(offset in the file of the second MP entry, MP header position, byte order)."""
    app2 = data.index(b"MPF\x00")
    base = app2 + 4
    order = "<" if data[base : base + 2] == b"II" else ">"
    import struct

    (ifd,) = struct.unpack_from(order + "I", data, base + 4)
    (count,) = struct.unpack_from(order + "H", data, base + ifd)
    for index in range(count):
        tag, _typ, _n, value = struct.unpack_from(order + "HHII", data, base + ifd + 2 + 12 * index)
        if tag == 0xB002:
            return base + value + 16, base, order
    raise AssertionError("no MP entry list")


def test_mpf_entry_pointing_at_a_payload_is_corrupt() -> None:
    import struct

    mpo, payload = _mpo_with_payload()
    entry, base, order = _mp_entry_offset(mpo)
    _attr, size, offset = struct.unpack_from(order + "III", mpo, entry)
    first_end = base + offset  # the second image starts where the first one ends
    # The index now claims the payload is the second image, placed where that image was.
    forged = bytearray(mpo[:first_end] + payload)
    struct.pack_into(order + "II", forged, entry + 4, len(payload), offset)
    assert refused(bytes(forged)) == "upload.corrupt"


def test_mpf_entry_with_a_wrong_size_is_corrupt() -> None:
    import struct

    mpo, _ = _mpo_with_payload()
    entry, _base, order = _mp_entry_offset(mpo)
    (size,) = struct.unpack_from(order + "I", mpo, entry + 4)
    forged = bytearray(mpo + b"\x00" * 64)
    struct.pack_into(order + "I", forged, entry + 4, size + 64)
    assert refused(bytes(forged)) == "upload.corrupt"


def test_mpf_secondary_image_is_read_in_full() -> None:
    """Same length, sound structure, but the second image's scan is damaged: only decoding
    that image finds it."""
    left = samples.photo_like(256, 192)
    buffer = io.BytesIO()
    Image.fromarray(left).save(
        buffer, "MPO", save_all=True, append_images=[Image.fromarray(left[::-1].copy())]
    )
    mpo = buffer.getvalue()
    assert check(mpo).format == "jpeg"
    second = mpo.rindex(b"\xff\xd8\xff")
    sos = mpo.index(b"\xff\xda", second)
    middle = sos + (len(mpo) - sos) // 2
    broken = mpo[:middle] + b"\xff\xd3" + mpo[middle + 2 :]
    assert refused(broken) == "upload.corrupt"


_MEMORY_CHILD = textwrap.dedent(
    """
    from pathlib import Path

    import cv2
    import numpy as np

    from backend.images.validation import inspect

    def kb(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])

    rgba = np.zeros((7000, 7000, 4), np.uint8)
    rgba[10:20, 10:20] = 255
    data = cv2.imencode(".png", rgba, [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()
    del rgba
    small = cv2.imencode(".png", np.zeros((64, 64, 4), np.uint8))[1].tobytes()
    inspect(small, declared_type="image/png", max_bytes=10**8, max_pixels=50_000_000)
    Path("/proc/self/clear_refs").write_text("5")
    before = kb("VmRSS")
    info = inspect(data, declared_type="image/png", max_bytes=10**8, max_pixels=50_000_000)
    print(info.width, info.height, (kb("VmHWM") - before) // 1024)
    """
)


def test_whole_file_check_of_a_49_megapixel_png_needs_no_full_size_decode() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    width, height, peak_mb = (int(v) for v in result.stdout.split())
    assert (width, height) == (7000, 7000)
    # The decoded image alone would be 196 MB.
    assert peak_mb < 64, f"peak +{peak_mb} MB"
