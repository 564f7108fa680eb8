"""One refused request repeated, against a real ``asgi-apim serve`` on loopback (issue 26, point 1).

Sends the same refused request many times over keep-alive connections from a
trusted proxy's address, and reports the server's resident memory before and
after, and the latency of the first and the last requests:

- a malformed certificate header (400), 20 000 times;
- a certificate header of 64 KiB + 1 byte (400), 2 000 times;
- the header of a certificate no CA here issued (401), 20 000 times;
- the same refused certificate over the TLS connection itself (401), 20 000 times.

    python bench/hostile_refusals.py [--quick]

Before refusals were kept as values, raising the cached refusal again added
every request's frames to its traceback: RSS grew by about 4 KB a request for
the malformed header, 68 KB for the oversized one.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from asgi_apim.certs.pki import issue_client, issue_server, make_ca  # noqa: E402

CONFIG = """
[encryption]
key = "{key}"
[mutual_ssl]
truststore = ["pki/ca.pem"]
trusted_proxies = ["127.0.0.1/32"]
[[apis]]
name = "pets"
context = "/pets"
[apis.security]
mutual_ssl = "mandatory"
[[apis.certificates]]
alias = "partner"
certificate = "pki/partner.pem"
tier = "Unlimited"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _start(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).with_name("asgi-apim")
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "asgi_apim.cli"]
    argv += [
        "serve",
        "tests.e2e.whoami_app:app",
        "--config",
        str(tmp / "deployment.toml"),
        "--port",
        str(port),
        "--ssl-certfile",
        str(tmp / "pki/server.pem"),
        "--ssl-keyfile",
        str(tmp / "pki/server.key"),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("asgi-apim serve did not start")


def _attack(
    url: str, verify: ssl.SSLContext, headers: dict[str, str], count: int, status: int, cert: tuple[str, str] | None
) -> tuple[float, float]:
    context = verify
    if cert is not None:
        context = ssl.create_default_context(cafile=verify.ca_file)  # type: ignore[attr-defined]
        context.load_cert_chain(*cert)
    times = []
    with httpx.Client(verify=context, timeout=10) as client:
        for _ in range(count):
            start = time.perf_counter()
            r = client.get(url, headers=headers)
            times.append(time.perf_counter() - start)
            if r.status_code != status:
                raise RuntimeError(f"expected {status}, got {r.status_code}: {r.text[:200]}")
    tenth = max(1, count // 10)
    return statistics.median(times[:tenth]) * 1e3, statistics.median(times[-tenth:]) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the requests")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "pki").mkdir()
        ca = make_ca("bench CA")
        ca.write(tmp / "pki/ca.pem")
        issue_server(ca).write(tmp / "pki/server.pem", tmp / "pki/server.key")
        issue_client(ca, "partner").write(tmp / "pki/partner.pem")
        (tmp / "deployment.toml").write_text(CONFIG.format(key=os.urandom(32).hex()))
        # a certificate the TLS handshake accepts (its CA is trusted) that no API registered: refused with 401
        stranger = issue_client(ca, "stranger")
        stranger.write(tmp / "stranger.pem", tmp / "stranger.key")
        foreign = issue_client(make_ca("foreign CA"), "foreign client")
        port = _free_port()
        proc = _start(tmp, port)
        verify = ssl.create_default_context(cafile=str(tmp / "pki/ca.pem"))
        verify.ca_file = str(tmp / "pki/ca.pem")  # type: ignore[attr-defined]
        url = f"https://localhost:{port}/pets/whoami"
        header = "x-wso2-client-certificate"
        cases = [
            ("malformed certificate header", {header: "-----BEGIN%20CERTIFICATE-----%0Anope"}, 20_000, 400, None),
            ("certificate header of 64 KiB + 1", {header: "A" * (64 * 1024 + 1)}, 2_000, 400, None),
            ("refused certificate, header", {header: quote(foreign.cert_pem().decode(), safe="")}, 20_000, 401, None),
            ("refused certificate, TLS", {}, 20_000, 401, (str(tmp / "stranger.pem"), str(tmp / "stranger.key"))),
        ]
        print("| case | requests | server RSS before → after (MiB) | first / last tenth, median ms |")
        print("| --- | ---: | --- | --- |")
        try:
            for name, headers, count, status, cert in cases:
                n = count // scale
                _attack(url, verify, headers, 50, status, cert)  # warm: the refusal is cached
                before = _rss_kib(proc.pid)
                first, last = _attack(url, verify, headers, n, status, cert)
                after = _rss_kib(proc.pid)
                print(f"| {name} | {n:,} | {before / 1024:.1f} → {after / 1024:.1f} | {first:.2f} / {last:.2f} |")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)


if __name__ == "__main__":
    main()
