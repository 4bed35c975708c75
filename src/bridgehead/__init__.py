"""Bridgehead: take an organization's AI from pilot to production, with governance built in.

The package is also the Python SDK (``import bridgehead as bh``); see docs/tracking.md.
"""

__version__ = "0.1.0"

# After __version__: the modules below import the package back.
from bridgehead.client import Client
from bridgehead.data.sdk import register_dataset, validate_data
from bridgehead.sdk import (
    ActiveRun,
    DatasetInfo,
    ModelInfo,
    active_run,
    end_run,
    get_client,
    load_model,
    log_artifact,
    log_artifacts,
    log_dataset,
    log_metric,
    log_metrics,
    log_model,
    log_param,
    log_params,
    set_client,
    set_experiment,
    set_tag,
    set_tags,
    start_run,
)

__all__ = [
    "ActiveRun",
    "Client",
    "DatasetInfo",
    "ModelInfo",
    "__version__",
    "active_run",
    "end_run",
    "get_client",
    "load_model",
    "log_artifact",
    "log_artifacts",
    "log_dataset",
    "log_metric",
    "log_metrics",
    "log_model",
    "log_param",
    "log_params",
    "register_dataset",
    "set_client",
    "set_experiment",
    "set_tag",
    "set_tags",
    "start_run",
    "validate_data",
]
