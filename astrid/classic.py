"""Traditional machine learning on candidate features, and the score ensemble.

* :class:`RealBogusClassifier` - a gradient-boosted (or random-forest)
  real/bogus classifier on the hand features of
  :func:`astrid.detect.candidate_features`, calibrated by cross-validation.
  It saves with :mod:`skops.io` and loads only scikit-learn types, never
  arbitrary pickled code.
* :class:`EnsembleScorer` - logistic-regression stacking of several calibrated
  scores (U-Net ``score``, classifier probability) on a validation split; a
  logistic model fitted by log loss is calibrated by construction, and its few
  coefficients save as plain JSON.
* :class:`KindClassifier` - the same gradient-boosted design for the kind of a
  candidate (supernova, variable, moving, each artifact, background); it takes
  any extra feature columns (temporal context, colour) and keeps NaN as
  "missing" (no history yet) instead of refusing it.
* :func:`feature_ablation` - the kind classifier trained on base features and
  on base plus each named set of extra columns (colour, temporal context, both),
  scored on a test table side by side (:class:`FeatureAblation`).

Fit the classifier on the training split, the ensemble on the validation
split, and evaluate both on the test split (:mod:`astrid.metrics`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from astrid import metrics
from astrid.classes import TRANSIENT_KINDS

__all__ = ["EnsembleScorer", "FeatureAblation", "KindClassifier", "RealBogusClassifier", "feature_ablation"]

_FORMAT = "astrid.RealBogusClassifier"
_FORMAT_VERSION = 1
_MODELS = ("hist_gradient_boosting", "random_forest")
_CALIBRATIONS = ("isotonic", "sigmoid", None)


def _matrix(
    features: pd.DataFrame | ArrayLike,
    names: Sequence[str] | None,
    what: str = "features",
    *,
    allow_nan: bool = False,
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Feature matrix and its column names, validated (NaN allowed as "missing" with ``allow_nan``)."""
    if isinstance(features, pd.DataFrame):
        if names is None:
            numeric = features.select_dtypes(include=["number", "bool"])
            names = tuple(str(c) for c in numeric.columns)
        missing = [n for n in names if n not in features.columns]
        if missing:
            msg = f"{what} lacks columns {missing}"
            raise ValueError(msg)
        x = features[list(names)].to_numpy(dtype=float)
    else:
        x = np.asarray(features, dtype=float)
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2:
            msg = f"{what} must be a 2-D array or a DataFrame, got shape {x.shape}"
            raise ValueError(msg)
        if names is None:
            names = tuple(f"f{i}" for i in range(x.shape[1]))
        elif len(names) != x.shape[1]:
            msg = f"{what} has {x.shape[1]} columns, expected {len(names)} ({list(names)})"
            raise ValueError(msg)
    if x.shape[0] == 0 or x.shape[1] == 0:
        msg = f"{what} is empty (shape {x.shape})"
        raise ValueError(msg)
    ok = ~np.isinf(x) if allow_nan else np.isfinite(x)
    if not np.all(ok):
        bad = [n for n, good in zip(names, ok.all(axis=0), strict=True) if not good]
        msg = f"{what} contains {'' if allow_nan else 'NaN or '}infinite values in {bad}"
        raise ValueError(msg)
    return x, tuple(names)


def _labels(labels: ArrayLike, n: int, *, min_per_class: int = 1) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or y.size != n:
        msg = f"labels must be 1-D with {n} entries, got shape {y.shape}"
        raise ValueError(msg)
    if y.dtype != bool and not np.all(np.isin(y, (0, 1))):
        msg = "labels must hold booleans or 0/1 (1 = real)"
        raise ValueError(msg)
    y = y.astype(int)
    counts = np.bincount(y, minlength=2)
    if counts.min() < min_per_class:
        msg = (
            f"labels need at least {min_per_class} real and {min_per_class} bogus examples, "
            f"got {counts[1]} real and {counts[0]} bogus"
        )
        raise ValueError(msg)
    return y


def _thread_limit(n_threads: int | None) -> AbstractContextManager[Any]:
    """Limit OpenMP/BLAS threads to ``n_threads`` (threadpoolctl); ``None`` changes nothing."""
    if n_threads is None:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=int(n_threads))


def _check_common(classifier: Any) -> None:
    """Check a classifier's ``n_threads`` and freeze its ``features`` into a tuple."""
    n_threads = classifier.n_threads
    if n_threads is not None and (int(n_threads) != n_threads or n_threads < 1):
        msg = f"n_threads must be a positive integer or None, got {n_threads!r}"
        raise ValueError(msg)
    if classifier.features is not None:
        classifier.features = tuple(classifier.features)


def _trusted(untrusted: Sequence[str]) -> list[str]:
    """Refuse any type outside scikit-learn's own modules."""
    refused = [t for t in untrusted if not t.startswith("sklearn.")]
    if refused:
        msg = f"refusing to load untrusted types {refused}"
        raise ValueError(msg)
    return list(untrusted)


@dataclass
class RealBogusClassifier:
    """Calibrated real/bogus classifier on candidate features.

    Attributes
    ----------
    features : tuple of str, optional
        Columns to use; default every numeric column of the table given to
        :meth:`fit` (e.g. :data:`astrid.detect.FEATURE_COLUMNS`).
    model : {"hist_gradient_boosting", "random_forest"}
        The scikit-learn estimator.
    calibration : {"isotonic", "sigmoid", None}
        Probability calibration by :class:`sklearn.calibration.CalibratedClassifierCV`
        on ``cv`` stratified folds (each fold's model is calibrated on the part
        it did not see, and the folds are averaged). Isotonic needs a few
        hundred examples per class; use sigmoid below that. ``None`` keeps the
        raw probabilities.
    cv : int
        Number of calibration folds.
    seed : int
        Random state of the estimator and the folds (fixed: same data, same model).
    n_threads : int, optional
        Limit OpenMP/BLAS threads while fitting and predicting (threadpoolctl);
        1 is fastest on small tables, ``None`` leaves the libraries' default.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = np.r_[rng.normal(0, 1, (40, 2)), rng.normal(4, 1, (40, 2))]
    >>> y = np.r_[np.zeros(40), np.ones(40)]
    >>> clf = RealBogusClassifier(calibration="sigmoid", cv=3, n_threads=1).fit(x, y)
    >>> p = clf.predict_proba([[0.0, 0.0], [4.0, 4.0]])
    >>> bool(p[0] < 0.2 and p[1] > 0.8)
    True
    """

    features: tuple[str, ...] | None = None
    model: str = "hist_gradient_boosting"
    calibration: str | None = "isotonic"
    cv: int = 5
    seed: int = 0
    n_threads: int | None = None
    estimator_: Any = field(default=None, init=False, repr=False)
    feature_names_: tuple[str, ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        if self.model not in _MODELS:
            msg = f"model must be one of {_MODELS}, got {self.model!r}"
            raise ValueError(msg)
        if self.calibration not in _CALIBRATIONS:
            msg = f"calibration must be one of {_CALIBRATIONS}, got {self.calibration!r}"
            raise ValueError(msg)
        if int(self.cv) != self.cv or self.cv < 2:
            msg = f"cv must be an integer >= 2, got {self.cv!r}"
            raise ValueError(msg)
        _check_common(self)

    def _threads(self) -> AbstractContextManager[Any]:
        return _thread_limit(self.n_threads)

    def _estimator(self) -> Any:
        from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

        if self.model == "random_forest":
            return RandomForestClassifier(
                n_estimators=300, min_samples_leaf=2, random_state=self.seed, n_jobs=1
            )
        return HistGradientBoostingClassifier(random_state=self.seed)

    def fit(self, features: pd.DataFrame | ArrayLike, labels: ArrayLike) -> RealBogusClassifier:
        """Fit on a feature table and real (1) / bogus (0) labels.

        Parameters
        ----------
        features : pandas.DataFrame or array_like, shape (N, F)
            Finite features, one row per candidate.
        labels : array_like of bool, shape (N,)
            1 when the candidate is a genuine transient.

        Returns
        -------
        RealBogusClassifier
            ``self``, fitted.

        Raises
        ------
        ValueError
            On missing columns, non-finite features, empty input, bad labels
            or fewer than ``cv`` examples of a class.
        """
        x, names = _matrix(features, self.features)
        y = _labels(labels, len(x), min_per_class=self.cv if self.calibration else 1)
        estimator = self._estimator()
        if self.calibration is not None:
            from sklearn.calibration import CalibratedClassifierCV
            from sklearn.model_selection import StratifiedKFold

            folds = StratifiedKFold(int(self.cv), shuffle=True, random_state=self.seed)
            estimator = CalibratedClassifierCV(estimator, method=self.calibration, cv=folds)
        with self._threads():
            self.estimator_ = estimator.fit(x, y)
        self.feature_names_ = names
        return self

    def predict_proba(self, features: pd.DataFrame | ArrayLike) -> np.ndarray:
        """Return the calibrated probability that each candidate is real.

        Parameters
        ----------
        features : pandas.DataFrame or array_like, shape (N, F)
            Same columns as in :meth:`fit`.

        Returns
        -------
        numpy.ndarray
            ``(N,)`` probabilities in [0, 1].

        Raises
        ------
        ValueError
            If not fitted, or on missing columns / non-finite features.
        """
        if self.estimator_ is None:
            msg = "the classifier is not fitted; call fit first"
            raise ValueError(msg)
        x, _ = _matrix(features, self.feature_names_)
        with self._threads():
            return self.estimator_.predict_proba(x)[:, 1]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted classifier with :mod:`skops.io` (no pickle).

        Raises
        ------
        ValueError
            If not fitted.
        """
        import skops.io as sio

        if self.estimator_ is None:
            msg = "the classifier is not fitted; nothing to save"
            raise ValueError(msg)
        path = Path(path)
        state = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "params": {
                "features": None if self.features is None else list(self.features),
                "model": self.model,
                "calibration": self.calibration,
                "cv": int(self.cv),
                "seed": int(self.seed),
                "n_threads": self.n_threads,
            },
            "feature_names": list(self.feature_names_),
            "estimator": self.estimator_,
        }
        tmp = path.with_name(path.name + ".tmp")
        sio.dump(state, tmp)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> RealBogusClassifier:
        """Read a classifier written by :meth:`save`.

        Only types from scikit-learn's own modules are trusted; a file that
        needs anything else is refused.

        Raises
        ------
        FileNotFoundError
            When the file is missing.
        ValueError
            When the file needs untrusted types or is not a saved classifier.
        """
        import skops.io as sio

        path = Path(path)
        if not path.is_file():
            msg = f"classifier file not found: {path}"
            raise FileNotFoundError(msg)
        trusted = _trusted(sio.get_untrusted_types(file=path))
        state = sio.load(path, trusted=trusted)
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            msg = f"{path} is not a saved {_FORMAT}"
            raise ValueError(msg)
        if state.get("version") != _FORMAT_VERSION:
            msg = f"{path} has format version {state.get('version')}, expected {_FORMAT_VERSION}"
            raise ValueError(msg)
        params = dict(state["params"])
        if params["features"] is not None:
            params["features"] = tuple(params["features"])
        clf = cls(**params)
        clf.estimator_ = state["estimator"]
        clf.feature_names_ = tuple(state["feature_names"])
        return clf


@dataclass
class KindClassifier:
    """Gradient-boosted classifier of a candidate's kind on any feature columns.

    The multi-class sibling of :class:`RealBogusClassifier`: same feature
    handling (``features`` or every numeric column), fixed seed and thread
    limit, but NaN features are kept as *missing* -
    :class:`sklearn.ensemble.HistGradientBoostingClassifier` learns which way
    they go - so that rows without history (a first detection, a new alert)
    need no made-up fill value. Classes are weighted to balance their counts,
    so a rare kind (a comet, a bleed trail) is not swallowed by the common ones.

    Attributes
    ----------
    features : tuple of str, optional
        Columns to use; default every numeric column of the table given to
        :meth:`fit` (e.g. :data:`astrid.detect.FEATURE_COLUMNS` plus context or
        colour columns).
    max_iter : int
        Boosting iterations.
    balanced : bool
        Weight each class by the inverse of its frequency.
    seed : int
        Random state (fixed: same data, same model).
    n_threads : int, optional
        Limit OpenMP threads while fitting and predicting (threadpoolctl).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = np.r_[rng.normal(0, 1, (40, 2)), rng.normal(5, 1, (40, 2))]
    >>> x[::7, 1] = np.nan  # missing values are allowed
    >>> kinds = np.r_[["cosmic_ray"] * 40, ["supernova"] * 40]
    >>> clf = KindClassifier(n_threads=1).fit(x, kinds)
    >>> clf.predict([[0.0, 0.0], [5.0, np.nan]]).tolist()
    ['cosmic_ray', 'supernova']
    """

    features: tuple[str, ...] | None = None
    max_iter: int = 100
    balanced: bool = True
    seed: int = 0
    n_threads: int | None = None
    estimator_: Any = field(default=None, init=False, repr=False)
    feature_names_: tuple[str, ...] = field(default=(), init=False)
    classes_: tuple[str, ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        if int(self.max_iter) != self.max_iter or self.max_iter < 1:
            msg = f"max_iter must be a positive integer, got {self.max_iter!r}"
            raise ValueError(msg)
        _check_common(self)

    def fit(self, features: pd.DataFrame | ArrayLike, kinds: ArrayLike) -> KindClassifier:
        """Fit on a feature table and one kind name per row.

        Parameters
        ----------
        features : pandas.DataFrame or array_like, shape (N, F)
            Features, one row per candidate; NaN = missing, infinities are refused.
        kinds : array_like of str, shape (N,)
            The true kind of each candidate (e.g. a name of
            :data:`astrid.classes.CLASS_NAMES`).

        Returns
        -------
        KindClassifier
            ``self``, fitted.

        Raises
        ------
        ValueError
            On missing columns, infinite features, empty input, a length
            mismatch or fewer than two kinds.
        """
        from sklearn.ensemble import HistGradientBoostingClassifier

        x, names = _matrix(features, self.features, allow_nan=True)
        y = np.asarray(kinds, dtype=object).astype(str)
        if y.ndim != 1 or y.size != len(x):
            msg = f"kinds must be 1-D with {len(x)} entries, got shape {y.shape}"
            raise ValueError(msg)
        if np.unique(y).size < 2:
            msg = f"kinds need at least two different kinds, got {sorted(set(y))}"
            raise ValueError(msg)
        estimator = HistGradientBoostingClassifier(
            max_iter=int(self.max_iter), class_weight="balanced" if self.balanced else None,
            early_stopping=False, random_state=self.seed,
        )
        with _thread_limit(self.n_threads):
            self.estimator_ = estimator.fit(x, y)
        self.feature_names_ = names
        self.classes_ = tuple(str(c) for c in self.estimator_.classes_)
        return self

    def predict_proba(self, features: pd.DataFrame | ArrayLike) -> pd.DataFrame:
        """Return each candidate's probability of every kind.

        Returns
        -------
        pandas.DataFrame
            ``(N, K)``, one column per kind of :attr:`classes_`, rows summing to 1
            (index of ``features`` when it is a DataFrame).

        Raises
        ------
        ValueError
            If not fitted, or on missing columns / infinite features.
        """
        if self.estimator_ is None:
            msg = "the classifier is not fitted; call fit first"
            raise ValueError(msg)
        x, _ = _matrix(features, self.feature_names_, allow_nan=True)
        with _thread_limit(self.n_threads):
            p = self.estimator_.predict_proba(x)
        index = features.index if isinstance(features, pd.DataFrame) else None
        return pd.DataFrame(p, columns=list(self.classes_), index=index)

    def predict(self, features: pd.DataFrame | ArrayLike) -> np.ndarray:
        """Return the most probable kind of each candidate (``(N,)`` str).

        Raises
        ------
        ValueError
            As :meth:`predict_proba`.
        """
        p = self.predict_proba(features)
        return np.asarray(self.classes_, dtype=object)[np.argmax(p.to_numpy(), axis=1)].astype(str)


@dataclass
class FeatureAblation:
    """The kind classifier on base features and with each extra feature set (:func:`feature_ablation`).

    Attributes
    ----------
    summary : pandas.DataFrame
        One row per metric, one column per model (``base``, then each variant
        of ``extra``), then ``delta_<variant>`` (variant minus base) and ``n``
        (test candidates behind the row). Rows:

        ``type_macro_f1``
            macro-F1 over :data:`astrid.classes.TRANSIENT_KINDS` among the true
            transients the model calls a transient (the study's transient-type
            macro-F1, over true positives); ``n`` counts the true transients;
        ``type_macro_f1_all``
            the same macro-F1 over every candidate (an artifact typed as a
            supernova is a false supernova);
        ``recall/<kind>``
            share of the candidates of each true kind (artifacts and
            ``background`` included) given that kind;
        ``bogus_rejection``
            share of the candidates that are not transients called no transient;
        ``real_recall``
            share of the true transients called a transient (any transient kind).
    predictions : pandas.DataFrame
        The test rows' true ``kind`` and each model's predicted kind (index of
        the test table).
    columns : dict
        Model name -> its feature columns.
    classifiers : dict
        Model name -> fitted :class:`KindClassifier`.
    """

    summary: pd.DataFrame
    predictions: pd.DataFrame
    columns: dict[str, tuple[str, ...]]
    classifiers: dict[str, KindClassifier] = field(default_factory=dict, repr=False)


def _kind_metrics(true: np.ndarray, pred: np.ndarray, kinds: Sequence[str]) -> dict[str, tuple[float, int]]:
    """Return one model's :attr:`FeatureAblation.summary` rows: metric -> (value, candidates behind it)."""
    real, called = np.isin(true, TRANSIENT_KINDS), np.isin(pred, TRANSIENT_KINDS)
    typed = real & called
    out = {
        "type_macro_f1": (metrics.macro_f1(true[typed], pred[typed], TRANSIENT_KINDS) if typed.any()
                          else math.nan, int(real.sum())),
        "type_macro_f1_all": (metrics.macro_f1(true, pred, TRANSIENT_KINDS), true.size),
    }
    for kind in kinds:
        sel = true == kind
        out[f"recall/{kind}"] = (float(np.mean(pred[sel] == kind)), int(sel.sum()))
    out["bogus_rejection"] = (float(np.mean(~called[~real])) if (~real).any() else math.nan,
                              int((~real).sum()))
    out["real_recall"] = (float(np.mean(called[real])) if real.any() else math.nan, int(real.sum()))
    return out


def feature_ablation(
    train_table: pd.DataFrame,
    test_table: pd.DataFrame,
    *,
    base_columns: Sequence[str],
    extra: Mapping[str, Sequence[str]],
    kind_column: str = "kind",
    max_iter: int = 100,
    seed: int = 0,
    n_threads: int | None = 1,
) -> FeatureAblation:
    """Train the kind classifier with and without extra feature sets and compare them on a test table.

    One :class:`KindClassifier` is trained per model - ``base_columns`` alone
    (``base``), and ``base_columns`` plus each named set of ``extra`` (e.g.
    ``{"colour": COLOUR_FEATURES, "context": CONTEXT_COLUMNS,
    "colour+context": (*COLOUR_FEATURES, *CONTEXT_COLUMNS)}``) - on the same
    rows with the same seed, so the differences come from the columns alone.
    NaN extra values (a band not observed that night, no earlier epoch) are
    allowed: the classifier takes them as missing.

    Parameters
    ----------
    train_table, test_table : pandas.DataFrame
        One row per candidate with every column used and the true kind in
        ``kind_column`` (a transient kind, an artifact kind, or e.g.
        ``"background"`` for a noise peak), e.g. :func:`astrid.context.kind_table`
        of the train and test splits.
    base_columns : sequence of str
        Features of the base model (e.g. :data:`astrid.detect.FEATURE_COLUMNS`).
    extra : mapping of str to sequence of str
        Variant name -> columns added to ``base_columns`` for that model.
    kind_column : str
        Column of the true kinds.
    max_iter, seed, n_threads
        As for :class:`KindClassifier`.

    Returns
    -------
    FeatureAblation
        The summary table (metrics x models, deltas, counts), the test
        predictions and the fitted classifiers.

    Raises
    ------
    ValueError
        On empty column sets, a variant named ``base`` or repeating base
        columns, missing columns, empty tables, infinite features or fewer
        than two training kinds.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> def table(n):
    ...     kind = rng.choice(["supernova", "variable", "cosmic_ray"], n)
    ...     return pd.DataFrame({"kind": kind, "sharpness": rng.normal(0, 1, n) + 5 * (kind == "cosmic_ray"),
    ...                          "n_opposite_sign": np.where(kind == "variable", 2.0, 0.0)})
    >>> result = feature_ablation(table(300), table(200), base_columns=["sharpness"],
    ...                           extra={"context": ["n_opposite_sign"]})
    >>> list(result.summary.columns)
    ['base', 'context', 'delta_context', 'n']
    >>> bool(result.summary.loc["type_macro_f1", "delta_context"] > 0.3)
    True
    """
    base = tuple(base_columns)
    if not base:
        msg = "base_columns must name at least one column"
        raise ValueError(msg)
    if not isinstance(extra, Mapping) or not extra:
        msg = "extra must map at least one variant name to its columns"
        raise ValueError(msg)
    models = {"base": base}
    for name, columns in extra.items():
        columns = (columns,) if isinstance(columns, str) else tuple(columns)
        if name == "base" or not isinstance(name, str) or not name:
            msg = f"extra: variant names must be non-empty strings other than 'base', got {name!r}"
            raise ValueError(msg)
        if not columns:
            msg = f"extra[{name!r}] names no columns"
            raise ValueError(msg)
        overlap = sorted(set(base) & set(columns))
        if overlap:
            msg = f"extra[{name!r}] repeats base columns {overlap}"
            raise ValueError(msg)
        models[name] = base + columns
    needed = sorted({c for columns in models.values() for c in columns} | {kind_column})
    for label, table in (("train_table", train_table), ("test_table", test_table)):
        if not isinstance(table, pd.DataFrame) or table.empty:
            msg = f"{label} must be a non-empty DataFrame"
            raise ValueError(msg)
        missing = [c for c in needed if c not in table.columns]
        if missing:
            msg = f"{label} lacks columns {missing}"
            raise ValueError(msg)
    y_train = train_table[kind_column].to_numpy(dtype=object).astype(str)
    y_test = test_table[kind_column].to_numpy(dtype=object).astype(str)
    kinds = sorted(set(y_test))
    classifiers, predictions, scores = {}, {}, {}
    for name, columns in models.items():
        clf = KindClassifier(features=columns, max_iter=max_iter, seed=seed, n_threads=n_threads)
        classifiers[name] = clf.fit(train_table, y_train)
        predictions[name] = clf.predict(test_table)
        scores[name] = _kind_metrics(y_test, predictions[name], kinds)
    rows = list(scores["base"])
    summary = pd.DataFrame({name: [scores[name][r][0] for r in rows] for name in models}, index=rows)
    for name in extra:
        summary[f"delta_{name}"] = summary[name] - summary["base"]
    summary["n"] = [scores["base"][r][1] for r in rows]
    return FeatureAblation(
        summary=summary,
        predictions=pd.DataFrame({"kind": y_test, **predictions}, index=test_table.index),
        columns=models,
        classifiers=classifiers,
    )


@dataclass
class EnsembleScorer:
    """Logistic-regression stacking of calibrated scores into one probability.

    Each input probability ``p`` enters as its logit ``log(p / (1 - p))``
    (clipped to ``[eps, 1 - eps]``), so that a single well-calibrated input is
    reproduced with weight 1 and intercept 0. Fit it on a validation split that
    none of the inputs was trained on.

    Attributes
    ----------
    columns : tuple of str, optional
        Columns to stack when a DataFrame is given, e.g.
        ``("score", "rb_proba")``; default every numeric column.
    C : float
        Inverse L2 regularisation strength of the logistic regression.
    eps : float
        Clipping of the input probabilities.
    coef_ : numpy.ndarray
        Fitted weight of each input logit.
    intercept_ : float
        Fitted intercept.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> y = rng.random(400) < 0.5
    >>> a = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.15, 400), 0, 1)
    >>> b = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.15, 400), 0, 1)
    >>> ens = EnsembleScorer().fit(np.c_[a, b], y)
    >>> ens.predict_proba(np.c_[a, b]).shape
    (400,)
    """

    columns: tuple[str, ...] | None = None
    C: float = 1.0  # noqa: N815 - scikit-learn's name
    eps: float = 1e-4
    coef_: np.ndarray = field(default_factory=lambda: np.zeros(0), init=False)
    intercept_: float = field(default=math.nan, init=False)
    columns_: tuple[str, ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        if not (np.isfinite(self.C) and self.C > 0):
            msg = f"C must be positive, got {self.C!r}"
            raise ValueError(msg)
        if not 0 < self.eps < 0.5:
            msg = f"eps must lie in (0, 0.5), got {self.eps!r}"
            raise ValueError(msg)
        if self.columns is not None:
            self.columns = tuple(self.columns)

    def _logits(
        self, scores: pd.DataFrame | ArrayLike, names: Sequence[str] | None
    ) -> tuple[np.ndarray, tuple[str, ...]]:
        x, names = _matrix(scores, names, "scores")
        if np.any((x < 0) | (x > 1)):
            msg = "scores must be probabilities in [0, 1]"
            raise ValueError(msg)
        p = np.clip(x, self.eps, 1 - self.eps)
        return np.log(p / (1 - p)), names

    def fit(self, scores: pd.DataFrame | ArrayLike, labels: ArrayLike) -> EnsembleScorer:
        """Fit the stacking weights on a validation split.

        Parameters
        ----------
        scores : pandas.DataFrame or array_like, shape (N, K)
            One column per input probability.
        labels : array_like of bool, shape (N,)
            1 when the candidate is a genuine transient.

        Returns
        -------
        EnsembleScorer
            ``self``, fitted.

        Raises
        ------
        ValueError
            On scores outside [0, 1], NaNs, empty input or single-class labels.
        """
        from sklearn.linear_model import LogisticRegression

        z, names = self._logits(scores, self.columns)
        y = _labels(labels, len(z))
        model = LogisticRegression(C=self.C).fit(z, y)
        self.coef_ = model.coef_[0].astype(float)
        self.intercept_ = float(model.intercept_[0])
        self.columns_ = names
        return self

    def predict_proba(self, scores: pd.DataFrame | ArrayLike) -> np.ndarray:
        """Return the stacked probability that each candidate is real.

        Raises
        ------
        ValueError
            If not fitted, or on bad scores.
        """
        if not np.isfinite(self.intercept_):
            msg = "the ensemble is not fitted; call fit first"
            raise ValueError(msg)
        z, _ = self._logits(scores, self.columns_)
        if z.shape[1] != self.coef_.size:
            msg = f"scores has {z.shape[1]} columns, expected {self.coef_.size}"
            raise ValueError(msg)
        return 1.0 / (1.0 + np.exp(-(z @ self.coef_ + self.intercept_)))

    def to_dict(self) -> dict[str, Any]:
        """Return the fitted scorer as a JSON-serialisable dict."""
        return {
            "columns": list(self.columns_),
            "C": self.C,
            "eps": self.eps,
            "coef": self.coef_.tolist(),
            "intercept": self.intercept_,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any] | str) -> EnsembleScorer:
        """Rebuild a scorer from :meth:`to_dict` (or its JSON).

        Raises
        ------
        ValueError
            If keys are missing or the coefficients do not match the columns.
        """
        if isinstance(state, str):
            state = json.loads(state)
        missing = [k for k in ("columns", "C", "eps", "coef", "intercept") if k not in state]
        if missing:
            msg = f"ensemble state lacks keys {missing}"
            raise ValueError(msg)
        if len(state["coef"]) != len(state["columns"]):
            msg = "ensemble state has a different number of coefficients and columns"
            raise ValueError(msg)
        scorer = cls(columns=tuple(state["columns"]) or None, C=state["C"], eps=state["eps"])
        scorer.coef_ = np.asarray(state["coef"], dtype=float)
        scorer.intercept_ = float(state["intercept"])
        scorer.columns_ = tuple(state["columns"])
        return scorer
