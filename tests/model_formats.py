"""Models as an earlier log_analyser saved them: format 1 held the scaler and the forest as
iforest.skops (format 2 holds them as iforest.npz arrays); this version still reads both."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from log_analyser_core import pipeline
from log_analyser_core.detectors import model_store


def train_both(sources: Sequence[str], folder: Path, settings: pipeline.Settings) -> tuple[Path, Path]:
    """One training saved in both formats: (the format 1 model, the format 2 model) under ``folder``."""
    import skops.io

    save = model_store.save

    def save_both(baseline, directory, training):
        save(baseline, folder / "format-2", training)
        old = save(baseline, directory, training)
        detector = baseline.scale_model
        scaler, fitted = detector.local()
        params = {"n_estimators": detector.n_estimators, "max_samples": detector.max_samples,
                  "random_state": detector.random_state}
        skops.io.dump({"scaler": scaler, "forest": fitted, "params": params}, old / "iforest.skops")
        (old / "iforest.npz").unlink()
        metadata = json.loads((old / "model.json").read_text())
        (old / "model.json").write_text(json.dumps({**metadata, "format_version": 1}))
        return old

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model_store, "save", save_both)
        pipeline.train(list(sources), str(folder / "format-1"), settings)
    return folder / "format-1", folder / "format-2"
