"""A finished ``gridshift demo`` run, as the session fixture ``demo_run`` hands it to tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DemoRun:
    """A finished ``gridshift demo`` run: its data dir, exit code and printed lines."""

    data_dir: Path
    code: int
    lines: list[str]

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the demo's store (the data dir's own ``gridshift.db``)."""
        return f"sqlite:///{self.data_dir / 'gridshift.db'}"
