"""Refresh ahead of the inference caches: a busy caller's token and endpoint entries are read again, by one
request and after its answer, once three quarters of their lifetime have passed, so they are renewed before
they expire and the requests in flight at that moment do not all go to the database together. A change made
elsewhere (straight in the database, as another server or the CLI would) still takes effect within the
lifetime, and sooner for a busy caller."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bridgehead.auth import deps
from bridgehead.auth.models import ApiToken
from bridgehead.auth.service import Principal, TokenCache
from bridgehead.serving.models import Endpoint
from bridgehead.serving.service import EndpointCache
from bridgehead.settings import Settings
from bridgehead.store import Database
from bridgehead.store.base import utcnow
from tests.conftest import TOKEN_CALLER
from tests.serving.conftest import Registered, deploy

TTL = 2.0  # both caches' lifetime here; an entry is due from 1.5 s
DUE = 0.75 * TTL


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"token_cache_seconds": TTL, "endpoint_cache_seconds": TTL})


@pytest.fixture
def served(client: TestClient, registered: Registered) -> Registered:
    deploy(client, registered.engineer, "credit", "2", environment="production")
    return registered


@pytest.fixture
def token_reads(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When inference read a caller's token from the database (a spy: the real function still runs)."""
    reads: list[float] = []
    real = deps.principal_for

    def spy(*args: Any, **kwargs: Any) -> Principal:
        reads.append(time.monotonic())
        return real(*args, **kwargs)

    monkeypatch.setattr("bridgehead.serving.invoke.principal_for", spy)
    return reads


def _predict(client: TestClient, served: Registered) -> int:
    records = {"records": served.frame.head(2).to_dict(orient="records")}
    return client.post("/serve/credit/predict", json=records, headers=served.engineer.headers).status_code


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def test_a_busy_callers_entries_are_renewed_before_they_expire(
    client: TestClient, served: Registered, token_reads: list[float]
) -> None:
    state: Any = client.app.state  # type: ignore[attr-defined]
    auth = served.engineer.headers["Authorization"]
    loaded = time.monotonic()
    assert _predict(client, served) == 200  # cold: token and endpoint read and cached
    assert len(token_reads) == 1
    assert _predict(client, served) == 200 and len(token_reads) == 1  # cached, not due: no read
    _sleep_until(loaded + DUE + 0.05)
    for _ in range(3):
        assert _predict(client, served) == 200
    # Due: the first of these requests read the token again (after its answer), the other two did not.
    assert len(token_reads) == 2 and token_reads[1] >= loaded + DUE
    _sleep_until(loaded + TTL + 0.1)
    # Past the lifetime of the first entries, both are still cached (renewed): a request now needs no read.
    assert state.token_cache.get(auth) is not None
    assert state.endpoint_cache.peek("credit") is not None
    assert _predict(client, served) == 200 and len(token_reads) == 2


def _revoke_token(db: Database, served: Registered) -> None:
    with db.session(write=True) as session:
        for token in session.query(ApiToken).filter(ApiToken.person_id == served.engineer.id):
            token.revoked_at = utcnow()


def _retire_endpoint(db: Database, served: Registered) -> None:
    with db.session(write=True) as session:
        endpoint = session.query(Endpoint).filter(Endpoint.name == "credit").one()
        endpoint.status = "retired"


@pytest.mark.parametrize(
    ("change", "refused"),
    [(_revoke_token, 401), (_retire_endpoint, 409)],
    ids=["token-revoked", "endpoint-retired"],
)
def test_a_change_made_elsewhere_is_found_by_the_refresh_before_the_entry_expires(
    client: TestClient,
    served: Registered,
    db: Database,
    change: Callable[[Database, Registered], None],
    refused: int,
) -> None:
    loaded = time.monotonic()
    assert _predict(client, served) == 200
    change(db, served)  # as another process would: this one's caches do not know
    assert _predict(client, served) == 200  # within the lifetime the cached entries answer
    _sleep_until(loaded + DUE + 0.05)
    assert _predict(client, served) == 200  # due: answered from the cache, then the refresh reads the change
    assert _predict(client, served) == refused  # refused at once, before the first entry would have expired
    assert time.monotonic() < loaded + TTL


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock()
    monkeypatch.setattr(time, "monotonic", fake)
    return fake


def test_a_refresh_is_claimed_once_between_the_due_point_and_the_expiry(
    served: Registered, db: Database, clock: _Clock
) -> None:
    tokens = TokenCache(ttl=4.0)
    principal = TOKEN_CALLER
    tokens.put("Bearer secret", principal, tokens.stamp())
    endpoints = EndpointCache(ttl=4.0)
    with db.session() as session:
        assert endpoints.load(session, "credit") is not None
    claims: list[Callable[[], bool]] = [
        lambda: tokens.claim_refresh("Bearer secret"),
        lambda: endpoints.claim_refresh("credit"),
    ]
    assert [claim() for claim in claims] == [False, False]  # fresh, not due
    clock.now += 2.9
    assert [claim() for claim in claims] == [False, False]
    clock.now += 0.2  # due
    assert [claim() for claim in claims] == [True, True]
    assert [claim() for claim in claims] == [False, False]  # claimed: nobody else
    assert tokens.get("Bearer secret") == principal and endpoints.peek("credit") is not None  # still served
    tokens.put("Bearer secret", principal, tokens.stamp())  # the refresh puts it back: a new lifetime
    clock.now += 2.9
    assert tokens.claim_refresh("Bearer secret") is False
    clock.now += 1.2  # the endpoint entry was never reloaded: expired, nothing to claim, nothing served
    assert endpoints.claim_refresh("credit") is False and endpoints.peek("credit") is None
    assert tokens.claim_refresh("Bearer unknown") is False
    tokens.forget("Bearer secret")
    assert tokens.get("Bearer secret") is None
    off = TokenCache(ttl=0)
    off.put("Bearer secret", principal, off.stamp())
    clock.now += 10
    assert off.claim_refresh("Bearer secret") is False


def test_a_read_begun_before_a_revocation_or_a_deploy_cannot_put_the_old_value_back(
    served: Registered, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = TokenCache(ttl=60)
    stamp = tokens.stamp()  # a refresh starts reading the token...
    tokens.clear()  # ...a revocation through this process commits and clears the cache...
    tokens.put("Bearer secret", TOKEN_CALLER, stamp)  # ...and the refresh's answer arrives: dropped
    assert tokens.get("Bearer secret") is None
    stamp = tokens.stamp()
    tokens.forget("Bearer other")  # a refresh that found another token revoked
    tokens.put("Bearer secret", TOKEN_CALLER, stamp)
    assert tokens.get("Bearer secret") is None
    tokens.put("Bearer secret", TOKEN_CALLER, tokens.stamp())  # a read begun after them is kept
    assert tokens.get("Bearer secret") == TOKEN_CALLER

    endpoints = EndpointCache(ttl=60)
    with db.session() as session:
        read = session.scalar

        def read_then_deploy(*args: Any, **kwargs: Any) -> Any:
            found = read(*args, **kwargs)
            endpoints.invalidate()  # a deploy through this process lands while the endpoint is being read
            return found

        monkeypatch.setattr(session, "scalar", read_then_deploy)
        assert endpoints.load(session, "credit") is not None  # the request that read it still uses it
        assert endpoints.peek("credit") is None  # but the next one reads the endpoint again
        monkeypatch.setattr(session, "scalar", read)
        assert endpoints.load(session, "credit") is not None
        assert endpoints.peek("credit") is not None
