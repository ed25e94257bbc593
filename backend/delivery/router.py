"""Delivery endpoints: minting a signed URL (authenticated) and serving one (no cookies)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from backend.auth.deps import CurrentUser
from backend.core.db import SessionDep
from backend.core.errors import problem_responses
from backend.core.resources import Resources, ResourcesDep
from backend.delivery import service
from backend.delivery.signing import Fit, Format, Gravity, Options, Source

router = APIRouter(tags=["delivery"])


class MintIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_id: uuid.UUID | None = None
    sketch_id: uuid.UUID | None = None
    width: int | None = Field(default=None, ge=1, description="Output width in px")
    height: int | None = Field(default=None, ge=1, description="Output height in px")
    fit: Fit = "inside"
    gravity: Gravity = "center"
    format: Format = Field(default="auto", description="auto: AVIF, WebP or JPEG from Accept")
    quality: int | None = Field(default=None, ge=1, le=100)
    expires_in: int | None = Field(default=None, ge=1, description="Seconds; none: never")

    @model_validator(mode="after")
    def _one_source(self) -> MintIn:
        if (self.image_id is None) == (self.sketch_id is None):
            raise ValueError("give exactly one of image_id and sketch_id")
        return self


class MintOut(BaseModel):
    url: str
    expires_at: datetime | None


@router.post(
    "/api/delivery/url",
    status_code=status.HTTP_201_CREATED,
    response_model=MintOut,
    responses=problem_responses(401, 403, 404, 409, 422),
)
async def mint_url(
    body: MintIn, user: CurrentUser, session: SessionDep, resources: ResourcesDep
) -> MintOut:
    source = (
        Source("image", body.image_id)
        if body.image_id is not None
        else Source("sketch", body.sketch_id)  # type: ignore[arg-type]
    )
    options = Options(
        width=body.width,
        height=body.height,
        fit=body.fit,
        gravity=body.gravity,
        format=body.format,
        quality=body.quality,
    )
    minted = await service.mint(
        session,
        resources.settings,
        user_id=user.id,
        source=source,
        options=options,
        expires_in=body.expires_in,
    )
    return MintOut(url=minted.url, expires_at=minted.expires_at)


@router.get(
    "/d/{signed}/{rest:path}",
    response_class=Response,
    responses={
        200: {"description": "The derived image", "content": {"image/*": {}}},
        304: {"description": "Not modified"},
        **problem_responses(400, 403, 404, 409, 422),
    },
)
async def deliver(
    signed: str,
    rest: str,
    resources: ResourcesDep,
    accept: Annotated[str, Header()] = "",
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """A signed URL minted by `POST /api/delivery/url` (or offline, see the README)."""
    served = await service.serve(
        service.Deps(resources.db, resources.storage, resources.redis, resources.settings),
        signed=signed,
        rest=rest,
        accept=accept,
        if_none_match=if_none_match,
    )
    # Public bytes, the same for every site: no per-origin answer (see core/cors.py).
    headers = {
        "ETag": f'"{served.etag}"',
        "Cache-Control": served.cache_control,
        "Access-Control-Allow-Origin": "*",
    }
    if served.vary:
        headers["Vary"] = "Accept"
    if served.data is None:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(served.data, media_type=served.content_type, headers=headers)


async def bind_link_settings(request: Request) -> None:
    """Lets resources of other features (an image's JSON) carry signed links."""
    # The app's resources read directly: a sub-dependency would cost more than the binding.
    resources: Resources = request.app.state.resources
    await service.bind_settings(resources.settings)
