"""Start and reliably stop the processes of a local deployment (SuperLink, SuperNodes, ``flwr``).

Each process starts in its own process group (session). Flower starts helpers of its own
(``flower-superexec``, ``flwr-serverapp``, ``flwr-clientapp``), some in new sessions, so every
process we start carries a unique ``FEDREC_PROC_TAG`` in its environment, which its descendants
inherit: :meth:`Processes.stop` signals our process groups and then every process that still
carries the tag, by pid, and nothing else. Linux only (reads ``/proc``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
TAG_VAR = "FEDREC_PROC_TAG"


def tagged_pids(tag: str) -> list[int]:
    """Pids of live processes whose environment carries ``FEDREC_PROC_TAG=tag``."""
    needle = f"{TAG_VAR}={tag}".encode()
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = Path(entry.path, "environ").read_bytes()
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        if needle in env.split(b"\0") and stat.rsplit(")", 1)[-1].split()[0] != "Z":
            out.append(int(entry.name))
    return out


@dataclass
class Processes:
    """The processes of one deployment, stopped together (also on failure, via ``with``).

    Parameters
    ----------
    log_dir : Path
        Each process writes stdout+stderr to ``<log_dir>/<name>.log``.
    env : dict
        Extra environment for every process.
    """

    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              cwd: str | os.PathLike | None = None) -> subprocess.Popen:  # fmt: skip
        """Start ``argv`` in a new session with the deployment's tag; output to ``<name>.log``."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        full_env = {**os.environ, **self.env, **(env or {}), TAG_VAR: self.tag}
        with open(self.log_dir / f"{name}.log", "ab") as fh:
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=full_env, cwd=cwd, start_new_session=True)  # fmt: skip
        self.procs[name] = proc
        log.debug("started %s (pid %d): %s", name, proc.pid, " ".join(argv))
        return proc

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal one process's whole group (e.g. SIGKILL a SuperNode with its ClientApp)."""
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)

    def alive(self) -> list[int]:
        """Pids still running that this deployment started (directly or through Flower)."""
        own = [p.pid for p in self.procs.values() if p.poll() is None]
        return sorted(set(own) | set(tagged_pids(self.tag)))

    def stop(self, timeout: float = 10.0) -> list[int]:
        """SIGTERM every group and tagged process, wait up to ``timeout``, then SIGKILL the rest.

        Returns the pids that survived SIGKILL (should be empty)."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            for proc in self.procs.values():
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, sig)
            for pid in tagged_pids(self.tag):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                for proc in self.procs.values():
                    proc.poll()
                if not self.alive():
                    return []
                time.sleep(0.1)
        left = self.alive()
        if left:
            log.error("processes still alive after SIGKILL: %s", left)
        return left

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
