"""The ``asgi-apim`` command.

Every command exits 0 on success, 2 on bad usage, 1 on any other error, and
prints an error as one line on stderr (a traceback only with ``--debug``).
Each sub-command's work lives in the module that owns the concern; this file
only parses arguments and maps errors to exit codes.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, cast

from asgi_apim.errors import APIMError, RegistryUsageError, UsageError, concealed

Handler = Callable[[argparse.Namespace], int]

if TYPE_CHECKING:  # generic in typeshed only
    _SubParsersAction = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    _SubParsersAction = argparse._SubParsersAction


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, naming the (sub-)command, exit 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _SubCommands)

    def error(self, message: str) -> NoReturn:
        line = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {line} (see {self.prog} --help)\n")


class _SubCommands(_SubParsersAction):
    """Every sub-command accepts ``--debug`` too, and reports its own unrecognized arguments."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser = super().add_parser(name, **kwargs)
        parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        return parser

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        super().__call__(parser, namespace, values, option_string)
        extras = vars(namespace).pop(argparse._UNRECOGNIZED_ARGS_ATTR, None)
        if extras:
            self._name_parser_map[values[0]].error(f"unrecognized arguments: {' '.join(extras)}")


def _positive_days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of days") from None
    if days <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of days (got {days})")
    return days


def _seconds(value: str) -> float:
    from asgi_apim.server.deadline import parse_header_timeout

    try:
        return parse_header_timeout(value) or 0.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds >= 0") from None


def _add_server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="the configuration file (deployment.toml)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to bind (default: 8000)")
    p.add_argument("--uds", default=None, help="bind to a UNIX domain socket")
    p.add_argument("--workers", type=int, default=None, help="number of worker processes (default: 1)")
    p.add_argument(
        "--ssl-keyfile", default=None, help="the server's private key (PEM); turns TLS on with --ssl-certfile"
    )
    p.add_argument("--ssl-certfile", default=None, help="the server's certificate chain (PEM)")
    p.add_argument("--ssl-keyfile-password", default=None, help="password of an encrypted --ssl-keyfile")
    p.add_argument(
        "--ssl-ca-certs",
        default=None,
        help="CA file the TLS handshake verifies client certificates with"
        " (default: what the configuration trusts, kept current on reload)",
    )
    p.add_argument(
        "--ssl-cert-reqs",
        type=int,
        choices=(0, 1, 2),
        default=None,
        help="0 none, 1 optional, 2 required (default: 1 when an API uses mutual SSL, else 0)",
    )
    p.add_argument("--ssl-ciphers", default=None, help="OpenSSL cipher list for TLS (default: uvicorn's)")
    p.add_argument("--http", default="auto", help="uvicorn HTTP implementation: auto, h11, httptools")
    p.add_argument("--ws", default="auto", help="uvicorn WebSocket implementation: auto, websockets, wsproto, none")
    p.add_argument(
        "--proxy-headers",
        dest="proxy_headers",
        action="store_true",
        default=True,
        help="read X-Forwarded-For/-Proto from --forwarded-allow-ips into scope['client'] (default: on)",
    )
    p.add_argument(
        "--no-proxy-headers", dest="proxy_headers", action="store_false", help="ignore X-Forwarded-For/-Proto"
    )
    p.add_argument(
        "--forwarded-allow-ips",
        default=None,
        help="comma-separated addresses whose X-Forwarded-* headers uvicorn believes (uvicorn's default: 127.0.0.1)",
    )
    p.add_argument("--root-path", default="", help="ASGI root_path, for an app mounted below a URL prefix")
    p.add_argument("--log-level", default="info", help="critical, error, warning, info, debug or trace (default: info)")
    p.add_argument(
        "--no-access-log", dest="access_log", action="store_false", default=True, help="turn uvicorn's access log off"
    )
    p.add_argument(
        "--lifespan", default="auto", choices=("auto", "on", "off"), help="ASGI lifespan events (default: auto)"
    )
    # slow clients and load (issue 26)
    p.add_argument(
        "--header-timeout",
        type=_seconds,
        default=None,
        help="close a connection whose request head (and TLS handshake) has not arrived within SECONDS "
        "(default: 10; 0: never)",
    )
    p.add_argument(
        "--limit-concurrency",
        type=int,
        default=None,
        help="answer 503 beyond N concurrent connections or requests (uvicorn's)",
    )
    p.add_argument(
        "--timeout-keep-alive",
        type=int,
        default=5,
        help="close a keep-alive connection idle for SECONDS between requests (uvicorn's; default: 5)",
    )
    p.add_argument(
        "--allow-per-worker-limits",
        action="store_true",
        help="with --workers > 1 and memory:// throttling storage, let each worker count on its own",
    )


def _serve(ns: argparse.Namespace) -> int:
    from asgi_apim.server.run import serve

    return serve(ns)


def _gateway(ns: argparse.Namespace) -> int:
    from asgi_apim.server.run import serve

    ns.gateway, ns.app = True, None
    return serve(ns)


def _pki_init(ns: argparse.Namespace) -> int:
    from asgi_apim.certs.pki import PKI_FILES, existing_pki, init_pki

    if not ns.force and len(existing_pki(ns.dir)) == len(PKI_FILES):  # run again: keep what is there
        print(f"asgi-apim: {ns.dir} already holds a development PKI; kept (--force replaces it)", file=sys.stderr)
        names = [os.path.join(ns.dir, n) for n in PKI_FILES]
    else:
        names = init_pki(ns.dir, days=ns.days, force=ns.force)
    for name in names:
        print(name)
    return 0


def _check(ns: argparse.Namespace) -> int:
    from asgi_apim.explain import check_command

    return check_command(ns)


def version() -> str:
    """The installed distribution's version (its metadata), as ``pip show asgi-apim`` reports it."""
    try:
        return importlib.metadata.version("asgi-apim")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="asgi-apim", description="WSO2 API Manager gateway security as ASGI middleware")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument(
        "--version", action="version", version=f"asgi-apim {version()}", help="print the version and exit"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("serve", help="run MODULE:APP behind the configured stack on uvicorn")
    p.add_argument("app", help="MODULE:APP")
    p.add_argument("--app-dir", default=".", help="directory added to sys.path to import MODULE (default: .)")
    _add_server_options(p)
    p.set_defaults(handler=_serve)

    p = sub.add_parser("gateway", help="run the micro-gateway: every API with a backend, proxied, secured, throttled")
    _add_server_options(p)
    p.set_defaults(handler=_gateway)

    p = sub.add_parser("pki", help="development PKI")
    pki_sub = p.add_subparsers(dest="pki_command", required=True, parser_class=_Parser)
    q = pki_sub.add_parser("init", help="write ca, server and client certificates and keys to DIR")
    q.add_argument("dir", help="directory to write the PKI to (created if missing)")
    q.add_argument("--days", type=_positive_days, default=365, help="validity of every certificate (default: 365)")
    q.add_argument(
        "--force", action="store_true", help="replace a PKI already in DIR (by default a complete one is kept)"
    )
    q.set_defaults(handler=_pki_init)

    p = sub.add_parser("check", help="would this certificate (or request) be accepted, and why")
    p.add_argument("--config", required=True, help="the configuration file (deployment.toml); never written")
    p.add_argument("cert", nargs="?", help="CERT.pem: the client certificate (chain) to check")
    p.add_argument("--cert", dest="cert_opt", default=None, help="client certificate for --request")
    p.add_argument("--request", default=None, help="'METHOD /path' to explain end to end")
    p.add_argument("--header", action="append", default=[], help="'Name: value' (repeatable) for --request")
    p.add_argument("--peer", default="127.0.0.1", help="socket peer address for --request (default 127.0.0.1)")
    p.set_defaults(handler=_check)

    for register in _extensions():
        register(cast(_SubParsersAction, sub))  # its parsers are _Parser, which extensions use as ArgumentParser
    return parser


def _extensions() -> list[Callable[[_SubParsersAction], None]]:
    """Sub-commands owned by other packages (secrets, auth, registry, gateway)."""
    found = []
    for module, attr in (
        ("asgi_apim.secrets.commands", "register"),
        ("asgi_apim.auth.commands", "register"),
        ("asgi_apim.throttling.commands", "register"),
        ("asgi_apim.registry.commands", "register"),
    ):
        try:
            mod = __import__(module, fromlist=[attr])
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        found.append(getattr(mod, attr))
    return found


QUIET_LOGGERS = ("httpx", "httpcore")  # the JWKS and introspection clients' own loggers: warnings only


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in QUIET_LOGGERS:  # httpx logs every request's URL, credentials and all, at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(ns.handler(ns) or 0)
    except (UsageError, RegistryUsageError) as exc:  # an unknown API or tier given to `certs`: bad usage
        print(f"asgi-apim: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except (APIMError, OSError, ValueError) as exc:
        if ns.debug:
            raise
        print(f"asgi-apim: error: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except Exception as exc:
        if ns.debug:
            raise
        print(
            f"asgi-apim: error: {type(exc).__name__}: {_one_line(str(exc))} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


def _one_line(message: str) -> str:
    return " ".join(concealed(message).split()) or "failed"  # an OSError may name a path that came encrypted


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
