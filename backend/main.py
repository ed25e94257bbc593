"""The application factory: routers, middleware, error handlers, lifespan."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

from backend.ai.router import router as ai_router
from backend.auth.router import admin_router
from backend.auth.router import router as auth_router
from backend.batches.router import router as batches_router
from backend.composition import AppResources
from backend.config import Settings, get_settings
from backend.core.cors import ApiCORSMiddleware
from backend.core.errors import PROBLEM_JSON, Problem, install_error_handlers
from backend.core.logging import configure_logging
from backend.core.middleware import BodyLimitMiddleware, RequestContextMiddleware
from backend.core.proxy import TrustedProxyMiddleware
from backend.core.textfit import text_fit
from backend.delivery.router import bind_link_settings
from backend.delivery.router import router as delivery_router
from backend.images.router import router as images_router
from backend.ops.router import router as ops_router
from backend.realtime.router import router as realtime_router
from backend.sketches.router import router as sketches_router
from backend.storage.router import router as storage_router
from backend.tasks.router import admin_router as tasks_admin_router
from backend.tasks.router import router as tasks_router
from backend.tasks.worker import load_task_modules, running_worker

WEB_DIR = Path(__file__).resolve().parent / "web"
DESCRIPTION = """Atelier turns photos into sketches, captions and edits, and imports product
catalogues from CSV. Sign in with cookies (send `X-CSRF-Token` on unsafe requests) or send an
`X-API-Key` header. Errors are RFC 9457 problem details with a stable `code`."""


def create_app(
    settings: Settings | None = None, *, resources: AppResources | None = None
) -> FastAPI:
    settings = settings or get_settings()
    resources = resources or AppResources(settings)
    configure_logging(settings.log_level, json=settings.log_json)

    load_task_modules(settings.task_modules)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            # Embedded mode (`make run`, no REDIS_URL): the worker runs as a task in this process.
            if settings.run_embedded_worker:
                async with running_worker(resources):
                    yield
            else:
                yield
        finally:
            await resources.close()

    app = FastAPI(
        title="Atelier",
        version=settings.version,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Starlette builds slash redirects from the Host header (an open redirect when a proxy
        # forwards any Host); every documented path is matched exactly instead.
        redirect_slashes=False,
        # NUL and lone surrogates are refused for every route here, not per endpoint.
        dependencies=[Depends(text_fit)],
        # The API docs are served below from vendored assets: FastAPI's own pages load them
        # from a CDN, which leaves /docs blank offline or behind a strict egress policy.
        docs_url=None,
        redoc_url=None,
    )
    app.state.resources = resources
    install_error_handlers(app)

    app.add_middleware(
        ApiCORSMiddleware,
        allow_origins=settings.browser_origins,
        allow_credentials=True,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=[
            "Content-Type",
            "X-CSRF-Token",
            "X-API-Key",
            "X-Request-ID",
            "Idempotency-Key",
        ],
        expose_headers=["X-Request-ID", "Retry-After"],
    )
    # Multipart framing (boundaries, part headers, the signed form's fields) on top of a file.
    multipart_overhead = 64 * 1024
    app.add_middleware(
        BodyLimitMiddleware,
        max_multipart=max(settings.max_upload_bytes, settings.batch_max_csv_bytes)
        + multipart_overhead,
    )
    # Just inside the request context: the client address is settled before anything reads
    # it, and bound to the request's log lines.
    app.add_middleware(TrustedProxyMiddleware, hops=settings.trusted_proxy_hops)
    # Added last so it is outermost: every answer, even a CORS refusal, gets a request id.
    app.add_middleware(RequestContextMiddleware, gcp_project=settings.google_cloud_project)

    linked = [Depends(bind_link_settings)]
    # Starlette tries routes in turn and each miss through FastAPI's included routers costs a few
    # µs, so the routers a client calls most (the gallery, the session) are tried first. No path
    # is served by two routers (tests/test_routing.py), so the order changes no path's meaning;
    # the schema keeps the reference's order (DOC_ORDER).
    app.include_router(images_router, dependencies=linked)
    app.include_router(auth_router)
    app.include_router(ops_router)
    app.include_router(admin_router)
    app.include_router(tasks_router)
    app.include_router(tasks_admin_router)
    app.include_router(sketches_router, dependencies=linked)
    app.include_router(ai_router)
    app.include_router(batches_router)
    app.include_router(storage_router)
    app.include_router(delivery_router)
    app.include_router(realtime_router)

    # The bundled web app: plain files, no build step. "no-cache" means revalidate (StaticFiles
    # answers ETag/Last-Modified), so a deploy is picked up at once without hashed file names.
    app.mount("/web", NoCacheStaticFiles(directory=WEB_DIR), name="web")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    _register_docs(app)
    _register_problem_schema(app)
    return app


VENDOR = "/web/vendor"


def _register_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc, every asset from this app (no CDN, no fonts)."""
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect = "/docs/oauth2-redirect"

    def prefix(request: Request) -> str:
        # Behind a path prefix (an API Gateway stage) the browser must ask for it too.
        return str(request.scope.get("root_path", "")).rstrip("/")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = prefix(request)
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - API",
            oauth2_redirect_url=root + oauth2_redirect,
            swagger_js_url=f"{root}{VENDOR}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{VENDOR}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{root}{VENDOR}/swagger-ui/favicon-32x32.png",
        )

    @app.get(oauth2_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = prefix(request)
        page = get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - API",
            redoc_js_url=f"{root}{VENDOR}/redoc/redoc.standalone.js",
            redoc_favicon_url=f"{root}{VENDOR}/swagger-ui/favicon-32x32.png",
            with_google_fonts=False,
        )
        # ReDoc's sidebar always shows its maker's logo from their CDN: images stay local.
        page.headers["Content-Security-Policy"] = "img-src 'self' data:"
        return page


class NoCacheStaticFiles(StaticFiles):
    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        return response


def _register_problem_schema(app: FastAPI) -> None:
    """Make ``#/components/schemas/Problem`` exist even where no route names the model."""
    original = app.openapi

    def openapi() -> dict[str, object]:
        if app.openapi_schema is None:
            schema = original()
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas.setdefault(
                "Problem", Problem.model_json_schema(ref_template="#/components/schemas/{model}")
            )
            # FastAPI documents validation errors as plain JSON; ours are problem+json.
            problem = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
            for item in schema.get("paths", {}).values():
                for operation in item.values():
                    answer = operation.get("responses", {}).get("422")
                    if answer is not None:
                        answer["content"] = problem
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
            schema["paths"] = _in_doc_order(schema.get("paths", {}))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# The order the API is documented in (/docs, /openapi.json): by feature, as a reader meets them.
# Independent of the order routes are matched in (create_app).
DOC_ORDER: list[APIRouter] = [
    ops_router,
    auth_router,
    admin_router,
    tasks_router,
    tasks_admin_router,
    images_router,
    sketches_router,
    ai_router,
    batches_router,
    storage_router,
    delivery_router,
    realtime_router,
]


def _in_doc_order(paths: dict[str, Any]) -> dict[str, Any]:
    rank: dict[str, int] = {}
    for router in DOC_ORDER:
        for route in router.routes:
            # OpenAPI writes {key:path} as {key}.
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", getattr(route, "path", ""))
            rank.setdefault(path, len(rank))
    # sorted() is stable: paths of no router (the app's own) keep their place after the rest.
    return dict(sorted(paths.items(), key=lambda item: rank.get(item[0], len(rank))))
