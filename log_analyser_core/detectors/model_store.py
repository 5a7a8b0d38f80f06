"""Save and load a trained baseline: detectors fitted on a period the user trusts.

A model directory holds:
  model.json        format version, feature list, library versions, training summary, typical client
  reference.npz     the training clients' raw scores per detector, the 0-100 scale, and the median client
                    and robust spread of each feature (for reasons); numpy arrays, no pickle
  iforest.npz       the robust scaler and Isolation Forest as arrays (forest.Trees: numpy, no pickle;
                    scoring reads them with NumPy, so a run with --model imports no scikit-learn)
  autoencoder.npz   the autoencoder's weights (numpy, no pickle; scoring reads them with NumPy), with
                    autoencoder.json (its scaler, threshold) and autoencoder.keras (the same network for Keras)

Models of format 1 (before iforest.npz) hold the scaler and forest as iforest.skops, still read:
skops rather than joblib/pickle, since loading a pickle runs whatever code the file names, while
skops rebuilds only the types it is told to trust (here scikit-learn's scaler, forest and tree
types; anything else is refused). Keras models load in safe mode, which refuses serialized Python
code. Even so, a model is code-adjacent data: load only models you made.
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
from log_analyser_core.detectors import forest
from log_analyser_core.errors import ConfigError
from log_analyser_core.features.client import FEATURE_NAMES

if TYPE_CHECKING:
    from log_analyser_core.detectors.autoencoder import AutoencoderDetector
    from log_analyser_core.detectors.forest_process import ForestProcess

log = logging.getLogger(__name__)

FORMAT = "log_analyser-model"
FORMAT_VERSION = 2   # 2: the forest as iforest.npz (1: iforest.skops, still read)
READ_VERSIONS = (1, 2)
_READ = " and ".join(map(str, READ_VERSIONS))
TRUSTED_SKOPS_TYPES = forest.TRUSTED_SKOPS_TYPES


@dataclass(frozen=True)
class LoadedModel:
    baseline: Baseline
    metadata: dict


def save(baseline: Baseline, directory: Path | str, training: dict) -> Path:
    """Write ``baseline`` to ``directory`` (created if needed); ``training`` is the summary to record."""
    folder = Path(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        baseline.scale_model.trees().save(folder / forest.TREES_FILE)
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


KNOWN_DETECTORS = ("iforest", "autoencoder")
_RETRAIN = "retrain it with: log_analyser train -f known_good.log --save DIR"


def load(directory: Path | str, detectors: tuple[str, ...] | None = None,
         remote: ForestProcess | None = None) -> LoadedModel:
    """Load a model directory; ``detectors`` restricts which of its detectors score (None: all saved);
    the forest is read into ``remote`` (the run's forest process) when given.

    Every file is checked as it is read (present, readable, the keys, types and shapes this version
    wrote), so a damaged or hand-edited model is a ConfigError naming the file, never a crash later.
    Raises ConfigError for a missing or malformed model, features this version does not know, or a
    requested detector the model was not trained with; MissingExtraError if it needs the deep extra.
    """
    folder = Path(directory)
    metadata = _metadata(folder)
    wanted = tuple(metadata["detectors"]) if detectors is None else detectors
    missing = [name for name in wanted if name not in metadata["detectors"]]
    if missing:
        raise ConfigError(f"the model has no {', '.join(missing)} detector", path=str(folder),
                          hint=f"it was trained with {', '.join(metadata['detectors'])}")
    width = len(metadata["features"])
    scale_model = (_load_trees(folder, width) if metadata["format_version"] >= 2
                   else _load_forest(folder, width, remote))
    fitted: dict[str, Detector] = {name: scale_model for name in wanted if name == "iforest"}
    if "autoencoder" in wanted:
        fitted["autoencoder"] = _load_autoencoder(folder, width)
    reference, scale, center, spread = _reference(folder, wanted, width)
    baseline = Baseline(features=tuple(metadata["features"]), detectors=fitted, scale_model=scale_model,
                        reference=reference, scale=scale, typical=np.array(metadata["typical"], dtype=float),
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
    _check_version(metadata.get("format_version"), path)
    features = metadata.get("features")
    unknown = [f for f in features if f not in FEATURE_NAMES] if isinstance(features, list) else []
    if unknown:
        raise ConfigError(f"the model uses features this version does not compute: {', '.join(map(str, unknown))}",
                          path=str(folder), hint="train a new model with this version")
    problem = _metadata_problem(metadata)
    if problem:
        raise ConfigError(f"damaged model: {problem}", path=str(path), hint=_RETRAIN)
    return metadata


def _check_version(version: object, path: Path) -> None:
    if version in READ_VERSIONS and isinstance(version, int) and not isinstance(version, bool):
        return
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise ConfigError(f"the model is in format {version}, made by a newer log_analyser", path=str(path),
                          hint=f"this version reads formats {_READ}: upgrade log_analyser or retrain")
    shown = "missing" if version is None else repr(version)
    raise ConfigError(f"the model's format version is {shown}; this version reads formats {_READ}",
                      path=str(path), hint=_RETRAIN)


def _metadata_problem(metadata: dict) -> str | None:
    """What is wrong with model.json's fields, or None."""
    features, names = metadata.get("features"), metadata.get("detectors")
    if not isinstance(features, list) or not features or not all(isinstance(f, str) for f in features):
        return "'features' is not a non-empty list of names"
    if len(set(features)) != len(features):
        return "'features' names a feature twice"
    if not isinstance(names, list) or not names or not all(n in KNOWN_DETECTORS for n in names):
        return f"'detectors' is not a non-empty list of {' / '.join(KNOWN_DETECTORS)}"
    if "iforest" not in names:
        return "'detectors' lacks iforest, which every model has"
    typical = metadata.get("typical")
    if not isinstance(typical, list) or len(typical) != len(features) or not all(_is_number(v) for v in typical):
        return f"'typical' is not a list of {len(features)} numbers, one per feature"
    training = metadata.get("training")
    clients = training.get("clients") if isinstance(training, dict) else None
    if not isinstance(clients, int) or isinstance(clients, bool) or clients < 1:
        return "'training.clients' is not a positive whole number"
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


def upgrade(directory: Path | str) -> bool:
    """Rewrite a format 1 model in ``directory`` in this version's format (its forest as
    iforest.npz, read from iforest.skops, checked as a run reads it), without its training log;
    False when it is in this format already. The arrays are written before model.json says so, so an
    interrupted upgrade leaves a format 1 model that still reads."""
    folder = Path(directory)
    metadata = _metadata(folder)
    if metadata["format_version"] == FORMAT_VERSION:
        return False
    detector = _load_forest(folder, len(metadata["features"]))
    try:
        detector.trees().save(folder / forest.TREES_FILE)
        staged = folder / "model.json.upgrading"
        staged.write_text(json.dumps({**metadata, "format_version": FORMAT_VERSION}, indent=2), encoding="utf-8")
        staged.replace(folder / "model.json")
        (folder / "iforest.skops").unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write the model: {exc.strerror}", path=str(folder)) from None
    return True


def _load_trees(folder: Path, width: int) -> IsolationForestDetector:
    path = folder / forest.TREES_FILE
    if not path.is_file():
        raise ConfigError(f"damaged model: {forest.TREES_FILE} is missing", path=str(folder), hint=_RETRAIN)
    try:
        trees = forest.Trees.load(path, width)
    except forest.Refused as refused:
        raise ConfigError(str(refused), path=str(path), hint=_RETRAIN) from None
    detector = _detector(trees.params, path)
    detector.use_trees(trees)
    return detector


def _detector(params: dict, path: Path) -> IsolationForestDetector:
    """A forest detector with the saved parameters (checked as the constructor takes them)."""
    try:
        return IsolationForestDetector(**params)
    except TypeError:
        raise ConfigError("damaged model: unknown forest parameters", path=str(path), hint=_RETRAIN) from None


def _load_forest(folder: Path, width: int, remote: ForestProcess | None = None) -> IsolationForestDetector:
    """A format-1 model's iforest.skops."""
    path = folder / "iforest.skops"
    if not path.is_file():
        raise ConfigError("damaged model: iforest.skops is missing", path=str(folder), hint=_RETRAIN)
    detector = IsolationForestDetector(remote=remote)   # read and checked there, when given
    try:
        params = detector.load(str(path), width)
    except forest.Refused as refused:
        hint = "only load models made by log_analyser train" if refused.trust else _RETRAIN
        raise ConfigError(str(refused), path=str(path), hint=hint) from None
    made = _detector(params, path)
    detector.n_estimators, detector.max_samples, detector.random_state = \
        made.n_estimators, made.max_samples, made.random_state
    return detector


def _load_autoencoder(folder: Path, width: int) -> Detector:
    from log_analyser_core.detectors import autoencoder

    # the weights scoring reads (autoencoder.npz), or for a model saved before them the Keras file
    weights = "autoencoder.npz" if (folder / "autoencoder.npz").is_file() else "autoencoder.keras"
    for name in ("autoencoder.json", weights):
        if not (folder / name).is_file():
            raise ConfigError(f"damaged model: {name} is missing", path=str(folder), hint=_RETRAIN)
    try:
        detector = autoencoder.AutoencoderDetector.load(folder)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"damaged model: cannot load the autoencoder ({type(exc).__name__})",
                          path=str(folder / "autoencoder.json"), hint=_RETRAIN) from None
    layers = detector.network_.layers
    if layers[0][0].shape[0] != width or layers[-1][0].shape[1] != width:
        raise ConfigError(f"damaged model: the autoencoder does not read and write {width} features, as "
                          "model.json lists", path=str(folder / weights), hint=_RETRAIN)
    return detector


def _reference(folder: Path, wanted: tuple[str, ...], width: int) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """(reference scores per detector, the 0-100 scale, feature centre, feature spread) from
    reference.npz, each checked: present, numeric, finite, non-empty, of the right length."""
    import zipfile

    path = folder / "reference.npz"
    if not path.is_file():
        raise ConfigError("damaged model: reference.npz is missing", path=str(folder), hint=_RETRAIN)
    shapes = {"scale": None, "center": width, "spread": width, **{f"reference_{name}": None for name in wanted}}
    try:
        with np.load(path, allow_pickle=False) as arrays:
            absent = [key for key in shapes if key not in arrays.files]
            if absent:
                raise ConfigError(f"damaged model: no {', '.join(absent)} array", path=str(path), hint=_RETRAIN)
            loaded = {key: np.asarray(arrays[key]) for key in shapes}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ConfigError(f"damaged model: cannot read it ({type(exc).__name__})", path=str(path),
                          hint=_RETRAIN) from None
    for key, values in loaded.items():
        length = shapes[key]
        if (values.ndim != 1 or values.size == 0 or not np.issubdtype(values.dtype, np.number)
                or not np.all(np.isfinite(values)) or length is not None and values.size != length):
            expected = f"{length} numbers" if length else "a non-empty list of numbers"
            raise ConfigError(f"damaged model: '{key}' is not {expected}", path=str(path), hint=_RETRAIN)
    reference = {name: loaded[f"reference_{name}"] for name in wanted}
    return reference, loaded["scale"], loaded["center"], loaded["spread"]


def check_features(model: LoadedModel, used: list[str], source: str) -> None:
    """Raise ConfigError when this log does not record a feature the model was trained on."""
    absent = [f for f in model.baseline.features if f not in used]
    if absent:
        raise ConfigError(f"the model was trained on features this log does not record: {', '.join(absent)}",
                          path=source, hint="train the model on logs in the same format as the ones you score")
