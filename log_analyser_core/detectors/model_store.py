"""Save and load a trained baseline: detectors fitted on a period the user trusts.

A model directory holds:
  model.json        format version, feature list, library versions, training summary, typical client
  reference.npz     the training clients' raw scores per detector, the 0-100 scale, and the median client
                    and robust spread of each feature (for reasons); numpy arrays, no pickle
  iforest.skops     the robust scaler and Isolation Forest (skops)
  autoencoder.npz   the autoencoder's weights (numpy, no pickle; scoring reads them with NumPy), with
                    autoencoder.json (its scaler, threshold) and autoencoder.keras (the same network for Keras)

scikit-learn objects are stored with skops rather than joblib/pickle: loading a pickle runs whatever
code the file names, while skops rebuilds only the types it is told to trust (here scikit-learn's
scaler, forest and tree types; anything else is refused). Keras models load in safe mode, which
refuses serialized Python code. Even so, a model is code-adjacent data: load only models you made.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from anomaly_detector import Baseline, Detector, IsolationForestDetector
from log_analyser_core.errors import ConfigError
from log_analyser_core.features.client import FEATURE_NAMES

if TYPE_CHECKING:
    from log_analyser_core.detectors.autoencoder import AutoencoderDetector

log = logging.getLogger(__name__)

FORMAT = "log_analyser-model"
FORMAT_VERSION = 1
# The only types a model's .skops file may contain beyond skops' defaults.
TRUSTED_SKOPS_TYPES = ("sklearn.tree._tree.Tree",)


@dataclass(frozen=True)
class LoadedModel:
    baseline: Baseline
    metadata: dict


def save(baseline: Baseline, directory: Path | str, training: dict) -> Path:
    """Write ``baseline`` to ``directory`` (created if needed); ``training`` is the summary to record."""
    import skops.io

    folder = Path(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        forest = baseline.scale_model
        skops.io.dump({"scaler": forest.scaler_, "forest": forest.forest_, "params": _forest_params(forest)},
                      folder / "iforest.skops")
        if "autoencoder" in baseline.detectors:
            cast("AutoencoderDetector", baseline.detectors["autoencoder"]).save(folder)
        assert baseline.center is not None and baseline.spread is not None, "fit_baseline sets both"
        np.savez(folder / "reference.npz", scale=baseline.scale, center=baseline.center, spread=baseline.spread,
                 **{f"reference_{name}": values for name, values in baseline.reference.items()})  # type: ignore[arg-type]
        metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "features": list(baseline.features),
                    "detectors": list(baseline.detectors), "typical": baseline.typical.tolist(),
                    "versions": _versions(baseline), "training": {**training, "clients": baseline.clients},
                    "created": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")}
        (folder / "model.json").write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the model: {exc.strerror}", path=str(folder)) from None
    return folder


def _forest_params(forest: IsolationForestDetector) -> dict:
    return {"n_estimators": forest.n_estimators, "max_samples": forest.max_samples,
            "random_state": forest.random_state}


def _versions(baseline: Baseline) -> dict[str, str]:
    from importlib import metadata as importlib_metadata

    import sklearn

    versions = {"numpy": np.__version__, "scikit-learn": sklearn.__version__}
    try:
        versions["log_analyser"] = importlib_metadata.version("log_analyser")
    except importlib_metadata.PackageNotFoundError:
        versions["log_analyser"] = "0+unknown"
    if "autoencoder" in baseline.detectors:
        from log_analyser_core.detectors import autoencoder

        versions.update(autoencoder.versions())
    return versions


def load(directory: Path | str, detectors: tuple[str, ...] | None = None) -> LoadedModel:
    """Load a model directory; ``detectors`` restricts which of its detectors score (None: all saved).

    Raises ConfigError for a missing or malformed model, features this version does not know, or a
    requested detector the model was not trained with; MissingExtraError if it needs the deep extra.
    """
    folder = Path(directory)
    metadata = _metadata(folder)
    unknown = [f for f in metadata["features"] if f not in FEATURE_NAMES]
    if unknown:
        raise ConfigError(f"the model uses features this version does not compute: {', '.join(unknown)}",
                          path=str(folder), hint="train a new model with this version")
    wanted = tuple(metadata["detectors"]) if detectors is None else detectors
    missing = [name for name in wanted if name not in metadata["detectors"]]
    if missing:
        raise ConfigError(f"the model has no {', '.join(missing)} detector", path=str(folder),
                          hint=f"it was trained with {', '.join(metadata['detectors'])}")
    forest = _load_forest(folder)
    fitted: dict[str, Detector] = {name: forest for name in wanted if name == "iforest"}
    if "autoencoder" in wanted:
        from log_analyser_core.detectors import autoencoder

        fitted["autoencoder"] = autoencoder.AutoencoderDetector.load(folder)
    with np.load(folder / "reference.npz", allow_pickle=False) as arrays:
        reference = {name: arrays[f"reference_{name}"] for name in wanted}
        scale, center, spread = arrays["scale"], arrays["center"], arrays["spread"]
    baseline = Baseline(features=tuple(metadata["features"]), detectors=fitted, scale_model=forest,
                        reference=reference, scale=scale, typical=np.array(metadata["typical"]),
                        clients=int(metadata["training"]["clients"]), center=center, spread=spread)
    return LoadedModel(baseline=baseline, metadata=metadata)


def _metadata(folder: Path) -> dict:
    path = folder / "model.json"
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("not a model directory (no model.json)", path=str(folder),
                          hint="create one with: log_analyser train -f known_good.log --save DIR") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the model: {exc}", path=str(path)) from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ConfigError("not a log_analyser model", path=str(path))
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"model format version {metadata.get('format_version')} is not supported",
                          path=str(path), hint=f"this version reads format {FORMAT_VERSION}; retrain the model")
    return metadata


def _load_forest(folder: Path) -> IsolationForestDetector:
    import skops.io

    path = folder / "iforest.skops"
    untrusted = [t for t in skops.io.get_untrusted_types(file=path) if t not in TRUSTED_SKOPS_TYPES]
    if untrusted:
        raise ConfigError(f"the model file contains types that are not trusted: {', '.join(untrusted)}",
                          path=str(path), hint="only load models made by log_analyser train")
    state = skops.io.load(path, trusted=list(TRUSTED_SKOPS_TYPES))
    forest = IsolationForestDetector(**state["params"])
    forest.scaler_, forest.forest_ = state["scaler"], state["forest"]
    return forest


def check_features(model: LoadedModel, used: list[str], source: str) -> None:
    """Raise ConfigError when this log does not record a feature the model was trained on."""
    absent = [f for f in model.baseline.features if f not in used]
    if absent:
        raise ConfigError(f"the model was trained on features this log does not record: {', '.join(absent)}",
                          path=source, hint="train the model on logs in the same format as the ones you score")
