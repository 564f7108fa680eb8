"""Test-wide hygiene."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from asgi_apim import errors


@pytest.fixture(autouse=True)
def _no_decrypted_values_from_another_test() -> Iterator[None]:
    """The values a test's configuration decrypted are concealed in that test's errors only: a
    process loads one configuration, a test run many."""
    errors.forget_decrypted()
    yield
    errors.forget_decrypted()


def _ours() -> list[logging.Logger]:
    manager = logging.Logger.manager
    names = [n for n in list(manager.loggerDict) if n == "asgi_apim" or n.startswith("asgi_apim.")]
    return [logging.getLogger(n) for n in ["asgi_apim", *names]]


@pytest.fixture(autouse=True)
def _our_loggers_as_they_were() -> Iterator[None]:
    """A test that configures logging as a server does (uvicorn's dictConfig, the gunicorn
    worker) leaves ``asgi_apim``'s loggers as it found them: propagating to the root, where
    pytest's caplog listens, and enabled."""
    saved = {lg.name: (lg.handlers[:], lg.level, lg.propagate, lg.disabled) for lg in _ours()}
    yield
    for lg in _ours():
        handlers, level, propagate, disabled = saved.get(lg.name, ([], logging.NOTSET, True, False))
        lg.handlers, lg.level, lg.propagate, lg.disabled = handlers, level, propagate, disabled
