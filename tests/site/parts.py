"""The parts of a site on one machine: Nestor hosts on loopback addresses, nginx in front, and
the monitor's targets (an HTTP server counting the probes it receives).

A "host" is one `nestor serve --workers N` supervisor bound to an address of its own
(127.0.0.2, 127.0.0.3), in a folder of its own, with the production configuration a real host
would have. Every part is a child process started here and stopped here (by its pid, or its
own process group: the supervisor and its workers); bench/site.py uses them too.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import pytest
from aiohttp import web

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "nginx.conf.template"
NESTOR = Path(sys.executable).parent / "nestor"
NGINX = ("/usr/sbin/nginx", "nginx")
PROXY_ADDRESS = "127.0.0.1"  # nginx listens here and connects to the hosts from here
HOST_ADDRESSES = ("127.0.0.2", "127.0.0.3")
CLIENT_ADDRESS = "127.0.0.4"  # the "outside" client, so that its address differs from the proxy's
START_SECONDS = 45.0  # a host with 2 workers in production starts in a few seconds; CI is slower
STOP_SECONDS = 30.0
SHUTDOWN_TIMEOUT = 5  # seconds a stopping host's workers wait for in-flight requests
INTERVAL = 1  # seconds between two probes of a monitor target
TARGETS = ("alpha", "beta")
# Production secrets (at least 32 characters, as nestor serve demands), from the environment.
SECRETS = {
    "NESTOR_SECRET_KEY": "site-test-secret-key-" + "k" * 40,
    "NESTOR_ADMIN_TOKEN": "site-test-admin-token-" + "a" * 20,
    "NESTOR_API_TOKEN": "site-test-api-token-" + "p" * 20,
    "NESTOR_METRICS_TOKEN": "site-test-metrics-token-" + "m" * 20,
}
ADMIN_TOKEN = SECRETS["NESTOR_ADMIN_TOKEN"]
API = {"Authorization": f"Bearer {SECRETS['NESTOR_API_TOKEN']}"}


def unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it when CI=true (CI must run the site test: `.ci/run` installs nginx)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"the site test needs it in CI: {reason}", pytrace=False)
    pytest.skip(f"site test skipped: {reason}")


def find_nginx() -> str | None:
    """Return the nginx binary (Debian keeps it in /usr/sbin, often off a user's PATH)."""
    if os.access(NGINX[0], os.X_OK):
        return NGINX[0]
    return shutil.which(NGINX[1])


def free_port(*addresses: str) -> int:
    """Return a port free on every one of `addresses` a moment ago."""
    for _attempt in range(50):
        with socket.socket() as first:
            first.bind((addresses[0], 0))
            port = int(first.getsockname()[1])
            try:
                for address in addresses[1:]:
                    with socket.socket() as other:
                        other.bind((address, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no port free on all of {addresses}")


def get_status(url: str, timeout: float = 2.0) -> int | None:
    """Return the status of GET `url`, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


# -- the configuration every host shares -------------------------------------------------------


def site_config(database_url: str, bus_url: str, targets_url: str) -> str:
    """Return the nestor.toml of every host: production, PostgreSQL, Redis, nginx trusted."""
    targets = ", ".join(
        f'{{ name = "{name}", url = "{targets_url}/{name}", interval = {INTERVAL}, timeout = 2 }}'
        for name in TARGETS
    )
    return f"""[nestor]
mode = "production"
subapps = ["polls", "chat", "monitor", "admin"]
database_url = "{database_url}"
bus_url = "{bus_url}"
trusted_proxies = ["{PROXY_ADDRESS}"]
log_format = "json"
shutdown_timeout = {SHUTDOWN_TIMEOUT}
pool_size = 5

[monitor]
targets = [{targets}]
"""


def host_environment(folder: Path) -> dict[str, str]:
    """The environment of a host's processes: no NESTOR_* of ours, the secrets, its own runtime folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NESTOR_")}
    env.pop("PYTHONPATH", None)
    env["XDG_RUNTIME_DIR"] = str(folder)  # the address lock, private to this host
    return {**env, **SECRETS}


def upgrade_database(folder: Path) -> None:
    """Run `nestor db upgrade` once for the site (a deploy step: production never migrates at start-up)."""
    done = subprocess.run(
        [str(NESTOR), "db", "upgrade", "--config", str(folder / "nestor.toml")],
        cwd=folder, env=host_environment(folder), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"nestor db upgrade failed:\n{done.stdout}{done.stderr}")


# -- a host --------------------------------------------------------------------------------------


class Host:
    """One `nestor serve --workers N` supervisor on an address of its own, that a test may stop, kill and start."""

    def __init__(self, name: str, address: str, port: int, folder: Path, config: str, workers: int = 2) -> None:
        self.name, self.address, self.port, self.workers = name, address, port, workers
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "nestor.toml").write_text(config, encoding="utf-8")
        self.log_path = folder / "server.log"
        self.log_start = 0  # where the current run's lines begin in the log file
        self.previous_log = ""  # what the run before the current one logged
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    @property
    def upstream(self) -> str:
        """This host as nginx's upstream names it."""
        return f"{self.address}:{self.port}"

    def start(self) -> None:
        """Start the supervisor (in a process group of its own); return once all its workers serve and /health/ready is 200."""
        command = [
            str(NESTOR), "serve", "--config", str(self.folder / "nestor.toml"), "--host", self.address,
            "--port", str(self.port), "--workers", str(self.workers),
        ]  # fmt: skip
        self.previous_log = self.log()
        with self.log_path.open("ab") as log:
            self.log_start = log.tell()
            self.process = subprocess.Popen(
                command, cwd=self.folder, env=host_environment(self.folder), stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_SECONDS
        while "======== Running on" not in self.log() or get_status(f"{self.url}/health/ready") != 200:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"host {self.name} did not start:\n{self.log()[-6000:]}")
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self) -> int | None:
        """SIGTERM to the supervisor (its workers drain), wait for its exit; return its exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the supervisor and its workers at once (a host that dies), and reap the supervisor."""
        if self.process is None:
            return
        if self.process.returncode is None:
            # Not reaped yet, so its pid is still its own: the process group it leads (start_new_session)
            # holds it and every worker it started.
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def log(self) -> str:
        """What the current run (since the last start) has logged."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(self.log_start)
            return log.read().decode("utf-8", errors="replace")

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records written so far (log_format = "json")."""
        found = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                with suppress(ValueError):
                    found.append(json.loads(line))
        return found

    def access(self) -> list[dict[str, Any]]:
        """The access log records written so far."""
        return [r for r in self.records() if r.get("logger") == "aiohttp.access"]

    def lease_events(self) -> list[str]:
        """The monitor schedule's lease messages this host logged, oldest first."""
        return [
            str(r["message"])
            for r in self.records()
            if r.get("logger") == "nestor.leases" and "monitor.schedule" in str(r.get("message"))
        ]

    def holds_schedule(self) -> bool:
        """Whether the last lease event this host logged says one of its processes took the schedule."""
        events = self.lease_events()
        return self.alive() and bool(events) and "held by this process" in events[-1]


# -- nginx ---------------------------------------------------------------------------------------


class Nginx:
    """nginx from the template, with its own prefix, pid, logs and temp folders; `daemon off` as our child."""

    def __init__(self, binary: str, folder: Path, hosts: list[Host], certificate: Path, key: Path) -> None:
        self.binary, self.folder = binary, folder
        folder.mkdir(parents=True, exist_ok=True)
        self.http_port = free_port(PROXY_ADDRESS)
        self.https_port = free_port(PROXY_ADDRESS)
        values = {
            "run_dir": str(folder),
            "host_a": hosts[0].upstream,
            "host_b": hosts[1].upstream,
            "listen": PROXY_ADDRESS,
            "http_port": str(self.http_port),
            "https_port": str(self.https_port),
            "certificate": str(certificate),
            "certificate_key": str(key),
        }
        self.config = folder / "nginx.conf"
        self.config.write_text(render(TEMPLATE.read_text(encoding="utf-8"), values), encoding="utf-8")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://{PROXY_ADDRESS}:{self.http_port}"

    @property
    def https_url(self) -> str:
        return f"https://{PROXY_ADDRESS}:{self.https_port}"

    def command(self, *extra: str) -> list[str]:
        # As root, the workers run as root too: the temp folders are under the test's private tmp_path.
        directives = "daemon off;" + (" user root;" if os.geteuid() == 0 else "")
        return [self.binary, "-p", str(self.folder), "-e", str(self.folder / "error.log"),
                "-c", str(self.config), "-g", directives, *extra]  # fmt: skip

    def start(self) -> None:
        checked = subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30, check=False)
        if checked.returncode != 0:
            raise RuntimeError(f"nginx -t refused the configuration:\n{checked.stderr}")
        with (self.folder / "stderr.log").open("wb") as out:
            self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while get_status(f"{self.http_url}/health/live") is None:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nginx did not start:\n{self.error_log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGQUIT (graceful), then SIGKILL if it lingers."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def error_log(self) -> str:
        path = self.folder / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


def render(template: str, values: dict[str, str]) -> str:
    """Fill in the template's @name@ placeholders; every one must be given."""
    for name, value in values.items():
        template = template.replace(f"@{name}@", value)
    code = "\n".join(line.split("#")[0] for line in template.splitlines())  # comments may name them
    left = sorted(set(re.findall(r"@(\w+)@", code)))
    if left:
        raise ValueError(f"placeholders left in the nginx template: {left}")
    return template


# -- the monitor's targets -----------------------------------------------------------------------


class Targets:
    """An HTTP server (in a thread, with a loop of its own) answering 200 at /<target> and noting each probe's time."""

    def __init__(self) -> None:
        self.port = free_port(PROXY_ADDRESS)
        self.url = f"http://{PROXY_ADDRESS}:{self.port}"
        self._probes: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="monitor targets", daemon=True)

    def probes(self, name: str, since: float = 0.0, until: float = float("inf")) -> list[float]:
        """The monotonic times target `name` was probed in [since, until)."""
        with self._lock:
            return [at for at, path in self._probes if path == name and since <= at < until]

    async def _answer(self, request: web.Request) -> web.Response:
        with self._lock:
            self._probes.append((time.monotonic(), request.match_info["name"]))
        return web.Response(text="ok")

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_get("/{name}", self._answer)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, PROXY_ADDRESS, self.port).start())
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the monitor targets' server did not start")

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


# -- a whole site ----------------------------------------------------------------------------------


class Site:
    """Two hosts behind nginx, on one PostgreSQL database and one Redis."""

    def __init__(self, hosts: list[Host], nginx: Nginx, targets: Targets, certificate: Path) -> None:
        self.hosts, self.nginx, self.targets = hosts, nginx, targets
        self.certificate = certificate  # what clients trust for nginx's https

    def session(self, address: str = CLIENT_ADDRESS, **kwargs: Any) -> aiohttp.ClientSession:
        """A client of the site from outside: it connects from `address`, trusts the site's certificate,
        keeps cookies (of an IP-address site too) and opens as many connections as it needs."""
        context = ssl.create_default_context(cafile=str(self.certificate))
        connector = aiohttp.TCPConnector(local_addr=(address, 0), ssl=context, limit=0)
        return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True), **kwargs)

    def holder(self) -> Host:
        """The host whose process holds the monitor schedule's lease (from the hosts' logs)."""
        holding = [host for host in self.hosts if host.holds_schedule()]
        if len(holding) != 1:
            raise LookupError(f"{len(holding)} hosts say they hold the schedule")
        return holding[0]


async def steady_load(
    client: aiohttp.ClientSession,
    base: str,
    requests: list[tuple[str, str, Any]],
    stop: asyncio.Event,
    *,
    loops: int = 8,
    max_per_loop: int = 3000,
) -> tuple[Counter[str], list[str]]:
    """Run `loops` clients, each sending `requests` (method, path, JSON body) in turn until `stop` is set
    (or `max_per_loop` each); return the answered requests by method and what failed (status >= 400, errors)."""
    answered = Counter[str]()
    failures: list[str] = []

    async def one_loop(n: int) -> None:
        for i in range(max_per_loop):
            if stop.is_set():
                return
            method, path, body = requests[(i + n) % len(requests)]
            try:
                async with client.request(method, base + path, json=body) as resp:
                    await resp.read()
                    if resp.status < 400:
                        answered[method] += 1
                    else:
                        failures.append(f"{method} {path}: {resp.status}")
            except aiohttp.ClientError as e:
                failures.append(f"{method} {path}: {type(e).__name__}: {e}")

    await asyncio.gather(*(one_loop(n) for n in range(loops)))
    return answered, failures


async def restart_each(site: Site, seconds: float = 30.0) -> list[int | None]:
    """Stop each host with SIGTERM and start it again; return their exit codes.

    The next host stops only once nginx passes requests to the restarted one again: nginx
    leaves a host out for fail_timeout after it refused a connection, and with both left out
    every request would fail ("no live upstreams").
    """
    codes = []
    for host in site.hosts:
        codes.append(await asyncio.to_thread(host.terminate))
        await asyncio.to_thread(host.start)
        deadline = time.monotonic() + seconds
        while not any(r["remote"] != PROXY_ADDRESS for r in host.access()):  # a client's request, through nginx
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx sent no request to {host.name} within {seconds:.0f} s of its restart")
            await asyncio.sleep(0.1)
    return codes


@contextmanager
def running_site(
    folder: Path,
    database_url: str,
    bus_url: str,
    certificate: Path,
    key: Path,
    *,
    workers: tuple[int, int] = (2, 2),
    nginx_binary: str | None = None,
) -> Iterator[Site]:
    """Start the targets, migrate, start both hosts (a host with 0 workers is not started) and nginx; stop all after."""
    targets = Targets()
    targets.start()
    config = site_config(database_url, bus_url, targets.url)
    port = free_port(*HOST_ADDRESSES)  # one port on each host's own address, as real hosts would have
    hosts = [
        Host(f"host-{i + 1}", address, port, folder / f"host-{i + 1}", config, workers=max(n, 1))
        for i, (address, n) in enumerate(zip(HOST_ADDRESSES, workers))
    ]
    nginx = Nginx(nginx_binary or find_nginx() or "nginx", folder / "nginx", hosts, certificate, key)
    try:
        upgrade_database(hosts[0].folder)
        for host, n in zip(hosts, workers):
            if n:
                host.start()
        nginx.start()
        yield Site(hosts, nginx, targets, certificate)
    finally:
        nginx.stop()
        for host in hosts:
            host.terminate()
        targets.stop()
