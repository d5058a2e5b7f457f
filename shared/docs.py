"""`/docs` and `/redoc` with no CDN: Swagger UI and ReDoc served from the `fastapi-offline`
package's copies, so the pages render on a machine without internet; and the whole API's
document and pages (`/whole/...`), which the gateway serves as its own."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from starlette.responses import Response

from shared.errors import NotFound
from shared.jsonhttp import get_and_head
from shared.openapi import WHOLE_API

ASSETS = "/docs/assets"
_MEDIA_TYPES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
_STATIC = resources.files("fastapi_offline").joinpath("static")


def swagger_page(openapi_url: str, title: str) -> Response:
    return get_swagger_ui_html(
        openapi_url=openapi_url,
        title=title,
        oauth2_redirect_url="/docs/oauth2-redirect",
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS}/favicon.png",
    )


def redoc_page(openapi_url: str, title: str) -> Response:
    return get_redoc_html(
        openapi_url=openapi_url,
        title=title,
        redoc_js_url=f"{ASSETS}/redoc.standalone.js",
        redoc_favicon_url=f"{ASSETS}/favicon.png",
        with_google_fonts=False,
    )


def docs_router(title: str) -> APIRouter:
    """The service's own pages (its own `/openapi.json`) and the assets every page loads."""
    router = APIRouter(include_in_schema=False)

    @get_and_head(router, "/docs")
    async def swagger() -> Response:
        return swagger_page("/openapi.json", title)

    @get_and_head(router, "/docs/oauth2-redirect")
    async def oauth2_redirect() -> Response:
        return get_swagger_ui_oauth2_redirect_html()

    @get_and_head(router, "/redoc")
    async def redoc() -> Response:
        return redoc_page("/openapi.json", title)

    @get_and_head(router, ASSETS + "/{name}")
    async def asset(name: str) -> Response:
        if name not in _MEDIA_TYPES:
            raise NotFound(f"No documentation asset {name[:100]}")
        return Response(
            _STATIC.joinpath(name).read_bytes(),
            media_type=_MEDIA_TYPES[name],
            headers={"Cache-Control": "public, max-age=86400"},
        )

    return router


whole_api_router = APIRouter(tags=["service"], include_in_schema=False)


@get_and_head(whole_api_router, "/whole/openapi.json")
async def whole_api_document() -> Response:
    """Served by the command service; the gateway routes `/openapi.json` here."""
    return Response(WHOLE_API.read_bytes(), media_type="application/json")


@get_and_head(whole_api_router, "/whole/docs")
async def whole_api_swagger() -> Response:
    return swagger_page("/openapi.json", "Tasks API")


@get_and_head(whole_api_router, "/whole/redoc")
async def whole_api_redoc() -> Response:
    return redoc_page("/openapi.json", "Tasks API")
