"""Test-wide hygiene."""

from __future__ import annotations

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
