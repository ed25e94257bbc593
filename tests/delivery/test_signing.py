"""The signing scheme: canonical options, keys and rotation, and the README's offline examples
(Python and JavaScript, run as printed) minting URLs that a running app serves."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from backend.config import Settings
from backend.delivery import signing
from backend.delivery.signing import Options, OptionsError, SignatureError, Source
from tests.auth.test_router import assert_problem
from tests.conftest import IN_CI, TEST_SECRET
from tests.delivery.conftest import BASE, Stack, decoded

README = Path(__file__).resolve().parents[2] / "README.md"
PARTNER_KEY = "partner-secret-0123456789abcdef"
OLD_KEY = "old-secret-0123456789abcdef"


def example(marker: str) -> str:
    """The code block that follows ``<!-- marker -->`` in the README."""
    found = re.search(
        rf"<!-- {marker} -->\s*```\w+\n(.*?)```", README.read_text(encoding="utf-8"), re.S
    )
    assert found, marker
    return found.group(1)


def settings(**extra: Any) -> Settings:
    return Settings(env="test", secret_key=TEST_SECRET, **extra)


@pytest.mark.parametrize(
    "options",
    [
        Options(),
        Options(width=400),
        Options(width=400, height=300, fit="cover", gravity="smart", format="webp", quality=80),
        Options(height=10, format="avif", expires=1_900_000_000),
    ],
)
def test_canonical_options_round_trip(options: Options) -> None:
    text = options.canonical()
    assert "," not in text
    assert signing.parse_options(text) == options


@pytest.mark.parametrize(
    "text",
    [
        "",
        "fit:inside/g:center",
        "w:0/fit:inside/g:center/fmt:auto",
        "w:-1/fit:inside/g:center/fmt:auto",
        "w:01/fit:inside/g:center/fmt:auto",
        "fit:inside/g:center/fmt:auto/q:101",
        "fit:fill/g:center/fmt:auto",
        "fit:inside/g:center/fmt:gif",
        "fit:inside/g:center/fmt:auto/x:1",
        "fit:inside/fit:inside/g:center/fmt:auto",
        "g:center/fit:inside/fmt:auto",
        "fit:inside/g:center/fmt:auto/",
    ],
)
def test_bad_option_strings_are_refused(text: str) -> None:
    with pytest.raises(OptionsError):
        signing.parse_options(text)


def test_verify_checks_the_signature_before_anything_else() -> None:
    keys = {"a": b"x" * 32, "b": b"y" * 32}
    source = Source("image", uuid.uuid4())
    path = signing.sign_path(keys, Options(width=10), source)
    signed, rest = path.removeprefix("/d/").split("/", 1)
    assert signed.startswith("a.")
    assert signing.verify(keys, signed, rest) == (Options(width=10), source)
    # A key that is no longer listed stops verifying; another key's signature never does.
    with pytest.raises(SignatureError):
        signing.verify({"b": b"y" * 32}, signed, rest)
    with pytest.raises(SignatureError):
        signing.verify(keys, "b." + signed[2:], rest)
    # Garbage after a bad signature is never parsed (SignatureError, not OptionsError).
    with pytest.raises(SignatureError):
        signing.verify(keys, signed, "w:zz/image/nope")


def test_keys_from_settings() -> None:
    derived = signing.keyring(settings())
    assert list(derived) == ["k0"]
    assert derived == signing.keyring(settings())
    assert derived != signing.keyring(Settings(env="test", secret_key="z" * 40))
    keys = signing.keyring(settings(delivery_keys=SecretStr(f"new:{PARTNER_KEY},old:{OLD_KEY}")))
    assert keys == {"new": PARTNER_KEY.encode(), "old": OLD_KEY.encode()}
    for bad in ("nocolon", "k:short", "bad kid:" + PARTNER_KEY, f"a:{PARTNER_KEY},a:{OLD_KEY}"):
        with pytest.raises(ValueError, match="DELIVERY_KEYS"):
            signing.keyring(settings(delivery_keys=SecretStr(bad)))


async def test_readme_python_example_mints_urls_the_server_serves(stack: Stack) -> None:
    alice = await stack.user()
    image_id = await stack.upload(alice)
    app = stack.second_instance(delivery_keys=SecretStr(f"new:{PARTNER_KEY},old:{OLD_KEY}"))
    namespace: dict[str, Any] = {}
    exec(example("delivery-example-python"), namespace)  # noqa: S102 - the README's own code
    mint = namespace["delivery_url"]
    client = stack.anonymous(app)

    url = mint(BASE, "new", PARTNER_KEY, "image", image_id, w=120, h=90, fit="cover", fmt="webp")
    picture = decoded(await client.get(url.removeprefix(BASE)))
    assert (picture.format, picture.size) == ("WEBP", (120, 90))
    # The same URL as the server mints, byte for byte.
    signed_in = stack.anonymous(app)
    signed_in.cookies.update(alice.cookies)
    minted = await signed_in.post(
        "/api/delivery/url",
        json={"image_id": image_id, "width": 120, "height": 90, "fit": "cover", "format": "webp"},
        headers={"X-CSRF-Token": alice.cookies.get("csrf_token") or ""},
    )
    assert minted.status_code == 201, minted.text
    assert minted.json()["url"] == url

    # Rotation: the old key still verifies; dropping it ends its URLs.
    old = mint(BASE, "old", OLD_KEY, "image", image_id, w=60, exp=int(time.time()) + 60)
    assert (await client.get(old.removeprefix(BASE))).status_code == 200
    rotated = stack.anonymous(stack.second_instance(delivery_keys=SecretStr(f"new:{PARTNER_KEY}")))
    assert_problem(await rotated.get(old.removeprefix(BASE)), 403, "delivery.bad_signature")
    assert (await rotated.get(url.removeprefix(BASE))).status_code == 200
    # A URL minted with a guessed key is refused.
    forged = mint(BASE, "new", "not-the-secret-123456", "image", image_id, w=60)
    assert_problem(await client.get(forged.removeprefix(BASE)), 403, "delivery.bad_signature")


async def test_readme_js_example_mints_urls_the_server_serves(stack: Stack) -> None:
    node = shutil.which("node")
    if node is None:
        if IN_CI:
            pytest.fail("node is required in CI to check the README's JavaScript example")
        pytest.skip("node is not installed")
    alice = await stack.user()
    image_id = await stack.upload(alice)
    script = example("delivery-example-js") + (
        f'console.log(deliveryUrl("{BASE}", "new", "{PARTNER_KEY}", "image", "{image_id}",'
        ' { w: 100, fmt: "png", q: 50 }));\n'
    )
    out = subprocess.run(
        [node, "-e", script], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    app = stack.second_instance(delivery_keys=SecretStr(f"new:{PARTNER_KEY}"))
    picture = decoded(await stack.anonymous(app).get(out.removeprefix(BASE)))
    assert (picture.format, picture.size) == ("PNG", (100, 75))
