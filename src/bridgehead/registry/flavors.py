"""Model flavors: how a model is written to files and read back. Each flavor is a plugin.

Safe flavors load without executing code from the artifact (skops with an allow-list, ONNX, LightGBM's text
format, XGBoost's JSON). The pickle flavor is stored but only loaded when the installation trusts it
(``BRIDGEHEAD_TRUSTED_FLAVORS=pickle``), and each such load is audited by the caller.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bridgehead.errors import BadRequest, PermissionDenied
from bridgehead.store.artifacts import directory_digest

__all__ = [
    "MANIFEST",
    "BuiltinFlavors",
    "Flavor",
    "SavedModel",
    "directory_sha256",
    "read_manifest",
]

MANIFEST = "bridgehead-model.json"
# Prefixes of types that skops may reconstruct: estimators and the array types they hold. Only classes (and
# numpy ufuncs) under these prefixes pass; functions do not, since a model can call whatever function it
# holds (FunctionTransformer(func=numpy.load)).
SKOPS_TRUSTED_PREFIXES = (
    "sklearn.",
    "numpy.",
    "scipy.",
    "collections.",
    "lightgbm.",
    "xgboost.",
)
# builtins hold eval, exec, open and __import__: only plain data types are allowed from there.
SKOPS_TRUSTED_BUILTINS = frozenset(
    f"builtins.{name}"
    for name in (
        "bool",
        "bytearray",
        "bytes",
        "complex",
        "dict",
        "float",
        "frozenset",
        "int",
        "list",
        "range",
        "set",
        "slice",
        "str",
        "tuple",
    )
)


def skops_type_allowed(name: str) -> bool:
    """Whether skops may reconstruct the object named ``module.qualname`` (as get_untrusted_types lists it)."""
    if name.startswith("builtins."):
        return name in SKOPS_TRUSTED_BUILTINS
    if not name.startswith(SKOPS_TRUSTED_PREFIXES):
        return False
    import importlib

    import numpy as np

    parts = name.split(".")
    # The longest importable module prefix, then attributes; only modules of the trusted packages are imported.
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return isinstance(obj, type | np.ufunc)
    return False


@dataclass
class SavedModel:
    flavor: str
    files: list[str]
    meta: dict[str, Any] = field(default_factory=dict)


class Flavor(Protocol):
    name: str
    safe: bool

    def accepts(self, model: Any) -> bool: ...
    def save(self, model: Any, directory: Path) -> SavedModel: ...
    def load(self, directory: Path, meta: dict[str, Any]) -> Any: ...


def _module_of(model: Any) -> str:
    return type(model).__module__.split(".")[0]


class SklearnSkops:
    name = "sklearn"
    safe = True

    def accepts(self, model: Any) -> bool:
        return _module_of(model) == "sklearn"

    def save(self, model: Any, directory: Path) -> SavedModel:
        import skops.io

        skops.io.dump(model, directory / "model.skops")
        return SavedModel(self.name, ["model.skops"], {"file": "model.skops"})

    def load(self, directory: Path, meta: dict[str, Any]) -> Any:
        import skops.io

        path = directory / meta.get("file", "model.skops")
        untrusted = skops.io.get_untrusted_types(file=path)
        refused = [t for t in untrusted if not skops_type_allowed(t)]
        if refused:
            raise PermissionDenied(
                "The skops file contains types outside the allow-list; refusing to load it.",
                details={"types": refused[:20]},
            )
        return skops.io.load(path, trusted=untrusted)


class Onnx:
    name = "onnx"
    safe = True

    def accepts(self, model: Any) -> bool:
        return type(model).__name__ == "ModelProto"

    def save(self, model: Any, directory: Path) -> SavedModel:
        (directory / "model.onnx").write_bytes(model.SerializeToString())
        return SavedModel(self.name, ["model.onnx"], {"file": "model.onnx"})

    def load(self, directory: Path, meta: dict[str, Any]) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(
            str(directory / meta.get("file", "model.onnx")), options, providers=["CPUExecutionProvider"]
        )
        return OnnxPredictor(session)


class OnnxPredictor:
    """predict / predict_proba over an ONNX Runtime session with one tensor input."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.input = session.get_inputs()[0].name
        self.outputs = [o.name for o in session.get_outputs()]

    def _run(self, x: Any) -> list[Any]:
        import numpy as np

        array = np.asarray(x, dtype=np.float32)
        result: list[Any] = self.session.run(None, {self.input: array})
        return result

    def predict(self, x: Any) -> Any:
        return self._run(x)[0]

    def predict_proba(self, x: Any) -> Any:
        import numpy as np

        outputs = self._run(x)
        if len(outputs) < 2:
            raise BadRequest("This ONNX model has no probability output.")
        proba = outputs[1]
        if isinstance(proba, list):  # ZipMap output: list of {class: p}
            keys = sorted(proba[0])
            return np.array([[row[k] for k in keys] for row in proba])
        return proba


class LightGBMText:
    name = "lightgbm"
    safe = True

    def accepts(self, model: Any) -> bool:
        return _module_of(model) == "lightgbm"

    def save(self, model: Any, directory: Path) -> SavedModel:
        booster = model.booster_ if hasattr(model, "booster_") else model
        booster.save_model(str(directory / "model.txt"))
        objective = str(booster.params.get("objective", "")) if hasattr(booster, "params") else ""
        return SavedModel(
            self.name,
            ["model.txt"],
            {"file": "model.txt", "objective": objective, "classifier": hasattr(model, "classes_")},
        )

    def load(self, directory: Path, meta: dict[str, Any]) -> Any:
        import lightgbm

        booster = lightgbm.Booster(model_file=str(directory / meta.get("file", "model.txt")))
        return BoosterPredictor(booster, classifier=bool(meta.get("classifier")))


class XGBoostJson:
    name = "xgboost"
    safe = True

    def accepts(self, model: Any) -> bool:
        return _module_of(model) == "xgboost"

    def save(self, model: Any, directory: Path) -> SavedModel:
        booster = model.get_booster() if hasattr(model, "get_booster") else model
        booster.save_model(str(directory / "model.json"))
        return SavedModel(
            self.name, ["model.json"], {"file": "model.json", "classifier": hasattr(model, "classes_")}
        )

    def load(self, directory: Path, meta: dict[str, Any]) -> Any:
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(str(directory / meta.get("file", "model.json")))
        return BoosterPredictor(booster, classifier=bool(meta.get("classifier")), xgb=True)


class BoosterPredictor:
    """A boosted-trees booster behind the scikit-learn predict / predict_proba interface (binary or regression)."""

    def __init__(self, booster: Any, *, classifier: bool, xgb: bool = False) -> None:
        self.booster = booster
        self.classifier = classifier
        self.xgb = xgb

    def _raw(self, x: Any) -> Any:
        import numpy as np

        if self.xgb:
            import xgboost

            return self.booster.predict(xgboost.DMatrix(np.asarray(x, dtype=float)))
        return self.booster.predict(np.asarray(x, dtype=float))

    def predict(self, x: Any) -> Any:
        raw = self._raw(x)
        if self.classifier:
            return (raw >= 0.5).astype(int) if raw.ndim == 1 else raw.argmax(axis=1)
        return raw

    def predict_proba(self, x: Any) -> Any:
        import numpy as np

        raw = self._raw(x)
        return np.column_stack([1 - raw, raw]) if raw.ndim == 1 else raw


class Pickle:
    """Stored, never loaded unless trusted: unpickling runs code chosen by whoever wrote the file."""

    name = "pickle"
    safe = False

    def accepts(self, model: Any) -> bool:
        return False  # never chosen automatically when saving

    def save(self, model: Any, directory: Path) -> SavedModel:
        import pickle

        (directory / "model.pkl").write_bytes(pickle.dumps(model))
        return SavedModel(self.name, ["model.pkl"], {"file": "model.pkl"})

    def load(self, directory: Path, meta: dict[str, Any]) -> Any:
        import pickle

        return pickle.loads((directory / meta.get("file", "model.pkl")).read_bytes())  # noqa: S301 — trusted only


class BuiltinFlavors:
    """The built-in flavors, registered through the plugin seam like any other."""

    flavors: tuple[Any, ...] = (SklearnSkops(), Onnx(), LightGBMText(), XGBoostJson(), Pickle())


def directory_sha256(directory: Path) -> str:
    """The digest of a local model directory, equal to ``ArtifactStore.sha256_dir`` of its stored copy."""
    return directory_digest(
        (path.relative_to(directory).as_posix(), _chunks(path))
        for path in directory.rglob("*")
        if path.is_file()
    )


def _chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(size):
            yield chunk


def read_manifest(directory: Path) -> dict[str, Any]:
    """The model's flavor and metadata: Bridgehead's manifest, or an MLflow MLmodel file."""
    native = directory / MANIFEST
    if native.exists():
        data: dict[str, Any] = json.loads(native.read_text())
        return data
    mlmodel = directory / "MLmodel"
    if mlmodel.exists():
        return _from_mlmodel(mlmodel.read_text())
    raise BadRequest("The artifact is not a model: it has neither bridgehead-model.json nor MLmodel.")


def _from_mlmodel(text: str) -> dict[str, Any]:
    import yaml

    spec = yaml.safe_load(text) or {}
    flavors = spec.get("flavors", {})
    signature = spec.get("signature") or {}
    if "sklearn" in flavors:
        sk = flavors["sklearn"]
        fmt = sk.get("serialization_format", "cloudpickle")
        file = sk.get("pickled_model", "model.pkl")
        if fmt == "skops":
            return {"flavor": "sklearn", "meta": {"file": file}, "signature": signature}
        return {"flavor": "pickle", "meta": {"file": file, "format": fmt}, "signature": signature}
    if "onnx" in flavors:
        return {
            "flavor": "onnx",
            "meta": {"file": flavors["onnx"].get("data", "model.onnx")},
            "signature": signature,
        }
    if "lightgbm" in flavors:
        return {
            "flavor": "lightgbm",
            "meta": {"file": flavors["lightgbm"].get("data", "model.lgb")},
            "signature": signature,
        }
    if "xgboost" in flavors:
        return {
            "flavor": "xgboost",
            "meta": {"file": flavors["xgboost"].get("data", "model.xgb")},
            "signature": signature,
        }
    raise BadRequest("No supported flavor in MLmodel.", details={"flavors": sorted(flavors)})
