"""The Isolation Forest's scikit-learn side: fitting it, its scores and its path contributions, each
a function of the fitted scaler and forest; and ``Trees``, the same fitted scaler and forest as plain
arrays, which a saved model is read into and scored with in NumPy alone (no scikit-learn import).

NumPy only at import, and nothing of the pipeline: the process that holds a run's forest
(forest_process) imports this module and scikit-learn alone.

Path contributions (Saabas-style, on path length): in every tree, each split on a client's path
changes the expected path length of that client; the change is credited to the split's feature.
Shorter paths mean more anomalous, so a feature's contribution is the path length it removed,
averaged over trees (in splits; the contributions sum to E[h] - h(x)).
"""
from __future__ import annotations

import functools
import json
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
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
    """c(n) of Liu et al.: the mean path length of an unsuccessful BST search among n points, in
    scikit-learn's own arithmetic (Trees.scores equals its scores to the bit)."""
    n = np.asarray(n, dtype=np.float64)
    harmonic = np.log(np.maximum(n - 1, 1)) + np.euler_gamma
    c = 2.0 * harmonic - 2.0 * (n - 1) / np.maximum(n, 1)
    return np.where(n > 2, c, np.where(n == 2, 1.0, 0.0))


def path_contributions(scaler: RobustScaler, forest: IsolationForest, X: np.ndarray) -> np.ndarray:
    """(n_clients, n_features) path length removed by each feature, averaged over the trees.

    Higher = the feature isolated the client faster (more anomalous). Trees.contributions, on the
    fitted scaler and forest's arrays."""
    return Trees.of(scaler, forest).contributions(X)


TREES_FILE = "iforest.npz"   # a model's forest as Trees (model_store); earlier models hold iforest.skops
TREE_ROWS = 4096   # rows walked through every tree at once: a few rows x trees arrays of 6.5 MB each (200 trees)
_NODE_ARRAYS = ("left", "right", "feature", "threshold", "missing_left", "samples")


def saved_as_trees(directory: str | Path) -> bool:
    """Whether the model in ``directory`` holds its forest as Trees (TREES_FILE): a run with it scores
    in NumPy alone, with no forest process and no scikit-learn import."""
    return (Path(directory) / TREES_FILE).is_file()


@dataclass(frozen=True)
class Trees:
    """A fitted RobustScaler and IsolationForest as arrays: what scoring and path contributions read.

    The nodes of every tree, one tree after another (``roots``: each tree's first node): ``left`` and
    ``right`` children (-1 at a leaf; a child's number is above its parent's), the ``feature`` and
    ``threshold`` each inner node splits on, where a missing value goes (``missing_left``) and the
    training ``samples`` that reached the node. ``scores`` equals ``forest_scores(forest,
    scaler.transform(X))``, and ``contributions`` the same attribution computed over scikit-learn's
    own decision paths, to the bit (tests/test_forest_trees.py): the same comparisons (on the rows
    as float32, as scikit-learn's trees read them) and the same sums in the same order."""

    center: np.ndarray
    scale: np.ndarray
    max_samples: int
    roots: np.ndarray
    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    missing_left: np.ndarray
    samples: np.ndarray
    params: dict = field(default_factory=dict)

    @classmethod
    def of(cls, scaler: RobustScaler, forest: IsolationForest, params: dict | None = None) -> Trees:
        """The arrays of a fitted scaler and forest (every feature in every tree, as ``fit`` makes it)."""
        width = forest.n_features_in_
        assert forest._max_features == width, "fit() gives every tree every feature"
        trees = [estimator.tree_ for estimator in forest.estimators_]
        roots = np.cumsum([0] + [tree.node_count for tree in trees[:-1]])

        def joined(get, offset: bool = False) -> np.ndarray:
            parts = [np.asarray(get(tree)) for tree in trees]
            if offset:   # children numbered across the trees; a leaf keeps -1
                parts = [np.where(part == -1, -1, part + root) for part, root in zip(parts, roots, strict=True)]
            return np.concatenate(parts)

        return cls(center=np.asarray(scaler.center_, dtype=np.float64),
                   scale=np.asarray(scaler.scale_, dtype=np.float64), max_samples=int(forest.max_samples_),
                   roots=roots.astype(np.int64),
                   left=joined(lambda t: t.children_left, True).astype(np.int64),
                   right=joined(lambda t: t.children_right, True).astype(np.int64),
                   feature=joined(lambda t: t.feature).astype(np.int64),
                   threshold=joined(lambda t: t.threshold).astype(np.float64),
                   missing_left=joined(lambda t: t.missing_go_to_left).astype(bool),
                   samples=joined(lambda t: t.n_node_samples).astype(np.int64), params=dict(params or {}))

    def save(self, path: Path) -> None:
        np.savez(path, center=self.center, scale=self.scale, max_samples=np.int64(self.max_samples),
                 roots=self.roots, params=np.array(json.dumps(self.params)),
                 **{name: getattr(self, name) for name in _NODE_ARRAYS})

    @classmethod
    def load(cls, path: Path, width: int) -> Trees:
        """Read ``path`` (written by save; NumPy arrays, nothing pickled), checked: every array of the
        type and shape save writes, finite, every child after its parent in the same tree, every
        split on one of ``width`` features. Refused otherwise, so that a damaged file is an error
        here and walking the trees always ends."""
        try:
            with np.load(path, allow_pickle=False) as arrays:
                absent = [key for key in ("center", "scale", "max_samples", "roots", "params", *_NODE_ARRAYS)
                          if key not in arrays.files]
                if absent:
                    raise Refused(f"damaged model: no {', '.join(absent)} array")
                loaded = {key: np.asarray(arrays[key]) for key in arrays.files}
            params = json.loads(str(loaded.pop("params")))
        except Refused:
            raise
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise Refused(f"damaged model: cannot read it ({type(exc).__name__})") from None
        if not isinstance(params, dict):
            raise Refused("damaged model: 'params' is not a mapping")
        problem = _trees_problem(loaded, width)
        if problem:
            raise Refused(f"damaged model: {problem}")
        return cls(center=loaded["center"].astype(np.float64), scale=loaded["scale"].astype(np.float64),
                   max_samples=int(loaded["max_samples"]), roots=loaded["roots"].astype(np.int64),
                   params=params, **{name: loaded[name].astype(bool if name == "missing_left" else
                                                               np.float64 if name == "threshold" else np.int64)
                                     for name in _NODE_ARRAYS})

    def scores(self, X: np.ndarray) -> np.ndarray:
        """scikit-learn's ``score_samples`` of the scaled rows (higher = more normal), as forest_scores."""
        depths = np.zeros(len(X))
        value = self._leaf_values

        def block(start: int) -> None:
            leaves = self._walk(self._scaled(X[start:start + TREE_ROWS]))
            part = depths[start:start + TREE_ROWS]
            for tree in range(len(self.roots)):   # tree by tree, as scikit-learn adds them up
                part += value[leaves[:, tree]]
        starts = range(0, len(X), TREE_ROWS)
        if len(X) < SPLIT_ROWS:
            for start in starts:
                block(start)
        else:   # blocks on two threads (NumPy's steps over big arrays release the GIL), as forest_scores
            with ThreadPoolExecutor(max_workers=2, thread_name_prefix="trees") as pool:
                list(pool.map(block, starts))
        denominator = len(self.roots) * average_path_length(np.array([self.max_samples]))[0]
        return -(2 ** (-np.divide(depths, denominator, out=np.ones_like(depths), where=denominator != 0)))

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """(n_rows, n_features): the path length each feature's splits removed on the row's path
        (E(parent) - 1 - E(child) per step, see the module's docstring), averaged over the trees."""
        Z = self._scaled(X)
        removed = self._removed
        total = np.zeros(X.shape)
        rows = np.arange(len(X))
        for root in self.roots:
            credit = np.zeros(X.shape)
            node = np.full(len(X), root)
            while True:
                inner = self.left[node] != -1
                if not inner.any():
                    break
                at, parent = rows[inner], node[inner]
                child = self._step(Z, at, parent)
                np.add.at(credit, (at, self.feature[parent]), removed[child])
                node[inner] = child
            total += credit
        return total / len(self.roots)

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        """The rows as the trees read them: RobustScaler.transform's arithmetic, then float32."""
        Z = np.array(X, dtype=np.float64)
        Z -= self.center
        Z /= self.scale
        return Z.astype(np.float32)

    def _walk(self, Z: np.ndarray) -> np.ndarray:
        """The leaf each row reaches in each tree: (rows, trees). Every (row, tree) pair takes one step a
        level, down to the deepest leaf; a leaf is its own child (``_looped``), so no pair is picked out."""
        children, feature, threshold, missing_left, levels = self._looped
        width = Z.shape[1]
        flat = Z.ravel()
        node = np.tile(self.roots, len(Z))
        base = np.repeat(np.arange(len(Z)) * width, len(self.roots))
        missing = bool(np.isnan(flat).any())
        for _ in range(levels):
            value = flat.take(base + feature.take(node))
            go_right = ~(value <= threshold.take(node))
            if missing:   # NaN compares false: it goes where the tree sends a missing value
                go_right = np.where(np.isnan(value), ~missing_left.take(node), go_right)
            node = children.take(2 * node + go_right)
        return node.reshape(len(Z), len(self.roots))

    def _step(self, Z: np.ndarray, rows: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        """The child of each inner node in ``nodes`` that the row in ``rows`` goes to."""
        value = Z[rows, self.feature[nodes]]
        missing = np.isnan(value)
        left = np.where(missing, self.missing_left[nodes], value <= self.threshold[nodes])
        return np.where(left, self.left[nodes], self.right[nodes])

    @functools.cached_property
    def _looped(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        """The node arrays as the walk reads them: each node's left and right child side by side (node
        n's at 2n and 2n + 1), a leaf its own child both ways (on feature 0, threshold +inf); and the
        number of steps from a root to the deepest leaf."""
        leaf = self.left == -1
        number = np.arange(len(self.left))
        children = np.stack([np.where(leaf, number, self.left), np.where(leaf, number, self.right)], axis=1).ravel()
        return (children, np.where(leaf, 0, self.feature), np.where(leaf, np.inf, self.threshold), self.missing_left,
                int(self._depths.max()) - 1)

    @functools.cached_property
    def _leaf_values(self) -> np.ndarray:
        """Per node, what reaching it adds to a row's path length, as scikit-learn computes it: the
        node's depth (the root's is 1) plus c(samples), minus 1."""
        return self._depths + average_path_length(self.samples) - 1.0

    @functools.cached_property
    def _depths(self) -> np.ndarray:
        depth = np.zeros(len(self.left), dtype=np.int64)
        level, nodes = 1, self.roots
        while len(nodes):
            depth[nodes] = level
            inner = nodes[self.left[nodes] != -1]
            nodes, level = np.concatenate([self.left[inner], self.right[inner]]), level + 1
        return depth

    @functools.cached_property
    def expected_lengths(self) -> np.ndarray:
        """Per node, the expected path length below it of the training samples that reached it: c(n)
        at a leaf, filled bottom-up (children after parents) at inner nodes."""
        counts = self.samples
        expected = average_path_length(counts)
        for node in np.flatnonzero(self.left != -1)[::-1]:
            n_left, n_right = counts[self.left[node]], counts[self.right[node]]
            expected[node] = 1.0 + (n_left * expected[self.left[node]] + n_right * expected[self.right[node]]) \
                / counts[node]
        return expected

    @functools.cached_property
    def _removed(self) -> np.ndarray:
        """Per child node, the expected path length its parent's split removed: E(parent) - 1 - E(child)."""
        expected, inner = self.expected_lengths, np.flatnonzero(self.left != -1)
        removed = np.zeros(len(expected))
        removed[self.left[inner]] = expected[inner] - 1.0 - expected[self.left[inner]]
        removed[self.right[inner]] = expected[inner] - 1.0 - expected[self.right[inner]]
        return removed


def _trees_problem(arrays: dict[str, np.ndarray], width: int) -> str | None:
    """What is wrong with a saved forest's arrays, or None."""
    for key in ("center", "scale"):
        values = arrays[key]
        if values.shape != (width,) or not np.issubdtype(values.dtype, np.number) or not np.isfinite(values).all():
            return f"'{key}' is not {width} numbers"
    if not (arrays["scale"] != 0).all():
        return "'scale' holds a zero"
    if arrays["max_samples"].shape != () or not np.issubdtype(arrays["max_samples"].dtype, np.integer) \
            or int(arrays["max_samples"]) < 1:
        return "'max_samples' is not a positive whole number"
    nodes = arrays["left"].shape
    for key in _NODE_ARRAYS:
        values = arrays[key]
        kind = np.bool_ if key == "missing_left" else np.floating if key == "threshold" else np.integer
        if values.ndim != 1 or values.shape != nodes or not values.size or not np.issubdtype(values.dtype, kind):
            return f"'{key}' is not one {kind.__name__} value per node"
    roots = arrays["roots"]
    if roots.ndim != 1 or not roots.size or not np.issubdtype(roots.dtype, np.integer) or roots[0] != 0 \
            or (np.diff(roots) <= 0).any() or roots[-1] >= nodes[0]:
        return "'roots' are not the increasing first nodes of the trees"
    left, right, number = arrays["left"], arrays["right"], np.arange(nodes[0])
    inner = left != -1
    tree = np.searchsorted(roots, number, side="right") - 1
    if ((right != -1) != inner).any():
        return "a node has one child"
    children = np.concatenate([left[inner], right[inner]])
    parents = np.concatenate([number[inner], number[inner]])
    if (children <= parents).any() or (children >= nodes[0]).any() or (tree[children] != tree[parents]).any():
        return "a child is not after its parent in the same tree"
    feature, threshold = arrays["feature"][inner], arrays["threshold"][inner]
    if (feature < 0).any() or (feature >= width).any():
        return f"a split is not on one of the {width} features"
    if not np.isfinite(threshold).all():
        return "a split's threshold is not a number"
    if (arrays["samples"] < 1).any():
        return "a node holds no training samples"
    return None
