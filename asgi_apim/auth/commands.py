"""``asgi-apim apikey issue``: print a signed API key for one API."""

from __future__ import annotations

import argparse


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of seconds") from None
    if number <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return number


def _issue(ns: argparse.Namespace) -> int:
    from asgi_apim.auth.apikey import DEFAULT_EXPIRES, api_key_refusal, issue_api_key
    from asgi_apim.config import load_config

    config = load_config(ns.config, read_only=True)  # the file is only read
    if any(api.name == ns.api for api in config.apis):  # an unknown API is named by issue_api_key
        refusal = api_key_refusal(config.api(ns.api))
        if refusal:
            raise ValueError(refusal)  # a key no request could use
    expires = DEFAULT_EXPIRES if ns.expires is None else ns.expires
    print(issue_api_key(config, ns.api, ns.tier, subject=ns.subject, expires=expires, scopes=ns.scope))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("apikey", help="self-contained API keys")
    sub = p.add_subparsers(dest="apikey_command", required=True, parser_class=type(p))
    q = sub.add_parser("issue", help="print a signed API key (a JWT) for one API")
    q.add_argument("--config", required=True, help="deployment.toml")
    q.add_argument("--api", required=True, help="name of the API the key opens")
    q.add_argument("--tier", required=True, help="throttling tier of the key")
    q.add_argument("--subject", default=None, help="who the key is for (default: apikey-<id>)")
    q.add_argument("--expires", type=_positive_int, default=None, help="lifetime in seconds (default: one year)")
    q.add_argument("--scope", action="append", default=[], help="a scope the key carries (repeatable)")
    q.set_defaults(handler=_issue)
