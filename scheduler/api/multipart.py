"""Parse a spooled ``multipart/form-data`` upload: the file part streams into a staged file in
the data directory (hashed, byte-capped), the small fields are kept in memory.

The body was received by the request guard into ``files_dir/.tmp`` (``scheduler/api/spool.py``);
parsing it here, rather than with Starlette's form parser, keeps the file part out of ``$TMPDIR``
(Starlette spools every part over 1 MiB there) and copies it once, on the data directory's disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from scheduler.errors import InvalidInput, LineError
from scheduler.store.staging import StagedContent, Stager

READ_BYTES = 1 << 20
MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 16
FILE_FIELD = "file"
FORM_HELP = (
    "send multipart/form-data with a 'file' part and a 'purpose' field "
    "(client.files.create(file=..., purpose='batch') does this)"
)


def _invalid(message: str, param: str | None = None) -> InvalidInput:
    return InvalidInput(message, [LineError(None, "invalid_request", message, param)])


@dataclass
class UploadForm:
    """The parsed form: text fields, and the file part staged (``discard`` it if unused)."""

    fields: dict[str, str] = field(default_factory=dict)
    file: StagedContent | None = None
    filename: str = "upload.jsonl"

    def discard(self) -> None:
        """Remove the staged file part (after a refusal)."""
        if self.file is not None:
            self.file.tmp_path.unlink(missing_ok=True)


class _Collector:
    """python-multipart callbacks building an ``UploadForm``."""

    def __init__(self, files_dir: Path, max_file_bytes: int) -> None:
        self.files_dir = files_dir
        self.max_file_bytes = max_file_bytes
        self.form = UploadForm()
        self._hname = bytearray()
        self._hvalue = bytearray()
        self.disposition = b""
        self.name = ""
        self.value = bytearray()
        self.stager: Stager | None = None

    def part_begin(self) -> None:
        self.disposition, self.name, self.value = b"", "", bytearray()

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._hname += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]

    def header_end(self) -> None:
        if bytes(self._hname).lower() == b"content-disposition":
            self.disposition = bytes(self._hvalue)
        self._hname, self._hvalue = bytearray(), bytearray()

    def headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        self.name = options.get(b"name", b"").decode("utf-8", "replace")
        if self.name == FILE_FIELD:
            if self.form.file is not None or self.stager is not None:
                raise _invalid("the form has more than one 'file' part; send one file", "file")
            filename = options.get(b"filename")
            if filename:
                self.form.filename = filename.decode("utf-8", "replace")
            self.stager = Stager(self.files_dir, self.max_file_bytes)
        elif len(self.form.fields) >= MAX_FIELDS:
            raise _invalid(f"the form has more than {MAX_FIELDS} fields; {FORM_HELP}")

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self.stager is not None and self.name == FILE_FIELD:
            self.stager.write(data[start:end])
            return
        self.value += data[start:end]
        if len(self.value) > MAX_FIELD_BYTES:
            raise _invalid(f"form field {self.name[:50]!r} is over {MAX_FIELD_BYTES} bytes")

    def part_end(self) -> None:
        if self.stager is not None and self.name == FILE_FIELD:
            self.form.file = self.stager.finish()
            self.stager = None
        elif self.name:
            self.form.fields[self.name] = self.value.decode("utf-8", "replace")

    def abandon(self) -> None:
        if self.stager is not None:
            self.stager.discard()
        self.form.discard()


def parse_upload(
    body: Path, content_type: str, files_dir: Path, *, max_file_bytes: int
) -> UploadForm:
    """Parse the spooled ``body``; the file part is staged under ``files_dir``.

    Raises:
        InvalidInput: not multipart form data, a malformed body, too many or too large fields.
        LimitExceeded: the file part is over ``max_file_bytes``.
    """
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise _invalid(f"POST /v1/files takes multipart/form-data: {FORM_HELP}")
    c = _Collector(files_dir, max_file_bytes)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": c.part_begin,
            "on_header_field": c.header_field,
            "on_header_value": c.header_value,
            "on_header_end": c.header_end,
            "on_headers_finished": c.headers_finished,
            "on_part_data": c.part_data,
            "on_part_end": c.part_end,
        },
    )
    try:
        with body.open("rb") as f:
            while chunk := f.read(READ_BYTES):
                parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        c.abandon()
        raise _invalid(f"the multipart body is malformed ({exc}); {FORM_HELP}") from exc
    except BaseException:
        c.abandon()
        raise
    if c.stager is not None:  # the body ended inside the file part
        c.abandon()
        raise _invalid(f"the multipart body ends inside the file part; {FORM_HELP}", "file")
    return c.form
