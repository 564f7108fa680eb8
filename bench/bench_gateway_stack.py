"""The whole gateway against the same backend called directly: small GETs, one worker each.

    python bench/bench_gateway_stack.py [--duration 3] [--rounds 2] [--connections 32]

Targets (loopback, uvicorn with uvloop and httptools; see bench/bench_gateway.py):

- ``direct``: the bare Starlette backend;
- ``lean``: bench_gateway's minimal proxy over the same upstream client (no security);
- ``gateway``: ``asgi-apim gateway``: the certificate header from a trusted proxy (url-encoded PEM,
  cached after the first request), a registered certificate at tier Gold (in memory), the backend
  called through `GatewayProxy`;
- ``nginx``: ``proxy_pass`` with upstream keepalive.

Prints the median req/s, the median ratio to ``direct`` and the worst p99.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_gateway import NGINX, free_port, wait_listening  # noqa: E402

CONFIG = """
[encryption]
key = "{key}"

[mutual_ssl]
trusted_proxies = ["127.0.0.1/32"]

[throttling.tiers]
Gold = "100000000/minute"

[[apis]]
name = "bench"
context = "/"
backend = "http://127.0.0.1:{backend}"
[apis.security]
mutual_ssl = "mandatory"
[[apis.certificates]]
alias = "client"
certificate = "client.pem"
tier = "Gold"
"""


def wrk(port: int, duration: int, connections: int, header: str | None) -> tuple[float, float]:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    if header:
        argv += ["-H", header]
    proc = subprocess.run([*argv, f"http://127.0.0.1:{port}/"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed on port {port}: {proc.stderr.strip() or proc.stdout.strip()}")
    out = proc.stdout
    if "Non-2xx" in out or "Socket errors" in out:
        print(f"  warning: errors on port {port}: {out.strip().splitlines()[-3:]}", file=sys.stderr)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return rate, float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    from asgi_apim.certs.pki import issue_client, make_ca

    procs: list[subprocess.Popen[bytes]] = []
    ports: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as work:
        ca = make_ca("bench CA")
        client = issue_client(ca, "bench-client")
        client.write(Path(work) / "client.pem", Path(work) / "client.key")
        pem = (Path(work) / "client.pem").read_text()
        header = f"X-WSO2-CLIENT-CERTIFICATE: {quote(pem, safe='')}"
        try:
            backend = free_port()
            script = str(REPO / "bench" / "bench_gateway.py")
            for kind in ("direct", "lean"):
                port = backend if kind == "direct" else free_port()
                argv = [sys.executable, script, "--serve", kind, "--port", str(port), "--backend", str(backend)]
                procs.append(subprocess.Popen(argv, start_new_session=True))
                wait_listening(port, procs[-1], kind)
                ports[kind] = port
            config = Path(work) / "gateway.toml"
            config.write_text(CONFIG.format(key=os.urandom(32).hex(), backend=backend))
            ports["gateway"] = free_port()
            argv = [sys.executable, "-m", "asgi_apim.cli", "gateway", "--config", str(config)]
            argv += ["--port", str(ports["gateway"]), "--log-level", "warning", "--no-access-log"]
            procs.append(subprocess.Popen(argv, start_new_session=True, env={**os.environ, "PYTHONPATH": str(REPO)}))
            wait_listening(ports["gateway"], procs[-1], "gateway")
            ports["nginx"] = free_port()
            conf = Path(work) / "nginx.conf"
            conf.write_text(NGINX.format(work=work, backend=backend, port=ports["nginx"]))
            procs.append(subprocess.Popen(["nginx", "-c", str(conf), "-g", "daemon off;"], start_new_session=True))
            wait_listening(ports["nginx"], procs[-1], "nginx")
            order = ["direct", "lean", "gateway", "nginx"]
            headers = {"gateway": header}
            for kind in order:
                wrk(ports[kind], 1, args.connections, headers.get(kind))
            rates: dict[str, list[float]] = {k: [] for k in order}
            p99s: dict[str, list[float]] = {k: [] for k in order}
            for _ in range(args.rounds):
                for kind in order:
                    rate, p99 = wrk(ports[kind], args.duration, args.connections, headers.get(kind))
                    rates[kind].append(rate)
                    p99s[kind].append(p99)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
    print(f"\nwrk -t1 -c{args.connections}, {args.rounds} x {args.duration:g} s, one worker each\n")
    print(f"{'target':<10} {'req/s':>10} {'x direct':>9} {'p99 ms':>8}")
    for kind in order:
        ratio = statistics.median(r / d for r, d in zip(rates[kind], rates["direct"], strict=True))
        print(f"{kind:<10} {statistics.median(rates[kind]):>10.0f} {ratio:>9.2f} {max(p99s[kind]):>8.2f}")


if __name__ == "__main__":
    main()
