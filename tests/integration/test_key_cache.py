"""An API process remembers a checked API key for a few seconds (``auth.KeyAuthenticator``): a
revoked key is refused once that time has passed, by the cache (a clock under the test's
control) and by a real API process."""

from __future__ import annotations

import time

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.fixtures.app import LiveServer
from tests.integration.contract import assert_error
from upload_service import auth
from upload_service.db.engine import session_scope
from upload_service.errors import ErrorCode, ServiceError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_revoked_key_is_refused_once_its_cache_entry_expires(sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as session:
        new = auth.create_key(session, "acme", [auth.Scope.UPLOAD])
    clock = Clock()
    keys = auth.KeyAuthenticator(sessions, ttl_seconds=5, clock=clock)
    header = f"Bearer {new.key}"
    assert keys.cached(header) is None
    assert keys.authenticate(header).tenant == "acme"
    assert keys.cached(header) is not None
    with session_scope(sessions) as session:
        auth.revoke_key(session, new.record.id)
    clock.now += 4.9
    assert keys.cached(header) is not None  # within the TTL the process still trusts it
    clock.now += 0.2
    assert keys.cached(header) is None
    with pytest.raises(ServiceError) as refused:
        keys.authenticate(header)
    assert refused.value.code is ErrorCode.UNAUTHENTICATED
    assert keys.cached(header) is None  # refusals are not remembered


def test_a_wrong_key_is_never_answered_from_the_cache(sessions: sessionmaker[Session]) -> None:
    with session_scope(sessions) as session:
        new = auth.create_key(session, "acme", [auth.Scope.UPLOAD])
    keys = auth.KeyAuthenticator(sessions, clock=Clock())
    keys.authenticate(f"Bearer {new.key}")
    assert keys.cached(f"Bearer {new.key[:-1]}x") is None
    assert keys.cached(None) is None and keys.cached("Basic abc") is None


def test_the_api_refuses_a_revoked_key_within_the_cache_ttl(server: LiveServer) -> None:
    client = server.client()
    assert client.request("GET", "/v1/uploads").status_code == 200
    with session_scope(server.sessions) as session:
        key_id = client.key.split("_")[1]
        auth.revoke_key(session, key_id)
    revoked_at = time.monotonic()
    while True:
        response = client.request("GET", "/v1/uploads")
        if response.status_code != 200:
            break
        assert time.monotonic() - revoked_at < auth.KEY_CACHE_TTL_SECONDS + 2, "the revoked key still works"
        time.sleep(0.2)
    assert_error(response, 401, "UNAUTHENTICATED")
    assert httpx.get(server.url + "/v1/uploads", headers=client.headers, timeout=10).status_code == 401
