"""A small typed HTTP client for gridshift's OpenAI-compatible API, used by the CLI."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import requests

from scheduler.errors import (
    GridshiftError,
    InvalidInput,
    InvalidTransition,
    LimitExceeded,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)


class ApiUnreachable(GridshiftError):
    """Raised when the API cannot be reached (connection refused, DNS failure, timeout)."""


class ApiError(GridshiftError):
    """Raised when the API answers with an error the client has no better class for (5xx...)."""

    def __init__(self, message: str, *, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


# HTTP status -> the project error the client raises; anything else becomes ApiError.
_STATUS_ERRORS: Mapping[int, type[GridshiftError]] = {
    400: InvalidInput,
    401: Unauthenticated,
    403: PermissionDenied,
    404: NotFound,
    409: InvalidTransition,
    413: LimitExceeded,
    422: InvalidInput,
}


def _error_message(response: requests.Response) -> str:
    """The message of an OpenAI error envelope, or the raw body when there is none."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:500] or response.reason or f"HTTP {response.status_code}"
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        message = str(error["message"])
        if error.get("param"):
            message += f" (param: {error['param']})"
        return message
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(body)[:500]


class GridshiftClient:
    """Calls the API over HTTP with a bearer key; every call has a timeout.

    Errors are translated at this boundary: connection problems raise ``ApiUnreachable``,
    HTTP errors raise ``NotFound`` (404), ``Unauthenticated`` (401), ``PermissionDenied`` (403),
    ``InvalidTransition`` (409), ``InvalidInput`` (400, 422; ``LimitExceeded`` for 413) or
    ``ApiError``, each carrying the API's message.
    """

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 30.0) -> None:
        """Create a client.

        Args:
            base_url: Root of the API, e.g. ``http://127.0.0.1:8080`` (a trailing ``/v1`` is
                accepted too).
            api_key: Bearer key sent in ``Authorization``; empty sends none.
            timeout_s: Connect and read timeout of every request, in seconds.
        """
        root = base_url.rstrip("/")
        self.base_url = root[: -len("/v1")] if root.endswith("/v1") else root
        self.timeout_s = timeout_s
        self._session = requests.Session()
        if api_key:
            self._session.headers["Authorization"] = f"Bearer {api_key}"

    def close(self) -> None:
        """Release the connection pool."""
        self._session.close()

    def __enter__(self) -> GridshiftClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = f"{self.base_url}{path}"
        try:
            response = self._session.request(method, url, timeout=self.timeout_s, **kwargs)
        except requests.Timeout as e:
            raise ApiUnreachable(
                f"the API at {self.base_url} did not answer within {self.timeout_s:g} s"
            ) from e
        except requests.RequestException as e:
            raise ApiUnreachable(
                f"cannot reach the API at {self.base_url} ({type(e).__name__}); is `gridshift "
                "serve` running there? Set GRIDSHIFT_API_URL or --api-url"
            ) from e
        if response.status_code >= 400:
            message = _error_message(response)
            cls = _STATUS_ERRORS.get(response.status_code)
            if cls is None:
                raise ApiError(
                    f"HTTP {response.status_code}: {message}", status_code=response.status_code
                )
            raise cls(message)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._request(method, path, **kwargs)
        try:
            body = response.json()
        except ValueError as e:
            raise ApiError(
                f"{method} {path} answered {response.status_code} with a body that is not JSON",
                status_code=response.status_code,
            ) from e
        if not isinstance(body, dict):
            raise ApiError(
                f"{method} {path} answered with JSON that is not an object",
                status_code=response.status_code,
            )
        return body

    def request_json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """Any JSON endpoint under the API root (``path`` such as ``/v1/webhook_endpoints``)."""
        return self._json(method, path, **kwargs)

    def upload_file(
        self, filename: str, content: bytes, *, purpose: str = "batch"
    ) -> dict[str, Any]:
        """Upload a file (``POST /v1/files``) and return the OpenAI ``file`` object."""
        files = {"file": (filename, content, "application/jsonl")}
        return self._json("POST", "/v1/files", files=files, data={"purpose": purpose})

    def create_batch(
        self, input_file_id: str, *, endpoint: str, options: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Create a batch (``POST /v1/batches``) and return the batch object.

        Args:
            input_file_id: Id of an uploaded file with purpose ``batch``.
            endpoint: The endpoint every line calls, e.g. ``/v1/chat/completions``.
            options: Further create-body fields: ``completion_window``, ``metadata`` and
                gridshift's extras (``deadline``, ``min_quality``, ``sites``, ``priority``).
        """
        body = {"input_file_id": input_file_id, "endpoint": endpoint, **options}
        return self._json("POST", "/v1/batches", json=body)

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        """Retrieve one batch (``GET /v1/batches/{id}``)."""
        return self._json("GET", f"/v1/batches/{batch_id}")

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        """Ask to cancel a batch (``POST /v1/batches/{id}/cancel``); returns the batch object."""
        return self._json("POST", f"/v1/batches/{batch_id}/cancel")

    def list_batches(self, *, limit: int = 20, after: str | None = None) -> dict[str, Any]:
        """One page of batches, newest first (``GET /v1/batches``): ``{data, has_more, ...}``."""
        params: dict[str, Any] = {"limit": limit}
        if after:
            params["after"] = after
        return self._json("GET", "/v1/batches", params=params)

    def iter_batches(self, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every batch of the key's tenant, following ``after`` cursors page by page."""
        after: str | None = None
        while True:
            page = self.list_batches(limit=page_size, after=after)
            data = page.get("data") or []
            yield from data
            if not page.get("has_more") or not data:
                return
            after = page.get("last_id") or data[-1]["id"]

    def download_file(self, file_id: str, out: IO[bytes]) -> int:
        """Stream a file's content (``GET /v1/files/{id}/content``) into ``out``.

        Returns:
            The number of bytes written.

        Raises:
            ApiUnreachable: the connection failed or broke off mid-file.
            NotFound: no such file for this key.
        """
        response = self._request("GET", f"/v1/files/{file_id}/content", stream=True)
        written = 0
        with response:
            try:
                for chunk in response.iter_content(chunk_size=1 << 16):
                    out.write(chunk)
                    written += len(chunk)
            except requests.RequestException as e:
                raise ApiUnreachable(
                    f"the download of {file_id} from {self.base_url} broke off after "
                    f"{written} bytes ({type(e).__name__}); run the download again"
                ) from e
        return written

    def download_file_to(self, file_id: str, path: Path) -> int:
        """Download a file into ``path`` (written to a temporary name, then renamed into place).

        Returns:
            The number of bytes written.
        """
        tmp = path.with_name(path.name + ".part")
        try:
            with tmp.open("wb") as fh:
                written = self.download_file(file_id, fh)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        return written
