"""Traffic policies for an endpoint: which model version answers a request, and which ones shadow it.

A policy splits traffic between ``routes`` by weight (a canary at 90/10, an A/B test at 50/50, ...) and
mirrors every request to its ``shadows``, whose answers are logged but never returned.

Assignment with a request key is deterministic across processes and restarts: the key is hashed into one
of 10 000 buckets (basis points), ``bucket = uint64(blake2b(salt + "\\0" + key)[:8]) mod 10 000`` (big
endian), and the buckets are cut into consecutive segments, one per route, as wide as its weight.

Segments are laid out in ascending version order, never in the order the routes are listed nor by weight.
With a stable layout, changing the weights only moves the boundaries between neighbouring segments, so
for a canary (two routes) a change such as 90/10 -> 80/20 moves keys only from the route that shrinks to
the one that grows: every key already on the canary stays there, whichever order the routes are given in,
and reordering the configuration moves nobody. With three or more routes a change can also move keys
between the neighbours of a boundary that shifts (keys of a middle segment slide); that is the price of
contiguous segments.

Without a key (or when the policy is not sticky) a route is drawn with :func:`random.random`: this is
load spreading, not security.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bridgehead.errors import ValidationFailed

__all__ = ["BUCKETS", "Route", "TrafficPolicy", "assign", "assign_many", "bucket_of"]

BUCKETS = 10_000
"""Buckets a key hashes into: one basis point of traffic each."""

_TOLERANCE = 1e-6
_POLICY_KEYS = {"routes", "shadows", "sticky"}
_ROUTE_KEYS = {"version_id", "version", "weight"}


@dataclass(frozen=True)
class Route:
    """One model version of an endpoint and its share of traffic, in percent."""

    version_id: str
    version: int
    weight: float

    def to_config(self) -> dict[str, Any]:
        return {"version_id": self.version_id, "version": self.version, "weight": self.weight}


@dataclass(frozen=True)
class TrafficPolicy:
    """Versions that answer (``routes``, weights summing to 100) and versions that shadow (``shadows``)."""

    routes: tuple[Route, ...]
    shadows: tuple[Route, ...] = ()
    sticky: bool = True
    # Upper bucket bound of each route's segment, in layout order, and the route index of each segment.
    _bounds: np.ndarray[Any, np.dtype[np.int64]] = field(init=False, repr=False, compare=False)
    _order: np.ndarray[Any, np.dtype[np.int64]] = field(init=False, repr=False, compare=False)
    _scalar: tuple[tuple[int, ...], tuple[int, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_policy(self.routes, self.shadows)
        order = sorted(
            range(len(self.routes)), key=lambda i: (self.routes[i].version, self.routes[i].version_id)
        )
        widths = _basis_points([self.routes[i].weight for i in order])
        bounds = np.cumsum(np.asarray(widths, dtype=np.int64))
        object.__setattr__(self, "_bounds", bounds)
        object.__setattr__(self, "_order", np.asarray(order, dtype=np.int64))
        object.__setattr__(self, "_scalar", (tuple(int(b) for b in bounds), tuple(order)))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> TrafficPolicy:
        """Parse and validate a stored policy; ValidationFailed says which field is wrong and why."""
        if not isinstance(cfg, Mapping):
            raise ValidationFailed("A traffic policy must be a JSON object.", details={"field": ""})
        unknown = sorted(set(cfg) - _POLICY_KEYS)
        if unknown:
            raise ValidationFailed(
                f"Unknown traffic policy field {unknown[0]!r}; allowed: routes, shadows, sticky.",
                details={"field": unknown[0], "unknown": unknown},
            )
        if "routes" not in cfg:
            raise ValidationFailed("A traffic policy needs at least one route.", details={"field": "routes"})
        routes = _parse_routes(cfg["routes"], "routes", shadow=False)
        shadows = _parse_routes(cfg.get("shadows", []), "shadows", shadow=True)
        sticky = cfg.get("sticky", True)
        if not isinstance(sticky, bool):
            raise ValidationFailed("'sticky' must be true or false.", details={"field": "sticky"})
        return cls(routes=routes, shadows=shadows, sticky=sticky)

    def to_config(self) -> dict[str, Any]:
        return {
            "routes": [r.to_config() for r in self.routes],
            "shadows": [s.to_config() for s in self.shadows],
            "sticky": self.sticky,
        }

    def route_for_bucket(self, bucket: int) -> int:
        """Index into ``routes`` of the route whose segment holds ``bucket`` (0 <= bucket < 10 000)."""
        bounds, order = self._scalar
        return order[bisect.bisect_right(bounds, bucket)]


def bucket_of(key: str, *, salt: str = "") -> int:
    """The bucket (0..9 999) a request key falls in; the same on every machine, process and restart."""
    digest = hashlib.blake2b((salt + "\0" + key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def assign(
    policy: TrafficPolicy, key: str | None, *, salt: str = "", rng: random.Random | None = None
) -> Route:
    """The route that answers a request with this key (a random one without a key or when not sticky)."""
    return policy.routes[policy.route_for_bucket(_bucket(policy, key, salt, rng))]


def assign_many(
    policy: TrafficPolicy,
    keys: Sequence[str | None],
    *,
    salt: str = "",
    rng: random.Random | None = None,
) -> list[int]:
    """For each key, the index into ``policy.routes`` of the route that answers it (as :func:`assign`)."""
    if not keys:
        return []
    if len(policy.routes) == 1:
        return [0] * len(keys)  # one route answers everything: nothing to draw or hash
    buckets = np.fromiter((_bucket(policy, k, salt, rng) for k in keys), dtype=np.int64, count=len(keys))
    segments = np.searchsorted(policy._bounds, buckets, side="right")
    return [int(i) for i in policy._order[segments]]


def _bucket(policy: TrafficPolicy, key: str | None, salt: str, rng: random.Random | None) -> int:
    if key is not None and policy.sticky:
        return bucket_of(key, salt=salt)
    draw = rng.random() if rng is not None else random.random()  # noqa: S311 - load spreading, not security
    return min(int(draw * BUCKETS), BUCKETS - 1)


def _basis_points(weights: Sequence[float]) -> list[int]:
    """Weights (percent, summing to 100) as whole basis points summing to exactly 10 000.

    Largest remainder: each weight gets its floor, and the leftover points go to the largest fractions
    (ties to the earlier segment), so 33.3333/33.3333/33.3334 becomes 3333/3333/3334."""
    exact = [w * BUCKETS / 100 for w in weights]
    points = [math.floor(x) for x in exact]
    leftover = BUCKETS - sum(points)
    by_fraction = sorted(range(len(exact)), key=lambda i: (-(exact[i] - points[i]), i))
    # The floors never exceed 10 000, and the leftover is at most the number of weights with a fraction
    # (the sum is 100 within 1e-6), so a route of weight 0 never gets a bucket.
    for i in by_fraction[:leftover]:
        points[i] += 1
    return points


def _parse_routes(raw: Any, name: str, *, shadow: bool) -> tuple[Route, ...]:
    if not isinstance(raw, list):
        raise ValidationFailed(f"'{name}' must be a list of routes.", details={"field": name})
    routes = []
    for i, item in enumerate(raw):
        where = f"{name}[{i}]"
        if not isinstance(item, Mapping):
            raise ValidationFailed(f"{where} must be an object.", details={"field": where})
        unknown = sorted(set(item) - _ROUTE_KEYS)
        if unknown:
            raise ValidationFailed(
                f"{where} has unknown field {unknown[0]!r}; allowed: version_id, version, weight.",
                details={"field": f"{where}.{unknown[0]}"},
            )
        version_id = item.get("version_id")
        if not isinstance(version_id, str) or not version_id:
            raise ValidationFailed(
                f"{where}.version_id must be a non-empty string.", details={"field": f"{where}.version_id"}
            )
        version = item.get("version")
        if isinstance(version, bool) or not isinstance(version, int):
            raise ValidationFailed(
                f"{where}.version must be an integer.", details={"field": f"{where}.version"}
            )
        weight = item.get("weight", 100.0 if shadow else None)
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ValidationFailed(f"{where}.weight must be a number.", details={"field": f"{where}.weight"})
        routes.append(Route(version_id=version_id, version=version, weight=float(weight)))
    return tuple(routes)


def _check_policy(routes: tuple[Route, ...], shadows: tuple[Route, ...]) -> None:
    if not routes:
        raise ValidationFailed("A traffic policy needs at least one route.", details={"field": "routes"})
    for name, group in (("routes", routes), ("shadows", shadows)):
        for i, r in enumerate(group):
            where = f"{name}[{i}]"
            if not math.isfinite(r.weight) or not 0 <= r.weight <= 100:
                raise ValidationFailed(
                    f"{where}.weight must be between 0 and 100, got {r.weight}.",
                    details={"field": f"{where}.weight", "weight": r.weight},
                )
            if name == "shadows" and r.weight != 100:
                raise ValidationFailed(
                    f"{where}.weight must be 100 (or left out): a shadow receives a copy of every request.",
                    details={"field": f"{where}.weight", "weight": r.weight},
                )
    total = math.fsum(r.weight for r in routes)
    if abs(total - 100) > _TOLERANCE:
        raise ValidationFailed(
            f"Route weights must sum to 100, got {total:g}.",
            details={"field": "routes", "total": total, "weights": [r.weight for r in routes]},
        )
    seen: dict[str, str] = {}
    versions: dict[int, str] = {}
    for name, group in (("routes", routes), ("shadows", shadows)):
        for i, r in enumerate(group):
            where = f"{name}[{i}]"
            if r.version_id in seen:
                first = seen[r.version_id]
                both = {first.split("[")[0], name} == {"routes", "shadows"}
                problem = "both a route and a shadow" if both else "listed twice"
                raise ValidationFailed(
                    f"Version {r.version_id!r} is {problem} ({first} and {where}).",
                    details={"field": where, "version_id": r.version_id, "problem": problem},
                )
            if r.version in versions and versions[r.version] != r.version_id:
                raise ValidationFailed(
                    f"Version number {r.version} is given to two version ids ({versions[r.version]!r} and "
                    f"{r.version_id!r}).",
                    details={"field": f"{where}.version", "version": r.version},
                )
            seen[r.version_id] = where
            versions[r.version] = r.version_id
