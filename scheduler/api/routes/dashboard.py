"""The dashboard: static HTML, JS and CSS shipped as package data (no CDN, works offline)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from scheduler.errors import NotFound

STATIC_DIR = Path(__file__).resolve().parents[1] / "dashboard" / "static"
_MEDIA = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}

router = APIRouter(tags=["dashboard"], include_in_schema=False)


@router.get("/dashboard")
def dashboard() -> FileResponse:
    """The dashboard page; it asks for an API key and calls the JSON endpoints with it."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


@router.get("/dashboard/")
def dashboard_slash() -> RedirectResponse:
    """Redirect ``/dashboard/`` to ``/dashboard`` (relative asset paths assume no slash)."""
    return RedirectResponse("/dashboard")


@router.get("/dashboard/static/{name}")
def static_file(name: str) -> FileResponse:
    """One file of the dashboard's static directory (flat, by name only).

    Raises:
        NotFound: no such file.
    """
    files = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file()}
    if name not in files:
        raise NotFound(f"no dashboard file {name!r}")
    path = files[name]
    return FileResponse(path, media_type=_MEDIA.get(path.suffix, "application/octet-stream"))
