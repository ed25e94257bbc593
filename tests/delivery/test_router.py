"""Delivery over HTTP on both stacks: minting, every option, signatures, caching headers,
negotiation, the derivative cache, single rendering, deletion."""

from __future__ import annotations

import asyncio
import io
import time
import uuid

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageCms
from sqlalchemy import select

from backend.delivery import service, signing, transform
from backend.delivery.signing import Options, Source
from backend.images.models import Blob
from backend.tasks.worker import running_worker
from tests.auth.test_router import assert_problem
from tests.delivery.conftest import BASE, Stack, decoded, jpeg
from tests.images import samples
from tests.photos import PORTRAIT

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def offline(stack: Stack, source: Source, **options: object) -> str:
    """A URL signed here with the server's key, for options the mint endpoint refuses."""
    return signing.sign_path(signing.keyring(stack.settings), Options(**options), source)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("body", "accept", "fmt", "size"),
    [
        ({}, "image/jpeg", "JPEG", (640, 480)),
        ({"width": 320}, "", "JPEG", (320, 240)),
        ({"height": 120}, "", "JPEG", (160, 120)),
        ({"width": 200, "height": 200}, "", "JPEG", (200, 150)),
        ({"width": 2000}, "", "JPEG", (640, 480)),  # never enlarged
        ({"width": 200, "height": 200, "fit": "cover"}, "", "JPEG", (200, 200)),
        ({"width": 300, "height": 100, "fit": "cover", "gravity": "smart"}, "", "JPEG", (300, 100)),
        ({"width": 1280, "height": 480, "fit": "cover"}, "", "JPEG", (640, 240)),
        ({"width": 300, "height": 100, "fit": "contain", "format": "png"}, "", "PNG", (300, 100)),
        ({"width": 100, "format": "webp"}, "", "WEBP", (100, 75)),
        ({"width": 100, "format": "avif"}, "", "AVIF", (100, 75)),
        ({"width": 100, "format": "jpeg"}, "image/avif,image/webp", "JPEG", (100, 75)),
        ({"width": 100, "format": "auto"}, "image/avif,image/webp,*/*", "AVIF", (100, 75)),
        ({"width": 100}, "image/webp,*/*", "WEBP", (100, 75)),
        ({"width": 100}, "image/avif;q=0, image/webp", "WEBP", (100, 75)),
        ({"width": 100}, "text/html,*/*;q=0.8", "JPEG", (100, 75)),
    ],
)
async def test_every_option_renders_what_it_says(
    stack: Stack, body: dict[str, object], accept: str, fmt: str, size: tuple[int, int]
) -> None:
    alice = await stack.user()
    image_id = await stack.upload(alice)
    path = await stack.mint(alice, image_id=image_id, **body)
    answer = await stack.anonymous().get(path, headers={"Accept": accept})
    picture = decoded(answer)
    assert (picture.format, picture.size) == (fmt, size)
    assert answer.headers["content-type"] == f"image/{fmt.lower()}"
    # Metadata stripped, an sRGB profile attached.
    assert not picture.getexif()
    assert picture.info.get("icc_profile")
    profile = ImageCms.ImageCmsProfile(io.BytesIO(picture.info["icc_profile"]))
    assert "sRGB" in ImageCms.getProfileDescription(profile)
    assert "set-cookie" not in answer.headers
    if body.get("fit") == "contain":
        assert picture.mode == "RGBA"
        assert picture.getpixel((0, 0))[3] == 0  # type: ignore[index]  # padding is transparent


async def test_quality_changes_the_bytes(stack: Stack) -> None:
    alice = await stack.user()
    image_id = await stack.upload(alice)
    client = stack.anonymous()
    sizes = []
    for quality in (10, 95):
        path = await stack.mint(alice, image_id=image_id, format="webp", quality=quality)
        answer = await client.get(path)
        assert decoded(answer).format == "WEBP"
        sizes.append(len(answer.content))
    assert sizes[0] < sizes[1] / 2


def vary(answer: httpx.Response) -> set[str]:
    # CORS adds Origin (credentialed CORS); what matters here is Accept.
    return {v.strip() for v in answer.headers.get("vary", "").split(",") if v.strip()}


async def test_headers_etag_304_and_vary(stack: Stack) -> None:
    alice = await stack.user()
    image_id = await stack.upload(alice)
    client = stack.anonymous()
    auto = await stack.mint(alice, image_id=image_id, width=100)
    first = await client.get(auto, headers={"Accept": "image/webp"})
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert etag.startswith('"')
    assert not etag.startswith("W/")
    assert first.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert "Accept" in vary(first)
    again = await client.get(auto, headers={"Accept": "image/webp", "If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    assert "Accept" in vary(again)
    # Another negotiated format is another representation with its own tag.
    jpeg_answer = await client.get(auto, headers={"Accept": "*/*", "If-None-Match": etag})
    assert jpeg_answer.status_code == 200
    assert jpeg_answer.headers["etag"] != etag

    fixed = await stack.mint(alice, image_id=image_id, width=100, format="png")
    answer = await client.get(fixed, headers={"Accept": "image/webp"})
    assert answer.headers["content-type"] == "image/png"
    assert "Accept" not in vary(answer)
    weak = await client.get(fixed, headers={"If-None-Match": f"W/{answer.headers['etag']}"})
    assert weak.status_code == 304


async def test_expiring_urls(stack: Stack) -> None:
    alice = await stack.user()
    image_id = await stack.upload(alice)
    answer = await alice.post(
        "/api/delivery/url", json={"image_id": image_id, "width": 50, "expires_in": 600}
    )
    assert answer.status_code == 201
    expires_at = answer.json()["expires_at"]
    assert expires_at is not None
    served = await stack.anonymous().get(answer.json()["url"].removeprefix(BASE))
    assert served.status_code == 200
    max_age = int(served.headers["cache-control"].split("max-age=")[1])
    assert 590 <= max_age <= 600
    assert "immutable" not in served.headers["cache-control"]

    past = offline(
        stack, Source("image", uuid.UUID(image_id)), width=50, expires=int(time.time()) - 1
    )
    assert_problem(await stack.anonymous().get(past), 403, "delivery.expired")


async def test_tampered_urls_are_403(stack: Stack) -> None:
    alice = await stack.user()
    image_id = await stack.upload(alice)
    path = await stack.mint(alice, image_id=image_id, width=100)
    client = stack.anonymous()
    assert (await client.get(path)).status_code == 200
    _, _, signed, rest = path.split("/", 3)
    options, kind, ident = rest.rsplit("/", 2)
    kid, sig = signed.split(".")
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    other = str(uuid.uuid4())
    for bad in (
        f"/d/{kid}.{flipped}/{options}/{kind}/{ident}",
        f"/d/{kid}.{sig}/{options.replace('w:100', 'w:101')}/{kind}/{ident}",
        f"/d/{kid}.{sig}/{options}/{kind}/{other}",
        f"/d/{kid}.{sig}/{options}/sketch/{ident}",
        f"/d/nokey.{sig}/{options}/{kind}/{ident}",
        f"/d/{kid}/{options}/{kind}/{ident}",
        f"/d/{kid}.{sig}/{options}/exp:9999999999/{kind}/{ident}",
        f"/d/{kid}.{sig}/{kind}/{ident}",
        f"/d/{kid}.{sig}/{ident}",
    ):
        assert_problem(await client.get(bad), 403, "delivery.bad_signature")

    source = Source("image", uuid.UUID(image_id))
    too_big = offline(stack, source, width=stack.settings.delivery_max_side + 1)
    assert_problem(await client.get(too_big), 403, "delivery.out_of_bounds")
    # Correctly signed but not canonical (another order): one URL per variant, so refused.
    keys = signing.keyring(stack.settings)
    kid, secret = next(iter(keys.items()))
    text = "fit:inside/w:100/g:center/fmt:auto"
    odd = f"/d/{kid}.{signing.signature(secret, text, source.path())}/{text}/{source.path()}"
    assert_problem(await client.get(odd), 400, "delivery.bad_options")


async def test_mint_refusals(stack: Stack) -> None:
    alice, bob = await stack.user(), await stack.user()
    image_id = await stack.upload(alice)
    # Foreign and unknown sources answer alike.
    assert_problem(
        await bob.post("/api/delivery/url", json={"image_id": image_id}), 404, "image.not_found"
    )
    assert_problem(
        await alice.post("/api/delivery/url", json={"image_id": str(uuid.uuid4())}),
        404,
        "image.not_found",
    )
    assert_problem(
        await alice.post("/api/delivery/url", json={"sketch_id": str(uuid.uuid4())}),
        404,
        "sketch.not_found",
    )
    for body in (
        {},
        {"image_id": image_id, "sketch_id": image_id},
        {"image_id": image_id, "width": 0},
        {"image_id": image_id, "quality": 101},
        {"image_id": image_id, "fit": "fill"},
        {"image_id": image_id, "format": "gif"},
        {"image_id": image_id, "gravity": "north"},
        {"image_id": image_id, "expires_in": 0},
        {"image_id": image_id, "colour": "red"},
    ):
        assert_problem(await alice.post("/api/delivery/url", json=body), 422, "request.validation")
    side = stack.settings.delivery_max_side
    for body in (
        {"image_id": image_id, "width": side + 1},
        {"image_id": image_id, "height": side + 1},
        {"image_id": image_id, "width": side, "height": side},  # over the pixel bound
    ):
        assert_problem(
            await alice.post("/api/delivery/url", json=body), 422, "delivery.out_of_bounds"
        )
    assert_problem(
        await alice.post("/api/delivery/url", json={"image_id": image_id, "expires_in": 10**9}),
        422,
        "delivery.bad_expiry",
    )
    # A failed upload has nothing to deliver.
    failed = await alice.post(
        "/api/images", files={"file": ("x.jpg", b"not a jpeg at all", "image/jpeg")}
    )
    assert failed.status_code == 422
    assert_problem(
        await alice.post("/api/delivery/url", json={"image_id": failed.json()["image_id"]}),
        409,
        "delivery.source_failed",
    )
    # A sketch without a result yet (no worker runs here).
    created = await alice.post(
        "/api/sketch/create", json={"image_id": image_id, "style": "pencil", "method": "basic"}
    )
    assert created.status_code == 202, created.text
    assert_problem(
        await alice.post("/api/delivery/url", json={"sketch_id": created.json()["sketch"]["id"]}),
        409,
        "delivery.source_not_ready",
    )
    # Minting needs a user; serving does not.
    assert_problem(
        await stack.anonymous().post("/api/delivery/url", json={"image_id": image_id}),
        401,
        "auth.unauthenticated",
    )


async def test_a_cache_hit_does_no_pixel_work_on_any_instance(
    stack: Stack, decodes: list[int]
) -> None:
    alice = await stack.user()
    image_id = await stack.upload(alice)
    path = await stack.mint(alice, image_id=image_id, width=120, format="webp")
    first = await stack.anonymous().get(path)
    assert first.status_code == 200
    assert len(decodes) == 1
    for app in (stack.app, stack.second_instance()):
        again = await stack.anonymous(app).get(path)
        assert again.status_code == 200
        assert again.content == first.content
        assert again.headers["etag"] == first.headers["etag"]
    assert len(decodes) == 1
    # A URL with another expiry is the same variant: still no pixel work.
    expiring = offline(
        stack,
        Source("image", uuid.UUID(image_id)),
        width=120,
        format="webp",
        expires=int(time.time()) + 60,
    )
    assert (await stack.anonymous().get(expiring)).content == first.content
    assert len(decodes) == 1
    # The object is where the key says, immutable.
    key = service.derivative_key(
        Source("image", uuid.UUID(image_id)), Options(width=120, format="webp"), "webp", 80
    )
    info = await stack.resources.storage.head(key)
    assert info is not None
    assert info.size == len(first.content)


async def test_concurrent_first_requests_render_once(stack: Stack, decodes: list[int]) -> None:
    alice = await stack.user()
    image_id = await stack.upload(alice, jpeg(2400, 1600))
    path = await stack.mint(alice, image_id=image_id, width=500, format="webp")
    clients = [
        stack.anonymous(app) for app in (stack.app, stack.second_instance()) for _ in range(4)
    ]
    answers = await asyncio.gather(*(c.get(path) for c in clients))
    assert [a.status_code for a in answers] == [200] * 8
    assert len({a.headers["etag"] for a in answers}) == 1
    assert len({a.content for a in answers}) == 1
    assert len(decodes) == 1


async def test_deleting_the_image_deletes_its_derivatives(stack: Stack) -> None:
    alice = await stack.user()
    image_id = await stack.upload(alice)
    source = Source("image", uuid.UUID(image_id))
    paths = [
        await stack.mint(alice, image_id=image_id, width=64, format="png"),
        await stack.mint(alice, image_id=image_id, width=80, format="webp"),
    ]
    client = stack.anonymous()
    for path in paths:
        assert (await client.get(path)).status_code == 200
    keys = [
        service.derivative_key(source, Options(width=64, format="png"), "png", 80),
        service.derivative_key(source, Options(width=80, format="webp"), "webp", 80),
    ]
    assert all([await stack.resources.storage.head(k) for k in keys])
    assert (await alice.delete(f"/api/images/{image_id}")).status_code == 204
    for path in paths:
        assert_problem(await client.get(path), 404, "delivery.not_found")
    assert [await stack.resources.storage.head(k) for k in keys] == [None, None]


async def test_images_api_links_open_without_cookies(stack: Stack) -> None:
    alice = await stack.user()
    image_id = await stack.upload(alice, jpeg(1200, 900))
    body = (await alice.get(f"/api/images/{image_id}")).json()
    links = body["delivery"]
    assert set(links) == {"small", "card", "medium", "large"}
    listed = (await alice.get("/api/images")).json()["items"][0]
    assert listed["delivery"] == links
    client = stack.anonymous()
    small = decoded(await client.get(links["small"].removeprefix(BASE), headers={"Accept": "*/*"}))
    assert (small.format, small.size) == ("JPEG", (200, 150))
    card = decoded(await client.get(links["card"].removeprefix(BASE), headers={"Accept": "*/*"}))
    assert card.size == (400, 300)
    medium = decoded(
        await client.get(links["medium"].removeprefix(BASE), headers={"Accept": "image/webp"})
    )
    assert (medium.format, medium.size) == ("WEBP", (800, 600))


async def test_sketch_results_are_delivered_and_deleted_with_the_sketch(stack: Stack) -> None:
    alice = await stack.user()
    image_id = await stack.upload(alice)
    async with running_worker(stack.resources):
        created = await alice.post(
            "/api/sketch/create", json={"image_id": image_id, "style": "pencil", "method": "basic"}
        )
        assert created.status_code == 202, created.text
        sketch_id = created.json()["sketch"]["id"]
        for _ in range(200):
            sketch = (await alice.get(f"/api/sketch/{sketch_id}")).json()
            if sketch["status"] != "processing":
                break
            await asyncio.sleep(0.05)
        assert sketch["status"] == "ready", sketch
    path = await stack.mint(alice, sketch_id=sketch_id, width=100, height=100, fit="cover")
    client = stack.anonymous()
    picture = decoded(await client.get(path, headers={"Accept": "image/webp"}))
    assert (picture.format, picture.size) == ("WEBP", (100, 100))
    key = service.derivative_key(
        Source("sketch", uuid.UUID(sketch_id)),
        Options(width=100, height=100, fit="cover"),
        "webp",
        80,
    )
    assert await stack.resources.storage.head(key) is not None
    assert (await alice.delete(f"/api/sketch/{sketch_id}")).status_code == 204
    assert_problem(await client.get(path), 404, "delivery.not_found")
    assert await stack.resources.storage.head(key) is None
    # The image itself still serves.
    assert (
        await client.get(await stack.mint(alice, image_id=image_id, width=50))
    ).status_code == 200


async def test_smart_crop_over_http_keeps_the_face(stack: Stack) -> None:
    alice = await stack.user()
    image_id = await stack.upload(alice, PORTRAIT.read_bytes())
    path = await stack.mint(
        alice, image_id=image_id, width=80, height=400, fit="cover", gravity="smart"
    )
    out = decoded(await stack.anonymous().get(path, headers={"Accept": "image/png"}))
    assert out.size == (80, 400)
    portrait = np.asarray(cv2.imread(str(PORTRAIT), cv2.IMREAD_COLOR), dtype=np.uint8)
    (fx, _, fw, _), *_ = transform.detect_faces(portrait)
    crop = (round(80 * portrait.shape[0] / 400), portrait.shape[0])
    back = cv2.resize(cv2.cvtColor(np.asarray(out.convert("RGB")), cv2.COLOR_RGB2BGR), crop)
    scores = cv2.matchTemplate(portrait, back, cv2.TM_CCOEFF_NORMED)
    x = int(cv2.minMaxLoc(scores)[3][0])
    assert x <= fx
    assert fx + fw <= x + crop[0]


async def test_the_original_is_never_served_metadata_goes_orientation_stays(stack: Stack) -> None:
    # A camera JPEG stored sideways (orientation 6) with GPS, a MakerNote and a comment.
    original = samples.jpeg(
        image=PILImage.open(io.BytesIO(jpeg(120, 80))),
        exif=samples.full_exif(orientation=6),
        comment=b"private note",
    )
    alice = await stack.user()
    image_id = await stack.upload(alice, original)
    client = stack.anonymous()
    for body in ({}, {"format": "jpeg", "quality": 100}, {"format": "png"}):
        answer = await client.get(await stack.mint(alice, image_id=image_id, **body))
        picture = decoded(answer)
        assert answer.content != original
        assert picture.size == (80, 120)  # upright: the orientation is applied, not tagged
        assert not picture.getexif()
        assert b"private note" not in answer.content
        assert b"vendor-secret" not in answer.content
        assert b"Exif" not in answer.content


async def test_transparency_is_kept_where_the_format_has_it(stack: Stack) -> None:
    source = PILImage.new("RGBA", (200, 100), (0, 0, 0, 0))
    source.paste((255, 0, 0, 255), (50, 25, 150, 75))
    out = io.BytesIO()
    source.save(out, "PNG")
    alice = await stack.user()
    answer = await alice.post(
        "/api/images", files={"file": ("logo.png", out.getvalue(), "image/png")}
    )
    assert answer.status_code == 201, answer.text
    image_id = answer.json()["id"]
    client = stack.anonymous()
    for fmt in ("png", "webp"):
        picture = decoded(
            await client.get(await stack.mint(alice, image_id=image_id, width=100, format=fmt))
        )
        assert picture.mode == "RGBA"
        assert picture.getpixel((2, 2))[3] == 0  # type: ignore[index]
        red, green, blue, opaque = picture.getpixel((50, 25))  # type: ignore[misc]
        assert (red > 240, green < 15, blue < 15, opaque) == (True, True, True, 255)
    flat = decoded(
        await client.get(await stack.mint(alice, image_id=image_id, width=100, format="jpeg"))
    )
    corner = flat.convert("RGB").getpixel((2, 2))
    assert isinstance(corner, tuple)
    assert min(corner) > 240  # composited on white


async def test_an_original_changed_in_storage_is_never_served(stack: Stack) -> None:
    # Only storage itself could swap the bytes under a confirmed original's key; delivery reads
    # it back checked against the record, like every other reader, and refuses to render it.
    alice = await stack.user()
    data = jpeg(320, 240)
    image_id = await stack.upload(alice, data)
    image = (await alice.get(f"/api/images/{image_id}")).json()
    async with stack.resources.db.sessionmaker() as session:
        blob = await session.scalar(select(Blob).where(Blob.sha256 == image["sha256"]))
    assert blob is not None
    flipped = bytes([*data[:-10], *(b ^ 0xFF for b in data[-10:])])
    await stack.resources.storage.put(blob.storage_key, flipped, content_type="image/jpeg")
    path = await stack.mint(alice, image_id=image_id, width=64, format="png")
    assert_problem(await stack.anonymous().get(path), 409, "delivery.source_changed")


async def test_public_urls_answer_any_origin_without_splitting_caches(stack: Stack) -> None:
    """A CDN keys on Vary: an echoed Origin would store one copy per embedding site."""
    alice = await stack.user()
    image_id = await stack.upload(alice)
    url = await stack.mint(alice, image_id=image_id, width=100, format="jpeg")
    client = stack.anonymous()
    for origin in (BASE, "https://shop.example", "https://blog.example"):
        answer = await client.get(url, headers={"Origin": origin})
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in answer.headers
        assert "Origin" not in vary(answer)
    # The API itself still answers only its own origins, per origin.
    api = await client.get("/health", headers={"Origin": "https://shop.example"})
    assert "access-control-allow-origin" not in api.headers
