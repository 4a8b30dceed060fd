"""The versioned model registry of a run: ``models/vNNNN.pt`` + ``vNNNN.json`` + ``LATEST``.

The server writes one version per completed round; the central recommender reads only ``LATEST``.
Every file is written atomically (temp file, fsync, rename) so a killed run never leaves a torn
version behind and ``LATEST`` always names a complete one.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from recommender.ncf import NeuMFShape


class RegistryError(RuntimeError):
    """A run directory holds no usable model version."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same dir, fsync, rename, fsync dir."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=float) + "\n").encode())


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


@dataclass
class ModelVersion:
    """One registered global model.

    Attributes
    ----------
    version : int
    shared : torch.Tensor, shape (d,)
        Flat shared NeuMF parameters.
    shape : NeuMFShape
    meta : dict
        Round, metrics, epsilon, data config (``meta["data"]``) and anything else recorded.
    """

    version: int
    shared: torch.Tensor
    shape: NeuMFShape
    meta: dict


def save_version(run_dir: str | os.PathLike, version: int, shared: torch.Tensor, shape: NeuMFShape,
                 meta: dict) -> Path:  # fmt: skip
    """Write ``models/vNNNN.pt`` and ``.json``, then point ``models/LATEST`` at it."""
    models = Path(run_dir) / "models"
    name = f"v{version:04d}"
    meta = {**meta, "version": version, "n_items": shape.n_items, "factors": shape.factors}
    atomic_torch_save(models / f"{name}.pt", {"shared": shared.detach().cpu().float(), "meta": meta})
    atomic_write_json(models / f"{name}.json", meta)
    atomic_write_bytes(models / "LATEST", (name + "\n").encode())
    return models / f"{name}.pt"


def latest_version(run_dir: str | os.PathLike) -> int | None:
    path = Path(run_dir) / "models" / "LATEST"
    if not path.is_file():
        return None
    return int(path.read_text().strip().lstrip("v"))


def load_version(run_dir: str | os.PathLike, version: int | None = None) -> ModelVersion:
    """Load a version (default: the one ``LATEST`` names)."""
    version = latest_version(run_dir) if version is None else version
    if version is None:
        raise RegistryError(f"{run_dir} has no models/LATEST: it holds no finished round yet")
    path = Path(run_dir) / "models" / f"v{version:04d}.pt"
    if not path.is_file():
        raise RegistryError(f"{path} is missing although LATEST names it")
    blob = torch.load(path, map_location="cpu", weights_only=False)
    meta = blob["meta"]
    return ModelVersion(version, blob["shared"], NeuMFShape(meta["n_items"], meta["factors"]), meta)
