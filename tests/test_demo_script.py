"""scripts/demo.sh on a port something else already holds: a clear message, at once, and no curl line."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_demo_stops_at_once_when_its_port_is_taken(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(8)
        port = holder.getsockname()[1]
        started = time.monotonic()
        done = subprocess.run(
            ["bash", str(REPO / "scripts" / "demo.sh"), "--no-wait"],
            cwd=tmp_path,  # the script finds the repository itself
            env={**os.environ, "PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        elapsed = time.monotonic() - started
    assert done.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in done.stderr
    assert "PORT=" in done.stderr  # how to pick another
    assert "$ curl" not in done.stdout and "== development PKI" not in done.stdout
    assert elapsed < 10
