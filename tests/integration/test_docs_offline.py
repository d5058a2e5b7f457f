"""`/docs` and `/redoc` render with no internet: every script, style and icon they load is
served by the service itself."""

from __future__ import annotations

import re

import httpx

from shared.config import Settings

ASSET = re.compile(r"""(?:src|href)=["']([^"']+)["']|url: *["']([^"']+)["']""")


def loaded_urls(html: str) -> set[str]:
    return {first or second for first, second in ASSET.findall(html)}


async def test_the_documentation_pages_load_only_assets_the_service_serves(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    pages = {path: await client.get(path) for path in ("/docs", "/redoc")}

    for path, page in pages.items():
        assert page.status_code == 200, path
        assert page.headers["content-type"].startswith("text/html")
        urls = loaded_urls(page.text)
        assert urls, path
        assert not [url for url in urls if "//" in url], (path, urls)  # no other host, no CDN
        for url in urls:
            asset = await client.get(url)
            assert asset.status_code == 200, (path, url)
            assert asset.content, url
    swagger = loaded_urls(pages["/docs"].text)
    assert "/docs/assets/swagger-ui-bundle.js" in swagger
    assert "/docs/assets/redoc.standalone.js" in loaded_urls(pages["/redoc"].text)
    script = await client.get("/docs/assets/swagger-ui-bundle.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert len(script.content) > 100_000  # the real bundle, not a stub
    unknown = await client.get("/docs/assets/../../etc/passwd")
    assert unknown.status_code == 404
