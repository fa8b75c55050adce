"""Engine that sends requests to any OpenAI-compatible HTTP server (vllm serve, transformers serve)."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from scheduler.errors import EngineError, TransientEngineError
from workers.engines.base import EngineRequest, EngineResult
from workers.engines.openai_shapes import error_result, success_result

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


def _normalise_base_url(base_url: str) -> str:
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _error_of(status_code: int, body: Any, text: str) -> dict[str, Any]:
    err = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(err, Mapping):
        return {"code": str(err.get("code") or err.get("type") or status_code), **err}
    if isinstance(err, str):
        return {"code": str(status_code), "message": err}
    detail = body.get("detail") if isinstance(body, Mapping) else None
    return {"code": str(status_code), "message": str(detail or text[:500] or "no message")}


class OpenAIHTTPEngine:
    """Posts each request's body to ``base_url`` + its url, several at a time.

    Connection errors, timeouts, 408/409/429 and 5xx are retried with exponential backoff
    (honouring ``Retry-After``); when the last try fails the whole call raises
    ``TransientEngineError`` so the shard is retried later. Any other 4xx is that request's
    own failure and comes back as its result. Bodies of successful responses are returned
    verbatim; token counts come from their ``usage``.
    """

    kind = "openai"

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None = None,
        api_key_env: str | None = None,
        served_model_name: str | None = None,
        max_concurrency: int = 8,
        timeout_s: float = 600.0,
        connect_timeout_s: float = 10.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        backoff_max_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Configure the engine.

        Args:
            base_url: Server root, with or without ``/v1`` (e.g. ``http://127.0.0.1:8000``).
            api_key: Bearer token to send, if the server wants one.
            api_key_env: Name of an environment variable holding the bearer token.
            served_model_name: ``model`` to put in each body (default: the loaded model's
                weights, which is what ``vllm serve PATH`` and ``transformers serve PATH`` expect,
                or its name when there are no weights).
            max_concurrency: Requests in flight at once.
            timeout_s: Read timeout per HTTP call in seconds.
            connect_timeout_s: Connect timeout per HTTP call in seconds.
            max_retries: Retries after the first try for transient failures.
            backoff_s: First backoff in seconds; doubles per retry.
            backoff_max_s: Longest single backoff in seconds.
            sleep: How to wait between tries (tests pass a recorder).
        """
        if max_concurrency < 1 or max_retries < 0 or timeout_s <= 0:
            raise EngineError("max_concurrency must be >= 1, max_retries >= 0, timeout_s > 0")
        if not base_url.startswith(("http://", "https://")):
            raise EngineError(f"base_url must be an http(s) URL, got {base_url!r}")
        self.base_url = _normalise_base_url(base_url)
        self.served_model_name = served_model_name
        self.max_concurrency = max_concurrency
        self.timeout = (connect_timeout_s, timeout_s)
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self._sleep = sleep
        self.model_name: str | None = None
        self._model_field: str | None = None
        self._cancelled = threading.Event()
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max_concurrency)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        key = api_key or (os.environ.get(api_key_env) if api_key_env else None)
        if key:
            self._session.headers["Authorization"] = f"Bearer {key}"

    def load(self, model: str, weights: str | None) -> None:
        """Remember which model to ask the server for (the server holds the weights)."""
        self.model_name = model
        self._model_field = self.served_model_name or weights or model

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._session.close()

    def run(self, requests_: Sequence[EngineRequest]) -> list[EngineResult]:
        """Send ``requests_`` concurrently and return one result per request, in order.

        Raises:
            EngineError: no model is loaded, or a request cannot be sent at all (bad URL).
            TransientEngineError: a request still failed transiently after the last retry.
        """
        if self._model_field is None:
            raise EngineError("no model loaded: call load(model, weights) before run()")
        self._cancelled.clear()
        if self.max_concurrency == 1 or len(requests_) <= 1:
            return [self._send(r) for r in requests_]
        with ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="openai-http") as pool:
            futures = [pool.submit(self._send, r) for r in requests_]
            try:
                return [f.result() for f in futures]
            except BaseException:
                self._cancelled.set()  # stop the others from starting new tries
                for f in futures:
                    f.cancel()
                raise

    def _send(self, request: EngineRequest) -> EngineResult:
        body = dict(request.body)
        body["model"] = self._model_field
        body.pop("stream", None)
        url = self.base_url + (request.url if request.url.startswith("/") else "/" + request.url)
        problem, retry_after = "", None
        for attempt in range(self.max_retries + 1):
            if self._cancelled.is_set():
                raise TransientEngineError("cancelled: another request of this run failed")
            if attempt:
                self._sleep(self._backoff(attempt, retry_after))
            try:
                response = self._session.post(url, json=body, timeout=self.timeout)
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,  # the server died mid-answer
            ) as e:
                problem, retry_after = f"{type(e).__name__}: {e}", None
                log.warning("%s (try %d): %s", url, attempt + 1, problem)
                continue
            except requests.RequestException as e:
                raise EngineError(f"cannot send to {url}: {e}; check engine.base_url") from e
            if response.status_code in RETRY_STATUS:
                problem = f"HTTP {response.status_code}"
                retry_after = response.headers.get("Retry-After")
                log.warning("%s (try %d): %s", url, attempt + 1, problem)
                continue
            return self._result(request.custom_id, response)
        raise TransientEngineError(
            f"{url} failed {self.max_retries + 1} times for {request.custom_id!r} "
            f"(last: {problem}); is the server at {self.base_url} up and not overloaded?"
        )

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        delay = min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))
        if retry_after and retry_after.strip().replace(".", "", 1).isdigit():
            # seconds; an HTTP-date form is ignored and our own backoff kept
            delay = min(self.backoff_max_s, max(delay, float(retry_after)))
        return float(delay)

    @staticmethod
    def _result(custom_id: str, response: requests.Response) -> EngineResult:
        try:
            body = response.json()
        except (json.JSONDecodeError, ValueError):
            body = None
        if response.ok and isinstance(body, Mapping):
            return success_result(custom_id, body)
        if response.ok:
            return error_result(
                custom_id,
                f"the server answered {response.status_code} without a JSON object body",
                status_code=502,
                code="invalid_response",
            )
        return EngineResult(
            custom_id=custom_id,
            status_code=response.status_code,
            body=body if isinstance(body, Mapping) else None,
            error=_error_of(response.status_code, body, response.text),
        )


def from_options(options: Mapping[str, Any]) -> OpenAIHTTPEngine:
    """Build the engine from fleet.yaml ``engine:`` options (``base_url`` is required).

    Raises:
        EngineError: ``base_url`` is missing, or an option is unknown or has the wrong type.
    """
    known = {
        "base_url",
        "api_key",
        "api_key_env",
        "served_model_name",
        "max_concurrency",
        "timeout_s",
        "connect_timeout_s",
        "max_retries",
        "backoff_s",
        "backoff_max_s",
    }
    unknown = sorted(set(options) - known)
    if unknown:
        raise EngineError(f"unknown openai engine option(s) {unknown}; known: {sorted(known)}")
    if not options.get("base_url"):
        raise EngineError(
            "the openai engine needs engine.base_url in fleet.yaml, e.g. http://127.0.0.1:8000"
        )
    try:
        return OpenAIHTTPEngine(**dict(options))
    except TypeError as e:
        raise EngineError(f"invalid openai engine options: {e}") from e
