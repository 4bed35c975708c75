"""The token cache of the hot lanes (MLflow's logging calls here; inference shares it): a token authenticated
once is not read again for `token_cache_seconds`, a change made through this server applies at once, and one
made elsewhere (the CLI, another server) applies within the cache's lifetime."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bridgehead.app import create_app
from bridgehead.auth.models import ApiToken
from bridgehead.auth.roles import Role
from bridgehead.auth.service import TokenCache
from bridgehead.settings import Settings
from bridgehead.store import Database
from bridgehead.store.base import utcnow
from tests.conftest import TOKEN_CALLER, Member, Org
from tests.tracking.test_mlflow_api import Api, assert_mlflow_error


def _app(settings: Settings, seconds: float) -> FastAPI:
    return create_app(settings.model_copy(update={"token_cache_seconds": seconds}))


@pytest.fixture
def long_cache(settings: Settings) -> Iterator[TestClient]:
    with TestClient(_app(settings, 60), base_url="https://testserver", raise_server_exceptions=False) as c:
        yield c


def _revoke_elsewhere(db: Database, member: Member) -> None:
    """As another process (the CLI, another server) would: straight in the database."""
    with db.session(write=True) as session:
        for token in session.query(ApiToken).filter(ApiToken.person_id == member.id):
            token.revoked_at = utcnow()


def _metric(api: Api, run_id: str, value: float) -> int:
    return api.post("runs/log-metric", {"run_id": run_id, "key": "k", "value": value}).status_code


def _points(api: Api, run_id: str) -> list[float]:
    history = api.ok("GET", "metrics/get-history", run_id=run_id, metric_key="k")
    return [m["value"] for m in history["metrics"]]


def test_a_revocation_elsewhere_reaches_the_logging_lane_within_the_cache_lifetime(
    long_cache: TestClient, db: Database
) -> None:
    orgs = Org(db)
    member = orgs.member(Role.DATA_SCIENTIST)
    api = Api(long_cache, member)
    run_id = api.run(api.experiment("cached"))["info"]["run_id"]
    assert _metric(api, run_id, 1.0) == 200  # authenticated from the database, then cached
    _revoke_elsewhere(db, member)
    # Within the lifetime (60 s here) the lane still knows the caller; every other route reads the token.
    assert _metric(api, run_id, 2.0) == 200
    assert_mlflow_error(api.get("runs/get", run_id=run_id), 401, "UNAUTHENTICATED")
    long_cache.app.state.token_cache.clear()  # the lifetime ends
    assert_mlflow_error(
        api.post("runs/log-metric", {"run_id": run_id, "key": "k", "value": 3}), 401, "UNAUTHENTICATED"
    )
    admin = Api(long_cache, orgs.member(Role.CHIEF_AI_OFFICER))
    assert _points(admin, run_id) == [1.0, 2.0]


@pytest.mark.parametrize(("seconds", "wait"), [(0.3, 0.4), (0, 0.0)], ids=["expires-by-itself", "off"])
def test_a_revocation_elsewhere_applies_once_the_lifetime_is_over(
    settings: Settings, db: Database, seconds: float, wait: float
) -> None:
    app = _app(settings, seconds)
    with TestClient(app, base_url="https://testserver", raise_server_exceptions=False) as client:
        member = Org(db).member(Role.DATA_SCIENTIST)
        api = Api(client, member)
        run_id = api.run(api.experiment("lifetime"))["info"]["run_id"]
        assert _metric(api, run_id, 1.0) == 200
        _revoke_elsewhere(db, member)
        time.sleep(wait)
        assert _metric(api, run_id, 2.0) == 401


def test_a_revocation_through_this_server_applies_to_the_next_call(
    long_cache: TestClient, db: Database
) -> None:
    member = Org(db).member(Role.DATA_SCIENTIST)
    api = Api(long_cache, member)
    run_id = api.run(api.experiment("revoked"))["info"]["run_id"]
    assert _metric(api, run_id, 1.0) == 200
    tokens = long_cache.get("/api/v1/tokens", headers=member.headers).json()
    (token,) = tokens["items"]
    token_id = token["id"]
    assert long_cache.delete(f"/api/v1/tokens/{token_id}", headers=member.headers).status_code == 200
    assert _metric(api, run_id, 2.0) == 401


def test_a_role_change_through_this_server_applies_to_the_next_call(
    long_cache: TestClient, db: Database
) -> None:
    orgs = Org(db)
    admin = orgs.member(Role.CHIEF_AI_OFFICER)
    member = orgs.member(Role.DATA_SCIENTIST)
    api = Api(long_cache, member)
    run_id = api.run(api.experiment("demoted"))["info"]["run_id"]
    assert _metric(api, run_id, 1.0) == 200
    demoted = long_cache.patch(
        f"/api/v1/people/{member.id}", json={"role": Role.BUSINESS_USER.value}, headers=admin.headers
    )
    assert demoted.status_code == 200, demoted.text
    assert_mlflow_error(
        api.post("runs/log-metric", {"run_id": run_id, "key": "k", "value": 2}), 403, "PERMISSION_DENIED"
    )


def test_the_cache_keys_by_digest_and_keeps_only_tokens() -> None:
    cache = TokenCache(60)
    by_token = TOKEN_CALLER
    cache.put("Bearer bh_secret", by_token, cache.stamp())
    assert cache.get("bearer bh_secret") is by_token
    assert cache.get("Bearer bh_other") is None
    assert cache.get(None) is None
    assert cache.holds(hashlib.sha256(b"bh_secret").hexdigest()) and not cache.holds("bh_secret")
    by_session = dataclasses.replace(by_token, via="session")
    cache.put("Bearer bh_session", by_session, cache.stamp())
    assert cache.get("Bearer bh_session") is None
    cache.clear()
    assert cache.get("Bearer bh_secret") is None
    assert TokenCache(0).get("Bearer bh_secret") is None


def test_the_logging_lane_renews_a_busy_token_before_it_expires_and_so_finds_a_revocation_sooner(
    settings: Settings, db: Database
) -> None:
    """Past three quarters of its lifetime a cached token is due: the next call reads it again in the session
    it writes with (the others go on from the cache), so a busy caller's entry outlives its first lifetime,
    and a revocation made elsewhere is found at that call rather than at the expiry."""
    with TestClient(_app(settings, 2.0), base_url="https://testserver", raise_server_exceptions=False) as c:
        orgs = Org(db)
        member = orgs.member(Role.DATA_SCIENTIST)
        api = Api(c, member)
        cache: TokenCache = c.app.state.token_cache  # type: ignore[attr-defined]
        authorization = f"Bearer {member.token}"
        run_id = api.run(api.experiment("renewed"))["info"]["run_id"]
        first = time.monotonic()
        assert _metric(api, run_id, 1.0) == 200
        time.sleep(max(0.0, first + 1.55 - time.monotonic()))
        renewed = time.monotonic()
        assert _metric(api, run_id, 2.0) == 200  # due: read again and put back
        time.sleep(max(0.0, first + 2.1 - time.monotonic()))
        assert cache.get(authorization) is not None  # past the first lifetime, still cached
        _revoke_elsewhere(db, member)
        assert _metric(api, run_id, 3.0) == 200  # not due yet: the cache answers
        time.sleep(max(0.0, renewed + 1.55 - time.monotonic()))
        assert _metric(api, run_id, 4.0) == 401  # due: the read finds the revocation
        assert time.monotonic() < renewed + 2.0  # before the renewed entry would have expired
        assert cache.get(authorization) is None
        assert _metric(api, run_id, 5.0) == 401
        admin = Api(c, orgs.member(Role.CHIEF_AI_OFFICER))
        assert _points(admin, run_id) == [1.0, 2.0, 3.0]
