"""Micro-batching: concurrent requests for the same model version scored in one model call.

A model call has a fixed cost whatever its size (scikit-learn's input checks, a booster's setup, the Python
around ONNX Runtime): a one-row call to a 100-tree gradient boosting model costs about as much as a 50-row one.
So requests that are scored at the same moment are better scored together.

`MicroBatcher` does it on the event loop without making anyone wait: a request hands its validated frame over
and awaits the answer; the first hand-over schedules the model call for the loop's next turn (``call_soon``),
by which time every request whose turn came in the same round has handed its frame over too. Those frames are
concatenated (by model version and identical columns and types), scored in calls of at most ``max_rows`` rows
(a request is never split), and the answers are handed back by position. Under light load a request is alone
in its batch and pays one loop turn; under load, batches grow with the number of requests in flight.

If a batched call fails (one request's values make the model raise), each request of that batch is scored on
its own, so only the request that caused it gets the error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from bridgehead.serving.runtime import LoadedModel, Prediction, takes_frames

__all__ = ["MicroBatcher"]

_Waiting = tuple[pd.DataFrame, "asyncio.Future[Prediction]"]


class MicroBatcher:
    """Scores concurrent requests of one model version together; see the module docstring."""

    def __init__(self, predict: Callable[[LoadedModel, pd.DataFrame], Prediction], max_rows: int) -> None:
        self._predict = predict
        self.max_rows = max_rows
        self._waiting: dict[int, tuple[LoadedModel, list[_Waiting]]] = {}
        # Counters, for tests and for the curious: model calls made, and requests they answered.
        self.calls = 0
        self.requests = 0

    def predict(self, loaded: LoadedModel, frame: pd.DataFrame) -> asyncio.Future[Prediction]:
        """The prediction for ``frame``, once the batch it joins has been scored (await it)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Prediction] = loop.create_future()
        key = id(loaded)
        waiting = self._waiting.get(key)
        if waiting is None:
            waiting = self._waiting[key] = (loaded, [])
            loop.call_soon(self._run, key)
        waiting[1].append((frame, future))
        return future

    def _run(self, key: int) -> None:
        loaded, waiting = self._waiting.pop(key)
        groups: dict[tuple[Any, ...], list[_Waiting]] = {}
        # Frames checked against a signature have its columns and types; without one, types are compared too.
        typed = loaded.signature is not None
        for frame, future in waiting:
            shape = tuple(frame.columns.tolist())
            if not typed:
                shape += tuple(str(d) for d in frame.dtypes.tolist())
            groups.setdefault(shape, []).append((frame, future))
        for group in groups.values():
            batch: list[_Waiting] = []
            rows = 0
            for item in group:
                if batch and rows + len(item[0]) > self.max_rows:
                    self._score(loaded, batch)
                    batch, rows = [], 0
                batch.append(item)
                rows += len(item[0])
            if batch:
                self._score(loaded, batch)

    def _score(self, loaded: LoadedModel, batch: list[_Waiting]) -> None:
        if len(batch) == 1:
            self._alone(loaded, *batch[0])
            return
        self.calls += 1
        self.requests += len(batch)
        try:
            together: pd.DataFrame | np.ndarray[Any, Any]
            if takes_frames(loaded):
                together = pd.concat([frame for frame, _ in batch], ignore_index=True)
            else:  # the model is given an array anyway: stacking arrays is several times cheaper
                together = np.concatenate([frame.to_numpy() for frame, _ in batch])
            result = self._predict(loaded, together)
        except Exception:
            # One request's values may have made the model fail: each alone, so only that one fails.
            self.calls -= 1
            self.requests -= len(batch)
            for frame, future in batch:
                self._alone(loaded, frame, future)
            return
        start = 0
        for frame, future in batch:
            end = start + len(frame)
            if not future.done():
                future.set_result(
                    Prediction(
                        result.predictions[start:end],
                        result.probabilities[start:end] if result.probabilities is not None else None,
                        result.classes,
                        result.matrix[start:end] if result.matrix is not None else None,
                        result.labels[start:end] if result.labels is not None else None,
                    )
                )
            start = end

    def _alone(self, loaded: LoadedModel, frame: pd.DataFrame, future: asyncio.Future[Prediction]) -> None:
        self.calls += 1
        self.requests += 1
        try:
            result = self._predict(loaded, frame)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(result)
