"""A dense autoencoder detector over per-client features (Keras 3 on TensorFlow, the ``deep`` extra).

Clients the network cannot reconstruct well do not look like the site's normal traffic. The
detector follows the same interface as the Isolation Forest (``fit``, ``score_samples``, learned
attributes end in ``_``, ``random_state``). Keras and TensorFlow are imported here only, lazily, and
only to train: scoring evaluates the network's four dense layers with NumPy (``DenseNetwork``), so a
saved baseline scores without importing TensorFlow (about 4 s and 650 MB on a 2-core machine).
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import re
import sys
import threading
from pathlib import Path

import numpy as np

from log_analyser_core.errors import ConfigError, MissingExtraError

log = logging.getLogger(__name__)

CLIP = 8.0                 # scaled features are clipped to +-CLIP so one huge count cannot dominate the loss
THRESHOLD_QUANTILE = 0.99  # the training-error quantile above which a client counts as unlike the training set
VALIDATION_SHARE = 0.1     # held out for early stopping
MIN_SPREAD = 1e-3          # smallest per-feature scale after robust scaling
HUBER_DELTA = 1.0          # training loss is squared within this many scaled units, linear beyond
EPOCH_ROWS = 4096          # rows per training epoch at least (small tables are repeated)
EPOCH_MAX_ROWS = 16_384    # and at most: big tables are streamed through in windows of this many rows


def available() -> bool:
    """True when the ``deep`` extra (keras and tensorflow) is installed; imports nothing."""
    return all(importlib.util.find_spec(name) is not None for name in ("keras", "tensorflow"))


def require() -> None:
    """Raise MissingExtraError (with the pip install hint) unless the deep extra is installed."""
    for module in ("tensorflow", "keras"):
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError("the autoencoder detector", "deep", module)


def _keras():
    """Import Keras on the TensorFlow backend, or raise MissingExtraError naming the extra."""
    require()
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _native_stderr_silenced(not log.isEnabledFor(logging.DEBUG)):
        import keras
    if not log.isEnabledFor(logging.DEBUG):
        # tf.function's advice on retracing (scoring tables of new sizes) is for TensorFlow's users, not ours
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
    return keras


# What TensorFlow's C++ layer writes straight to file descriptor 2: Abseil-format log lines
# ("I0000 00:00:1795331351.999444   31562 port.cc:153] oneDNN custom operations are on...") and the
# notice before Abseil's logging starts. TF_CPP_MIN_LOG_LEVEL stops neither.
_NATIVE_NOTICE = re.compile(rb"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] |"
                            rb"WARNING: All log messages before absl::InitializeLog\(\) is called)")
_REDIRECT = threading.Lock()   # one redirect of descriptor 2 at a time (the preload thread, the main thread)


def preload() -> None:
    """Import Keras and TensorFlow now (for a thread to do while the log is parsed); a missing extra
    is left for the caller that needs it to report."""
    if available():
        _keras()


@contextlib.contextmanager
def _native_stderr_silenced(silence: bool):
    """Hide TensorFlow's native notices (oneDNN and CPU features at import, graph-attribute complaints
    from tf.data while training) unless debugging. Descriptor 2 goes through a pipe meanwhile and
    everything else written to it, by any thread (a progress bar, a warning), is passed on at once."""
    if not silence:
        yield
        return
    with _REDIRECT:
        sys.stderr.flush()
        saved = os.dup(2)
        read_end, write_end = os.pipe()
        forward = threading.Thread(target=_forward, args=(read_end, saved), daemon=True)
        forward.start()
        os.dup2(write_end, 2)
        os.close(write_end)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)   # closes the pipe's last write end: the forwarder reads to the end, then stops
            forward.join()
            os.close(read_end)
            os.close(saved)


def _forward(read_end: int, target: int) -> None:
    """Copy the pipe to ``target`` line by line, dropping TensorFlow's native notices."""
    pending = b""
    while chunk := os.read(read_end, 65536):
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        kept = b"".join(line + b"\n" for line in lines if not _NATIVE_NOTICE.match(line))
        if pending and b"\r" in pending:   # a progress bar redraws its line without ending it: pass it on now
            kept, pending = kept + pending, b""
        if kept:
            os.write(target, kept)
    if pending and not _NATIVE_NOTICE.match(pending):
        os.write(target, pending)


# The activations of the network's layers, in order (see AutoencoderDetector._network).
ACTIVATIONS = ("relu", "sigmoid", "relu", "linear")


class DenseNetwork:
    """The trained network as NumPy arrays: ``predict(Z)`` evaluates the dense layers in float32, as
    Keras does on the CPU (equal to Keras' predictions within 1e-5, tested)."""

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray]], activations: tuple[str, ...] = ACTIVATIONS):
        if len(layers) != len(activations):
            raise ValueError(f"{len(layers)} layers but {len(activations)} activations")
        self.layers = [(np.asarray(w, dtype=np.float32), np.asarray(b, dtype=np.float32)) for w, b in layers]
        self.activations = activations

    @classmethod
    def from_keras(cls, model) -> DenseNetwork:
        return cls([(layer.get_weights()[0], layer.get_weights()[1]) for layer in model.layers])

    def predict(self, Z: np.ndarray) -> np.ndarray:
        """(n, n_features) reconstructions of scaled rows Z (n, n_features), as float64."""
        out: np.ndarray = np.asarray(Z, dtype=np.float32)
        for (weights, bias), activation in zip(self.layers, self.activations, strict=True):
            out = out @ weights + bias
            if activation == "relu":
                out = np.maximum(out, 0.0)
            elif activation == "sigmoid":
                out = 1.0 / (1.0 + np.exp(-out))
        return out.astype(np.float64)

    def save(self, path: Path) -> None:
        arrays = {f"{kind}{i}": array for i, (weights, bias) in enumerate(self.layers)
                  for kind, array in (("w", weights), ("b", bias))}
        np.savez(path, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path) -> DenseNetwork:
        """Read what ``save`` wrote; missing arrays or layers that do not chain are a ConfigError."""
        try:
            with np.load(path, allow_pickle=False) as arrays:
                layers = [(arrays[f"w{i}"], arrays[f"b{i}"]) for i in range(len(ACTIVATIONS))]
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"cannot read the autoencoder's weights: {exc}", path=str(path),
                              hint="train the model again") from None
        width = layers[0][0].shape[0] if layers[0][0].ndim == 2 else -1
        for weights, bias in layers:
            if weights.ndim != 2 or weights.shape[0] != width or bias.shape != (weights.shape[1],):
                raise ConfigError("the autoencoder's layers do not fit together", path=str(path),
                                  hint="train the model again")
            width = weights.shape[1]
        return cls(layers)


class AutoencoderDetector:
    """Dense autoencoder (n -> hidden -> bottleneck -> hidden -> n) over robust-scaled features.

    Trained with the Huber loss: attackers in the training clients have huge scaled errors, and under a
    squared loss they dominate the gradient, so a small network learns them first (measured on 69 and
    136 planted clients: the three attackers had the lowest reconstruction errors of all). The Huber
    loss bounds their pull and the network learns the bulk of the traffic instead.

    ``score_samples`` returns each client's mean squared reconstruction error over the scaled
    features (>= 0, higher = more anomalous). ``threshold_`` is the THRESHOLD_QUANTILE of the
    training errors; ``feature_errors`` gives the per-feature squared error used for explanations.
    """

    name = "autoencoder"

    def __init__(self, hidden: int = 16, bottleneck: int = 4, epochs: int = 60, batch_size: int = 128,
                 patience: int = 5, learning_rate: float = 3e-3, min_scale: list[float] | None = None,
                 random_state: int = 0) -> None:
        self.hidden = hidden
        self.bottleneck = bottleneck
        self.epochs = epochs
        self.batch_size = batch_size
        self.patience = patience
        self.learning_rate = learning_rate
        self.min_scale = min_scale  # per feature: the smallest spread worth scaling by (None: MIN_SPREAD)
        self.random_state = random_state

    def fit(self, X: np.ndarray) -> AutoencoderDetector:
        """Fit the scaler and the network on X (n_clients, n_features); returns self."""
        keras = _keras()
        keras.utils.set_random_seed(self.random_state)
        _deterministic_ops()
        self.center_ = np.median(X, axis=0)
        q75, q25 = np.percentile(X, [75, 25], axis=0)
        floor = np.asarray(self.min_scale, dtype=np.float64) if self.min_scale is not None else MIN_SPREAD
        self.scale_ = np.maximum(q75 - q25, np.maximum(floor, MIN_SPREAD))
        train, valid = _split(self._scaled(X), self.random_state)
        repeat = max(1, -(-EPOCH_ROWS // len(train)))
        rows = np.tile(train, (repeat, 1))
        steps = -(-min(len(rows), EPOCH_MAX_ROWS) // self.batch_size)
        self.model_ = self._network(keras, train.shape[1], steps_per_execution=steps)
        stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=self.patience, restore_best_weights=True)
        # big tables: an "epoch" is the next EPOCH_MAX_ROWS of the endlessly reshuffled rows, so training
        # time stops growing with the clients (100k clients: 700 steps an epoch, now 128) while early
        # stopping still checks the validation loss every 16k rows.
        # small tables are repeated so that an epoch is at least EPOCH_ROWS rows: Keras' per-epoch overhead
        # dominates otherwise, and early stopping then sees a comparable amount of training per epoch
        with _native_stderr_silenced(not log.isEnabledFor(logging.DEBUG)):
            history = self.model_.fit(_batches(rows, self.batch_size, self.random_state),
                                      steps_per_epoch=steps, epochs=self.epochs,
                                      validation_data=_batches(valid, len(valid), repeat=False),
                                      shuffle=False, verbose=0, callbacks=[stop])  # the dataset shuffles
        self.epochs_run_ = len(history.history["loss"])
        self.network_ = DenseNetwork.from_keras(self.model_)
        self.threshold_ = float(np.quantile(self.score_samples(X), THRESHOLD_QUANTILE))
        log.debug("autoencoder: %d epochs, threshold %.4g", self.epochs_run_, self.threshold_)
        return self

    def _network(self, keras, n_features: int, steps_per_execution: int = 1):
        layers = keras.layers
        init = keras.initializers.GlorotUniform(seed=self.random_state)
        model = keras.Sequential([
            keras.Input(shape=(n_features,)),
            layers.Dense(self.hidden, activation="relu", kernel_initializer=init),
            layers.Dense(self.bottleneck, activation="sigmoid", kernel_initializer=init),
            layers.Dense(self.hidden, activation="relu", kernel_initializer=init),
            layers.Dense(n_features, activation="linear", kernel_initializer=init),
        ])
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=self.learning_rate),
                      loss=keras.losses.Huber(delta=HUBER_DELTA), steps_per_execution=steps_per_execution)
        return model

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        return np.clip((X - self.center_) / self.scale_, -CLIP, CLIP).astype(np.float32)

    def _reconstruct(self, Z: np.ndarray) -> np.ndarray:
        return self.network_.predict(Z)

    def feature_errors(self, X: np.ndarray) -> np.ndarray:
        """(n_clients, n_features) squared reconstruction error per scaled feature."""
        Z = self._scaled(X)
        return (self._reconstruct(Z) - Z) ** 2

    def unexplained_errors(self, X: np.ndarray) -> np.ndarray:
        """(n_clients, n_features) squared error where the client is further from the median client than
        its reconstruction (0 elsewhere): the deviations the network could not reproduce."""
        Z = self._scaled(X)
        reconstructed = self._reconstruct(Z)
        return np.where(np.abs(Z) > np.abs(reconstructed), (reconstructed - Z) ** 2, 0.0)

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """Mean squared reconstruction error per client (n_clients,), higher = more anomalous."""
        return self.feature_errors(X).mean(axis=1)

    def save(self, directory: Path) -> None:
        """Write ``autoencoder.npz`` (the network's weights, which scoring reads), ``autoencoder.keras``
        (the same network for Keras) and ``autoencoder.json`` (scaler, threshold)."""
        self.network_.save(directory / "autoencoder.npz")
        if hasattr(self, "model_"):   # a detector loaded from its weights has no Keras model to write
            self.model_.save(directory / "autoencoder.keras")
        state = {"params": self.get_params(), "center": self.center_.tolist(), "scale": self.scale_.tolist(),
                 "threshold": self.threshold_, "epochs_run": self.epochs_run_}
        (directory / "autoencoder.json").write_text(json.dumps(state, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> AutoencoderDetector:
        """Load what ``save`` wrote: the weights from ``autoencoder.npz`` without importing TensorFlow.
        A model saved before that file existed is read with Keras, whose safe mode refuses serialized
        Python code (lambdas)."""
        state = json.loads((directory / "autoencoder.json").read_text(encoding="utf-8"))
        detector = cls(**state["params"])
        if (directory / "autoencoder.npz").is_file():
            detector.network_ = DenseNetwork.load(directory / "autoencoder.npz")
        else:
            keras = _keras()
            detector.model_ = keras.models.load_model(directory / "autoencoder.keras", safe_mode=True)
            detector.network_ = DenseNetwork.from_keras(detector.model_)
        detector.center_, detector.scale_ = np.array(state["center"]), np.array(state["scale"])
        detector.threshold_, detector.epochs_run_ = float(state["threshold"]), int(state["epochs_run"])
        return detector

    def get_params(self) -> dict[str, int | float | list[float] | None]:
        return {"hidden": self.hidden, "bottleneck": self.bottleneck, "epochs": self.epochs,
                "batch_size": self.batch_size, "patience": self.patience, "learning_rate": self.learning_rate,
                "min_scale": self.min_scale, "random_state": self.random_state}


def _batches(rows: np.ndarray, size: int, seed: int | None = None, repeat: bool = True):
    """(input, target) batches of ``rows``, endless unless ``repeat`` is false, reshuffled every pass
    when ``seed`` is given.

    Fitting from this one repeated dataset with ``steps_per_epoch`` lets Keras keep a single iterator
    for the whole fit; given arrays, it builds new tf.data iterators every epoch for training and
    validation, ~13 ms each, most of the training time on a few thousand clients.
    """
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((rows, rows))
    if seed is not None:
        data = data.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    return data.batch(size).repeat() if repeat else data.batch(size)


def _split(Z: np.ndarray, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows): a seeded VALIDATION_SHARE hold-out; tiny tables validate on themselves."""
    if len(Z) < 20:
        return Z, Z
    order = np.random.default_rng(random_state).permutation(len(Z))
    cut = max(2, int(len(Z) * VALIDATION_SHARE))
    return Z[order[cut:]], Z[order[:cut]]


def _deterministic_ops() -> None:
    """Make TensorFlow's CPU kernels deterministic (same seed, same weights, same scores)."""
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()


def versions() -> dict[str, str]:
    """Versions of keras and tensorflow, for a saved model's metadata."""
    keras = _keras()
    import tensorflow as tf

    return {"keras": keras.__version__, "tensorflow": tf.__version__}
