"""Shared end-to-end fixtures: free loopback ports, a PKI, ``asgi-apim serve``
and nginx as real processes, started by the test and always stopped."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from asgi_apim.certs.pki import Issued, issue_client, issue_server, make_ca

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
START_TIMEOUT = 20.0


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class PKI:
    dir: Path
    ca: Issued
    server: Issued
    client: Issued
    other_ca: Issued
    stranger: Issued

    def path(self, name: str) -> Path:
        return self.dir / name

    def client_context(self, cert: str = "client", *, ca: str = "ca.pem") -> ssl.SSLContext:
        """An SSLContext that trusts ``ca`` and presents ``cert``.pem/.key (None: no certificate)."""
        ctx = ssl.create_default_context(cafile=str(self.path(ca)))
        if cert:
            ctx.load_cert_chain(self.path(f"{cert}.pem"), self.path(f"{cert}.key"))
        return ctx


def write_pki(directory: Path) -> PKI:
    """ca/server/client from one CA; stranger from another CA nobody trusts."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca("e2e CA")
    other = make_ca("stranger CA")
    pki = PKI(directory, ca, issue_server(ca), issue_client(ca, "e2e-client"), other, issue_client(other, "stranger"))
    ca.write(directory / "ca.pem", directory / "ca.key")
    pki.server.write(directory / "server.pem", directory / "server.key")
    pki.client.write(directory / "client.pem", directory / "client.key")
    other.write(directory / "other-ca.pem", directory / "other-ca.key")
    pki.stranger.write(directory / "stranger.pem", directory / "stranger.key")
    return pki


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return write_pki(tmp_path / "pki")


@pytest.fixture(scope="module")
def module_pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return write_pki(tmp_path_factory.mktemp("pki"))


def _asgi_apim() -> list[str]:
    script = Path(sys.executable).with_name("asgi-apim")
    return [str(script)] if script.exists() else [sys.executable, "-m", "asgi_apim.cli"]


class Process:
    """A started server process, its log file and how to stop it."""

    def __init__(self, name: str, argv: list[str], log: Path, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            argv, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_listening(self, host: str, port: int, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            if _listening(host, port):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on {host}:{port} within {timeout}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)  # our own session: the server and its workers, nothing else
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


@dataclass
class Served:
    process: Process
    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def log(self) -> str:
        return self.process.log()


NGINX_CONF = """
worker_processes 1;
{user}
error_log {prefix}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
{body}
}}
"""


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        raise RuntimeError("nginx is not installed (apt-get install nginx)")
    return found


class Servers:
    """Starts ``asgi-apim serve`` and nginx under ``tmp``; `stop_all` stops what it started."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[tuple[Process, int]] = []

    def serve(self, app: str, config: Path, *flags: str, tls_pki: PKI | None = None, host: str = LOOPBACK) -> Served:
        """Run ``asgi-apim serve APP --config CONFIG FLAGS`` on a free port and wait until it listens."""
        port = free_port(host)
        argv = [
            *_asgi_apim(),
            "serve",
            app,
            "--config",
            str(config),
            "--host",
            host,
            "--port",
            str(port),
            "--app-dir",
            str(REPO),
            "--log-level",
            "info",
            *flags,
        ]
        if tls_pki is not None:
            argv += [
                "--ssl-certfile",
                str(tls_pki.path("server.pem")),
                "--ssl-keyfile",
                str(tls_pki.path("server.key")),
            ]
        proc = Process("asgi-apim serve", argv, self.tmp / f"serve-{port}.log", REPO)
        self.started.append((proc, signal.SIGTERM))
        proc.wait_listening(host, port)
        return Served(proc, host, port, tls_pki is not None)

    def gateway(self, config: Path, *flags: str, tls_pki: PKI | None = None, host: str = LOOPBACK) -> Served:
        """Run ``asgi-apim gateway --config CONFIG FLAGS`` on a free port and wait until it listens."""
        port = free_port(host)
        argv = [*_asgi_apim(), "gateway", "--config", str(config), "--host", host, "--port", str(port), *flags]
        if tls_pki is not None:
            argv += [
                "--ssl-certfile",
                str(tls_pki.path("server.pem")),
                "--ssl-keyfile",
                str(tls_pki.path("server.key")),
            ]
        proc = Process("asgi-apim gateway", argv, self.tmp / f"gateway-{port}.log", REPO)
        self.started.append((proc, signal.SIGTERM))
        proc.wait_listening(host, port)
        return Served(proc, host, port, tls_pki is not None)

    def uvicorn(
        self, app: str, *flags: str, env: dict[str, str] | None = None, tls_pki: PKI | None = None, port: int = 0
    ) -> Served:
        """Run a plain ``uvicorn APP`` (a backend) on a free port; ``tls_pki``: HTTPS requiring a client certificate."""
        port = port or free_port()
        argv = [sys.executable, "-m", "uvicorn", app, "--host", LOOPBACK, "--port", str(port), "--log-level", "warning"]
        if tls_pki is not None:
            argv += [
                "--ssl-certfile",
                str(tls_pki.path("server.pem")),
                "--ssl-keyfile",
                str(tls_pki.path("server.key")),
            ]
            argv += ["--ssl-ca-certs", str(tls_pki.path("ca.pem")), "--ssl-cert-reqs", "2"]
        proc = Process(
            f"uvicorn {app}", [*argv, *flags], self.tmp / f"uvicorn-{port}.log", REPO, {**os.environ, **(env or {})}
        )
        self.started.append((proc, signal.SIGTERM))
        proc.wait_listening(LOOPBACK, port)
        return Served(proc, LOOPBACK, port, tls_pki is not None)

    def nginx(self, body: str, port: int) -> Process:
        """Run nginx in the foreground with ``body`` as its http block and everything under a private prefix."""
        prefix = self.tmp / f"nginx-{port}"
        prefix.mkdir()
        conf = prefix / "nginx.conf"
        conf.write_text(NGINX_CONF.format(prefix=prefix, user="user root;" if os.geteuid() == 0 else "", body=body))
        argv = [
            nginx_binary(),
            "-p",
            str(prefix),
            "-c",
            str(conf),
            "-e",
            str(prefix / "error.log"),
            "-g",
            f"daemon off; pid {prefix}/nginx.pid;",
        ]
        proc = Process("nginx", argv, prefix / "stdout.log", prefix)
        self.started.append((proc, signal.SIGQUIT))
        try:
            proc.wait_listening(LOOPBACK, port)
        except RuntimeError as exc:
            error_log = prefix / "error.log"
            raise RuntimeError(
                f"{exc}\n{error_log.read_text(errors='replace') if error_log.exists() else ''}"
            ) from None
        return proc

    def stop_all(self) -> None:
        for proc, sig in reversed(self.started):
            proc.stop(sig)
        self.started.clear()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    launcher = Servers(tmp_path)
    yield launcher
    launcher.stop_all()


@pytest.fixture(scope="module")
def module_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    launcher = Servers(tmp_path_factory.mktemp("servers"))
    yield launcher
    launcher.stop_all()


@pytest.fixture
def serve(servers: Servers) -> Callable[..., Served]:
    return servers.serve


@pytest.fixture
def nginx(servers: Servers) -> Callable[[str, int], Process]:
    return servers.nginx
