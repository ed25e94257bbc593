"""Where an image ends and what a Multi-Picture index claims, from real bytes."""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from backend.imaging.header import Malformed
from backend.imaging.layout import MAX_MPF_IMAGES, layout
from tests.images import samples


def mpo(count: int = 2) -> bytes:
    frames = [Image.fromarray(samples.photo_like(96, 64, seed=seed)) for seed in range(count)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "MPO", save_all=True, append_images=frames[1:])
    data = bytearray(buffer.getvalue())
    if count > 2:
        # Pillow 13 writes a wrong size for the third and later images (past the end of the
        # file); a camera writes each image's own length, which is what is fixed up here.
        entries, base, order = entry_list(bytes(data))
        starts = [
            base + struct.unpack_from(order + "I", data, entries + 16 * i + 8)[0]
            for i in range(1, count)
        ]
        for number, start in enumerate(starts, start=1):
            end = starts[number] if number < len(starts) else len(data)
            struct.pack_into(order + "I", data, entries + 16 * number + 4, end - start)
    return bytes(data)


def entry_list(data: bytes) -> tuple[int, int, str]:
    """(file offset of the MP entry list, MP header offset, struct byte order)."""
    base = data.index(b"MPF\x00") + 4
    order = "<" if data[base : base + 2] == b"II" else ">"
    (ifd,) = struct.unpack_from(order + "I", data, base + 4)
    (count,) = struct.unpack_from(order + "H", data, base + ifd)
    for index in range(count):
        tag, _typ, _n, value = struct.unpack_from(order + "HHII", data, base + ifd + 2 + 12 * index)
        if tag == 0xB002:
            return base + value, base, order
    raise AssertionError("no MP entry list")


@pytest.mark.parametrize("count", [2, 3])
def test_every_announced_image_is_accounted_for(count: int) -> None:
    data = mpo(count)
    found = layout(data, "jpeg")
    assert found.end == len(data)
    assert len(found.secondary) == count - 1
    for start, end in found.secondary:
        assert data[start : start + 3] == b"\xff\xd8\xff"
        assert data[end - 2 : end] == b"\xff\xd9"


def test_plain_jpeg_ends_at_its_end_marker_whatever_follows() -> None:
    data = samples.jpeg()
    assert layout(data + b"<html>", "jpeg").end == len(data)
    assert layout(data + data, "jpeg").secondary == ()


def test_appended_payload_is_not_claimed_by_the_index() -> None:
    data = mpo()
    payload = b"\xff\xd8\xff\xfe\x00\x10<html></html>\xff\xd9"
    assert layout(data + payload, "jpeg").end == len(data)


def test_first_entry_must_be_this_image() -> None:
    data = bytearray(mpo())
    entries, _base, order = entry_list(bytes(data))
    struct.pack_into(order + "I", data, entries + 8, 4)
    with pytest.raises(Malformed):
        layout(bytes(data), "jpeg")


def test_entry_offset_into_the_middle_of_nowhere() -> None:
    data = bytearray(mpo())
    entries, _base, order = entry_list(bytes(data))
    struct.pack_into(order + "I", data, entries + 16 + 8, 10**6)
    with pytest.raises(Malformed):
        layout(bytes(data), "jpeg")


def test_too_many_entries_are_refused() -> None:
    data = bytearray(mpo())
    base = data.index(b"MPF\x00") + 4
    order = "<" if data[base : base + 2] == b"II" else ">"
    (ifd,) = struct.unpack_from(order + "I", data, base + 4)
    (count,) = struct.unpack_from(order + "H", data, base + ifd)
    for index in range(count):
        at = base + ifd + 2 + 12 * index
        if struct.unpack_from(order + "H", data, at)[0] == 0xB002:
            struct.pack_into(order + "I", data, at + 4, 16 * (MAX_MPF_IMAGES + 1))
    with pytest.raises(Malformed):
        layout(bytes(data), "jpeg")


@pytest.mark.parametrize("fmt", ["png", "gif", "webp"])
def test_other_formats_end_where_their_container_says(fmt: str) -> None:
    data: bytes = getattr(samples, fmt)()
    assert layout(data + b"junk", fmt).end == len(data)


def test_png_without_end_chunk_is_malformed() -> None:
    data = samples.png()
    with pytest.raises(Malformed):
        layout(data[: data.rindex(b"IEND") - 4], "png")
