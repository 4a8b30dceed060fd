"""The run directory: layout, the overwrite rule, checkpoints and summary.json (all atomic)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from recommender.model_store import atomic_write_bytes, atomic_write_json

INFRA_DIRS = ("deploy", "nodes")


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked (exists, finished, or has nothing to resume)."""


class RunDir:
    """``runs/<name>/``: config.yaml, checkpoints/, models/, tb/, summary.json, privacy_report.*."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoints" / "last.pt"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def tb(self) -> Path:
        return self.path / "tb"

    def is_finished(self) -> bool:
        if not self.summary.is_file():
            return False
        try:
            return bool(json.loads(self.summary.read_text()).get("finished"))
        except json.JSONDecodeError:
            return False

    def prepare_new(self, overwrite: bool) -> None:
        """Create the directory for a fresh run; refuse to clobber an existing run.

        ``deploy/`` and ``nodes/`` (written by ``fedrec deploy`` before the ServerApp starts: the
        live deployment's credentials, logs and the SuperNodes' own state) are not a run and are kept.
        """
        entries = [e for e in self.path.iterdir() if e.name not in INFRA_DIRS] if self.path.exists() else []
        if entries:
            if not overwrite:
                state = "a finished run" if self.is_finished() else "an unfinished run"
                raise RunDirError(f"{self.path} already holds {state}; pass overwrite=true to replace it, "
                                  f"resume={self.path} to continue it, or choose another name=")  # fmt: skip
            for e in entries:
                shutil.rmtree(e) if e.is_dir() else e.unlink()
        self.path.mkdir(parents=True, exist_ok=True)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.checkpoint, buf.getvalue())

    def load_checkpoint(self) -> dict[str, Any]:
        if not self.checkpoint.is_file():
            raise RunDirError(f"{self.path} has no checkpoints/last.pt: nothing to resume "
                              "(the run did not finish a round)")  # fmt: skip
        return torch.load(self.checkpoint, map_location="cpu", weights_only=False)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.summary, summary)

    def write_text(self, name: str, text: str) -> None:
        atomic_write_bytes(self.path / name, text.encode())
