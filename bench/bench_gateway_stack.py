"""The whole gateway against the same backend called directly: small GETs, one worker each.

    python bench/bench_gateway_stack.py [--duration 3] [--rounds 2] [--connections 32] [--access-log]

Targets (loopback, uvicorn with uvloop and httptools; see bench/bench_gateway.py):

- ``direct``: the bare Starlette backend;
- ``lean``: bench_gateway's minimal proxy over the same upstream client (no security);
- ``gateway``: ``asgi-apim gateway``: the certificate header from a trusted proxy (url-encoded PEM,
  cached after the first request), a registered certificate at tier Gold (in memory), the backend
  called through `GatewayProxy`;
- ``gateway+log`` (with ``--access-log``): the same gateway with its default logging (``--log-level
  info`` and uvicorn's access log, one line a request, written to /dev/null);
- ``nginx``: ``proxy_pass`` with upstream keepalive.

Prints the median req/s, the median ratio to ``direct``, the worst p99 and the median CPU time
each target's process spent per request (``/proc/PID/stat``; nginx: master and worker), which a
busy machine disturbs much less than the rates.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_gateway import NGINX, free_port, measure, stop, wait_listening  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="also run the gateway with its default logging (info, access log on; the lines to /dev/null)",
    )
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
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            sessions = {kind: procs[i].pid for i, kind in enumerate(("direct", "lean"))}
            gateways = {"gateway": ["--log-level", "warning", "--no-access-log"]}
            if args.access_log:
                gateways["gateway+log"] = []  # the defaults: --log-level info, the access log on
            for kind, flags in gateways.items():
                ports[kind] = free_port()
                argv = [sys.executable, "-m", "asgi_apim.cli", "gateway", "--config", str(config)]
                argv += ["--port", str(ports[kind]), *flags]
                out = subprocess.DEVNULL if flags == [] else None
                procs.append(subprocess.Popen(argv, start_new_session=True, env=env, stdout=out, stderr=out))
                wait_listening(ports[kind], procs[-1], kind)
                sessions[kind] = procs[-1].pid
            ports["nginx"] = free_port()
            conf = Path(work) / "nginx.conf"
            conf.write_text(NGINX.format(work=work, backend=backend, port=ports["nginx"]))
            procs.append(subprocess.Popen(["nginx", "-c", str(conf), "-g", "daemon off;"], start_new_session=True))
            wait_listening(ports["nginx"], procs[-1], "nginx")
            sessions["nginx"] = procs[-1].pid
            order = ["direct", "lean", *gateways, "nginx"]
            measure(ports, order, args, {kind: header for kind in gateways}, sessions)
        finally:
            stop(procs)


if __name__ == "__main__":
    main()
