"""scikit-learn estimators built on cgru's GRU: sequence classification, regression, and
fixed-length features for pipelines.

    GRUClassifier, GRURegressor   a GRU over each sequence, a linear head on the last layer's
                                  final state (both directions), trained with cgru.optim.Adam
    GRUTransformer                each sequence as a fixed-length vector (last state, or the
                                  mean or max of the last layer's outputs)

X, for every method: an (n_samples, seq_len, n_features) array; an (n_samples, seq_len) array
or DataFrame of univariate sequences; or a list of (seq_len_i, n_features) arrays of different
lengths, which run as packed variable-length batches. Parameter and attribute names follow
MLPClassifier's wherever they apply. Needs scikit-learn (``pip install "cgru[sklearn]"``).
"""
try:
    import sklearn
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError("cgru.sklearn needs scikit-learn: pip install scikit-learn "
                      "(or pip install \"cgru[sklearn]\")") from None

import math
import sys
import warnings

import numpy as np
from sklearn.base import (BaseEstimator, ClassNamePrefixFeaturesOutMixin, ClassifierMixin,
                          RegressorMixin, TransformerMixin)
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils import check_array, check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

import cgru
from cgru.optim import Adam

from ._sequences import check_sequences
from ._engine import numpy_blas_single_threaded, worker_threads_context

__all__ = ["GRUClassifier", "GRURegressor", "GRUTransformer"]


def _is_dask_array(X):
    dask_array = sys.modules.get("dask.array")
    return dask_array is not None and isinstance(X, dask_array.Array)


def _on_dask(estimator, method, X, width):
    """estimator.method(X) for a 3-D dask array X chunked along samples, as a lazy dask array
    chunked the same way (width None: one value per sample, else (n, width)). X is checked
    before anything is computed; the estimator travels to each worker once per graph."""
    import dask
    import dask.array as da
    check_is_fitted(estimator)
    if X.ndim != 3:
        raise ValueError(f"Expected a 3-D dask array (n_samples, seq_len, n_features), got "
                         f"{X.ndim}-D")
    if X.shape[2] != estimator._n_channels:
        raise ValueError(f"X has {X.shape[2]} features, but {type(estimator).__name__} is "
                         f"expecting {estimator._n_channels} features as input.")
    X = X.rechunk({1: -1, 2: -1})
    model = dask.delayed(estimator, pure=True, traverse=False)
    call = dask.delayed(_call_method, pure=True)
    dtype = np.float64 if width is not None else getattr(estimator, "classes_",
                                                         np.zeros(0)).dtype
    blocks = [da.from_delayed(call(model, method, block),
                              (rows,) if width is None else (rows, width), dtype=dtype)
              for rows, block in zip(X.chunks[0], X.to_delayed().ravel())]
    return da.concatenate(blocks, axis=0)


def _call_method(estimator, method, X):
    return getattr(estimator, method)(X)


def _check_positive_ints(estimator, *names):
    for name in names:
        value = getattr(estimator, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"The '{name}' parameter of {type(estimator).__name__} must be "
                             f"an int in the range [1, inf), got {value!r}")


def _check_real(estimator, name, valid, what):
    value = getattr(estimator, name)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not valid(value):
        raise ValueError(f"The '{name}' parameter of {type(estimator).__name__} must be "
                         f"{what}, got {value!r}")


def _encode(gru, sequences):
    """The last layer's final state of every sequence, both directions: (n, D*H)."""
    _, h_n = gru(sequences.gru_input())
    return _last_layer(gru, h_n)


def _last_layer(gru, h_n):
    d = gru.num_directions
    return np.ascontiguousarray(np.concatenate(list(h_n[-d:]), axis=1))


class _GRUModel(BaseEstimator):
    """What GRUClassifier and GRURegressor share: the GRU, the head, the training loop."""

    _is_classifier = False

    def __init__(self, hidden_size=64, num_layers=1, bidirectional=False, dropout=0.0,
                 batch_size=64, learning_rate_init=1e-3, max_iter=200, alpha=0.0, tol=1e-4,
                 n_iter_no_change=10, early_stopping=False, validation_fraction=0.1,
                 shuffle=True, clip_grad_norm=None, random_state=None, verbose=False,
                 warm_start=False, dtype=np.float32):
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.alpha = alpha
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.shuffle = shuffle
        self.clip_grad_norm = clip_grad_norm
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.dtype = dtype

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.non_deterministic = False
        return tags

    # -- the model ------------------------------------------------------------------------------

    def _check_params(self):
        _check_positive_ints(self, "hidden_size", "num_layers", "batch_size", "max_iter",
                             "n_iter_no_change")
        _check_real(self, "dropout", lambda v: 0 <= v < 1, "in [0, 1)")
        _check_real(self, "learning_rate_init", lambda v: v > 0, "> 0")
        _check_real(self, "alpha", lambda v: v >= 0, ">= 0")
        _check_real(self, "tol", lambda v: v == v, "a number")
        _check_real(self, "validation_fraction", lambda v: 0 <= v < 1, "in [0, 1)")
        if self.early_stopping and self.validation_fraction == 0:
            raise ValueError("validation_fraction must be > 0 when early_stopping is True")
        if self.clip_grad_norm is not None:
            _check_real(self, "clip_grad_norm", lambda v: v > 0, "None or > 0")

    def _initialize(self, n_outputs, rng):
        dtype = np.dtype(self.dtype)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        with warnings.catch_warnings():    # dropout with one layer: as PyTorch, a no-op
            warnings.simplefilter("ignore", UserWarning)
            self.gru_ = cgru.GRU(self._n_channels, self.hidden_size, self.num_layers,
                                 batch_first=True, dropout=self.dropout,
                                 bidirectional=self.bidirectional, dtype=dtype, seed=seed)
        width = self.gru_.num_directions * self.hidden_size
        # MLPClassifier's (Glorot's) initialisation: on scikit-learn's regression check it
        # reached R^2 0.74-0.80 in 200 epochs, torch.nn.Linear's U(+-1/sqrt(fan_in)) 0.49-0.62
        bound = math.sqrt(6.0 / (width + n_outputs))
        self.coef_ = rng.uniform(-bound, bound, size=(n_outputs, width)).astype(dtype)
        self.intercept_ = rng.uniform(-bound, bound, size=n_outputs).astype(dtype)
        self._optimizer = Adam([self.gru_, self._head()], lr=self.learning_rate_init)
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
            self.best_loss_ = np.inf

    def _head(self):
        return {"coef_": self.coef_, "intercept_": self.intercept_}

    def _forward_features(self, sequences):
        self.gru_.eval()
        return _encode(self.gru_, sequences)

    def _decision(self, sequences):
        with worker_threads_context():
            features = self._forward_features(sequences)
        with numpy_blas_single_threaded():  # left spinning, its threads would slow the next call
            return (features.astype(np.float64) @ self.coef_.T.astype(np.float64)
                    + self.intercept_)

    # -- training -------------------------------------------------------------------------------

    def _train_step(self, batch, targets):
        """One Adam step on a mini-batch; returns its loss (data loss + the L2 term)."""
        gru = self.gru_
        gru.train(self.dropout > 0)
        (_, h_n), backward = gru.vjp(batch.gru_input())
        features = _last_layer(gru, h_n)
        # the head's small products on one thread: OpenBLAS's threads, left spinning, would
        # take the cores from the next GRU call (see numpy_blas_single_threaded)
        with numpy_blas_single_threaded():
            outputs = features @ self.coef_.T + self.intercept_
            loss, d_outputs = self._loss(outputs, targets)
            n = len(features)
            d_outputs = d_outputs.astype(self.coef_.dtype, copy=False)
            head_grads = {"coef_": d_outputs.T @ features, "intercept_": d_outputs.sum(axis=0)}
            d_features = d_outputs @ self.coef_
        d = gru.num_directions
        grad_h_n = np.zeros_like(h_n)
        for k in range(d):
            grad_h_n[len(h_n) - d + k] = d_features[:, k * self.hidden_size:
                                                    (k + 1) * self.hidden_size]
        grads = backward(None, grad_h_n, input_grad=False)   # the input is data
        if self.alpha:
            # MLPClassifier's penalty: 0.5 * alpha * ||W||^2 / n over every weight matrix
            weights = [(grads, name, value) for name, value in gru.named_parameters()
                       if name.startswith("weight")] + [(head_grads, "coef_", self.coef_)]
            loss += 0.5 * self.alpha * sum(float(np.vdot(w, w)) for _, _, w in weights) / n
            for target, name, value in weights:
                target[name] = target[name] + (self.alpha / n) * value
        if self.clip_grad_norm is not None:
            cgru.clip_grad_norm_([grads, head_grads], self.clip_grad_norm)
        self._optimizer.step([grads, head_grads])
        return loss

    def _fit(self, X, y, incremental=False):
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y "
                             f"is None.")
        self._check_params()
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        first = not (hasattr(self, "gru_") and (self.warm_start or incremental))
        sequences = check_sequences(self, X, dtype=np.dtype(self.dtype), reset=first)
        targets = self._prepare_targets(y, sequences.n_samples, first)
        rng = check_random_state(self.random_state)
        if first:
            self._initialize(self._n_outputs(), rng)
        elif not incremental:       # warm start: new Adam moments, as MLPClassifier's refit
            self._optimizer = Adam([self.gru_, self._head()], lr=self.learning_rate_init)
        early_stopping = self.early_stopping and not incremental
        train, validation = np.arange(sequences.n_samples), None
        if early_stopping:
            stratify = targets if self._is_classifier else None
            train, validation = train_test_split(
                train, random_state=self.random_state, test_size=self.validation_fraction,
                stratify=stratify)
        n = len(train)
        batch_size = min(self.batch_size, n)
        for _ in range(1 if incremental else self.max_iter):
            order = rng.permutation(train) if self.shuffle else train
            total = 0.0
            for start in range(0, n, batch_size):
                rows = order[start:start + batch_size]
                total += self._train_step(sequences.take(rows), targets[rows]) * len(rows)
            self.n_iter_ += 1
            self.t_ += n
            self.loss_ = total / n
            self.loss_curve_.append(self.loss_)
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
            if early_stopping:
                score = self._score_targets(sequences.take(validation), targets[validation])
                self.validation_scores_.append(score)
                if self.verbose:
                    print(f"Validation score: {score:.6f}")
                self._no_improvement_count = (self._no_improvement_count + 1
                                              if score < self.best_validation_score_ + self.tol
                                              else 0)
                if score > self.best_validation_score_:
                    self.best_validation_score_ = score
                    self._best = (self.gru_.state_dict(), self.coef_.copy(),
                                  self.intercept_.copy())
            else:
                self._no_improvement_count = (self._no_improvement_count + 1
                                              if self.loss_ > self.best_loss_ - self.tol else 0)
                self.best_loss_ = min(self.best_loss_, self.loss_)
            if self._no_improvement_count > self.n_iter_no_change:
                if self.verbose:
                    what = "Validation score" if early_stopping else "Training loss"
                    print(f"{what} did not improve more than tol={self.tol:f} for "
                          f"{self.n_iter_no_change} consecutive epochs. Stopping.")
                break
            if incremental:
                break
            if self.n_iter_ == self.max_iter:
                warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) "
                              "reached and the optimization hasn't converged yet.",
                              ConvergenceWarning)
        if early_stopping and hasattr(self, "_best"):
            # the best weights seen, also in an earlier (warm-started) fit, as MLPClassifier
            state, coef, intercept = self._best
            self.gru_.load_state_dict(state)
            self.coef_[...] = coef
            self.intercept_[...] = intercept
        self.gru_.eval()
        return self

    def fit(self, X, y):
        """Train on sequences X and targets y; returns self."""
        with worker_threads_context():
            return self._fit(X, y)

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_best", None)
        return state


class GRUClassifier(ClassifierMixin, _GRUModel):
    """A GRU sequence classifier: the last layer's final hidden state (both directions
    concatenated) through a linear layer, softmax cross-entropy, Adam on shuffled mini-batches.

    Parameters (MLPClassifier's names where they apply): hidden_size, num_layers,
    bidirectional, dropout (between GRU layers, in training), batch_size, learning_rate_init,
    max_iter (epochs), alpha (L2 on every weight matrix, as MLPClassifier), tol,
    n_iter_no_change, early_stopping, validation_fraction, shuffle, clip_grad_norm (None, or the
    max total gradient norm), random_state, verbose, warm_start, dtype (of the GRU).

    Attributes: classes_, n_features_in_, n_iter_, loss_, loss_curve_, best_loss_,
    validation_scores_, best_validation_score_, t_, gru_ (the fitted cgru.GRU), coef_
    (n_classes, D*H) and intercept_ (n_classes,) of the head. Binary problems also use two
    softmax outputs.
    """

    _is_classifier = True

    def _prepare_targets(self, y, n_samples, first):
        y = column_or_1d(y, warn=True)
        if len(y) != n_samples:
            raise ValueError(f"Found input variables with inconsistent numbers of samples: "
                             f"[{n_samples}, {len(y)}]")
        check_classification_targets(y)
        if first and not hasattr(self, "_partial_classes"):
            self.classes_ = np.unique(y)
        unknown = np.setdiff1d(y, self.classes_)
        if unknown.size:
            raise ValueError(f"y contains classes not seen before: {unknown.tolist()}; "
                             f"expected a subset of {self.classes_.tolist()}")
        return np.searchsorted(self.classes_, y)

    def _n_outputs(self):
        return len(self.classes_)

    def _loss(self, logits, classes):
        """Mean softmax cross-entropy and its gradient with respect to the logits."""
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        total = exp.sum(axis=1, keepdims=True)
        rows = np.arange(len(classes))
        loss = float(np.mean(np.log(total[:, 0]) - shifted[rows, classes], dtype=np.float64))
        grad = exp / total
        grad[rows, classes] -= 1
        return loss, grad / len(classes)

    def _score_targets(self, sequences, classes):
        return accuracy_score(classes, self._decision(sequences).argmax(axis=1))

    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y), continuing from the fitted model. classes (all the labels
        that will ever appear) is required on the first call."""
        if not hasattr(self, "gru_"):
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            self.classes_ = np.unique(column_or_1d(classes))
            self._partial_classes = True
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"`classes={np.unique(classes).tolist()}` is not the same as on "
                             f"last call to partial_fit, was: {self.classes_.tolist()}")
        try:
            with worker_threads_context():
                return self._fit(X, y, incremental=True)
        finally:
            self.__dict__.pop("_partial_classes", None)

    def predict_proba(self, X):
        """Class probabilities, (n_samples, n_classes), columns in classes_ order. A dask
        array X gives a dask array, computed chunk by chunk."""
        if _is_dask_array(X):
            return _on_dask(self, "predict_proba", X, len(self.classes_))
        check_is_fitted(self)
        logits = self._decision(check_sequences(self, X, dtype=self.coef_.dtype, reset=False))
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X):
        """log of predict_proba, computed stably."""
        check_is_fitted(self)
        logits = self._decision(check_sequences(self, X, dtype=self.coef_.dtype, reset=False))
        logits -= logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def predict(self, X):
        """The most probable class of each sequence, (n_samples,). A dask array X gives a
        dask array, computed chunk by chunk."""
        if _is_dask_array(X):
            return _on_dask(self, "predict", X, None)
        check_is_fitted(self)
        logits = self._decision(check_sequences(self, X, dtype=self.coef_.dtype, reset=False))
        return self.classes_[logits.argmax(axis=1)]


class GRURegressor(RegressorMixin, _GRUModel):
    """A GRU sequence regressor: the GRUClassifier's model with a linear output and the mean
    squared error (halved, as MLPRegressor reports it). y: (n_samples,) or (n_samples,
    n_outputs); predict returns the shape y had in fit. score is R^2.

    Same parameters and attributes as GRUClassifier, less classes_; coef_ (n_outputs, D*H).
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _prepare_targets(self, y, n_samples, first):
        y = check_array(y, ensure_2d=False, dtype="numeric", input_name="y")
        if y.ndim not in (1, 2):
            raise ValueError(f"y must be 1-D or 2-D, got {y.ndim}-D")
        if len(y) != n_samples:
            raise ValueError(f"Found input variables with inconsistent numbers of samples: "
                             f"[{n_samples}, {len(y)}]")
        targets = y.reshape(n_samples, -1).astype(np.float64)
        if first:
            self._y_1d = y.ndim == 1
            self.n_outputs_ = targets.shape[1]
        elif targets.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {targets.shape[1]} outputs, but the model was fitted "
                             f"with {self.n_outputs_}")
        return targets

    def _n_outputs(self):
        return self.n_outputs_

    def _loss(self, outputs, targets):
        diff = outputs - targets
        return float(0.5 * np.mean(diff ** 2)), diff / diff.size

    def _score_targets(self, sequences, targets):
        return r2_score(targets, self._decision(sequences))

    def partial_fit(self, X, y):
        """One epoch over (X, y), continuing from the fitted model."""
        with worker_threads_context():
            return self._fit(X, y, incremental=True)

    def predict(self, X):
        """(n_samples,) or (n_samples, n_outputs), as y was in fit. A dask array X gives a
        dask array, computed chunk by chunk."""
        if _is_dask_array(X):
            check_is_fitted(self)
            return _on_dask(self, "predict", X, None if self._y_1d else self.n_outputs_)
        check_is_fitted(self)
        outputs = self._decision(check_sequences(self, X, dtype=self.coef_.dtype, reset=False))
        return outputs[:, 0] if self._y_1d else outputs


class GRUTransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Each sequence as a fixed-length feature vector from a GRU.

    gru : None, a cgru.GRU, or the path of a model saved by cgru (``gru.save``): with a GRU,
        its weights are used as they are and fit only validates X; with None, fit builds a
        random GRU from random_state (a fixed random-feature encoder, as in reservoir
        computing) with hidden_size, num_layers and bidirectional.
    pooling : "last" (the last layer's final hidden state, both directions), "mean" or
        "max" (of the last layer's outputs over each sequence's own length).

    transform returns (n_samples, D*H) float64 features. Attributes: gru_, n_features_in_.
    """

    def __init__(self, gru=None, hidden_size=64, num_layers=1, bidirectional=False,
                 pooling="last", random_state=None, dtype=np.float32):
        self.gru = gru
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.pooling = pooling
        self.random_state = random_state
        self.dtype = dtype

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.requires_fit = True
        return tags

    def _model(self):
        if self.gru is None:
            seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
            return cgru.GRU(self._n_channels, self.hidden_size, self.num_layers,
                            batch_first=True, bidirectional=self.bidirectional,
                            dtype=np.dtype(self.dtype), seed=seed)
        model = cgru.load(self.gru) if isinstance(self.gru, (str, bytes)) or hasattr(
            self.gru, "__fspath__") else self.gru
        if not isinstance(model, cgru.GRU):
            raise TypeError(f"gru must be None, a cgru.GRU or the path of a saved cgru.GRU, "
                            f"got {type(model).__name__}")
        if model.input_size != self._n_channels:
            raise ValueError(f"X has {self._n_channels} features per step, but the GRU "
                             f"expects input_size={model.input_size}")
        import copy
        model = copy.deepcopy(model)       # our own copy: never the caller's module
        model.batch_first = True
        return model.eval()

    def fit(self, X, y=None):
        """Validate X (and build the random GRU when gru is None); returns self."""
        if self.pooling not in ("last", "mean", "max"):
            raise ValueError(f"pooling must be 'last', 'mean' or 'max', got {self.pooling!r}")
        if self.gru is None:
            _check_positive_ints(self, "hidden_size", "num_layers")
        dtype = getattr(self.gru, "dtype", None) if isinstance(self.gru, cgru.GRU) else \
            np.dtype(self.dtype)
        check_sequences(self, X, dtype=dtype, reset=True)
        self.gru_ = self._model()
        self._n_features_out = self.gru_.num_directions * self.gru_.hidden_size
        return self

    def transform(self, X):
        """(n_samples, D*H) features of the sequences X. A dask array X gives a dask array,
        computed chunk by chunk."""
        if _is_dask_array(X):
            check_is_fitted(self)
            return _on_dask(self, "transform", X, self._n_features_out)
        check_is_fitted(self)
        sequences = check_sequences(self, X, dtype=self.gru_.dtype, reset=False)
        with worker_threads_context():
            return self._pool(sequences)

    def _pool(self, sequences):
        if self.pooling == "last":
            return _encode(self.gru_, sequences).astype(np.float64)
        output, _ = self.gru_(sequences.gru_input())
        if sequences.dense is not None:
            output = output.astype(np.float64)
            return output.mean(axis=1) if self.pooling == "mean" else output.max(axis=1)
        fill = 0.0 if self.pooling == "mean" else -np.inf
        padded, lengths = cgru.pad_packed_sequence(output, batch_first=True,
                                                   padding_value=fill)
        padded = padded.astype(np.float64)
        if self.pooling == "mean":
            return padded.sum(axis=1) / lengths[:, None]
        return padded.max(axis=1)
