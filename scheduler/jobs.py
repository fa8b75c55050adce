"""Declarative nightly jobs: load and check ``jobs/*.yaml`` and build their batch file."""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from scheduler.config import OPENAI_MAX_REQUESTS_PER_BATCH
from scheduler.domain import Fleet
from scheduler.errors import InvalidInput, LineError

AUTO_MODEL = "auto"
JOB_METADATA_KEY = "gridshift_job"
MAX_METADATA_KEYS = 16  # OpenAI's limit on batch metadata

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_WINDOW = re.compile(r"^[1-9][0-9]*h$")
_TIME_OF_DAY = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
_CRON_FIELD = re.compile(r"^[0-9*/,\-A-Za-z]+$")


class JobSpec(BaseModel):
    """One nightly job: which request files to send, and with which planning options.

    Exactly one of ``model`` (every line names it) or ``min_quality`` (every line says
    ``"model": "auto"`` and the planner picks a model at least that good). At most one of
    ``window`` (e.g. ``8h``) or ``deadline`` (``HH:MM`` = next such time in UTC, or an ISO
    datetime); neither means a ``24h`` window.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Job name: [a-z0-9-], starting with a letter or digit.")
    description: str = ""
    schedule: str | None = Field(
        default=None, description="Cron expression for operators' schedulers; informational."
    )
    input: list[str] = Field(min_length=1, description="Paths or globs relative to the spec.")
    endpoint: Literal[
        "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses"
    ] = "/v1/chat/completions"
    model: str | None = None
    min_quality: float | None = Field(default=None, ge=0)
    window: str | None = None
    deadline: str | None = None
    sites: list[str] | None = Field(default=None, min_length=1)
    priority: float = Field(default=1.0, gt=0)
    metadata: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"name must match [a-z0-9][a-z0-9-]*, got {v!r}")
        return v

    @field_validator("input", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("window")
    @classmethod
    def _check_window(cls, v: str | None) -> str | None:
        if v is not None and not _WINDOW.match(v):
            raise ValueError(f"window must be whole hours like '8h' or '72h', got {v!r}")
        return v

    @field_validator("deadline")
    @classmethod
    def _check_deadline(cls, v: str | None) -> str | None:
        if v is not None and not _TIME_OF_DAY.match(v):
            try:
                parse_iso_datetime(v)
            except ValueError as e:
                raise ValueError(
                    f"deadline must be a UTC time of day 'HH:MM' or an ISO datetime, got {v!r}"
                ) from e
        return v

    @field_validator("schedule")
    @classmethod
    def _check_schedule(cls, v: str | None) -> str | None:
        if v is not None:
            fields = v.split()
            if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
                raise ValueError(
                    f"schedule must be a 5-field cron expression like '0 1 * * *', got {v!r}"
                )
        return v

    @field_validator("metadata")
    @classmethod
    def _check_metadata(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) >= MAX_METADATA_KEYS:
            raise ValueError(
                f"metadata may hold at most {MAX_METADATA_KEYS - 1} keys "
                f"(one is kept for {JOB_METADATA_KEY!r})"
            )
        return v

    @model_validator(mode="after")
    def _check_exclusive(self) -> JobSpec:
        if (self.model is None) == (self.min_quality is None):
            raise ValueError("give exactly one of 'model' or 'min_quality'")
        if self.model == AUTO_MODEL:
            raise ValueError("model 'auto' needs 'min_quality' instead of 'model'")
        if self.window is not None and self.deadline is not None:
            raise ValueError("give at most one of 'window' or 'deadline'")
        return self

    @property
    def line_model(self) -> str:
        """The ``model`` every request line of this job must name."""
        return self.model if self.model is not None else AUTO_MODEL


@dataclass(frozen=True, slots=True)
class JobBatchFile:
    """The batch input file built from a job's inputs (lines concatenated, never rewritten)."""

    content: bytes
    paths: tuple[Path, ...]
    requests: int
    max_tokens_total: int


def parse_iso_datetime(value: str) -> datetime:
    """Parse an ISO-8601 datetime; a value without offset is taken as UTC.

    Raises:
        ValueError: ``value`` is not an ISO-8601 datetime.
    """
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def load_job(path: str | Path) -> JobSpec:
    """Read and validate a job spec from YAML.

    Raises:
        InvalidInput: the file is missing, not YAML, or breaks the spec (message names the field).
    """
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise InvalidInput(f"cannot read job spec {p}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise InvalidInput(f"{p} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise InvalidInput(f"{p}: expected a mapping with at least 'name' and 'input'")
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or 'spec'}: {err['msg']}" for err in e.errors()
        )
        raise InvalidInput(f"{p}: {problems}") from e


def resolve_deadline(spec: JobSpec, now: datetime) -> datetime | None:
    """The absolute deadline of a job submitted at ``now`` (None when it uses a window).

    ``HH:MM`` means the next such time in UTC strictly after ``now``.
    """
    if spec.deadline is None:
        return None
    match = _TIME_OF_DAY.match(spec.deadline)
    if not match:
        return parse_iso_datetime(spec.deadline)
    now_utc = now.astimezone(UTC)
    at = datetime.combine(
        now_utc.date(), time(int(match.group(1)), int(match.group(2)), tzinfo=UTC)
    )
    return at if at > now_utc else at + timedelta(days=1)


def create_options(spec: JobSpec, now: datetime) -> dict[str, Any]:
    """The create-body fields of a job's batch (besides ``input_file_id`` and ``endpoint``)."""
    options: dict[str, Any] = {
        "completion_window": spec.window or "24h",
        "metadata": {**spec.metadata, JOB_METADATA_KEY: spec.name},
        "priority": spec.priority,
    }
    deadline = resolve_deadline(spec, now)
    if deadline is not None:
        options["deadline"] = deadline.isoformat().replace("+00:00", "Z")
    if spec.min_quality is not None:
        options["min_quality"] = spec.min_quality
    if spec.sites:
        options["sites"] = list(spec.sites)
    return options


def input_paths(spec: JobSpec, base_dir: Path) -> list[Path]:
    """The input files of a job, each pattern expanded relative to ``base_dir`` in sorted order.

    Raises:
        InvalidInput: a pattern matches no file.
    """
    paths: list[Path] = []
    for pattern in spec.input:
        if any(ch in pattern for ch in "*?["):
            matches = sorted(p for p in base_dir.glob(pattern) if p.is_file())
        else:
            candidate = base_dir / pattern
            matches = [candidate] if candidate.is_file() else []
        if not matches:
            raise InvalidInput(
                f"job {spec.name!r}: input {pattern!r} matches no file under {base_dir}"
            )
        paths.extend(m for m in matches if m not in paths)
    return paths


def check_request_line(line: str, *, endpoint: str, model: str) -> tuple[str, int]:
    """Check one batch input line against the OpenAI Batch API line format and the job.

    Returns:
        The line's ``custom_id`` and its ``max_tokens`` (0 when absent).

    Raises:
        ValueError: the line is malformed (the message says which field and how to fix it).
    """
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at column {e.colno})") from e
    if not isinstance(obj, dict):
        raise ValueError("a request line must be a JSON object")
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise ValueError("custom_id must be a non-empty string")
    if obj.get("method") != "POST":
        raise ValueError(f"method must be 'POST', got {obj.get('method')!r}")
    if obj.get("url") != endpoint:
        raise ValueError(f"url must be the job's endpoint {endpoint!r}, got {obj.get('url')!r}")
    body = obj.get("body")
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    if body.get("model") != model:
        raise ValueError(f"body.model must be {model!r} for this job, got {body.get('model')!r}")
    if endpoint == "/v1/chat/completions" and not (
        isinstance(body.get("messages"), list) and body["messages"]
    ):
        raise ValueError("body.messages must be a non-empty list for /v1/chat/completions")
    if endpoint == "/v1/completions" and "prompt" not in body:
        raise ValueError("body.prompt is required for /v1/completions")
    if endpoint == "/v1/embeddings" and "input" not in body:
        raise ValueError("body.input is required for /v1/embeddings")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens", 0))
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
        raise ValueError(f"max_tokens must be a non-negative integer, got {max_tokens!r}")
    return custom_id, max_tokens


def build_batch_file(spec: JobSpec, base_dir: Path) -> JobBatchFile:
    """Concatenate a job's input files into one batch input file, checking every line.

    Lines are copied byte for byte (blank lines dropped); ``custom_id`` must be unique across
    all input files.

    Raises:
        InvalidInput: an input is missing or lines are malformed or duplicated; ``errors`` lists
            every bad line as ``LineError`` with its line number and the file in the message.
    """
    paths = input_paths(spec, base_dir)
    chunks: list[bytes] = []
    errors: list[LineError] = []
    seen: dict[str, str] = {}
    max_tokens_total = 0
    for path in paths:
        try:
            raw_lines = path.read_bytes().splitlines()
        except OSError as e:
            raise InvalidInput(f"cannot read {path}: {e.strerror}") from e
        for line_no, raw in enumerate(raw_lines, start=1):
            if not raw.strip():
                continue
            where = f"{path.name}:{line_no}"
            try:
                custom_id, max_tokens = check_request_line(
                    raw.decode("utf-8"), endpoint=spec.endpoint, model=spec.line_model
                )
            except (ValueError, UnicodeDecodeError) as e:
                errors.append(LineError(line_no, "invalid_request", f"{where}: {e}"))
                continue
            if custom_id in seen:
                errors.append(
                    LineError(
                        line_no,
                        "duplicate_custom_id",
                        f"{where}: custom_id {custom_id!r} already used at {seen[custom_id]}; "
                        "custom_id must be unique across all inputs of a job",
                        "custom_id",
                    )
                )
                continue
            seen[custom_id] = where
            max_tokens_total += max_tokens
            chunks.append(raw + b"\n")
    if errors:
        shown = "; ".join(e.message for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise InvalidInput(f"job {spec.name!r}: {len(errors)} bad line(s): {shown}{more}", errors)
    if not chunks:
        raise InvalidInput(f"job {spec.name!r}: the inputs hold no request lines")
    return JobBatchFile(
        content=b"".join(chunks),
        paths=tuple(paths),
        requests=len(chunks),
        max_tokens_total=max_tokens_total,
    )


def check_against_fleet(spec: JobSpec, batch_file: JobBatchFile, fleet: Fleet) -> None:
    """Validate a job's batch file exactly as ``POST /v1/batches`` will (same scan, same fleet).

    ``jobs submit --dry-run`` calls it so that a dry run accepts what the real submit accepts.

    Raises:
        InvalidInput: the server would fail the batch; ``errors`` are its line errors.
    """
    from scheduler.intake.catalog import ModelCatalog
    from scheduler.intake.validate import scan_lines

    scan = scan_lines(
        io.BytesIO(batch_file.content),
        endpoint=spec.endpoint,
        models=ModelCatalog.of(fleet),
        min_quality=spec.min_quality,
        max_requests=OPENAI_MAX_REQUESTS_PER_BATCH,
    )
    if not scan.ok:
        errors = scan.listed_errors()
        shown = "; ".join(f"line {e.line}: {e.message}" for e in errors[:5])
        raise InvalidInput(
            f"job {spec.name!r}: the server would fail this batch ({scan.error_count} bad "
            f"line(s)): {shown}",
            errors,
        )


def job_summary(spec: JobSpec, batch_file: JobBatchFile, now: datetime) -> dict[str, Any]:
    """What ``jobs submit --dry-run`` reports: the job, its inputs and the create options."""
    return {
        "name": spec.name,
        "description": spec.description,
        "schedule": spec.schedule,
        "endpoint": spec.endpoint,
        "model": spec.line_model,
        "inputs": [str(p) for p in batch_file.paths],
        "requests": batch_file.requests,
        "bytes": len(batch_file.content),
        "max_tokens_total": batch_file.max_tokens_total,
        "options": create_options(spec, now),
    }
