"""What a user installs: the wheel's contents, the licence, ``--version`` and the help of every flag."""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from asgi_apim.cli import build_parser

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("asgi_apim-*.whl")
    return path


def test_the_wheel_holds_the_library_only(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"asgi_apim", wheel.name.split("-py3")[0] + ".dist-info"}, tops
    assert "asgi_apim/py.typed" in names
    assert "asgi_apim/cli.py" in names and "asgi_apim/server/run.py" in names
    assert not any(n.startswith(("example_app/", "tests/", "bench/")) for n in names)


def test_the_wheel_carries_the_apache_licence(wheel: Path) -> None:
    z = zipfile.ZipFile(wheel)
    (licence,) = [n for n in z.namelist() if n.endswith("licenses/LICENSE")]
    assert z.read(licence) == (REPO / "LICENSE").read_bytes()
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text
    metadata = z.read(next(n for n in z.namelist() if n.endswith("METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata


def test_the_example_app_stays_importable_from_a_checkout() -> None:
    r = subprocess.run(
        [sys.executable, "-c", "import example_app.main; print(example_app.main.app.title)"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr


def test_version_prints_the_installed_version() -> None:
    r = subprocess.run([sys.executable, "-m", "asgi_apim.cli", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"asgi-apim {importlib.metadata.version('asgi-apim')}\n"
    assert r.stderr == ""


def _parsers(parser: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_flag_of_every_command_has_help() -> None:
    missing = []
    seen = 0
    for name, parser in _parsers(build_parser(), "asgi-apim"):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{name} {c.dest}" for c in action._choices_actions if not (c.help or "").strip()]
                continue
            seen += 1
            if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert seen > 60  # serve, check, pki init, keygen, encrypt, decrypt, rotate-key, apikey issue, ...
    assert missing == []


def test_serve_help_describes_the_tls_flags() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "asgi_apim.cli", "serve", "--help"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for words in ("turns TLS on", "0 none, 1 optional, 2 required", "port to bind", "worker processes"):
        assert words in text
