"""HTTP for providers: one session with retries and backoff, a timeout on every call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from scheduler.forecasts.base import ProviderError

RETRY_STATUSES = (429, 500, 502, 503, 504)


class HttpClient:
    """A ``requests.Session`` with urllib3 retries (429/5xx, connect and read errors).

    Every call carries ``timeout_s`` (connect and read each), so a dead provider costs at most
    about ``(retries + 1) * timeout_s`` plus the backoff, never forever.
    """

    def __init__(
        self, *, timeout_s: float = 10.0, retries: int = 3, backoff_s: float = 0.5
    ) -> None:
        """Create the session.

        Args:
            timeout_s: connect and read timeout of one attempt, in seconds.
            retries: further attempts after the first (on 429, 5xx, connect or read errors).
            backoff_s: urllib3 backoff factor in seconds (waits ``backoff_s * 2**(n-1)``);
                a ``Retry-After`` header is honoured.
        """
        self.timeout_s = timeout_s
        retry = Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            backoff_factor=backoff_s,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET", "POST"}),
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        self.session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = "gridshift-forecasts"

    def get_json(
        self,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        what: str = "provider",
    ) -> Any:
        """GET ``url`` and decode its JSON body.

        Raises:
            ProviderError: connection failure, timeout, retries exhausted, an HTTP error status
                (401/403 say the credentials are wrong) or a body that is not JSON.
        """
        try:
            response = self.session.get(
                url,
                params=dict(params or {}),
                headers=dict(headers or {}),
                auth=auth,
                timeout=self.timeout_s,
            )
        except requests.Timeout as e:
            raise ProviderError(f"{what}: no answer from {url} within {self.timeout_s} s") from e
        except requests.RequestException as e:
            # urllib3 wraps the cause (name resolution, refused, read timeout) in MaxRetryError
            reason = getattr(e.args[0], "reason", None) if e.args else None
            cause = type(reason or e).__name__
            raise ProviderError(f"{what}: cannot reach {url} ({cause})") from e
        if response.status_code in (401, 403):
            raise ProviderError(
                f"{what}: {url} refused the credentials (HTTP {response.status_code}); "
                "check the token, username or password in the settings"
            )
        if response.status_code >= 400:
            raise ProviderError(
                f"{what}: {url} answered HTTP {response.status_code}: {response.text[:200]}"
            )
        try:
            return response.json()
        except ValueError as e:
            raise ProviderError(f"{what}: {url} did not return JSON") from e

    def close(self) -> None:
        """Close the pooled connections."""
        self.session.close()
