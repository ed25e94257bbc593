"""Metadata: displayed size, hash, and EXIF read from IFD0, the Exif sub-IFD and the GPS IFD."""

from __future__ import annotations

import hashlib
import json
from fractions import Fraction
from typing import Any

import pytest
from PIL import PngImagePlugin

from backend.images.metadata import Metadata, extract
from backend.images.validation import ValidationFailure
from tests.images import samples

EXIF_KEYS = {
    "camera_make",
    "camera_model",
    "datetime_original",
    "lens_model",
    "iso",
    "focal_length",
    "exposure_time",
    "gps",
    "raw",
}

# Broken EXIF makes Pillow warn; the point of these tests is that nothing raises.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def exif_of(data: bytes) -> dict[str, Any]:
    exif = extract(data).exif
    assert exif is not None
    assert set(exif) == EXIF_KEYS
    # allow_nan=False: Postgres JSON has no NaN or Infinity.
    json.dumps(exif, allow_nan=False)
    return exif


def test_basic_fields() -> None:
    data = samples.png((64, 48))
    assert extract(data) == Metadata(
        width=64,
        height=48,
        format="png",
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        orientation=1,
        exif=None,
    )


@pytest.mark.parametrize("name", list(samples.ALL_GOOD))
def test_format_and_size_for_every_sample(name: str) -> None:
    fmt, _ = samples.ALL_GOOD[name]
    data: bytes = getattr(samples, name)()
    meta = extract(data)
    assert (meta.format, meta.size_bytes) == (fmt, len(data))
    assert len(meta.sha256) == 64
    assert int(meta.sha256, 16) >= 0


def test_well_known_fields_come_from_every_ifd() -> None:
    exif = exif_of(samples.jpeg_full_exif())
    lat, lat_ref, lon, lon_ref = samples.GPS_SOUTH_WEST
    assert {k: v for k, v in exif.items() if k != "raw"} == {
        "camera_make": samples.MAKE,  # IFD0
        "camera_model": samples.MODEL,  # IFD0
        "datetime_original": "2024-05-01T10:20:30",  # Exif sub-IFD
        "lens_model": samples.LENS,  # Exif sub-IFD
        "iso": 400,  # Exif sub-IFD
        "focal_length": 50.0,  # Exif sub-IFD
        "exposure_time": "1/250",  # Exif sub-IFD
        "gps": {  # GPS IFD
            "lat": pytest.approx(samples.dms_to_decimal(lat, lat_ref), abs=1e-6),
            "lon": pytest.approx(samples.dms_to_decimal(lon, lon_ref), abs=1e-6),
        },
    }
    assert exif["gps"]["lat"] < 0
    assert exif["gps"]["lon"] < 0


def test_gps_north_east_is_positive() -> None:
    exif = exif_of(samples.jpeg(exif=samples.full_exif(gps=samples.GPS_NORTH_EAST)))
    lat, lat_ref, lon, lon_ref = samples.GPS_NORTH_EAST
    assert exif["gps"] == {
        "lat": pytest.approx(samples.dms_to_decimal(lat, lat_ref), abs=1e-6),
        "lon": pytest.approx(samples.dms_to_decimal(lon, lon_ref), abs=1e-6),
    }
    assert exif["gps"]["lat"] > 48
    assert exif["gps"]["lon"] > 2


@pytest.mark.parametrize(
    ("lat_ref", "lon_ref", "signs"),
    [("N", "E", (1, 1)), ("S", "E", (-1, 1)), ("N", "W", (1, -1)), ("S", "W", (-1, -1))],
)
def test_gps_signs(lat_ref: str, lon_ref: str, signs: tuple[int, int]) -> None:
    exif = exif_of(
        samples.jpeg(exif=samples.gps_only_exif((10, 30, 0), lat_ref, (20, 15, 0), lon_ref))
    )
    assert exif["gps"] == {"lat": signs[0] * 10.5, "lon": signs[1] * 20.25}


def test_no_gps_ifd_means_gps_none() -> None:
    assert exif_of(samples.jpeg(exif=samples.full_exif(gps=None)))["gps"] is None


@pytest.mark.parametrize(
    ("exposure", "expected"),
    [
        (Fraction(1, 250), "1/250"),
        (Fraction(1, 4000), "1/4000"),
        (Fraction(10, 2500), "1/250"),
        (Fraction(1, 4), "1/4"),
        (Fraction(1, 3), "0.3"),
        (Fraction(1, 2), "0.5"),
        (Fraction(2, 1), "2"),
        (Fraction(5, 2), "2.5"),
        (Fraction(30, 1), "30"),
    ],
)
def test_exposure_time_formatting(exposure: Fraction, expected: str) -> None:
    exif = exif_of(samples.jpeg(exif=samples.full_exif(exposure=exposure)))
    assert exif["exposure_time"] == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024:05:01 10:20:30", "2024-05-01T10:20:30"),
        ("2024-05-01 10:20:30", "2024-05-01T10:20:30"),
        ("2024:05:01 10:20:30.123", "2024-05-01T10:20:30"),
        ("0000:00:00 00:00:00", None),
        ("    :  :     :  :  ", None),
        ("yesterday", None),
        ("2024:13:45 99:99:99", None),
    ],
)
def test_datetime_original(raw: str, expected: str | None) -> None:
    exif = exif_of(samples.jpeg(exif=samples.full_exif(datetime_original=raw)))
    assert exif["datetime_original"] == expected


def test_raw_holds_every_readable_tag_json_safe() -> None:
    raw = exif_of(samples.jpeg_full_exif())["raw"]
    assert raw["Make"] == samples.MAKE
    assert raw["Software"] == "Firmware 1.8.1"
    assert raw["DateTime"] == "2024:05:02 08:00:00"
    assert raw["ISOSpeedRatings"] == 400
    assert raw["ExposureTime"] == pytest.approx(0.004)
    assert raw["FNumber"] == pytest.approx(2.8)
    assert raw["LensModel"] == samples.LENS
    assert raw["ExifVersion"] == "0232"  # printable bytes → text
    assert raw["ComponentsConfiguration"] == "01020300"  # binary bytes → hex
    assert raw["UserComment"] == "Summer in the park"  # charset prefix removed
    assert raw["GPSLatitudeRef"] == "S"
    assert raw["GPSLatitude"] == pytest.approx([33.0, 52.0, 7.8])  # tuple of rationals → list
    assert raw["GPSVersionID"] == "02030000"


def test_raw_drops_maker_note_long_values_and_pointers() -> None:
    raw = exif_of(samples.jpeg_full_exif())["raw"]
    assert "MakerNote" not in raw
    assert "ImageDescription" not in raw  # 5000 characters
    assert "ExifOffset" not in raw
    assert "GPSInfo" not in raw
    assert all(len(json.dumps(value)) <= 1024 for value in raw.values())


def test_raw_names_unknown_tags_and_keeps_orientation() -> None:
    raw = exif_of(samples.jpeg(exif=samples.odd_values_exif()))["raw"]
    assert raw["Tag0xBEEF"] == "fffe0062696e617279"
    assert raw["Orientation"] == 9


@pytest.mark.parametrize(
    ("comment", "expected"),
    [
        (b"ASCII\x00\x00\x00plain words", "plain words"),
        (b"UNICODE\x00" + "Grüße".encode("utf-16-le"), "Grüße"),
        (b"UNICODE\x00" + "Grüße".encode("utf-16-be"), "Grüße"),
        (b"\x00" * 8 + "café".encode(), "café"),
    ],
)
def test_user_comment_character_sets(comment: bytes, expected: str) -> None:
    exif = exif_of(samples.jpeg(exif=samples.exif_block([], [(0x9286, 7, comment)])))
    assert exif["raw"]["UserComment"] == expected


def test_utf8_text_in_ascii_tags_is_decoded() -> None:
    block = samples.exif_block([(0x013B, 2, "Zoë Åberg".encode().decode("latin-1"))])
    assert exif_of(samples.jpeg(exif=block))["raw"]["Artist"] == "Zoë Åberg"


def test_values_of_the_wrong_kind_become_none() -> None:
    exif = exif_of(samples.jpeg(exif=samples.odd_values_exif()))
    assert exif["camera_make"] == "Nikon"  # NUL padding and spaces trimmed
    assert exif["exposure_time"] is None  # 0/0
    assert exif["focal_length"] is None  # 35/0
    assert exif["datetime_original"] is None
    assert exif["iso"] is None  # 0
    assert exif["lens_model"] is None  # empty
    assert exif["gps"] is None  # 0/0 latitude, text longitude
    assert "\x00" not in json.dumps(exif)


def test_out_of_range_orientation_means_upright() -> None:
    meta = extract(samples.jpeg((64, 48), exif=samples.odd_values_exif()))
    assert (meta.orientation, meta.width, meta.height) == (1, 64, 48)


@pytest.mark.parametrize("name", list(samples.broken_exif_payloads()))
def test_broken_exif_never_raises(name: str) -> None:
    data = samples.insert_app1(samples.jpeg((64, 48)), samples.broken_exif_payloads()[name])
    meta = extract(data)
    # The looping block still has a sound IFD0 whose orientation (6) counts.
    expected = (48, 64, 6) if name == "looping_ifd" else (64, 48, 1)
    assert (meta.width, meta.height, meta.orientation) == expected
    if meta.exif is not None:
        assert set(meta.exif) == EXIF_KEYS
        json.dumps(meta.exif, allow_nan=False)


def test_broken_exif_keeps_what_is_readable() -> None:
    payload = samples.broken_exif_payloads()["dangling_exif_pointer"]
    exif = exif_of(samples.insert_app1(samples.jpeg(), payload))
    assert exif["camera_make"] == "ACME"
    assert exif["iso"] is None


@pytest.mark.parametrize("make", [samples.jpeg, samples.png, samples.gif, samples.webp])
def test_no_exif_at_all_is_none(make: Any) -> None:
    assert extract(make()).exif is None


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_swaps_size_for_5_to_8(orientation: int) -> None:
    meta = extract(samples.oriented_jpeg(orientation))
    assert meta.orientation == orientation
    # The upright picture is 90×60; stored pixels are 60×90 for the turned orientations.
    assert (meta.width, meta.height) == samples.UPRIGHT_SIZE
    assert meta.exif is not None
    assert meta.exif["raw"]["Orientation"] == orientation


def test_png_exif_after_image_data_is_read_without_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_decoding(_self: object) -> None:
        raise AssertionError("metadata must not decode pixels")

    data = samples.png_with_exif_after_idat(samples.full_exif(orientation=6))
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", no_decoding)
    meta = extract(data)
    assert meta.orientation == 6
    assert (meta.width, meta.height) == (samples.UPRIGHT_SIZE[1], samples.UPRIGHT_SIZE[0])
    assert meta.exif is not None
    assert meta.exif["camera_model"] == samples.MODEL


def test_webp_exif_is_read() -> None:
    exif = exif_of(samples.webp_with_exif())
    assert (exif["iso"], exif["exposure_time"]) == (400, "1/250")


@pytest.mark.parametrize("data", [b"", b"hello", samples.svg(), samples.xlsx_bytes()])
def test_non_images_raise_validation_failure(data: bytes) -> None:
    with pytest.raises(ValidationFailure) as caught:
        extract(data)
    assert caught.value.code == "upload.unrecognized"


def test_unreadable_header_raises_corrupt() -> None:
    with pytest.raises(ValidationFailure) as caught:
        extract(b"\x89PNG\r\n\x1a\n" + b"\x00" * 30)
    assert caught.value.code == "upload.corrupt"
