from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.auth.hostile import Hostile, running_hostile
from tests.auth.idp import IdP, running_idp


@pytest.fixture
def idp() -> Iterator[IdP]:
    with running_idp() as state:
        yield state


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    with running_hostile() as state:
        yield state
