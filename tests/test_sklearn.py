"""cgru.sklearn: GRUClassifier, GRURegressor and GRUTransformer against scikit-learn's own
estimator checks, in pipelines, grid searches (loky and threading workers) and pickles; every
accepted form of X (3-D, 2-D, DataFrame, equal and ragged lists, object arrays), checked
against the fitted GRU run by hand and against the NumPy reference GRU; the training contract
(reproducibility, early stopping, partial_fit, warm_start, verbose, ConvergenceWarning); bad
input in scikit-learn's words; and accuracy on real data (scikit-learn's digits, and UCR/UEA
sets shipped with aeon when it is installed)."""
import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

import joblib  # noqa: E402  (scikit-learn's own dependency)
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import r2_score  # noqa: E402
from sklearn.model_selection import (GridSearchCV, cross_val_score,  # noqa: E402
                                     train_test_split)
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import cgru  # noqa: E402
from cgru._engine import policy  # noqa: E402
from cgru.sklearn import GRUClassifier, GRURegressor, GRUTransformer  # noqa: E402
from reference import gru_reference  # noqa: E402

# Short fits (a few epochs) are the point of most tests here, not a sign of trouble.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# float32 GRU features, float64 heads: what packed and dense runs, or the kernel and the
# float64 NumPy reference, may differ by.
RTOL, ATOL = 1e-5, 1e-6


# -- data and small models ----------------------------------------------------------------------

def _sequences(n=40, seq_len=6, n_features=3, n_classes=2, seed=0):
    """(n, L, F) float32 sequences and integer classes 0..k-1 by the mean of feature 0 (a
    problem a small GRU learns in a few epochs), in equal numbers."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, seq_len, n_features)).astype(np.float32)
    score = X[:, :, 0].mean(axis=1)
    y = np.searchsorted(np.quantile(score, np.linspace(0, 1, n_classes + 1)[1:-1]), score)
    return X, y


def _ragged(n=9, n_features=3, seed=1):
    """n float32 sequences (L_i, F) of random lengths 2..7 (not sorted), and their classes."""
    rng = np.random.default_rng(seed)
    X = [rng.standard_normal((int(k), n_features)).astype(np.float32)
         for k in rng.integers(2, 8, size=n)]
    y = np.array([int(s[:, 0].mean() > 0) for s in X])
    y[:2] = [0, 1]                      # both classes, whatever the draw
    return X, y


def _to_object_array(sequences):
    """A 1-D object array holding the given arrays (also when they share a shape)."""
    array = np.empty(len(sequences), dtype=object)
    for i, s in enumerate(sequences):
        array[i] = s
    return array


def _clf(**params):
    params = {"hidden_size": 6, "max_iter": 3, "random_state": 0, **params}
    return GRUClassifier(**params)


def _reg(**params):
    params = {"hidden_size": 6, "max_iter": 3, "random_state": 0, **params}
    return GRURegressor(**params)


def _softmax(logits):
    logits = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def _head_by_hand(model, X_list):
    """predict_proba of a fitted GRUClassifier, computed from its gru_ and head by hand: the
    sequences packed unsorted, the last layer's h_n (both directions) through coef_."""
    gru = model.gru_
    _, h_n = gru(cgru.pack_sequence([np.asarray(s, dtype=gru.dtype) for s in X_list],
                                    enforce_sorted=False))
    d = gru.num_directions
    features = np.concatenate(list(h_n[-d:]), axis=1).astype(np.float64)
    return _softmax(features @ model.coef_.T.astype(np.float64) + model.intercept_)


def _reference_features(gru, sequences, pooling):
    """GRUTransformer's features computed with the float64 NumPy reference GRU, one sequence
    at a time (no packing, no padding), pooled over the sequence's own steps."""
    params = gru.state_dict()
    d, layers, hidden = gru.num_directions, gru.num_layers, gru.hidden_size
    rows = []
    for s in sequences:
        s = np.asarray(s, dtype=np.float64)
        s = s[:, None] if s.ndim == 1 else s
        out, h_n = gru_reference(params, s[:, None, :], np.zeros((d * layers, 1, hidden)),
                                 layers, gru.bidirectional)
        out = out[:, 0, :]
        if pooling == "last":
            rows.append(np.concatenate(list(h_n[-d:, 0, :])))
        elif pooling == "mean":
            rows.append(out.mean(axis=0))
        else:
            rows.append(out.max(axis=0))
    return np.array(rows)


def _digits():
    """scikit-learn's 8x8 digits as 8 steps of 8 features in [0, 1], split 75/25 (seeded)."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).reshape(-1, 8, 8)
    return train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)


def _flat_to_steps(X):
    """(n, 64) -> (n, 8, 8): a module-level function, so the pipeline pickles for loky."""
    return np.asarray(X).reshape(len(X), 8, 8)


@pytest.fixture(scope="module")
def digits():
    return _digits()


@pytest.fixture(scope="module")
def digits_classifier(digits):
    """GRUClassifier(hidden_size=64, max_iter=40, learning_rate_init=1e-2) fitted on digits.
    Measured (seeds 0-9): test accuracy 0.976-0.993, about 2 s a fit on 2 idle cores."""
    X_train, _, y_train, _ = digits
    return GRUClassifier(hidden_size=64, max_iter=40, learning_rate_init=1e-2,
                         random_state=0).fit(X_train, y_train)


# -- 1. scikit-learn's estimator checks --------------------------------------------------------

# The estimators exactly as a user gets them (all defaults): every check passes, none is
# expected to fail.
@parametrize_with_checks([GRUClassifier(), GRURegressor(), GRUTransformer()])
def test_sklearn_estimator_checks(estimator, check):
    name = getattr(check, "func", check).__name__
    if name == "check_methods_sample_order_invariance" and cgru.get_num_threads() == 1 \
            and policy.PANEL_MAX_ROWS < 20:
        # On the baseline build, tiles of more than 16 rows multiply W_hh through OpenBLAS,
        # whose Haswell kernels round a row by its place in the call (see test_kernel_paths):
        # at one thread the check's 20 samples form one such tile and a shuffled batch may
        # move a probability by an ulp, past the check's rtol of 1e-7.
        pytest.xfail("one ulp through OpenBLAS's position-dependent rounding at 1 thread")
    check(estimator)


# -- 2. pipelines, grid searches, cross-validation, clone -------------------------------------

def test_transformer_then_logistic_regression_on_digits(digits, digits_classifier):
    X_train, X_test, y_train, y_test = digits
    # a random GRU (reservoir-style features): measured 0.56-0.62 (last), far above chance 0.1
    pipe = make_pipeline(GRUTransformer(hidden_size=32, random_state=0),
                         LogisticRegression(max_iter=1000))
    assert pipe.fit(X_train, y_train).score(X_test, y_test) > 0.45
    # the trained classifier's GRU as a feature extractor
    pipe = make_pipeline(GRUTransformer(gru=digits_classifier.gru_),
                         LogisticRegression(max_iter=1000))
    assert pipe.fit(X_train, y_train).score(X_test, y_test) > 0.9


def test_function_transformer_then_classifier_on_flat_digits(digits):
    X_train, X_test, y_train, y_test = digits
    flat_train, flat_test = X_train.reshape(-1, 64), X_test.reshape(-1, 64)
    pipe = make_pipeline(FunctionTransformer(_flat_to_steps),
                         GRUClassifier(hidden_size=16, max_iter=10, learning_rate_init=1e-2,
                                       random_state=0))
    pipe.fit(flat_train, y_train)
    direct = GRUClassifier(hidden_size=16, max_iter=10, learning_rate_init=1e-2,
                           random_state=0).fit(X_train, y_train)
    np.testing.assert_array_equal(pipe.predict(flat_test), direct.predict(X_test))
    assert pipe.score(flat_test, y_test) > 0.8


@pytest.mark.parametrize("backend", ["loky", "threading"])
def test_grid_search_parallel(backend):
    X, y = _sequences(n=48, n_features=2)
    # float64: the scores must not depend on how many threads a worker's GRU had
    search_params = dict(param_grid={"hidden_size": [3, 6], "learning_rate_init": [1e-2]},
                         cv=2)
    base = GRUClassifier(max_iter=4, random_state=0, dtype=np.float64)
    serial = GridSearchCV(base, n_jobs=1, **search_params).fit(X, y)
    with joblib.parallel_config(backend=backend):
        parallel = GridSearchCV(base, n_jobs=2, **search_params).fit(X, y)
    np.testing.assert_allclose(parallel.cv_results_["mean_test_score"],
                               serial.cv_results_["mean_test_score"], atol=1e-12)
    assert parallel.best_params_ == serial.best_params_
    assert parallel.best_estimator_.hidden_size in (3, 6)
    np.testing.assert_allclose(parallel.predict_proba(X), serial.predict_proba(X), atol=1e-12)


@pytest.mark.parametrize("backend", ["loky", "threading"])
def test_cross_val_score_parallel(backend):
    X, y = _sequences(n=45)
    reg_y = X[:, :, 0].mean(axis=1)
    with joblib.parallel_config(backend=backend):
        scores = cross_val_score(_clf(dtype=np.float64), X, y, cv=3, n_jobs=2)
        r2 = cross_val_score(_reg(), X, reg_y, cv=3, n_jobs=2)
        features = cross_val_score(make_pipeline(GRUTransformer(hidden_size=4, random_state=0),
                                                 LogisticRegression()), X, y, cv=3, n_jobs=2)
    assert scores.shape == r2.shape == features.shape == (3,)
    assert np.all((scores >= 0) & (scores <= 1)) and np.all(np.isfinite(r2))
    np.testing.assert_allclose(scores, cross_val_score(_clf(dtype=np.float64), X, y, cv=3),
                               atol=1e-12)


@pytest.mark.parametrize("make", [_clf, _reg, lambda: GRUTransformer(hidden_size=4,
                                                                       pooling="max")])
def test_clone_unfitted_and_fitted(make):
    X, y = _sequences()
    est = make()
    copy = clone(est)
    assert copy is not est and copy.get_params() == est.get_params()
    target = None if isinstance(est, GRUTransformer) else (
        X[:, :, 0].mean(axis=1) if isinstance(est, GRURegressor) else y)
    est.fit(X, target)
    fitted_copy = clone(est)
    assert fitted_copy.get_params() == est.get_params()
    assert not hasattr(fitted_copy, "gru_") and not hasattr(fitted_copy, "n_features_in_")
    est.set_params(hidden_size=5)
    assert est.get_params()["hidden_size"] == 5 and fitted_copy.hidden_size != 5


def test_constructor_stores_arguments_unchanged():
    args = dict(hidden_size=7, num_layers=2, bidirectional=True, dropout=0.25, batch_size=5,
                learning_rate_init=0.02, max_iter=9, alpha=0.1, tol=1e-3, n_iter_no_change=4,
                early_stopping=True, validation_fraction=0.3, shuffle=False,
                clip_grad_norm=2.5, random_state=3, verbose=True, warm_start=True,
                dtype=np.float64)
    for cls in (GRUClassifier, GRURegressor):
        assert cls(**args).get_params() == args
        assert cls().get_params()["dtype"] is np.float32
    gru = cgru.GRU(2, 3)
    targs = dict(gru=gru, hidden_size=7, num_layers=2, bidirectional=True, pooling="mean",
                 random_state=5, dtype=np.float64)
    params = GRUTransformer(**targs).get_params()
    assert params == targs and params["gru"] is gru


# -- 3. pickle and joblib -----------------------------------------------------------------------

def _fitted_trio(X, y):
    return [_clf(bidirectional=True).fit(X, y),
            _reg(num_layers=2).fit(X, np.stack([X[:, :, 0].mean(1), X[:, :, 1].mean(1)], 1)),
            GRUTransformer(hidden_size=5, pooling="mean", random_state=0).fit(X)]


def _outputs(est, X):
    methods = ("predict", "predict_proba", "predict_log_proba", "transform")
    return {m: getattr(est, m)(X) for m in methods if hasattr(est, m)}


@pytest.mark.parametrize("how", ["pickle", "joblib"])
def test_pickle_and_joblib_round_trips(how, tmp_path):
    X, y = _sequences()
    X_ragged, _ = _ragged()
    for est in _fitted_trio(X, y):
        if how == "pickle":
            loaded = pickle.loads(pickle.dumps(est))
        else:
            path = tmp_path / f"{type(est).__name__}.joblib"
            joblib.dump(est, path)
            loaded = joblib.load(path)
        assert type(loaded) is type(est) and loaded.get_params() == est.get_params()
        for data in (X, X_ragged):
            before, after = _outputs(est, data), _outputs(loaded, data)
            assert before.keys() == after.keys() and before
            for method in before:
                np.testing.assert_array_equal(after[method], before[method], err_msg=method)


def test_unpickled_classifier_keeps_training():
    X, y = _sequences()
    est = _clf().partial_fit(X, y, classes=[0, 1])
    loaded = pickle.loads(pickle.dumps(est))
    est.partial_fit(X, y)
    loaded.partial_fit(X, y)        # the optimizer's moments and step count travelled too
    assert loaded.n_iter_ == est.n_iter_ == 2 and loaded.t_ == est.t_
    np.testing.assert_array_equal(loaded.coef_, est.coef_)
    np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))


# -- 4. every input format ----------------------------------------------------------------------

def test_univariate_formats_agree():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(3)
    X2 = rng.standard_normal((24, 7))
    y = (X2.mean(axis=1) > 0).astype(int)
    est = _clf().fit(X2, y)
    assert est.n_features_in_ == 7          # scikit-learn counts the steps of a 2-D X
    expected = est.predict_proba(X2)
    forms = {"3-D (n, L, 1)": X2[:, :, None],
             "DataFrame": pd.DataFrame(X2),
             "list of (L, 1)": [row[:, None] for row in X2],
             "list of (L,)": list(X2),
             "list of lists": X2.tolist(),
             "object array of (L, 1)": _to_object_array([row[:, None] for row in X2])}
    for name, X in forms.items():
        np.testing.assert_allclose(est.predict_proba(X), expected, rtol=RTOL, atol=ATOL,
                                   err_msg=name)
    # fitted on each form: the same model (the object array runs packed: within tolerance)
    for name, X in forms.items():
        other = _clf().fit(X, y)
        np.testing.assert_allclose(other.predict_proba(X2), expected, rtol=1e-4, atol=1e-5,
                                   err_msg=name)


def test_dataframe_feature_names():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(4)
    frame = pd.DataFrame(rng.standard_normal((20, 5)), columns=[f"t{i}" for i in range(5)])
    y = (frame.to_numpy().mean(axis=1) > 0).astype(int)
    est = _clf().fit(frame, y)
    np.testing.assert_array_equal(est.feature_names_in_, frame.columns)
    assert est.n_features_in_ == 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # the same names: no feature-name warning
        np.testing.assert_array_equal(est.predict(frame),
                                      est.predict(frame.to_numpy()[:, :, None]))
    # a later 3-D fit forgets the names
    X3 = frame.to_numpy()[:, :, None]
    est.fit(X3, y)
    assert not hasattr(est, "feature_names_in_") and est.n_features_in_ == 1


@pytest.mark.parametrize("config", [dict(), dict(bidirectional=True, num_layers=2)],
                         ids=["plain", "bidirectional-2-layers"])
def test_ragged_sequences_match_packing_by_hand(config):
    X_dense, y_dense = _sequences(n=30)
    est = _clf(**config).fit(X_dense, y_dense)
    X, _ = _ragged(n=11)
    expected = _head_by_hand(est, X)
    for form in (X, _to_object_array(X), tuple(X)):
        np.testing.assert_allclose(est.predict_proba(form), expected, rtol=RTOL, atol=ATOL)
        np.testing.assert_array_equal(est.predict(form),
                                      est.classes_[expected.argmax(axis=1)])
    # each sequence alone, as a batch of one, gives the same as inside the ragged batch
    alone = np.concatenate([est.predict_proba(s[None]) for s in X])
    np.testing.assert_allclose(alone, expected, rtol=RTOL, atol=ATOL)


def test_equal_length_list_and_object_array_match_dense():
    X, y = _sequences(n=20)
    est = _clf(bidirectional=True).fit(X, y)
    dense = est.predict_proba(X)
    np.testing.assert_array_equal(est.predict_proba(list(X)), dense)     # a 3-D array
    packed = est.predict_proba(_to_object_array(list(X)))                # run packed
    np.testing.assert_allclose(packed, dense, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(_head_by_hand(est, list(X)), dense, rtol=RTOL, atol=ATOL)


def test_fit_on_ragged_sequences():
    X, y = _ragged(n=16)
    clf = _clf().fit(X, y)
    assert clf.n_features_in_ == 3 and clf.predict(X).shape == (16,)
    np.testing.assert_allclose(clf.predict_proba(X), _head_by_hand(clf, X), rtol=RTOL,
                               atol=ATOL)
    reg = _reg().fit(X, y.astype(float))
    assert reg.predict(X).shape == (16,) and reg.n_features_in_ == 3
    X1 = [s[:, 0] for s in X]                   # ragged univariate: (L_i,) arrays
    assert _clf().fit(X1, y).n_features_in_ == 1


# -- 5. reproducibility -------------------------------------------------------------------------

def test_same_random_state_same_model():
    X, y = _sequences()
    a, b, c = _clf(random_state=7).fit(X, y), _clf(random_state=7).fit(X, y), \
        _clf(random_state=8).fit(X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    np.testing.assert_array_equal(a.intercept_, b.intercept_)
    assert a.loss_curve_ == b.loss_curve_
    state_a, state_b, state_c = a.gru_.state_dict(), b.gru_.state_dict(), c.gru_.state_dict()
    assert state_a.keys() == state_b.keys()
    for name in state_a:
        np.testing.assert_array_equal(state_a[name], state_b[name])
    assert not np.array_equal(a.coef_, c.coef_)
    assert any(not np.array_equal(state_a[k], state_c[k]) for k in state_a)
    assert a.loss_curve_ != c.loss_curve_
    r1, r2 = (_reg(random_state=7).fit(X, X[:, 0, 0]) for _ in range(2))
    np.testing.assert_array_equal(r1.predict(X), r2.predict(X))


def test_random_state_instance_is_consumed():
    X, y = _sequences()
    rng = np.random.RandomState(0)
    first = _clf(random_state=rng).fit(X, y).coef_.copy()
    second = _clf(random_state=rng).fit(X, y).coef_.copy()
    assert not np.array_equal(first, second)


# -- 6. early stopping and the stopping rule ----------------------------------------------------

def test_early_stopping_attributes_and_best_weights():
    X, y = _sequences(n=80, n_classes=3)
    est = _clf(early_stopping=True, validation_fraction=0.25, n_iter_no_change=2,
               max_iter=60, learning_rate_init=3e-2, hidden_size=8).fit(X, y)
    assert est.best_loss_ is None
    assert isinstance(est.validation_scores_, list)
    assert len(est.validation_scores_) == est.n_iter_ == len(est.loss_curve_)
    assert est.best_validation_score_ == max(est.validation_scores_)
    assert est.n_iter_ < est.max_iter
    # the weights kept are the best epoch's, not the last one's (which scored lower here): its
    # score on the same split (MLPClassifier's: seeded, stratified)
    assert est.validation_scores_[-1] < est.best_validation_score_
    _, validation = train_test_split(np.arange(len(X)), random_state=0, test_size=0.25,
                                     stratify=y)
    assert est.score(X[validation], y[validation]) == est.best_validation_score_


def test_without_early_stopping():
    X, y = _sequences()
    est = _clf(max_iter=6).fit(X, y)
    assert est.validation_scores_ is None and est.best_validation_score_ is None
    assert est.best_loss_ == min(est.loss_curve_)
    assert est.loss_ == est.loss_curve_[-1] and len(est.loss_curve_) == est.n_iter_ == 6
    assert est.t_ == 6 * len(X)


@pytest.mark.parametrize("n_iter_no_change", [1, 3])
def test_stops_as_mlp_classifier_does(n_iter_no_change):
    from sklearn.neural_network import MLPClassifier
    X, y = _sequences()
    # a tolerance no epoch can beat: MLPClassifier stops after n_iter_no_change + 2 epochs
    mlp = MLPClassifier(tol=10.0, n_iter_no_change=n_iter_no_change, max_iter=50,
                        random_state=0).fit(X.reshape(len(X), -1), y)
    est = _clf(tol=10.0, n_iter_no_change=n_iter_no_change, max_iter=50).fit(X, y)
    assert est.n_iter_ == mlp.n_iter_ == n_iter_no_change + 2


def test_early_stopping_stops_on_an_easy_problem():
    X, y = _sequences(n=100)
    est = _clf(early_stopping=True, n_iter_no_change=2, max_iter=200, hidden_size=8,
               learning_rate_init=5e-2).fit(X, y)
    assert est.n_iter_ < 200 and est.best_validation_score_ >= 0.8


# -- 7. partial_fit -----------------------------------------------------------------------------

def test_partial_fit_contract():
    X, y = _sequences(n=60)
    est = _clf(learning_rate_init=2e-2)
    with pytest.raises(ValueError, match="classes"):
        est.partial_fit(X, y)
    assert not hasattr(est, "gru_")
    est.partial_fit(X, y, classes=np.array([0, 1]))
    assert est.n_iter_ == 1 and est.t_ == 60 and len(est.loss_curve_) == 1
    for k in range(2, 13):
        est.partial_fit(X, y)
        assert est.n_iter_ == k and est.t_ == 60 * k and len(est.loss_curve_) == k
    assert est.loss_curve_[-1] < 0.8 * est.loss_curve_[0]
    with pytest.raises(ValueError):
        est.partial_fit(X, np.where(y == 1, 2, y))          # 2 is not in classes_
    with pytest.raises(ValueError):
        est.partial_fit(X, y, classes=[0, 1, 2])           # classes changed
    est.partial_fit(X, y, classes=[1, 0])                  # the same classes: fine
    assert est.n_iter_ == 13
    # later batches may hold only some of the classes
    est.partial_fit(X[y == 0], y[y == 0])
    assert est.n_iter_ == 14


def test_partial_fit_with_unseen_class_in_classes_argument():
    X, y = _sequences(n=30)
    est = _clf().partial_fit(X, y, classes=[0, 1, 2])       # 2 appears later, or never
    assert list(est.classes_) == [0, 1, 2] and est.predict_proba(X).shape == (30, 3)
    est.partial_fit(X[:3], np.array([2, 2, 2]))
    with pytest.raises(ValueError):
        est.partial_fit(X[:3], np.array([3, 0, 1]))


def test_regressor_partial_fit():
    X, _ = _sequences(n=60)
    target = X[:, :, 0].mean(axis=1)
    est = _reg(learning_rate_init=2e-2)
    for k in range(1, 11):
        est.partial_fit(X, target)
        assert est.n_iter_ == k and est.t_ == 60 * k
    assert est.loss_curve_[-1] < 0.8 * est.loss_curve_[0]
    with pytest.raises(ValueError):
        est.partial_fit(X, np.stack([target, target], axis=1))  # outputs changed


@pytest.mark.parametrize("make", [_clf, _reg])
def test_partial_fit_with_early_stopping_is_a_clear_error(make):
    X, y = _sequences()
    est = make(early_stopping=True)
    with pytest.raises(ValueError, match="early_stopping"):
        if isinstance(est, GRUClassifier):
            est.partial_fit(X, y, classes=[0, 1])
        else:
            est.partial_fit(X, y.astype(float))


# -- 8. warm_start ------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [_clf, _reg])
def test_warm_start_continues_and_cold_start_restarts(make):
    X, y = _sequences(n=60)
    target = y if make is _clf else X[:, :, 0].mean(axis=1)
    cold = make(max_iter=5, learning_rate_init=2e-2)
    first = list(cold.fit(X, target).loss_curve_)
    assert first[-1] < first[0]
    cold.fit(X, target)
    assert cold.loss_curve_ == first and cold.n_iter_ == 5    # a fresh start, same seed

    warm = make(max_iter=5, learning_rate_init=2e-2, warm_start=True)
    assert warm.fit(X, target).loss_curve_ == first
    coef = warm.coef_
    warm.fit(X, target)
    assert warm.coef_ is coef and warm.n_iter_ == 10 and warm.t_ == 10 * len(X)
    resumed = warm.loss_curve_[5]
    assert warm.loss_curve_[:5] == first
    # the second fit starts where the first ended, not from the initial loss
    assert abs(resumed - first[-1]) < abs(resumed - first[0])
    assert resumed < first[-1] + 0.25 * (first[0] - first[-1])


def test_warm_start_rejects_new_classes_and_features():
    X, y = _sequences()
    est = _clf(warm_start=True).fit(X, y)
    with pytest.raises(ValueError):
        est.fit(X, np.where(y == 1, 5, y))
    with pytest.raises(ValueError, match="features"):
        est.fit(X[:, :, :2], y)


# -- 9. verbose and ConvergenceWarning ----------------------------------------------------------

def test_verbose_prints_loss_per_epoch(capsys):
    X, y = _sequences()
    est = _clf(verbose=True, max_iter=4).fit(X, y)
    lines = capsys.readouterr().out.splitlines()
    losses = [line for line in lines if line.startswith("Iteration ")]
    assert losses == [f"Iteration {k + 1}, loss = {loss:.8f}"
                      for k, loss in enumerate(est.loss_curve_)]
    assert not any("Validation score" in line for line in lines)


def test_verbose_prints_validation_scores(capsys):
    X, y = _sequences(n=60)
    est = _clf(verbose=True, max_iter=4, early_stopping=True, validation_fraction=0.2).fit(X, y)
    out = capsys.readouterr().out
    assert out.count("Iteration ") == est.n_iter_
    scores = [float(line.split(":")[1]) for line in out.splitlines()
              if line.startswith("Validation score:")]
    np.testing.assert_allclose(scores, est.validation_scores_, atol=1e-6)


def test_verbose_false_prints_nothing(capsys):
    X, y = _sequences()
    _clf().fit(X, y)
    _reg().fit(X, X[:, 0, 0])
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("make", [_clf, _reg])
def test_convergence_warning_when_max_iter_reached(make):
    X, y = _sequences()
    target = y if make is _clf else X[:, 0, 0]
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(2\) reached"):
        make(max_iter=2).fit(X, target)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)   # stopped by the rule: no warning
        est = make(max_iter=50, tol=10.0, n_iter_no_change=1).fit(X, target)
    assert est.n_iter_ < 50


# -- 10. bad input ------------------------------------------------------------------------------

# name: (a small estimator, y for it from integer classes y)
ESTIMATORS = {
    "GRUClassifier": (_clf, lambda y: y),
    "GRURegressor": (_reg, lambda y: y.astype(np.float64)),
    "GRUTransformer": (lambda **kw: GRUTransformer(hidden_size=4, random_state=0, **kw),
                       lambda y: None),
}


def _first_method(est):
    return est.transform if isinstance(est, GRUTransformer) else est.predict


@pytest.mark.parametrize("name", ESTIMATORS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_are_value_errors(name, bad):
    make, target = ESTIMATORS[name]
    X, y = _sequences()
    X_bad = X.copy()
    X_bad[3, 2, 0] = bad
    ragged, y_ragged = _ragged()
    ragged[4] = ragged[4].copy()
    ragged[4][1, 0] = bad
    for X_fit, y_fit in ((X_bad, y), (X_bad[:, :, 0], y), (ragged, y_ragged)):
        with pytest.raises(ValueError, match="NaN|infinity"):
            make().fit(X_fit, target(y_fit))
    est = make().fit(X, target(y))
    for X_predict in (X_bad, ragged):
        with pytest.raises(ValueError, match="NaN|infinity"):
            _first_method(est)(X_predict)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_empty_and_one_dimensional_x(name):
    make, target = ESTIMATORS[name]
    X, y = _sequences()
    y_fit = target(y)
    for empty in (np.empty((0, 6, 3)), np.empty((0, 6))):
        with pytest.raises(ValueError, match="0 sample"):
            make().fit(empty, None if y_fit is None else y_fit[:0])
    with pytest.raises(ValueError):
        make().fit([], None if y_fit is None else y_fit[:0])
    with pytest.raises(ValueError, match="0 sample"):        # a sequence with no steps
        make().fit([X[0], X[1][:0]], None if y_fit is None else y_fit[:2])
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        make().fit(np.arange(6.0), None if y_fit is None else y_fit[:6])
    est = make().fit(X, y_fit)
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        _first_method(est)(np.arange(6.0))
    with pytest.raises(ValueError, match="0 sample"):
        _first_method(est)(np.empty((0, 6, 3)))


@pytest.mark.parametrize("name", ESTIMATORS)
def test_different_n_features_at_predict(name):
    make, target = ESTIMATORS[name]
    X, y = _sequences(n_features=4)
    est = make().fit(X, target(y))
    message = f"X has 3 features, but {name} is expecting 4 features as input."
    with pytest.raises(ValueError, match=message):
        _first_method(est)(X[:, :, :3])
    with pytest.raises(ValueError, match=message):
        _first_method(est)([s[:, :3] for s in X[:5]] + [X[5, :2, :3]])
    with pytest.raises(ValueError, match="same number of features"):
        _first_method(est)([X[0], X[1, :, :3]])
    # fitted on 2-D: the steps are the features, as scikit-learn counts them
    est = make().fit(X[:, :, 0], target(y))
    with pytest.raises(ValueError, match=f"X has 5 features, but {name} is expecting 6 "
                                         f"features as input."):
        _first_method(est)(X[:, :5, 0])


def test_n_features_message_exactly():
    X, y = _sequences(n_features=4)
    est = _clf().fit(X, y)
    with pytest.raises(ValueError) as info:
        est.predict(X[:, :, :3])
    assert str(info.value) == "X has 3 features, but GRUClassifier is expecting 4 features " \
                              "as input."


@pytest.mark.parametrize("make", [_clf, _reg])
def test_bad_targets(make):
    X, y = _sequences()
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        make().fit(X, y[:-1])
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        make().fit(list(X[:-1]) + [X[-1, :3]], y[:-2])      # ragged X
    with pytest.raises(ValueError, match="requires y"):
        make().fit(X, None)


def test_classifier_rejects_regression_targets():
    X, _ = _sequences()
    with pytest.raises(ValueError, match="Unknown label type"):
        _clf().fit(X, X[:, 0, 0].astype(np.float64))


def test_regressor_rejects_nan_targets():
    X, _ = _sequences()
    target = X[:, 0, 0].astype(np.float64)
    target[2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _reg().fit(X, target)


INVALID_MODEL_PARAMS = [dict(hidden_size=0), dict(hidden_size=2.5), dict(num_layers=0),
                        dict(batch_size=0), dict(max_iter=0), dict(n_iter_no_change=0),
                        dict(dropout=1.0), dict(dropout=-0.1), dict(learning_rate_init=0.0),
                        dict(alpha=-1.0), dict(validation_fraction=1.0),
                        dict(clip_grad_norm=0.0),
                        dict(hidden_size=True)]


@pytest.mark.parametrize("make", [GRUClassifier, GRURegressor])
@pytest.mark.parametrize("params", INVALID_MODEL_PARAMS, ids=str)
def test_invalid_hyperparameters_raise_at_fit(make, params):
    X, y = _sequences(n=10)
    est = make(**{"max_iter": 1, **params})                  # constructing never raises
    assert est.get_params()[next(iter(params))] == next(iter(params.values()))
    with pytest.raises(ValueError):
        est.fit(X, y)
    assert not hasattr(est, "gru_")


@pytest.mark.parametrize("params", [dict(hidden_size=0), dict(num_layers=0),
                                    dict(pooling="median"), dict(pooling=None)], ids=str)
def test_invalid_transformer_parameters_raise_at_fit(params):
    X, _ = _sequences(n=10)
    est = GRUTransformer(**params)
    with pytest.raises(ValueError):
        est.fit(X)


@pytest.mark.parametrize("make", [lambda: _clf(tol=None), lambda: _clf(dropout=None),
                                  lambda: GRUTransformer(hidden_size=2.5)],
                         ids=["tol=None", "dropout=None", "transformer-hidden_size=2.5"])
def test_untyped_hyperparameters_are_value_errors(make):
    X, y = _sequences(n=10)
    est = make()
    with pytest.raises(ValueError):
        est.fit(X, None if isinstance(est, GRUTransformer) else y)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_callers_x_and_y_never_modified(name):
    make, target = ESTIMATORS[name]
    X, y = _sequences()
    ragged, y_ragged = _ragged()
    y_fit, y_ragged = target(y), target(y_ragged)
    arrays = [X, X[:, :, 0], y_fit, y_ragged] + ragged
    copies = [None if a is None else a.copy() for a in arrays]
    ids = [id(s) for s in ragged]
    est = make().fit(X, y_fit)
    _first_method(est)(X)
    _first_method(est)(ragged)
    if hasattr(est, "predict_proba"):
        est.predict_proba(ragged)
        est.predict_log_proba(X)
    if hasattr(est, "partial_fit"):
        est.partial_fit(ragged, y_ragged)
        est.partial_fit(X, y_fit)
    if isinstance(est, GRUTransformer):
        est.fit_transform(ragged)
    make().fit(ragged, y_ragged)
    make().fit(X[:, :, 0], y_fit)
    for array, copy in zip(arrays, copies):
        if array is not None:
            np.testing.assert_array_equal(array, copy)
    assert [id(s) for s in ragged] == ids and len(ragged) == len(ids)


# -- 11. labels ---------------------------------------------------------------------------------

def _check_probabilities(est, X):
    proba = est.predict_proba(X)
    assert proba.shape == (len(X), len(est.classes_))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(proba >= 0)
    np.testing.assert_allclose(est.predict_log_proba(X), np.log(proba), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_array_equal(est.predict(X), est.classes_[proba.argmax(axis=1)])
    return proba


@pytest.mark.parametrize("labels", [np.array(["dog", "cat", "emu"]),     # sorted: cat dog emu
                                    np.array([11, -2, 5]),
                                    np.array([3.0, 1.0, 2.0])],
                         ids=["strings", "negative-unsorted-ints", "integral-floats"])
def test_labels_and_probability_columns(labels):
    X, codes = _sequences(n=90, n_classes=3)
    y = labels[codes]
    est = _clf(hidden_size=8, max_iter=25, learning_rate_init=3e-2).fit(X, y)
    np.testing.assert_array_equal(est.classes_, np.sort(labels))
    proba = _check_probabilities(est, X)
    assert set(est.predict(X)) <= set(labels) and est.predict(X).dtype == y.dtype
    assert est.score(X, y) >= 0.8
    # column j is the probability of classes_[j]
    for j, label in enumerate(est.classes_):
        assert proba[y == label, j].mean() > proba[y != label, j].mean() + 0.2
    # the same model as one fitted on the classes' indices in classes_
    indices = np.searchsorted(est.classes_, y)
    by_index = _clf(hidden_size=8, max_iter=25, learning_rate_init=3e-2).fit(X, indices)
    np.testing.assert_array_equal(by_index.predict_proba(X), proba)


def test_mixed_python_and_numpy_integer_labels():
    X, codes = _sequences(n=30, n_classes=3)
    labels = [7, np.int64(-1), np.int32(4)]
    y = [labels[c] for c in codes]                  # a plain list of mixed integer types
    est = _clf().fit(X, y)
    np.testing.assert_array_equal(est.classes_, [-1, 4, 7])
    _check_probabilities(est, X)
    assert set(est.predict(X).tolist()) <= {-1, 4, 7}


@pytest.mark.parametrize("labels", [np.array([0, 1]), np.array(["yes", "no"]),
                                    np.array([True, False])], ids=["ints", "strings", "bools"])
def test_binary_problems(labels):
    X, codes = _sequences(n=40)
    y = labels[codes]
    est = _clf(max_iter=15, learning_rate_init=3e-2).fit(X, y)
    np.testing.assert_array_equal(est.classes_, np.sort(labels))
    assert est.coef_.shape == (2, 6) and est.intercept_.shape == (2,)
    proba = _check_probabilities(est, X)
    assert proba.shape == (40, 2) and est.score(X, y) >= 0.8


def test_single_sequence_and_single_class_predictions():
    X, y = _sequences()
    est = _clf().fit(X, y)
    assert est.predict(X[:1]).shape == (1,) and est.predict_proba(X[5:6]).shape == (1, 2)
    assert est.predict([X[2]]).shape == (1,)


# -- 12. GRURegressor ---------------------------------------------------------------------------

def test_regressor_output_shapes_and_r2():
    X, _ = _sequences(n=50)
    y1 = X[:, :, 0].mean(axis=1).astype(np.float64)
    y3 = np.stack([y1, X[:, :, 1].mean(axis=1), X[:, -1, 2]], axis=1)
    est = _reg(max_iter=20, learning_rate_init=2e-2)
    prediction = est.fit(X, y1).predict(X)
    assert prediction.shape == (50,) and est.coef_.shape == (1, 6)
    assert est.score(X, y1) == pytest.approx(r2_score(y1, prediction), abs=1e-12)
    assert est.score(X, y1) > 0.3
    prediction = est.fit(X, y3).predict(X)
    assert prediction.shape == (50, 3) and est.n_outputs_ == 3
    assert est.score(X, y3) == pytest.approx(r2_score(y3, prediction), abs=1e-12)
    assert est.fit(X, y1[:, None]).predict(X).shape == (50, 1)
    X_ragged, _ = _ragged()
    assert est.predict(X_ragged).shape == (len(X_ragged), 1)
    assert est.fit(X, list(y1)).predict(X_ragged).shape == (len(X_ragged),)


def test_regressor_learns_better_with_more_epochs():
    X, _ = _sequences(n=80)
    y = 2.0 * X[:, :, 0].mean(axis=1) + 0.5
    short = _reg(max_iter=2, learning_rate_init=2e-2).fit(X, y)
    longer = _reg(max_iter=30, learning_rate_init=2e-2).fit(X, y)
    assert longer.score(X, y) > max(short.score(X, y), 0.5)


# -- 13. GRUTransformer -------------------------------------------------------------------------

def test_transformer_random_gru_is_deterministic():
    X, _ = _sequences()
    a = GRUTransformer(hidden_size=5, random_state=0).fit_transform(X)
    b = GRUTransformer(hidden_size=5, random_state=0).fit(X).transform(X)
    c = GRUTransformer(hidden_size=5, random_state=1).fit_transform(X)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (len(X), 5) and a.dtype == np.float64
    assert not np.allclose(a, c)
    t = GRUTransformer(hidden_size=5, num_layers=2, bidirectional=True, random_state=0).fit(X)
    assert isinstance(t.gru_, cgru.GRU) and t.gru_.input_size == 3
    assert (t.gru_.hidden_size, t.gru_.num_layers, t.gru_.bidirectional) == (5, 2, True)
    assert t.transform(X).shape == (len(X), 10) and t.n_features_in_ == 3


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
@pytest.mark.parametrize("config", [dict(), dict(num_layers=2, bidirectional=True)],
                         ids=["plain", "bidirectional-2-layers"])
def test_transformer_with_given_gru_matches_reference(pooling, config):
    gru = cgru.GRU(3, 5, seed=11, **config)       # batch_first=False: the transformer copes
    state = gru.state_dict()
    est = GRUTransformer(gru=gru, pooling=pooling)
    X_dense, _ = _sequences(n=7)
    X_ragged, _ = _ragged(n=8)
    for X in (X_dense, X_ragged, _to_object_array(X_ragged)):
        np.testing.assert_allclose(est.fit(X).transform(X),
                                   _reference_features(gru, X, pooling), rtol=RTOL,
                                   atol=ATOL)
    if pooling == "last":     # that GRU's own h_n
        _, h_n = gru(X_dense.transpose(1, 0, 2))
        d = gru.num_directions
        np.testing.assert_array_equal(est.transform(X_dense),
                                      np.concatenate(list(h_n[-d:]), axis=1))
    # the caller's module is left as it was
    assert gru.batch_first is False and gru.training is False
    for name, value in gru.state_dict().items():
        np.testing.assert_array_equal(value, state[name])
    assert est.get_params()["gru"] is gru and est.gru_ is not gru


def test_transformer_uses_eval_mode_of_a_training_gru():
    gru = cgru.GRU(3, 4, num_layers=2, dropout=0.5, seed=0).train()
    X, _ = _sequences(n=6)
    est = GRUTransformer(gru=gru).fit(X)
    first = est.transform(X)
    np.testing.assert_array_equal(est.transform(X), first)          # no dropout
    np.testing.assert_allclose(first, _reference_features(gru, X, "last"), rtol=RTOL,
                               atol=ATOL)
    assert gru.training is True


def test_transformer_from_saved_file(tmp_path):
    gru = cgru.GRU(3, 4, bidirectional=True, seed=2)
    path = tmp_path / "encoder.npz"
    gru.save(str(path))
    X, _ = _ragged(n=6)
    expected = GRUTransformer(gru=gru, pooling="mean").fit_transform(X)
    np.testing.assert_array_equal(GRUTransformer(gru=str(path), pooling="mean").fit_transform(X),
                                  expected)


def test_transformer_from_saved_pathlib_path(tmp_path):
    gru = cgru.GRU(3, 4, seed=2)
    path = tmp_path / "encoder.npz"
    gru.save(path)
    X, _ = _sequences(n=5)
    np.testing.assert_array_equal(GRUTransformer(gru=path).fit_transform(X),
                                  GRUTransformer(gru=gru).fit_transform(X))


def test_transformer_float64_gru_keeps_float64():
    gru = cgru.GRU(3, 4, seed=2, dtype=np.float64)
    X, _ = _sequences(n=5)
    est = GRUTransformer(gru=gru).fit(X)
    assert est.gru_.dtype == np.float64
    np.testing.assert_allclose(est.transform(X), _reference_features(gru, X, "last"),
                               rtol=1e-12, atol=1e-12)


def test_transformer_feature_names_out():
    X, _ = _sequences()
    t = GRUTransformer(hidden_size=3, bidirectional=True, random_state=0).fit(X)
    names = t.get_feature_names_out()
    assert len(names) == 6 == t.transform(X).shape[1]
    assert list(names) == [f"grutransformer{i}" for i in range(6)]
    given = GRUTransformer(gru=cgru.GRU(3, 7, seed=0)).fit(X)
    assert len(given.get_feature_names_out()) == 7


def test_transformer_input_size_mismatch():
    gru = cgru.GRU(4, 3, seed=0)
    X, _ = _sequences(n_features=3)
    with pytest.raises(ValueError, match="input_size"):
        GRUTransformer(gru=gru).fit(X)
    with pytest.raises(ValueError, match="input_size"):
        GRUTransformer(gru=gru).fit(X[:, :, 0])      # univariate: one feature per step
    with pytest.raises(TypeError):
        GRUTransformer(gru=cgru.GRUCell(3, 4)).fit(X)


# -- dropout and layers in the estimators -------------------------------------------------------

def test_dropout_trains_in_train_mode_and_predicts_in_eval_mode():
    X, y = _sequences(n=48)
    with_dropout = _clf(num_layers=2, dropout=0.5, max_iter=4).fit(X, y)
    without = _clf(num_layers=2, dropout=0.0, max_iter=4).fit(X, y)
    # same seeds, same first weights: only the dropout during training tells them apart
    assert with_dropout.loss_curve_ != without.loss_curve_
    assert with_dropout.gru_.dropout == 0.5 and with_dropout.gru_.training is False
    first = with_dropout.predict_proba(X)
    for _ in range(2):
        np.testing.assert_array_equal(with_dropout.predict_proba(X), first)
    np.testing.assert_allclose(first, _head_by_hand(with_dropout, list(X)), rtol=RTOL,
                               atol=ATOL)
    # one layer: dropout is a no-op (as in PyTorch), without a warning from the estimator
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="dropout option")
        one = _clf(dropout=0.5).fit(X, y)
    assert one.loss_curve_ == _clf(dropout=0.0).fit(X, y).loss_curve_


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_predictions_do_not_depend_on_sample_order(dtype):
    # 41 rows: full register blocks and a partial one, on one thread or two. Bit for bit where
    # the kernel's panels do every product (AVX-512 and AVX2 builds in float32;
    # tests/test_kernel_paths.py); where 41 rows take OpenBLAS's GEMMs (the baseline build,
    # float64 on AVX2), whose Haswell kernels round a row by its place in the call (an ulp;
    # measured in test_kernel_paths), the steps carry it on: within
    # 8 float eps of each other (measured: 0.3 eps in float32), where scikit-learn's own
    # check_methods_sample_order_invariance (run on small data in the estimator checks) asks
    # rtol 1e-7.
    X, y = _sequences(n=41, seq_len=8, n_features=8)
    est = _clf(dtype=dtype, hidden_size=16).fit(X, y)
    order = np.random.default_rng(0).permutation(len(X))
    atol = 8 * np.finfo(dtype).eps
    np.testing.assert_allclose(est.predict_proba(X[order]), est.predict_proba(X)[order],
                               rtol=0, atol=atol)
    features = GRUTransformer(hidden_size=64, random_state=0, dtype=dtype).fit(X)
    np.testing.assert_allclose(features.transform(X[order]), features.transform(X)[order],
                               rtol=0, atol=atol)


def test_clip_grad_norm_and_alpha_change_training():
    X, y = _sequences()
    plain = _clf().fit(X, y)
    clipped = _clf(clip_grad_norm=1e-3).fit(X, y)
    penalised = _clf(alpha=1.0).fit(X, y)
    assert clipped.loss_curve_ != plain.loss_curve_
    # the L2 term is part of the reported loss
    assert penalised.loss_curve_[0] > plain.loss_curve_[0]


# -- imports ------------------------------------------------------------------------------------

def _python(code):
    # from the tests folder: in the repository root, Python would import the source folder
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=os.path.dirname(os.path.abspath(__file__)))


def test_import_cgru_does_not_import_sklearn():
    result = _python('import cgru, sys; assert "sklearn" not in sys.modules, "imported"')
    assert result.returncode == 0, result.stderr


def test_cgru_sklearn_without_sklearn_is_an_import_error():
    result = _python(
        'import sys; sys.modules["sklearn"] = None\n'
        'try:\n'
        '    import cgru.sklearn\n'
        'except ImportError as error:\n'
        '    print("ImportError:", error)\n'
        'else:\n'
        '    raise SystemExit("no ImportError")\n')
    assert result.returncode == 0, result.stderr + result.stdout
    assert "scikit-learn" in result.stdout


# -- 14. accuracy on real data ------------------------------------------------------------------

def test_digits_accuracy(digits, digits_classifier):
    _, X_test, _, y_test = digits
    # measured 0.976-0.993 over seeds 0-9 (0.982 for this seed)
    assert digits_classifier.score(X_test, y_test) >= 0.95
    assert digits_classifier.n_iter_ <= 40


def _aeon_split(loader, split):
    X, y = loader(split=split)
    if isinstance(X, list):                     # unequal lengths: (n_channels, L_i) each
        return [np.ascontiguousarray(x.T) for x in X], y
    return np.ascontiguousarray(X.transpose(0, 2, 1)), y    # (n, channels, L) -> (n, L, C)


@pytest.mark.parametrize("name, params, threshold", [
    # ItalyPowerDemand: 67 train / 1029 test, 24 steps, univariate. Measured 0.939-0.966
    # over seeds 0-4 (0.2 s a fit).
    ("load_italy_power_demand",
     dict(hidden_size=32, max_iter=100, learning_rate_init=1e-2, batch_size=16), 0.90),
    # JapaneseVowels: 270 / 370, 12 channels, 7-29 steps (ragged, run packed). Measured
    # 0.968-0.978 over seeds 0-4 (0.8 s a fit).
    ("load_japanese_vowels",
     dict(hidden_size=32, max_iter=30, learning_rate_init=1e-2, batch_size=16), 0.93),
])
def test_aeon_datasets_accuracy(name, params, threshold):
    datasets = pytest.importorskip("aeon.datasets")
    loader = getattr(datasets, name)
    X_train, y_train = _aeon_split(loader, "train")
    X_test, y_test = _aeon_split(loader, "test")
    est = GRUClassifier(random_state=0, **params).fit(X_train, y_train)
    assert est.score(X_test, y_test) >= threshold


def test_ragged_batches_pack_as_pack_sequence():
    """A training batch of ragged sequences is packed by one gather of the checked rows:
    the same PackedSequence as cgru.pack_sequence(..., enforce_sorted=False), for any subset
    and order of the sequences, ties in length included."""
    from cgru._sequences import check_sequences

    rng = np.random.default_rng(7)
    sequences = [rng.standard_normal((length, 3)).astype(np.float32)
                 for length in rng.integers(1, 9, size=40)]
    checked = check_sequences(GRUClassifier(), sequences, dtype=np.dtype(np.float32),
                              reset=True)
    for _ in range(20):
        indices = rng.permutation(40)[:rng.integers(1, 41)]
        packed = checked.take(indices).gru_input()
        expected = cgru.pack_sequence([sequences[i] for i in indices], enforce_sorted=False)
        for field in expected._fields:
            np.testing.assert_array_equal(getattr(packed, field), getattr(expected, field))
        np.testing.assert_array_equal(checked.take(indices).lengths(),
                                      [len(sequences[i]) for i in indices])
