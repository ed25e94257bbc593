"""AI providers: Gemini through the real google-genai SDK against the fake server, and local.

The Gemini tests assert both sides: what the SDK put on the wire (the fake records it) and what
the provider made of the answer, including each failure's ``ai.*`` code and retry advice.
"""

from __future__ import annotations

import io
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from backend.ai.providers.base import (
    BAD_IMAGE,
    BAD_RESPONSE,
    BLOCKED,
    PROVIDER_ERROR,
    RATE_LIMITED,
    TIMEOUT,
    UNSUPPORTED_EDIT,
    ProviderError,
    ProviderSettings,
    build_providers,
)
from backend.ai.providers.gemini import CAPTION_PROMPT, GeminiProvider
from backend.ai.providers.images import prepared
from backend.ai.providers.local import (
    SUPPORTED_EDITS,
    EditStep,
    LocalProvider,
    find_face_cascade,
    group_boxes,
    parse_edit,
)
from backend.images.validation import sniff_format
from tests.ai.fake_gemini import FakeGemini, solid_png
from tests.images import samples
from tests.sketches.test_router import big_png

Array = npt.NDArray[np.uint8]

API_KEY = "test-gemini-key"
ROOT = Path(__file__).resolve().parents[2]
ASTRONAUT = ROOT / "backend" / "sketches" / "assets" / "sample.jpg"
COFFEE = ROOT / "tests" / "data" / "coffee.jpg"
CHELSEA = ROOT / "tests" / "data" / "chelsea.jpg"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

MakeGemini = Callable[..., GeminiProvider]


# --- helpers ---------------------------------------------------------------------------------


def png_bytes(pixels: Array) -> bytes:
    ok, buffer = cv2.imencode(".png", pixels)
    assert ok
    return bytes(buffer.tobytes())


def decode(data: bytes) -> Array:
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert pixels is not None, "not a decodable image"
    return np.asarray(pixels, np.uint8)


def as_bgr(pixels: Array) -> Array:
    if pixels.ndim == 2:
        return np.asarray(cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR), np.uint8)
    return pixels


def is_gray(pixels: Array) -> bool:
    return np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(
        pixels[..., 1], pixels[..., 2]
    )


def sharpness(pixels: Array) -> float:
    gray = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def photo_jpeg(width: int, height: int) -> bytes:
    return samples.encode_jpeg_cv2(samples.photo_like(width, height))


def two_astronauts() -> bytes:
    portrait = decode(ASTRONAUT.read_bytes())
    return samples.encode_jpeg_cv2(np.hstack([portrait, portrait]), quality=92)


def document_png() -> bytes:
    page = np.full((1100, 850, 3), 255, np.uint8)
    for row in range(12):
        cv2.putText(
            page,
            "The quick brown fox jumps over the lazy dog",
            (60, 100 + row * 75),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.95,
            (0, 0, 0),
            2,
            cv2.LINE_AA,
        )
    return png_bytes(page)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def raises(call: Awaitable[object]) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await call
    return info.value


# --- Gemini fixtures -------------------------------------------------------------------------


@pytest.fixture
async def make_gemini(fake_gemini: FakeGemini) -> AsyncIterator[MakeGemini]:
    made: list[GeminiProvider] = []

    def make(**overrides: object) -> GeminiProvider:
        options: dict[str, object] = {
            "gemini_api_key": API_KEY,
            "gemini_base_url": fake_gemini.base_url,
            "timeout_seconds": 10.0,
            "max_retries": 2,
            "retry_initial_delay_seconds": 0.01,
        }
        options.update(overrides)
        provider = GeminiProvider(ProviderSettings(**options))  # type: ignore[arg-type]
        made.append(provider)
        return provider

    yield make
    for provider in made:
        await provider.close()


@pytest.fixture
async def gemini(make_gemini: MakeGemini) -> GeminiProvider:
    return make_gemini()


# --- Gemini: what goes on the wire -----------------------------------------------------------


async def test_caption_sends_a_downscaled_inline_image_the_prompt_and_the_key(
    gemini: GeminiProvider, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply_text("An astronaut in an orange suit.")

    caption = await gemini.caption(photo_jpeg(3000, 2000))

    assert caption.text == "An astronaut in an orange suit."
    assert caption.model == "gemini-2.5-flash"
    [request] = fake_gemini.requests
    assert request.model == "gemini-2.5-flash"
    assert request.path == f"/{request.version}/models/gemini-2.5-flash:generateContent"
    assert request.headers["x-goog-api-key"] == API_KEY
    assert CAPTION_PROMPT in request.texts()
    [(mime_type, sent)] = request.inline_images()
    assert mime_type == "image/jpeg"
    assert sniff_format(sent) == "jpeg"
    height, width = decode(sent).shape[:2]
    assert (width, height) == (1536, 1024)
    assert len(sent) < 1_500_000


async def test_image_max_side_is_honoured_and_small_images_are_not_enlarged(
    make_gemini: MakeGemini, fake_gemini: FakeGemini
) -> None:
    provider = make_gemini(image_max_side=512)
    await provider.caption(photo_jpeg(3000, 2000))
    await provider.caption(photo_jpeg(300, 200))

    sizes = [decode(req.inline_images()[0][1]).shape[:2] for req in fake_gemini.requests]
    assert sizes == [(341, 512), (200, 300)]


async def test_the_image_is_sent_upright_and_without_metadata(
    gemini: GeminiProvider, fake_gemini: FakeGemini
) -> None:
    await gemini.caption(samples.oriented_jpeg(6))
    await gemini.caption(samples.jpeg_full_exif())

    upright, with_exif = (req.inline_images()[0][1] for req in fake_gemini.requests)
    pixels = decode(upright)
    assert pixels.shape[:2] == (60, 90)  # stored 60 wide and 90 high, displayed landscape
    blue, green, red = (int(v) for v in pixels[5, 5])
    assert red > 150, "the red corner must be top-left once upright"
    assert blue < 100
    with Image.open(io.BytesIO(with_exif)) as im:
        assert not im.getexif(), "EXIF (camera, GPS) must not be sent to the provider"


async def test_transparent_images_go_as_png_and_opaque_ones_as_jpeg(
    gemini: GeminiProvider, fake_gemini: FakeGemini
) -> None:
    opaque = np.zeros((40, 60, 4), np.uint8)
    opaque[..., 2] = 200
    opaque[..., 3] = 255

    await gemini.caption(samples.png_rgba())
    await gemini.caption(png_bytes(opaque))

    transparent, solid = (req.inline_images()[0] for req in fake_gemini.requests)
    assert transparent[0] == "image/png"
    alpha = decode(transparent[1])[..., 3]
    assert alpha[:, :30].min() == 255
    assert alpha[:, -30:].max() == 0
    assert solid[0] == "image/jpeg"


async def test_caption_text_is_tidied(gemini: GeminiProvider, fake_gemini: FakeGemini) -> None:
    fake_gemini.reply_text('  "A cat asleep\n on a  red sofa."  \n')
    caption = await gemini.caption(photo_jpeg(64, 48))
    assert caption.text == "A cat asleep on a red sofa."


async def test_edit_asks_for_an_image_and_returns_the_first_one(
    gemini: GeminiProvider, fake_gemini: FakeGemini
) -> None:
    answer = solid_png(80, 60, (10, 200, 30))
    fake_gemini.reply_image(answer, text="Here is your watercolor postcard.")

    edited = await gemini.edit(photo_jpeg(2400, 3200), "make it a watercolor postcard")

    assert edited == answer
    assert decode(edited).shape[:2] == (60, 80)
    [request] = fake_gemini.requests
    assert request.model == "gemini-2.5-flash-image"
    assert "IMAGE" in request.generation_config()["responseModalities"]
    assert any("make it a watercolor postcard" in text for text in request.texts())
    [(_, sent)] = request.inline_images()
    assert decode(sent).shape[:2] == (1536, 1152)


async def test_edit_with_a_reference_sends_both_images_downscaled(
    gemini: GeminiProvider, fake_gemini: FakeGemini
) -> None:
    await gemini.edit(photo_jpeg(3000, 2000), "put the child in the book", photo_jpeg(2000, 4000))

    [request] = fake_gemini.requests
    shapes = [decode(data).shape[:2] for _, data in request.inline_images()]
    assert shapes == [(1024, 1536), (1536, 768)]


async def test_one_client_serves_every_call(
    gemini: GeminiProvider, fake_gemini: FakeGemini
) -> None:
    client = gemini._client
    for _ in range(3):
        await gemini.caption(photo_jpeg(64, 48))
    assert gemini._client is client
    assert len(fake_gemini.requests) == 3


# --- Gemini: failures and their codes --------------------------------------------------------


async def test_rate_limit_is_retried_by_the_sdk_then_reported(
    gemini: GeminiProvider, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply_error(429, times=10)

    error = await raises(gemini.caption(photo_jpeg(64, 48)))

    assert (error.code, error.retryable) == (RATE_LIMITED, True)
    assert len(fake_gemini.requests) == 3  # max_retries=2 → three attempts


async def test_a_rate_limit_that_clears_is_invisible(
    gemini: GeminiProvider, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply_error(429)
    fake_gemini.reply_text("Second time lucky.")

    caption = await gemini.caption(photo_jpeg(64, 48))

    assert caption.text == "Second time lucky."
    assert len(fake_gemini.requests) == 2


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_retried_and_retryable(
    gemini: GeminiProvider, fake_gemini: FakeGemini, status: int
) -> None:
    fake_gemini.reply_error(status, times=10)

    error = await raises(gemini.edit(photo_jpeg(64, 48), "sepia"))

    assert (error.code, error.retryable) == (PROVIDER_ERROR, True)
    assert len(fake_gemini.requests) == 3


@pytest.mark.parametrize(("status", "hint"), [(400, "rejected"), (403, "GEMINI_API_KEY")])
async def test_client_errors_are_final(
    gemini: GeminiProvider, fake_gemini: FakeGemini, status: int, hint: str
) -> None:
    fake_gemini.reply_error(status, times=10)

    error = await raises(gemini.caption(photo_jpeg(64, 48)))

    assert (error.code, error.retryable) == (PROVIDER_ERROR, False)
    assert hint in str(error)
    assert len(fake_gemini.requests) == 1


@pytest.mark.parametrize(
    ("reason", "where"),
    [("SAFETY", "prompt"), ("PROHIBITED_CONTENT", "prompt"), ("IMAGE_SAFETY", "candidate")],
)
async def test_safety_blocks_are_final(
    gemini: GeminiProvider, fake_gemini: FakeGemini, reason: str, where: str
) -> None:
    fake_gemini.reply_blocked(reason, where=where)

    error = await raises(gemini.edit(photo_jpeg(64, 48), "make it spooky"))

    assert (error.code, error.retryable) == (BLOCKED, False)
    assert reason in str(error)
    assert len(fake_gemini.requests) == 1


async def test_a_blocked_caption_is_blocked_too(
    gemini: GeminiProvider, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply_blocked("SAFETY", where="candidate")
    error = await raises(gemini.caption(photo_jpeg(64, 48)))
    assert error.code == BLOCKED


async def test_malformed_json_is_a_bad_response(
    gemini: GeminiProvider, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply_malformed()

    error = await raises(gemini.caption(photo_jpeg(64, 48)))

    assert (error.code, error.retryable) == (BAD_RESPONSE, True)


async def test_an_answer_of_the_wrong_shape_is_a_bad_response(
    gemini: GeminiProvider, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply_raw(
        '{"candidates": [{"content": {"parts": [{"inlineData": '
        '{"mimeType": "image/png", "data": "%%% not base64"}}]}}]}'
    )
    error = await raises(gemini.edit(photo_jpeg(64, 48), "sepia"))
    assert (error.code, error.retryable) == (BAD_RESPONSE, True)


async def test_an_empty_caption_is_a_bad_response(
    gemini: GeminiProvider, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply_empty("MAX_TOKENS")

    error = await raises(gemini.caption(photo_jpeg(64, 48)))

    assert (error.code, error.retryable) == (BAD_RESPONSE, True)
    assert "MAX_TOKENS" in str(error)


async def test_an_edit_answered_with_words_only_is_a_bad_response(
    gemini: GeminiProvider, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply_text("I can't edit photos of that kind.")

    error = await raises(gemini.edit(photo_jpeg(64, 48), "make it a postcard"))

    assert (error.code, error.retryable) == (BAD_RESPONSE, True)
    assert "I can't edit photos" in str(error)


async def test_an_inline_part_that_is_not_an_image_is_ignored(
    gemini: GeminiProvider, fake_gemini: FakeGemini
) -> None:
    fake_gemini.reply_image(b"GIF-but-not-really", mime_type="image/gif")
    error = await raises(gemini.edit(photo_jpeg(64, 48), "sepia"))
    assert error.code == BAD_RESPONSE


async def test_a_stall_times_out_after_the_timeout(
    make_gemini: MakeGemini, fake_gemini: FakeGemini
) -> None:
    provider = make_gemini(timeout_seconds=1.0, max_retries=0)
    fake_gemini.stall()

    started = time.monotonic()
    error = await raises(provider.caption(photo_jpeg(64, 48)))
    elapsed = time.monotonic() - started

    assert (error.code, error.retryable) == (TIMEOUT, True)
    assert 0.9 <= elapsed < 2.5
    assert len(fake_gemini.requests) == 1


async def test_timeouts_are_retried_by_the_sdk(
    make_gemini: MakeGemini, fake_gemini: FakeGemini
) -> None:
    provider = make_gemini(timeout_seconds=1.0, max_retries=1)
    fake_gemini.stall(times=5)

    started = time.monotonic()
    error = await raises(provider.caption(photo_jpeg(64, 48)))
    elapsed = time.monotonic() - started

    assert error.code == TIMEOUT
    assert len(fake_gemini.requests) == 2
    assert elapsed < 2 * 1.0 + 1.5


async def test_a_dropped_connection_is_a_retryable_provider_error(
    make_gemini: MakeGemini, fake_gemini: FakeGemini
) -> None:
    provider = make_gemini(max_retries=0)
    fake_gemini.disconnect()

    error = await raises(provider.caption(photo_jpeg(64, 48)))

    assert (error.code, error.retryable) == (PROVIDER_ERROR, True)


async def test_an_unreachable_server_is_a_retryable_provider_error(
    make_gemini: MakeGemini,
) -> None:
    provider = make_gemini(gemini_base_url=f"http://127.0.0.1:{closed_port()}", max_retries=1)

    error = await raises(provider.caption(photo_jpeg(64, 48)))

    assert (error.code, error.retryable) == (PROVIDER_ERROR, True)
    assert "ConnectError" in str(error)


async def test_an_unreadable_image_is_refused_before_any_request(
    gemini: GeminiProvider, fake_gemini: FakeGemini
) -> None:
    error = await raises(gemini.caption(b"definitely not an image"))
    assert (error.code, error.retryable) == (BAD_IMAGE, False)
    assert fake_gemini.requests == []


# --- which providers a setup gets ------------------------------------------------------------


async def test_without_a_key_only_the_local_provider_exists() -> None:
    providers = build_providers(ProviderSettings(gemini_api_key=None))
    assert list(providers) == ["local"]
    assert providers["local"].caption_model == "local"
    await providers["local"].close()


async def test_with_a_key_gemini_is_built_from_the_settings(fake_gemini: FakeGemini) -> None:
    settings = ProviderSettings(
        gemini_api_key=API_KEY,
        gemini_base_url=fake_gemini.base_url,
        caption_model="gemini-caption-x",
        edit_model="gemini-edit-y",
    )
    providers = build_providers(settings)
    try:
        assert sorted(providers) == ["gemini", "local"]
        gemini = providers["gemini"]
        assert (gemini.name, gemini.caption_model, gemini.edit_model) == (
            "gemini",
            "gemini-caption-x",
            "gemini-edit-y",
        )
        await gemini.caption(photo_jpeg(32, 32))
        assert fake_gemini.requests[0].model == "gemini-caption-x"
        assert API_KEY not in repr(settings)
    finally:
        for provider in providers.values():
            await provider.close()


# --- local captions --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local() -> LocalProvider:
    return LocalProvider()


@pytest.fixture(scope="module")
def with_faces() -> LocalProvider:
    """The local provider with face detection, which CI must have (opencv-data)."""
    if find_face_cascade() is None:
        message = "no Haar face cascade installed (apt-get install opencv-data)"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return LocalProvider()


@pytest.mark.parametrize(
    ("bgr", "name"),
    [
        ((30, 30, 220), "red"),
        ((40, 160, 40), "green"),
        ((200, 80, 30), "blue"),
        ((30, 220, 240), "yellow"),
        ((0, 140, 255), "orange"),
        ((160, 50, 120), "purple"),
        ((30, 70, 120), "brown"),
        ((128, 128, 128), "gray"),
        ((250, 250, 250), "white"),
        ((10, 10, 10), "black"),
    ],
)
async def test_local_caption_names_the_colour_of_a_solid_image(
    local: LocalProvider, bgr: tuple[int, int, int], name: str
) -> None:
    caption = await local.caption(png_bytes(np.full((300, 400, 3), bgr, np.uint8)))
    assert caption.model == "local"
    assert f"mostly {name}" in caption.text


async def test_local_caption_names_the_main_colours_of_a_mixed_image(
    local: LocalProvider,
) -> None:
    pixels = np.full((400, 600, 3), (200, 90, 30), np.uint8)  # blue sky
    pixels[260:] = (40, 150, 40)  # green field, a third of the picture

    text = (await local.caption(samples.encode_jpeg_cv2(pixels))).text

    assert text.startswith("A small landscape image, mostly blue with some green")


async def test_local_caption_gives_size_and_orientation(local: LocalProvider) -> None:
    big = (await local.caption(photo_jpeg(3000, 2000))).text
    tall = (await local.caption(photo_jpeg(300, 500))).text
    wide = (await local.caption(photo_jpeg(1200, 400))).text

    assert big.startswith("A large landscape photo")
    assert tall.startswith("A small portrait photo")
    assert wide.startswith("A small panoramic photo")


async def test_local_caption_words_for_tone(local: LocalProvider) -> None:
    dark = (await local.caption(png_bytes(np.full((200, 200, 3), 25, np.uint8)))).text
    stripes = np.zeros((200, 200, 3), np.uint8)
    stripes[:, ::20] = 255
    stripes[:, 1::20] = 255
    stripes[:, :100] = 255
    contrasty = (await local.caption(png_bytes(stripes))).text

    assert "dark and low-contrast" in dark
    assert "high-contrast" in contrasty


@pytest.mark.parametrize(
    ("image", "faces"),
    [
        (lambda: ASTRONAUT.read_bytes(), "; one face detected."),
        (two_astronauts, "; 2 faces detected."),
        (lambda: COFFEE.read_bytes(), "; no faces detected."),
        (lambda: CHELSEA.read_bytes(), "; no faces detected."),
    ],
    ids=["astronaut", "two-astronauts", "coffee", "cat"],
)
async def test_local_caption_counts_faces_in_photos(
    with_faces: LocalProvider, image: Callable[[], bytes], faces: str
) -> None:
    text = (await with_faces.caption(image())).text
    assert text.endswith(faces), text
    assert "document" not in text
    assert "text" not in text


async def test_local_caption_describes_real_photos(with_faces: LocalProvider) -> None:
    astronaut = (await with_faces.caption(ASTRONAUT.read_bytes())).text
    coffee = (await with_faces.caption(COFFEE.read_bytes())).text
    cat = (await with_faces.caption(CHELSEA.read_bytes())).text

    assert astronaut == "A small square photo in gray, black and brown; one face detected."
    assert coffee.startswith("A small landscape photo in brown")
    assert cat.startswith("A small landscape photo, mostly brown")


async def test_local_caption_recognises_a_document(local: LocalProvider) -> None:
    text = (await local.caption(document_png())).text
    assert text.startswith("A medium portrait document page with lines of text, mostly white")


async def test_local_caption_says_when_faces_were_not_checked() -> None:
    provider = LocalProvider(face_cascade=None)
    assert not provider.detects_faces
    text = (await provider.caption(ASTRONAUT.read_bytes())).text
    assert text.endswith("; faces not checked.")


async def test_local_caption_of_garbage_is_a_bad_image(local: LocalProvider) -> None:
    error = await raises(local.caption(b"\x89PNG\r\n\x1a\nbroken"))
    assert (error.code, error.retryable) == (BAD_IMAGE, False)


def test_grouping_keeps_supported_clusters_only() -> None:
    face = [(100 + d, 50 + d, 60, 60) for d in range(6)]
    stray = [(400, 300, 30, 30), (402, 301, 30, 30)]
    inner = [(110 + d, 60, 20, 20) for d in range(2)]

    assert group_boxes(face + stray + inner, min_neighbors=3) == [(102, 52, 60, 60)]
    assert group_boxes([], min_neighbors=3) == []


# --- local edits -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo() -> bytes:
    return photo_jpeg(480, 320)


async def local_edit(local: LocalProvider, image: bytes, prompt: str) -> Array:
    edited = await local.edit(image, prompt)
    assert sniff_format(edited) == "png"
    return as_bgr(decode(edited))


@pytest.mark.parametrize("prompt", ["Grayscale", "make it black and white", "B&W please"])
async def test_grayscale_leaves_equal_channels(
    local: LocalProvider, photo: bytes, prompt: str
) -> None:
    out = await local_edit(local, photo, prompt)
    assert out.shape[:2] == (320, 480)
    assert is_gray(out)


async def test_sepia_is_a_warm_brown_tone(local: LocalProvider, photo: bytes) -> None:
    out = (await local_edit(local, photo, "sepia")).astype(np.int32)
    blue, green, red = out[..., 0], out[..., 1], out[..., 2]
    assert (red >= green).mean() > 0.99
    assert (green >= blue).mean() > 0.99
    assert (red - blue).mean() > 30


async def test_blur_and_sharpen_change_edge_energy(local: LocalProvider, photo: bytes) -> None:
    original = as_bgr(decode(photo))
    blurred = await local_edit(local, photo, "blur it")
    sharpened = await local_edit(local, photo, "sharpen")

    assert sharpness(blurred) < 0.5 * sharpness(original)
    assert sharpness(sharpened) > 1.5 * sharpness(original)


async def test_brighten_darken_and_invert(local: LocalProvider) -> None:
    pixels = np.full((100, 100, 3), 120, np.uint8)
    pixels[:, :50] = (30, 90, 200)
    image = png_bytes(pixels)

    lighter = await local_edit(local, image, "a bit lighter")
    darker = await local_edit(local, image, "darken")
    inverted = await local_edit(local, image, "invert the colors")

    assert lighter.mean() > pixels.mean() + 15
    assert darker.mean() < pixels.mean() - 15
    assert np.array_equal(inverted, 255 - pixels)


async def test_pencil_sketch_is_gray(local: LocalProvider, photo: bytes) -> None:
    out = await local_edit(local, photo, "turn it into a pencil sketch")
    assert is_gray(out)


async def test_colour_styles_keep_colour(local: LocalProvider, photo: bytes) -> None:
    out = (await local_edit(local, photo, "watercolour painting")).astype(np.int32)
    assert np.abs(out[..., 2] - out[..., 0]).mean() > 10


def test_prompt_words_map_to_steps_in_order() -> None:
    assert parse_edit("Sharpen, then a detailed oil painting, then darker") == [
        EditStep("sharpen"),
        EditStep("style", style="oil", method="artistic"),
        EditStep("darken"),
    ]
    assert parse_edit("charcoal sketch") == [EditStep("style", style="charcoal", method="basic")]


async def test_steps_combine_in_prompt_order(local: LocalProvider, photo: bytes) -> None:
    sepia_last = await local_edit(local, photo, "grayscale then sepia")
    gray_last = await local_edit(local, photo, "sepia then grayscale")

    assert (sepia_last[..., 2].astype(int) - sepia_last[..., 0]).mean() > 20
    assert np.array_equal(gray_last[..., 0], gray_last[..., 2])


async def test_local_edits_are_bounded_in_size() -> None:
    provider = LocalProvider(face_cascade=None, edit_max_side=256)
    out = await local_edit(provider, photo_jpeg(3000, 2000), "blur")
    assert out.shape[:2] == (171, 256)


@pytest.mark.parametrize(
    ("prompt", "named"),
    [
        ("make it a watercolor postcard", "'postcard'"),
        ("remove the background", "'remove'"),
        ("don't blur", '"don\'t"'),
        ("please", ""),
        ("", ""),
    ],
)
async def test_unsupported_local_edits_are_refused_in_a_few_words(
    local: LocalProvider, photo: bytes, prompt: str, named: str
) -> None:
    error = await raises(local.edit(photo, prompt))

    assert (error.code, error.retryable) == (UNSUPPORTED_EDIT, False)
    message = str(error)
    assert named in message
    # For end users: what to try instead, without operator settings or a paragraph.
    assert "API_KEY" not in message
    assert len(message.split()) <= 35
    assert all(word in message for word in ("grayscale", "sepia", "blur", "pencil"))
    # The same refusal comes before any work, from the check the API makes at request time.
    with pytest.raises(ProviderError) as early:
        local.check_edit(prompt, with_reference=False)
    assert str(early.value) == message


async def test_a_reference_image_is_refused(local: LocalProvider, photo: bytes) -> None:
    error = await raises(local.edit(photo, "sepia", reference=photo))
    assert error.code == UNSUPPORTED_EDIT
    assert "reference image" in str(error)
    with pytest.raises(ProviderError):
        local.check_edit("sepia", with_reference=True)
    local.check_edit("sepia", with_reference=False)
    assert local.capabilities.reference_image is False
    assert local.capabilities.edits == SUPPORTED_EDITS


@pytest.mark.parametrize(
    ("prompt", "steps"),
    [
        ("please make it brighter, thanks!", ["brighten"]),
        ("Please make it brighter. Thank you!", ["brighten"]),
        ("Could you please make it a bit darker? Thank you so much!", ["darken"]),
        ("Would you kindly turn it black & white :)", ["grayscale"]),
        ("Can you blur it for me, please?", ["blur"]),
        ("I'd like it sepia, thx", ["sepia"]),
        ("i would like a pencil sketch if you don't mind", ["style"]),
        ("Hi! Just invert it, okay? Many thanks.", ["invert"]),
        ("sharpen it a little, then a tad lighter... thanks a lot!!", ["sharpen", "brighten"]),
    ],
)
def test_politeness_does_not_fail_a_request(prompt: str, steps: list[str]) -> None:
    assert [step.operation for step in parse_edit(prompt)] == steps


@pytest.mark.parametrize(
    "prompt", ["please, thanks!", "thank you", "could you add a party hat please?"]
)
def test_politeness_alone_asks_for_nothing(prompt: str) -> None:
    with pytest.raises(ProviderError) as info:
        parse_edit(prompt)
    assert info.value.code == UNSUPPORTED_EDIT


async def test_local_edit_of_garbage_is_a_bad_image(local: LocalProvider) -> None:
    error = await raises(local.edit(b"GIF89a-not-really", "blur"))
    assert error.code == BAD_IMAGE


async def test_providers_read_images_up_to_the_upload_limit() -> None:
    """``ATELIER_MAX_IMAGE_PIXELS`` raised past the decoder's default 50 MP lets such an upload
    in; captions and edits of it must decode under the same limit, not fail as unreadable."""
    big = big_png(7200)  # 51.8 MP
    with pytest.raises(ProviderError) as refused:
        prepared(big, 512)
    assert refused.value.code == BAD_IMAGE
    data, mime_type = prepared(big, 512, 60_000_000)
    assert mime_type == "image/jpeg"
    assert Image.open(io.BytesIO(data)).size == (512, 512)

    providers = build_providers(ProviderSettings(max_image_pixels=60_000_000))
    caption = await providers["local"].caption(big)
    assert caption.text
    edited = await providers["local"].edit(big, "grayscale")
    assert max(Image.open(io.BytesIO(edited)).size) <= 2048
