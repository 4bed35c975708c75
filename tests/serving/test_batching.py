"""Micro-batching: requests scored at the same moment share one model call, and get exactly the answers they
would get alone. Real scikit-learn models; through the batcher directly and through the app's inference lane."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.ensemble import GradientBoostingClassifier

from bridgehead.errors import BadRequest
from bridgehead.serving.batching import MicroBatcher
from bridgehead.serving.runtime import LoadedModel, ModelRuntime, Prediction
from tests.serving.conftest import FEATURES, Registered, credit_data, deploy


@pytest.fixture(scope="module")
def loaded() -> LoadedModel:
    frame, y = credit_data()
    model = GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0).fit(frame.to_numpy(), y)
    return LoadedModel("v1", "credit-risk", 1, "sklearn", model, None, classes=[0, 1], engine="sklearn")


def frames(sizes: list[int], seed: int = 3) -> list[pd.DataFrame]:
    frame, _ = credit_data(sum(sizes), seed=seed)
    out, start = [], 0
    for n in sizes:
        out.append(frame.iloc[start : start + n].reset_index(drop=True))
        start += n
    return out


async def gather(batcher: MicroBatcher, loaded: LoadedModel, parts: list[pd.DataFrame]) -> list[Any]:
    return await asyncio.gather(*(batcher.predict(loaded, p) for p in parts), return_exceptions=True)


def test_requests_handed_over_together_share_one_call_and_get_their_own_answers(loaded: LoadedModel) -> None:
    parts = frames([1, 3, 1, 7, 2, 1, 1, 4])
    batcher = MicroBatcher(ModelRuntime.predict, max_rows=256)
    results = asyncio.run(gather(batcher, loaded, parts))
    assert batcher.calls == 1 and batcher.requests == 8
    for part, result in zip(parts, results, strict=True):
        alone = ModelRuntime.predict(loaded, part)
        assert isinstance(result, Prediction)
        assert result.predictions == alone.predictions
        np.testing.assert_allclose(result.probabilities, alone.probabilities, rtol=0, atol=1e-12)  # type: ignore[arg-type]
        assert result.classes == [0, 1]


def test_a_batch_holds_at_most_max_rows_and_never_splits_a_request(loaded: LoadedModel) -> None:
    parts = frames([10] * 10)
    batcher = MicroBatcher(ModelRuntime.predict, max_rows=25)
    results = asyncio.run(gather(batcher, loaded, parts))
    assert batcher.calls == 5  # 10+10 per call: a third request of 10 would pass 25
    assert [len(r.predictions) for r in results] == [10] * 10
    big = frames([40])
    results = asyncio.run(gather(batcher, loaded, big))
    assert len(results[0].predictions) == 40  # larger than max_rows: scored whole


def test_requests_arriving_one_after_another_are_not_held_back(loaded: LoadedModel) -> None:
    batcher = MicroBatcher(ModelRuntime.predict, max_rows=256)

    async def one_by_one() -> None:
        for part in frames([1, 1, 1]):
            await batcher.predict(loaded, part)

    asyncio.run(one_by_one())
    assert batcher.calls == 3 and batcher.requests == 3


def test_frames_of_different_types_are_not_mixed(loaded: LoadedModel) -> None:
    a, b = frames([2, 2])
    batcher = MicroBatcher(ModelRuntime.predict, max_rows=256)
    results = asyncio.run(gather(batcher, loaded, [a, b.astype("float32"), a]))
    assert batcher.calls == 2  # the two float64 frames together, the float32 one alone
    assert results[0].predictions == results[2].predictions


def test_only_the_request_that_breaks_the_model_fails(loaded: LoadedModel) -> None:
    good = frames([3, 2])
    bad = frames([2], seed=9)[0]
    bad.loc[1, "income"] = np.nan  # gradient boosting refuses NaN
    batcher = MicroBatcher(ModelRuntime.predict, max_rows=256)
    results = asyncio.run(gather(batcher, loaded, [good[0], bad, good[1]]))
    assert isinstance(results[1], BadRequest) and "NaN" in results[1].message
    assert results[0].predictions == ModelRuntime.predict(loaded, good[0]).predictions
    assert results[2].predictions == ModelRuntime.predict(loaded, good[1]).predictions


def test_concurrent_requests_through_the_app_are_batched_and_answered_exactly(
    client: TestClient, registered: Registered
) -> None:
    eng = registered.engineer
    deploy(client, eng, "credit", "2")
    app = client.app
    batcher: MicroBatcher = app.state.micro_batcher  # type: ignore[attr-defined]
    rows = [{c: float(registered.frame.iloc[i][c]) for c in FEATURES} for i in range(24)]
    expected = registered.v2.predict(registered.frame.iloc[:24]).tolist()

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as http:
            # The first request fills the caches (caller, endpoint, model); then 24 at once.
            warm = await http.post("/serve/credit/predict", json={"records": rows[:1]}, headers=eng.headers)
            assert warm.status_code == 200, warm.text
            before = (batcher.calls, batcher.requests)
            answers = await asyncio.gather(
                *(
                    http.post("/serve/credit/predict", json={"records": [r]}, headers=eng.headers)
                    for r in rows
                )
            )
            burst_calls, burst_requests = batcher.calls - before[0], batcher.requests - before[1]
            assert burst_requests == 24, "every request of the burst went through the batcher"
            assert burst_calls < 24, "requests in flight together shared model calls"
            return list(answers)

    answers = asyncio.run(burst())
    assert [a.status_code for a in answers] == [200] * 24
    assert [a.json()["predictions"][0] for a in answers] == expected
    assert len({a.json()["request_id"] for a in answers}) == 24
    # Every request is logged once, with its own inputs.
    app.state.predlog.flush()  # type: ignore[attr-defined]
    from bridgehead.serving.predlog import read_log

    root = app.state.settings.resolved_prediction_log_dir  # type: ignore[attr-defined]
    logged = {
        r["request_id"]: r["inputs"]
        for b in read_log(root, "credit", columns=["request_id", "inputs"])
        for r in b.to_pylist()
    }
    for answer, row in zip(answers, rows, strict=True):
        assert logged[answer.json()["request_id"]] == row
