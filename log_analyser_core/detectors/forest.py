"""The Isolation Forest's scikit-learn side: fitting it, its scores and its path contributions, each
a function of the fitted scaler and forest.

NumPy only at import, and nothing of the pipeline: the process that holds a run's forest
(forest_process) imports this module and scikit-learn alone.

Path contributions (Saabas-style, on path length): in every tree, each split on a client's path
changes the expected path length of that client; the change is credited to the split's feature.
Shorter paths mean more anomalous, so a feature's contribution is the path length it removed,
averaged over trees (in splits; the contributions sum to E[h] - h(x)).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sklearn.ensemble import IsolationForest
    from sklearn.preprocessing import RobustScaler

SPLIT_ROWS = 50_000   # rows from which a forest scores two halves of them on two threads
# The only types a model's .skops file may contain beyond skops' defaults.
TRUSTED_SKOPS_TYPES = ("sklearn.tree._tree.Tree",)


class Refused(Exception):
    """A saved forest that cannot be used: ``str()`` says why; ``trust`` when it names untrusted types."""

    def __init__(self, message: str, trust: bool = False) -> None:
        super().__init__(message)
        self.trust = trust


def fit(X: np.ndarray, n_estimators: int, max_samples: int | str,
        random_state: int) -> tuple[RobustScaler, IsolationForest]:
    """A robust scaler fitted on ``X`` and an Isolation Forest fitted on the scaled ``X``."""
    from sklearn.ensemble import IsolationForest
    from sklearn.preprocessing import RobustScaler

    scaler = RobustScaler().fit(X)
    forest = IsolationForest(n_estimators=n_estimators, max_samples=max_samples, random_state=random_state,
                             n_jobs=1)
    forest.fit(scaler.transform(X))
    return scaler, forest


def load(path: str, width: int) -> tuple[RobustScaler, IsolationForest, dict]:
    """(scaler, forest, the detector's parameters) read from a model's ``iforest.skops`` (written by
    model_store.save), checked: only scikit-learn's own types, a RobustScaler and an IsolationForest,
    both fitted on ``width`` features. Refused otherwise (and for a file that cannot be read)."""
    import skops.io
    from sklearn.ensemble import IsolationForest
    from sklearn.preprocessing import RobustScaler

    try:
        untrusted = [t for t in skops.io.get_untrusted_types(file=path) if t not in TRUSTED_SKOPS_TYPES]
        if untrusted:
            raise Refused(f"the model file contains types that are not trusted: {', '.join(untrusted)}", trust=True)
        state = skops.io.load(path, trusted=list(TRUSTED_SKOPS_TYPES))
    except Refused:
        raise
    except Exception as exc:   # skops raises zip, JSON, type and attribute errors of every kind for a damaged file
        raise Refused(f"damaged model: cannot read it ({type(exc).__name__})") from None
    if not isinstance(state, dict) or not isinstance(state.get("params"), dict):
        raise Refused("damaged model: not a scaler, forest and parameters")
    scaler, forest_model = state.get("scaler"), state.get("forest")
    if not isinstance(scaler, RobustScaler) or not isinstance(forest_model, IsolationForest):
        raise Refused(f"damaged model: expected a RobustScaler and an IsolationForest, found "
                      f"{type(scaler).__name__} and {type(forest_model).__name__}")
    for fitted in (scaler, forest_model):
        if getattr(fitted, "n_features_in_", None) != width:
            raise Refused(f"damaged model: {type(fitted).__name__} was fitted on "
                          f"{getattr(fitted, 'n_features_in_', 'no')} features, model.json lists {width}")
    return scaler, forest_model, state["params"]


def forest_scores(forest: IsolationForest, X: np.ndarray) -> np.ndarray:
    """``forest.score_samples(X)``, the two halves of the rows on two threads when there are many
    (a tree's walk releases the GIL). Each row's score is its own, summed over the trees in the
    same order either way: the same scores as one call."""
    if len(X) < SPLIT_ROWS:
        return forest.score_samples(X)
    half = len(X) // 2
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="forest") as pool:
        return np.concatenate(list(pool.map(forest.score_samples, (X[:half], X[half:]))))


def average_path_length(n: np.ndarray) -> np.ndarray:
    """c(n) of Liu et al.: the mean path length of an unsuccessful BST search among n points."""
    n = np.asarray(n, dtype=np.float64)
    harmonic = np.log(np.maximum(n - 1, 1)) + np.euler_gamma
    c = 2.0 * harmonic - 2.0 * (n - 1) / np.maximum(n, 1)
    return np.where(n > 2, c, np.where(n == 2, 1.0, 0.0))


def expected_depths(tree) -> np.ndarray:
    """Expected remaining path length below each node of a fitted sklearn tree (training samples)."""
    left, right, counts = tree.children_left, tree.children_right, tree.n_node_samples
    expected = average_path_length(counts)  # leaves keep c(n); internal nodes are filled bottom-up
    for node in range(tree.node_count - 1, -1, -1):  # children always have larger ids than parents
        if left[node] != -1:
            n_left, n_right = counts[left[node]], counts[right[node]]
            expected[node] = 1.0 + (n_left * expected[left[node]] + n_right * expected[right[node]]) / counts[node]
    return expected


def path_contributions(scaler: RobustScaler, forest: IsolationForest, X: np.ndarray) -> np.ndarray:
    """(n_clients, n_features) path length removed by each feature, averaged over the trees.

    Higher = the feature isolated the client faster (more anomalous).
    """
    Z = scaler.transform(X)
    total = np.zeros(X.shape)
    for tree_model, columns in zip(forest.estimators_, forest.estimators_features_, strict=True):
        tree = tree_model.tree_
        expected = expected_depths(tree)
        parent = np.full(tree.node_count, -1)
        for children in (tree.children_left, tree.children_right):
            inner = children != -1
            parent[children[inner]] = np.flatnonzero(inner)
        child = np.flatnonzero(parent >= 0)
        # stepping from parent to child changes the expected path length by 1 + E(child) - E(parent)
        removed = expected[parent[child]] - 1.0 - expected[child]
        feature = np.asarray(columns)[tree.feature[parent[child]]]
        paths = tree_model.decision_path(Z[:, columns]).tocsc()[:, child]
        credit = np.zeros((len(child), X.shape[1]))
        credit[np.arange(len(child)), feature] = removed
        total += paths @ credit
    return total / len(forest.estimators_)
