"""Upload refusals name their limits as people read them ("25 MB", "50 MP"), not raw counts."""

from __future__ import annotations

import io

from fastapi import FastAPI
from PIL import Image as PILImage

from tests.auth.test_router import assert_problem
from tests.conftest import AppFactory, SignUp


async def test_size_and_pixel_limits_are_in_megabytes_and_megapixels(
    make_app: AppFactory, sign_up: SignUp
) -> None:
    app: FastAPI = make_app(max_image_pixels=1_500_000)
    user = await sign_up("limits", on=app)
    too_big = await user.client.post(
        "/api/upload/presigned-url",
        json={"filename": "huge.jpg", "content_type": "image/jpeg", "size_bytes": 26_214_401},
        headers=user.csrf,
    )
    detail = str(assert_problem(too_big, 422, "upload.too_large")["detail"])
    assert "25 MB" in detail
    assert "26214400" not in detail

    out = io.BytesIO()
    PILImage.new("RGB", (1600, 1000), (90, 140, 60)).save(out, "PNG")  # 1.6 MP
    answer = await user.client.post(
        "/api/images",
        files={"file": ("wide.png", out.getvalue(), "image/png")},
        headers=user.csrf,
    )
    detail = str(assert_problem(answer, 422, "upload.too_many_pixels")["detail"])
    assert "1.5 MP" in detail
    assert "1500000" not in detail
