"""A TLS handshake between two in-memory SSLObjects (no sockets)."""

from __future__ import annotations

import ssl
from pathlib import Path

from asgi_apim.certs.pki import Issued


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """Run the handshake to completion; any failure raises ``ssl.SSLError``."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    done: set[str] = set()
    for _ in range(20):
        for name, obj, out, peer_in in (("client", client, c_out, s_in), ("server", server, s_out, c_in)):
            if name not in done:
                try:
                    obj.do_handshake()
                    done.add(name)
                except ssl.SSLWantReadError:
                    pass
            data = out.read()
            if data:
                peer_in.write(data)
        if len(done) == 2:
            # TLS 1.3: the server reads the client's certificate on the first exchange after the handshake.
            client.write(b"ping")
            s_in.write(c_out.read())
            assert server.read(4) == b"ping"
            return server, client
    raise AssertionError("handshake did not finish")


def server_context(tmp: Path, server: Issued, *, cert_reqs: ssl.VerifyMode = ssl.CERT_OPTIONAL) -> ssl.SSLContext:
    server.write(tmp / "server.pem", tmp / "server.key")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp / "server.pem", tmp / "server.key")
    ctx.verify_mode = cert_reqs
    return ctx


def client_context(
    tmp: Path, ca: Issued, client: Issued | None = None, *extra: Issued, name: str = "client"
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=ca.cert_pem().decode())
    if client is not None:
        (tmp / f"{name}.pem").write_bytes(client.cert_pem() + b"".join(i.cert_pem() for i in extra))
        (tmp / f"{name}.key").write_bytes(client.key_pem())
        ctx.load_cert_chain(tmp / f"{name}.pem", tmp / f"{name}.key")
    return ctx
