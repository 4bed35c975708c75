"""The naive floor of a Python model server, for ``serving_vs_mlflow.py``: what anyone writes in ten minutes.

A FastAPI app that loads the benchmark's model (joblib; fine for a benchmark, never for untrusted files) and
answers ``POST /predict`` ``{"records": [{...}, ...]}`` with ``{"predictions": predict_proba(records)}``. No
authentication, no validation beyond pydantic's, no logging of predictions. Run it with uvicorn's defaults:

    SERVING_BENCH_MODEL=/path/model.joblib .venv/bin/python -m uvicorn serving_naive_app:app \
        --app-dir benchmarks --host 127.0.0.1 --port 8001
"""

from __future__ import annotations

import os

import joblib
import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel

MODEL = joblib.load(os.environ["SERVING_BENCH_MODEL"])
COLUMNS = list(MODEL.feature_names_in_)

app = FastAPI()


class Body(BaseModel):
    records: list[dict[str, float]]


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
def predict(body: Body) -> dict[str, list[list[float]]]:
    frame = pd.DataFrame(body.records, columns=COLUMNS)
    return {"predictions": MODEL.predict_proba(frame).tolist()}
