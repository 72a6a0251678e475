"""Research closures: one JSON file holding everything needed to use and retrain a model.

A closure holds the network (spec, labels, parameters), the optimizer with its hyperparameters and
state, the event loop's settings, a manifest of the training and test data (content hashes, not
the data), the metric history, seeds and the software version, all checked by hashes. The format
is described in docs/closure.md and by the JSON Schema ``closure.schema.json`` shipped in this
package (``schema()`` returns it).

    closure = closure_from_project(project, store.manifest(project.name))
    save_closure(closure, "run.closure.json")
    closure = load_closure("run.closure.json")      # every field checked; ClosureError if not
    net, opt = closure.net(), closure.optimizer()   # resume bit-exactly
"""

from __future__ import annotations

import copy
from typing import Any

# The replay record is the training core's: a closure carries it, mlitb.training writes it.
from ..training import ReplayOrigin, ReplayRecord, ReplayStep, format_share, parse_share
from ._canonical import canonical_json
from ._convert import (
    FORMAT,
    VERSION,
    Closure,
    LoopSettings,
    closure_from_dict,
    closure_from_project,
    closure_to_dict,
    load_closure,
    parse_closure_json,
    project_from_closure,
    save_closure,
)
from ._manifest import (
    DataManifest,
    ManifestMatch,
    SplitManifest,
    compare_split,
    manifest_from_store,
    manifest_from_zip,
    match_manifest,
    split_from_zip,
)
from ._predict import ImageError, Prediction, load_images, predict_images
from ._replay import ReplayReport, StepCheck, TrainingData, record_of, replay, training_data
from ._schema import SCHEMA_FILE, load_schema
from ._summary import summary
from ._verify import verify_manifest
from ._zoo import Zoo, ZooEntry

__all__ = [
    "FORMAT",
    "SCHEMA_FILE",
    "VERSION",
    "Closure",
    "DataManifest",
    "ImageError",
    "LoopSettings",
    "ManifestMatch",
    "Prediction",
    "ReplayOrigin",
    "ReplayRecord",
    "ReplayReport",
    "ReplayStep",
    "SplitManifest",
    "StepCheck",
    "TrainingData",
    "Zoo",
    "ZooEntry",
    "canonical_json",
    "closure_from_dict",
    "closure_from_project",
    "closure_to_dict",
    "compare_split",
    "format_share",
    "load_closure",
    "load_images",
    "manifest_from_store",
    "manifest_from_zip",
    "match_manifest",
    "parse_share",
    "parse_closure_json",
    "predict_images",
    "project_from_closure",
    "record_of",
    "replay",
    "save_closure",
    "schema",
    "split_from_zip",
    "summary",
    "training_data",
    "verify_manifest",
]


def schema() -> dict[str, Any]:
    """The closure's JSON Schema (draft 2020-12), as shipped in the package."""
    return copy.deepcopy(load_schema())
