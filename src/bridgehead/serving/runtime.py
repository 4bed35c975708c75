"""The model runtime: versions loaded once per process, predictions with probabilities for classifiers.

A version is loaded on first use (or when a deploy checks it) through the registry's verified loader: the
artifact's SHA-256 is checked, its flavor plugin loads it, and formats that execute code when loaded are
refused unless trusted (and then audited). Loaded models stay in memory until the process ends or the cache is
cleared; a load that fails is not cached, so a fixed artifact or trust setting takes effect on the next call.
"""

from __future__ import annotations

import gc
import logging
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from bridgehead.auth.service import Principal
from bridgehead.errors import BadRequest, BridgeheadError, NotFound
from bridgehead.registry import service as registry
from bridgehead.registry.models import ModelVersion, RegisteredModel
from bridgehead.serving.accelerate import accelerate
from bridgehead.serving.protocols import Signature
from bridgehead.store.artifacts import ArtifactStore

__all__ = ["LATENCY_BUCKETS_MS", "LoadedModel", "ModelRuntime", "Prediction", "takes_frames"]

log = logging.getLogger("bridgehead.serving")

# Upper bounds of the latency histogram kept per endpoint and hour (the last bucket is open-ended).
LATENCY_BUCKETS_MS = (1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0)


@dataclass
class LoadedModel:
    version_id: str
    model_name: str
    version: int
    flavor: str
    predictor: Any
    signature: Signature | None
    classes: list[Any] | None = None
    # What computes the predictions: the flavor itself, or "onnxruntime" for a converted scikit-learn model.
    engine: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Prediction:
    predictions: list[Any]
    probabilities: list[list[float]] | None
    classes: list[Any] | None
    # The probabilities as one float array (rows x classes), for the prediction log: one array instead of a
    # list per row to keep and convert.
    matrix: np.ndarray[Any, np.dtype[np.float64]] | None = None
    # The predictions as the model's array (one per row), for the prediction log likewise.
    labels: np.ndarray[Any, Any] | None = None


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def takes_frames(loaded: LoadedModel) -> bool:
    """Whether the model is given a frame (an estimator fitted on named columns) rather than a plain array."""
    return hasattr(loaded.predictor, "feature_names_in_")


class ModelRuntime:
    """One per process: a cache of loaded versions keyed by version id."""

    def __init__(
        self,
        store: ArtifactStore,
        flavors: Callable[[], dict[str, Any]],
        trusted: frozenset[str],
        workdir: Path | None = None,
        *,
        onnx: bool = True,
    ) -> None:
        self.store = store
        self.onnx = onnx
        self._flavors = flavors
        self.trusted = trusted
        self.workdir = workdir
        self._models: dict[str, LoadedModel] = {}
        self._loading: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def cached(self, version_id: str) -> LoadedModel | None:
        return self._models.get(version_id)

    def loaded_ids(self) -> list[str]:
        return list(self._models)

    def evict(self, version_id: str) -> None:
        self._models.pop(version_id, None)

    def get(self, session: Session, principal: Principal, version_id: str) -> LoadedModel:
        """The loaded version, loading it on first use (once, even under concurrent first calls)."""
        found = self._models.get(version_id)
        if found is not None:
            return found
        with self._guard:
            lock = self._loading.setdefault(version_id, threading.Lock())
        with lock:
            found = self._models.get(version_id)
            if found is not None:
                return found
            version = session.get(ModelVersion, version_id)
            if version is None:
                raise NotFound("A version this endpoint serves no longer exists.")
            found = self._load(session, principal, version)
            self._models[version_id] = found
        # A loaded model lives as long as the process: thousands of objects (trees, a graph) that every full
        # collection would walk again. Out of the collector's sight, as start-up's objects are (app.py); with
        # the prediction log holding a second of requests, full collections come often, and walking the model
        # cost the serving thread about a sixth of its time. Done after the lock is released: other first
        # calls for this version take the model at once instead of waiting for a full collection.
        gc.collect()
        gc.freeze()
        return found

    def check(self, session: Session, principal: Principal, version: ModelVersion) -> LoadedModel:
        """Load (and keep) a version before it is deployed; the error says why it cannot serve."""
        try:
            return self.get(session, principal, version.id)
        except BridgeheadError as exc:
            raise type(exc)(
                f"Version {version.version} cannot be served, so the deploy was refused and the endpoint is "
                f"unchanged: {exc.message}",
                details={**exc.details, "version": version.version},
            ) from exc

    def _load(self, session: Session, principal: Principal, version: ModelVersion) -> LoadedModel:
        model = session.get(RegisteredModel, version.model_id)
        name = model.name if model is not None else "?"
        signature = Signature.from_stored(version.signature or {})
        engine = version.flavor
        with tempfile.TemporaryDirectory(prefix="bridgehead-serve-", dir=self.workdir) as tmp:
            try:
                predictor = registry.load_version(
                    session, principal, self.store, version, self._flavors(), self.trusted, Path(tmp)
                )
            except BridgeheadError:
                raise
            except Exception as exc:  # a corrupt or incompatible file: say so, keep serving the others
                log.warning("loading %s v%s failed: %s", name, version.version, exc)
                raise BadRequest(
                    f"The model file of {name} version {version.version} could not be loaded: "
                    f"{type(exc).__name__}: {exc}",
                    details={"model": name, "version": version.version},
                ) from exc
            if self.onnx:
                fast = accelerate(predictor, Path(tmp), signature.columns if signature is not None else None)
                if fast is not None:
                    predictor, engine = fast, "onnxruntime"
        classes = getattr(predictor, "classes_", None)
        log.info("loaded %s v%s (%s, served by %s)", name, version.version, version.flavor, engine)
        return LoadedModel(
            version_id=version.id,
            model_name=name,
            version=version.version,
            flavor=version.flavor,
            predictor=predictor,
            signature=signature,
            classes=[_plain(c) for c in classes] if classes is not None else None,
            engine=engine,
        )

    @staticmethod
    def predict(loaded: LoadedModel, frame: Any) -> Prediction:
        """Predictions, and class probabilities when the model offers them."""
        # Estimators fitted on named columns get a frame; everything else (ONNX, boosters, estimators fitted on
        # arrays) a plain array, which is also what keeps scikit-learn from warning about feature names.
        x = frame if isinstance(frame, np.ndarray) or takes_frames(loaded) else frame.to_numpy()
        try:
            both = getattr(loaded.predictor, "predict_both", None)  # one call for both (ONNX Runtime)
            if both is not None:
                raw, proba = both(x)
            else:
                raw, proba = loaded.predictor.predict(x), None
                if hasattr(loaded.predictor, "predict_proba"):
                    try:
                        proba = loaded.predictor.predict_proba(x)
                    except (BadRequest, AttributeError, NotImplementedError):
                        proba = None  # a regressor behind a generic predictor
        except BridgeheadError:
            raise
        except Exception as exc:
            raise BadRequest(
                f"The model could not score these inputs: {type(exc).__name__}: {exc}",
                details={"model": loaded.model_name, "version": loaded.version},
            ) from exc
        labels = np.asarray(raw).reshape(len(frame), -1)[:, 0]
        predictions = [_plain(v) for v in labels.tolist()]
        probabilities = matrix = None
        if proba is not None:
            matrix = np.asarray(proba, dtype=np.float64).reshape(len(frame), -1)
            probabilities = matrix.tolist()
        return Prediction(predictions, probabilities, loaded.classes, matrix, labels)
