"""A throw-away PostgreSQL server for the benchmarks, from the installed binaries.

Like tests/fixtures/postgres.py: `initdb` and `pg_ctl` in a temporary folder on a free port,
on 127.0.0.1 only, run as the `postgres` user when we are root (PostgreSQL refuses root).
Unlike the tests' server it keeps PostgreSQL's durable defaults (fsync, synchronous_commit):
votes per second then include a real commit.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import load

BINARIES = ("initdb", "pg_ctl", "postgres")
_POSTMASTERS: dict[int, int] = {}  # id of the yielded URLs -> pid of their server


def postmaster(urls: dict[str, str]) -> int | None:
    """Return the pid of the server `server()` yielded these URLs for (its backends are its children)."""
    return _POSTMASTERS.get(id(urls))


def bin_dir() -> Path | None:
    """Return the folder of the server binaries (PATH, then Debian's layout), or None."""
    found = [shutil.which(name) for name in BINARIES]
    if all(found):
        return Path(str(found[0])).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if all((Path(folder) / name).is_file() for name in BINARIES):
            return Path(folder)
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server(databases: list[str]) -> Iterator[dict[str, str] | None]:
    """Run a server with `databases` created; yield {name: SQLAlchemy URL}, or None if unavailable."""
    folder = bin_dir()
    if folder is None:
        yield None
        return
    account = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix="nestor-bench-pg-"))
    if account is not None:
        os.chown(base, account.pw_uid, account.pw_gid)

    def run(name: str, *args: str) -> None:
        command = [str(folder / name), *args]
        if account is not None:
            command = ["runuser", "-u", "postgres", "--", *command]
        # On the load generator's core: the servers' core must stay for the servers alone.
        command = [*load.pin(1), *command]
        subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)

    data, port = base / "data", free_port()
    try:
        run("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c max_connections=200"
        run("pg_ctl", "-D", str(data), "-l", str(base / "log"), "-o", options, "-w", "start")
        for name in databases:
            _create(port, name)
        urls = {name: f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{name}" for name in databases}
        _POSTMASTERS[id(urls)] = int((data / "postmaster.pid").read_text().split()[0])
        yield urls
    finally:
        if (data / "postmaster.pid").exists():
            run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


def _create(port: int, name: str) -> None:
    import asyncio

    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres", database="postgres")
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
