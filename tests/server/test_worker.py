"""The gunicorn worker classes: both spellings of ``-k`` load them, and they run our protocols."""

from __future__ import annotations

import pytest
from gunicorn.util import load_class
from uvicorn_worker import UvicornH11Worker, UvicornWorker

from asgi_apim.server import protocols, worker


@pytest.mark.parametrize("uri", ["asgi_apim.server.worker:UvicornWorker", "asgi_apim.server.worker.UvicornWorker"])
def test_gunicorn_loads_the_worker_by_either_spelling(uri: str) -> None:
    assert load_class(uri) is worker.UvicornWorker


def test_the_workers_run_our_protocol_classes() -> None:
    assert issubclass(worker.UvicornWorker, UvicornWorker)
    http, ws = protocols.tls_protocols()
    assert worker.UvicornWorker.CONFIG_KWARGS == {"loop": "auto", "http": http, "ws": ws}
    assert issubclass(worker.UvicornH11Worker, worker.UvicornWorker)
    assert worker.UvicornH11Worker.CONFIG_KWARGS["http"] is protocols.H11TLSProtocol
    assert worker.UvicornH11Worker.CONFIG_KWARGS["loop"] == UvicornH11Worker.CONFIG_KWARGS["loop"]


def test_other_names_are_still_missing() -> None:
    import asgi_apim.server as package

    with pytest.raises(AttributeError):
        package.__getattr__("worker:NoSuchWorker")
    with pytest.raises(AttributeError):
        package.__getattr__("nothing")
