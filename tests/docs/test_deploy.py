"""docs/deploy.md's files, checked: the systemd unit (systemd-analyze) and the nginx configuration (nginx -t)."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GUIDE = (REPO / "docs" / "deploy.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def block(language: str) -> str:
    [body] = [body for lang, body in BLOCK.findall(GUIDE) if lang == language]
    return body


def test_the_unit_runs_the_documented_commands_and_parses() -> None:
    unit = block("ini")
    parsed = configparser.ConfigParser(strict=False, interpolation=None)
    parsed.read_string(unit)
    assert parsed["Service"]["ExecStart"].endswith("nestor serve --workers 4 --pid-file /run/nestor/nestor.pid")
    assert parsed["Service"]["KillSignal"] == "SIGTERM"
    assert parsed["Service"]["ExecReload"] == "/bin/kill -HUP $MAINPID"  # systemctl reload: no request dropped
    assert float(parsed["Service"]["TimeoutStopSec"]) > 30  # past shutdown_timeout's default
    assert parsed["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    unit = block("ini").split("\n", 1)[1]  # without the file-name comment
    # The paths the unit names, made to exist here: systemd-analyze checks that ExecStart runs.
    exe = tmp_path / "srv" / "nestor" / "venv" / "bin" / "nestor"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    unit = unit.replace("/srv/nestor", str(tmp_path / "srv" / "nestor"))
    (tmp_path / "nestor.service").write_text(unit)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(tmp_path / "nestor.service")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr


def nginx_test(config: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run `nginx -t` on a documented server configuration, with a self-signed certificate in
    place of the docs' Let's Encrypt files."""
    from ..fixtures.tls import self_signed

    _, cert = self_signed(tmp_path)
    config = config.replace("/etc/letsencrypt/live/example.org/fullchain.pem", str(cert))
    config = config.replace("/etc/letsencrypt/live/example.org/privkey.pem", str(tmp_path / "key.pem"))
    (tmp_path / "nestor.conf").write_text(config)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {tmp_path};\n  include {tmp_path}/nestor.conf;\n}}\n"
    )
    return subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_accepts_the_configuration(tmp_path: Path) -> None:
    result = nginx_test(block("nginx"), tmp_path)
    assert result.returncode == 0, result.stderr


def test_the_configuration_example_uses_settings_that_exist() -> None:
    from nestor.app import KERNEL_SETTINGS

    config = tomllib.loads(block("toml"))
    assert set(config["nestor"]) <= {s.name for s in KERNEL_SETTINGS}
    assert config["nestor"]["mode"] == "production"
    variables = re.findall(r"^NESTOR_(\w+)=", GUIDE, re.MULTILINE)  # the environment file
    assert {v.lower() for v in variables} <= {s.name for s in KERNEL_SETTINGS}


# README's "Running on several hosts": the same checks, and the proxy block is the one tests/site runs.
README = (REPO / "README.md").read_text(encoding="utf-8")
SEVERAL = README[README.index("## Running on several hosts"):README.index("\n## ", README.index("## Running on several hosts") + 5)]


def several(language: str) -> str:
    [body] = [body for lang, body in BLOCK.findall(SEVERAL) if lang == language]
    return body


def directives(config: str) -> set[str]:
    """The configuration's directive lines, without comments or spacing."""
    lines = (" ".join(line.split("#")[0].split()) for line in config.splitlines())
    return {line for line in lines if line}


def test_the_several_hosts_proxy_is_the_one_the_site_test_runs() -> None:
    template = (REPO / "tests" / "site" / "nginx.conf.template").read_text(encoding="utf-8")
    proxying = {
        d for d in directives(template)
        if d.startswith(("proxy_", "keepalive", "map ", "default ", '"" ')) and "_temp_path" not in d
    }
    assert proxying <= directives(several("nginx")), sorted(proxying - directives(several("nginx")))


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")
def test_nginx_accepts_the_several_hosts_configuration(tmp_path: Path) -> None:
    # `nginx -t` binds nothing, but a port under 1024 would need root: any free one will do.
    result = nginx_test(several("nginx").replace("listen 443 ssl;", "listen 127.0.0.1:1443 ssl;"), tmp_path)
    assert result.returncode == 0, result.stderr


def test_the_several_hosts_unit_and_config_use_what_exists() -> None:
    from nestor.app import KERNEL_SETTINGS

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string(several("ini"))
    assert unit["Service"]["ExecStart"].endswith("nestor serve --workers 4 --pid-file /run/nestor/nestor.pid")
    assert unit["Service"]["ExecReload"] == "/bin/kill -HUP $MAINPID"  # nestor serve reloads on SIGHUP
    names = {s.name for s in KERNEL_SETTINGS}
    assert set(tomllib.loads(several("toml"))["nestor"]) <= names
    assert {v.lower() for v in re.findall(r"^NESTOR_(\w+)=", several("sh"), re.MULTILINE)} <= names
