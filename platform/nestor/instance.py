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
import socket
import stat
import sys
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


def listening_addresses() -> list[tuple[str, int]]:
    """The TCP (host, port) pairs this process accepts connections on, its own sockets or inherited ones.

    Under gunicorn the sockets are the arbiter's, inherited: the only record of the port bound.
    """
    found = []
    for name in os.listdir("/dev/fd"):  # this process's open descriptors (Linux and macOS)
        fd = int(name)
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=fd)
        except OSError:
            continue  # closed meanwhile (listdir's own descriptor), or not a socket
        try:
            if (
                sock.family in (socket.AF_INET, socket.AF_INET6)
                and sock.type == socket.SOCK_STREAM
                and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            ):
                host, port = sock.getsockname()[:2]
                found.append((host, port))
        except OSError:
            pass
        finally:
            sock.detach()  # the descriptor belongs to whoever opened it
    return sorted(set(found))


def gunicorn_workers() -> int | None:
    """Under gunicorn, the number of workers it runs (`-w`); None elsewhere, or if it cannot be told.

    Call it from the app factory: gunicorn calls that from its worker (or, with --preload, its
    arbiter), which keeps the settings as `self.cfg`. gunicorn has no other public record of it.
    """
    if not os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn/"):
        return None
    frame = sys._getframe(1)
    while frame is not None:
        workers = getattr(getattr(frame.f_locals.get("self"), "cfg", None), "workers", None)
        if isinstance(workers, int):
            return workers
        frame = frame.f_back
    return None

