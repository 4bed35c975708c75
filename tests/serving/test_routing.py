"""Traffic policies: deterministic sticky assignment, proportions, monotone canary changes, validation."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from typing import Any

import numpy as np
import pytest
from scipy.stats import chisquare

from bridgehead.errors import ValidationFailed
from bridgehead.serving.routing import BUCKETS, Route, TrafficPolicy, assign, assign_many, bucket_of

N = 100_000


def policy(*weights: float, shadows: tuple[int, ...] = (), sticky: bool = True) -> TrafficPolicy:
    """Routes v1, v2, ... with these weights, in that order; shadows by version number."""
    return TrafficPolicy.from_config(
        {
            "routes": [
                {"version_id": f"id-{i}", "version": i, "weight": w} for i, w in enumerate(weights, 1)
            ],
            "shadows": [{"version_id": f"id-{v}", "version": v} for v in shadows],
            "sticky": sticky,
        }
    )


def random_keys(n: int = N, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.getrandbits(64):016x}" for _ in range(n)]


def counts(indexes: list[int], n_routes: int) -> np.ndarray[Any, Any]:
    c = Counter(indexes)
    return np.array([c[i] for i in range(n_routes)])


# --- determinism -------------------------------------------------------------------------------------------


def test_bucket_is_blake2b_of_salt_and_key() -> None:
    import hashlib

    digest = hashlib.blake2b(b"s\0user-1").digest()
    assert bucket_of("user-1", salt="s") == int.from_bytes(digest[:8], "big") % BUCKETS
    keys = random_keys(100)
    assert [bucket_of(k) for k in keys] != [bucket_of(k, salt="s") for k in keys]
    assert all(0 <= bucket_of(k) < BUCKETS for k in keys)


def test_same_key_same_route_across_calls() -> None:
    p = policy(50, 50)
    keys = random_keys(2000)
    first = [assign(p, k) for k in keys]
    assert [assign(p, k) for k in keys] == first
    assert assign_many(p, keys) == [p.routes.index(r) for r in first]
    # Both routes are used: the determinism is not a constant.
    assert {r.version for r in first} == {1, 2}


def test_same_key_same_route_in_another_process() -> None:
    """Nothing depends on the process: not hash() randomization, not state. Run with a different seed."""
    p = policy(60, 30, 10)
    keys = random_keys(500)
    script = (
        "import json, sys\n"
        "from bridgehead.serving.routing import TrafficPolicy, assign_many\n"
        "cfg, keys = json.load(sys.stdin)\n"
        "print(json.dumps(assign_many(TrafficPolicy.from_config(cfg), keys, salt='endpoint-9')))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps([p.to_config(), keys]),
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=120,
    )
    assert json.loads(out.stdout) == assign_many(p, keys, salt="endpoint-9")


def test_salt_reshuffles() -> None:
    p = policy(50, 50)
    keys = random_keys(10_000)
    a, b = np.array(assign_many(p, keys)), np.array(assign_many(p, keys, salt="again"))
    # Independent halves: about half the keys change route.
    assert 0.45 < np.mean(a != b) < 0.55


def test_stickiness_survives_adding_a_shadow() -> None:
    keys = random_keys(5000)
    before = assign_many(policy(90, 10), keys)
    after = TrafficPolicy.from_config(
        {**policy(90, 10).to_config(), "shadows": [{"version_id": "id-3", "version": 3}]}
    )
    assert after.shadows == (Route("id-3", 3, 100.0),)
    assert assign_many(after, keys) == before


def test_listing_order_does_not_matter() -> None:
    """Segments are laid out by version, so reordering the configuration moves no key."""
    keys = random_keys(5000)
    p = policy(90, 10)
    flipped = TrafficPolicy.from_config({"routes": list(reversed(p.to_config()["routes"]))})
    assert [assign(p, k).version for k in keys] == [assign(flipped, k).version for k in keys]


def test_not_sticky_ignores_the_key() -> None:
    p = policy(50, 50, sticky=False)
    rng = random.Random(3)
    got = {assign(p, "same-key", rng=rng).version for _ in range(200)}
    assert got == {1, 2}


def test_empty_batch() -> None:
    assert assign_many(policy(100), []) == []


# --- proportions -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weights", [(90, 10), (50, 50), (60, 30, 10)])
def test_keyed_proportions(weights: tuple[float, ...]) -> None:
    got = counts(assign_many(policy(*weights), random_keys()), len(weights))
    expected = np.array(weights) / 100 * N
    assert chisquare(got, expected).pvalue > 0.001, got


@pytest.mark.parametrize("weights", [(90, 10), (50, 50), (60, 30, 10)])
def test_keyless_proportions(weights: tuple[float, ...]) -> None:
    p = policy(*weights)
    rng = random.Random(11)
    got = counts(assign_many(p, [None] * N, rng=rng), len(weights))
    expected = np.array(weights) / 100 * N
    assert chisquare(got, expected).pvalue > 0.001, got
    # assign() draws the same way, one at a time.
    one = Counter(p.routes.index(assign(p, None, rng=rng)) for _ in range(20_000))
    assert chisquare([one[i] for i in range(len(weights))], np.array(weights) / 100 * 20_000).pvalue > 0.001


def test_keyless_uses_random_module_by_default() -> None:
    p = policy(50, 50)
    state = random.getstate()
    try:
        random.seed(5)
        a = assign_many(p, [None] * 100)
        random.seed(5)
        b = assign_many(p, [None] * 100)
    finally:
        random.setstate(state)
    assert a == b and set(a) == {0, 1}


def test_zero_weight_route_gets_nothing_and_full_weight_everything() -> None:
    p = policy(100, 0)
    assert set(assign_many(p, random_keys(20_000))) == {0}
    assert set(assign_many(p, [None] * 5000)) == {0}


def test_fractional_weights_cover_every_bucket() -> None:
    p = TrafficPolicy(
        routes=(Route("a", 1, 100 / 3), Route("b", 2, 100 / 3), Route("c", 3, 100 - 2 * (100 / 3)))
    )
    assert {p.route_for_bucket(b) for b in (0, BUCKETS - 1)} == {0, 2}
    sizes = Counter(p.route_for_bucket(b) for b in range(BUCKETS))
    assert sum(sizes.values()) == BUCKETS
    assert sorted(sizes.values()) == [3333, 3333, 3334]


# --- monotone canary changes -------------------------------------------------------------------------------


@pytest.mark.parametrize("canary_first", [False, True])
def test_growing_the_canary_only_moves_keys_to_it(canary_first: bool) -> None:
    """90/10 -> 80/20: every key on the canary stays; the keys that move come from the stable version."""

    def canary(stable_w: float, canary_w: float) -> TrafficPolicy:
        routes = [
            {"version_id": "stable", "version": 4, "weight": stable_w},
            {"version_id": "canary", "version": 5, "weight": canary_w},
        ]
        return TrafficPolicy.from_config({"routes": routes[::-1] if canary_first else routes})

    keys = random_keys()
    p90, p80 = canary(90, 10), canary(80, 20)
    before = [assign(p90, k).version_id for k in keys]
    after = [assign(p80, k).version_id for k in keys]
    moved = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert all(a == "canary" for b, a in zip(before, after, strict=True) if b == "canary")
    assert set(moved) == {("stable", "canary")}
    assert abs(len(moved) / N - 0.10) < 0.01
    # And back again (rollback 80/20 -> 90/10) returns every key to where it was.
    assert [assign(p90, k).version_id for k in keys] == before


def test_canary_of_an_older_version_is_monotone_too() -> None:
    """The two-segment layout is monotone whichever version is the canary; only the layout must be stable."""
    keys = random_keys(20_000)
    a = TrafficPolicy.from_config(
        {
            "routes": [
                {"version_id": "new", "version": 9, "weight": 90},
                {"version_id": "old", "version": 8, "weight": 10},
            ]
        }
    )
    b = TrafficPolicy.from_config(
        {
            "routes": [
                {"version_id": "new", "version": 9, "weight": 75},
                {"version_id": "old", "version": 8, "weight": 25},
            ]
        }
    )
    before = [assign(a, k).version_id for k in keys]
    after = [assign(b, k).version_id for k in keys]
    assert all(y == "old" for x, y in zip(before, after, strict=True) if x == "old")


# --- configuration -----------------------------------------------------------------------------------------


def test_config_round_trip() -> None:
    cfg = {
        "routes": [
            {"version_id": "a", "version": 1, "weight": 90.0},
            {"version_id": "b", "version": 2, "weight": 10.0},
        ],
        "shadows": [{"version_id": "c", "version": 3, "weight": 100.0}],
        "sticky": False,
    }
    p = TrafficPolicy.from_config(cfg)
    assert p.to_config() == cfg
    assert TrafficPolicy.from_config(p.to_config()) == p
    assert (
        TrafficPolicy.from_config({"routes": [{"version_id": "a", "version": 1, "weight": 100}]}).sticky
        is True
    )


def test_weights_within_tolerance_are_accepted() -> None:
    p = policy(33.3333333, 33.3333333, 33.3333334)
    assert len(p.routes) == 3
    policy(99.9999995, 0.0000001)  # sums to 99.9999996: within 1e-6


def _route(vid: str = "a", version: Any = 1, weight: Any = 100) -> dict[str, Any]:
    return {"version_id": vid, "version": version, "weight": weight}


@pytest.mark.parametrize(
    "cfg, field, words",
    [
        ({"routes": []}, "routes", "at least one route"),
        ({}, "routes", "at least one route"),
        ({"routes": "a"}, "routes", "list"),
        ({"routes": [_route(weight=90)]}, "routes", "sum to 100"),
        ({"routes": [_route(weight=100.01)]}, "routes[0].weight", "between 0 and 100"),
        ({"routes": [_route("a", 1, 110), _route("b", 2, -10)]}, "routes[0].weight", "between 0 and 100"),
        ({"routes": [_route("a", 1, 50), _route("b", 2, 50.001)]}, "routes", "sum to 100"),
        ({"routes": [_route("a", 1, 50), _route("a", 1, 50)]}, "routes[1]", "listed twice"),
        ({"routes": [_route("a", 1, 50), _route("b", 1, 50)]}, "routes[1].version", "two version ids"),
        (
            {"routes": [_route("a", 1, 100)], "shadows": [{"version_id": "a", "version": 1}]},
            "shadows[0]",
            "both a route and a shadow",
        ),
        (
            {
                "routes": [_route()],
                "shadows": [{"version_id": "b", "version": 2}, {"version_id": "b", "version": 2}],
            },
            "shadows[1]",
            "listed twice",
        ),
        (
            {"routes": [_route()], "shadows": [_route("b", 2, 10)]},
            "shadows[0].weight",
            "copy of every request",
        ),
        ({"routes": [_route(weight=True)]}, "routes[0].weight", "number"),
        ({"routes": [_route(weight="100")]}, "routes[0].weight", "number"),
        ({"routes": [_route(weight=float("nan"))]}, "routes[0].weight", "between 0 and 100"),
        ({"routes": [_route(version="1")]}, "routes[0].version", "integer"),
        ({"routes": [_route(vid="")]}, "routes[0].version_id", "non-empty string"),
        ({"routes": [{**_route(), "extra": 1}]}, "routes[0].extra", "unknown field"),
        ({"routes": [_route()], "mode": "canary"}, "mode", "Unknown traffic policy field"),
        ({"routes": [_route()], "sticky": "yes"}, "sticky", "true or false"),
        ({"routes": [1]}, "routes[0]", "object"),
    ],
)
def test_invalid_configs_refused(cfg: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        TrafficPolicy.from_config(cfg)
    assert info.value.details["field"] == field
    assert words in info.value.message


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ValidationFailed, match="sum to 100"):
        TrafficPolicy(routes=(Route("a", 1, 60),))
    with pytest.raises(ValidationFailed, match="both a route and a shadow"):
        TrafficPolicy(routes=(Route("a", 1, 100),), shadows=(Route("a", 1, 100),))
