"""One `nestor serve` per address, and its pidfile.

Workers share their port with SO_REUSEPORT, so a second `nestor serve` started on the same
address would bind it too and take half the connections, without a word. Each supervisor (or
single process) therefore holds an OS lock named after its address (in the runtime folder:
$XDG_RUNTIME_DIR, else the temp folder) for as long as it runs; a second one is refused with
the pid of the first. `--overlap` skips the check on purpose: during a deploy the new version
starts beside the old one, which is then stopped (SIGTERM drains it).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import re
import tempfile
from pathlib import Path
from typing import IO

from .config import ConfigError

_held: list[IO[str]] = []  # open lock files: closing one releases its lock


def runtime_folder() -> Path:
    """Where the address locks live."""
    return Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())


def claim_address(host: str, port: int) -> None:
    """Hold this address for this process's life; ConfigError naming the process that holds it already."""
    name = re.sub(r"[^A-Za-z0-9.-]", "_", f"{host}-{port}")
    lock = (runtime_folder() / f"nestor-{name}.lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise ConfigError(
            f"nestor serve (pid {holder}) already serves {host}:{port}: stop it first, or start this one "
            "with --overlap to run both for a deploy (then stop the old one with SIGTERM)"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    _held.append(lock)


def write_pidfile(path: Path) -> None:
    """Write this process's pid to `path`; it is removed at exit."""
    path.write_text(f"{os.getpid()}\n", encoding="utf-8")
    pid = os.getpid()

    def remove() -> None:
        if os.getpid() == pid:  # not in a forked child
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    atexit.register(remove)
