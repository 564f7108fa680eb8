"""``asgi-apim certs add | list | remove | update``: the certificate registry from the command line.

Changes reach every node reading the same database within its
``reload_interval``. An unknown API or tier is bad usage (exit 2); a refused
change, a file that is not one certificate, or a database that cannot be
reached exits 1 with one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from asgi_apim.config import load_config
from asgi_apim.errors import CertificateFileError
from asgi_apim.registry.feed import as_json, days_left
from asgi_apim.registry.operations import Listed, Registry

COLUMNS = ("ALIAS", "API", "TIER", "SUBJECT", "EXPIRES", "DAYS LEFT", "SOURCE")


def _registry(ns: argparse.Namespace) -> Registry:
    return Registry(load_config(ns.config))


def _add(ns: argparse.Namespace) -> int:
    path = Path(ns.cert)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    registry = _registry(ns)
    try:
        reg = registry.add(ns.api, ns.alias, ns.tier, data, str(path))
    finally:
        registry.close()
    api = registry.config.api(ns.api)
    print(f"registered {ns.alias!r} for API {ns.api!r} at tier {ns.tier} (sha256 {reg.sha256.hex()})")
    modes = {api.security.mutual_ssl, *(r.security.mutual_ssl for r in api.resources if r.security)}
    if modes == {"disabled"}:
        print(
            f"asgi-apim: notice: API {ns.api!r} has mutual_ssl disabled: the certificate is not asked for",
            file=sys.stderr,
        )
    return 0


def _remove(ns: argparse.Namespace) -> int:
    registry = _registry(ns)
    try:
        registry.remove(ns.api, ns.alias)
    finally:
        registry.close()
    print(f"removed {ns.alias!r} from API {ns.api!r}")
    return 0


def _update(ns: argparse.Namespace) -> int:
    registry = _registry(ns)
    try:
        registry.update(ns.api, ns.alias, ns.tier)
    finally:
        registry.close()
    print(f"{ns.alias!r} of API {ns.api!r} is now at tier {ns.tier}")
    return 0


def _row(item: Listed) -> tuple[str, ...]:
    r = item.registration
    days = days_left(r.cert)
    return (
        r.alias,
        r.api,
        r.tier,
        r.cert.subject.rfc4514_string(),
        r.cert.not_valid_after_utc.strftime("%Y-%m-%d"),
        "expired" if days < 0 else str(math.floor(days)),
        item.source,
    )


def table(items: list[Listed]) -> str:
    """The rows under a header, columns padded to their widest cell."""
    rows = [COLUMNS, *(_row(i) for i in items)]
    widths = [max(len(row[c]) for row in rows) for c in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _list(ns: argparse.Namespace) -> int:
    registry = _registry(ns)
    try:
        items = registry.listing(ns.api)
    finally:
        registry.close()
    if ns.json:
        print(json.dumps([{**as_json(i.registration), "source": i.source} for i in items], indent=2))
    else:
        print(table(items))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("certs", help="manage the certificate registry ([registry] url)")
    sub = p.add_subparsers(dest="certs_command", required=True, parser_class=type(p))

    q = sub.add_parser("add", help="register CERT.pem for an API under an alias, at a tier")
    q.add_argument("--config", required=True, help="deployment.toml")
    q.add_argument("--api", required=True, help="the API (an [[apis]] name)")
    q.add_argument("--alias", required=True, help="the registration's alias, unique within the API")
    q.add_argument("--tier", required=True, help="the throttling tier of its callers (a [throttling.tiers] name)")
    q.add_argument("cert", metavar="CERT.pem", help="the client certificate or CA certificate (PEM or DER)")
    q.set_defaults(handler=_add)

    q = sub.add_parser("list", help="the registered certificates: configuration file and registry")
    q.add_argument("--config", required=True, help="deployment.toml")
    q.add_argument("--api", default=None, help="only this API's")
    q.add_argument("--json", action="store_true", help="a JSON array, for scripts")
    q.set_defaults(handler=_list)

    q = sub.add_parser("remove", help="remove a registration (refused at once by every node's next reload)")
    q.add_argument("--config", required=True, help="deployment.toml")
    q.add_argument("--api", required=True, help="the API (an [[apis]] name)")
    q.add_argument("--alias", required=True, help="the registration's alias, unique within the API")
    q.set_defaults(handler=_remove)

    q = sub.add_parser("update", help="change a registration's tier")
    q.add_argument("--config", required=True, help="deployment.toml")
    q.add_argument("--api", required=True, help="the API (an [[apis]] name)")
    q.add_argument("--alias", required=True, help="the registration's alias, unique within the API")
    q.add_argument("--tier", required=True, help="the throttling tier of its callers (a [throttling.tiers] name)")
    q.set_defaults(handler=_update)
