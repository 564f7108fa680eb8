"""The gateway runs on uvloop: the upstream client's tests again, on a uvloop event loop
(its transports differ from asyncio's: not subclasses, their own flow control and TLS)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import uvloop

from tests.gateway import test_ssl_profiles as tls
from tests.gateway import test_upstream as basic
from tests.gateway import test_upstream_faults as faults
from tests.gateway import test_upstream_large as large
from tests.gateway.test_ssl_profiles import certs  # noqa: F401  # the module's openssl-made certificates

CASES: list[Callable[[], Awaitable[None]]] = [
    basic.test_get_passes_method_target_and_headers_as_given,
    basic.test_chunked_response_is_dechunked,
    basic.test_head_has_no_body_although_its_content_length_says_so,
    basic.test_sequential_requests_reuse_one_connection,
    basic.test_concurrency_is_bounded_by_max_connections,
    basic.test_waiting_for_a_busy_pool_times_out,
    basic.test_a_waiter_cancelled_as_it_is_handed_a_connection_passes_it_on,
    basic.test_idle_connections_are_closed_once_expired_without_a_request,
    basic.test_refused_connection,
    faults.test_garbage_status_line,
    faults.test_no_response_head_times_out,
    faults.test_reset_mid_body,
    faults.test_a_body_delimited_by_close,
    faults.test_a_post_on_a_stale_connection_is_not_sent_again,
    faults.test_a_connection_closed_while_idle_is_not_used,
    faults.test_expect_continue_sends_the_body_after_the_100,
    faults.test_expect_continue_answered_finally_never_sends_the_body,
    faults.test_a_backend_that_answers_before_reading_the_body,
    faults.test_a_slow_reader_holds_the_backend_back,
    large.test_100_mib_download_chunked_and_with_length,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_on_uvloop(case: Callable[[], Awaitable[None]]) -> None:
    uvloop.run(case())  # type: ignore[arg-type]


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_request_bodies_on_uvloop(declared: bool) -> None:
    uvloop.run(basic.test_request_body_with_length_or_chunked(declared))


def test_stale_connection_retry_on_uvloop() -> None:
    uvloop.run(faults.test_an_idempotent_request_on_a_stale_connection_is_sent_once_more("GET"))


def test_mutual_tls_on_uvloop(certs: Path) -> None:  # noqa: F811
    uvloop.run(tls.test_mutual_tls_with_a_pkcs12_client_certificate(certs))
    for version in tls.ssl.TLSVersion.TLSv1_2, tls.ssl.TLSVersion.TLSv1_3:
        uvloop.run(tls.test_no_client_certificate_is_refused_by_the_backend(certs, version))
    uvloop.run(tls.test_hostname_verification_is_on_unless_turned_off(certs))


def test_profile_swap_on_uvloop(certs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    uvloop.run(tls.test_a_profile_swapped_at_run_time_is_used_by_the_next_request(certs, tmp_path, caplog))
