"""fmnist.Classifier as scikit-learn sees it: its API, model selection, pipelines, and its own estimator checks."""

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, cross_val_score

import fmnist


def _xy(small_ds, n=300):
    return small_ds.train.images[:n].reshape(n, -1), np.array(small_ds.class_names)[small_ds.train.labels[:n]]


def test_fit_predict_score_with_string_labels(small_ds):
    X, y = _xy(small_ds, 600)
    clf = fmnist.Classifier("lenet5", epochs=3, lr=3e-3, seed=0).fit(X, y)
    Xt, yt = small_ds.test.images, np.array(small_ds.class_names)[small_ds.test.labels]
    assert set(clf.classes_) == set(small_ds.class_names) and clf.predict(Xt[:5]).dtype == clf.classes_.dtype
    proba = clf.predict_proba(Xt / 255.0)  # 0..1 floats and (N, 28, 28) images are read as the files are
    assert proba.shape == (len(Xt), 10) and np.allclose(proba.sum(1), 1)
    assert clf.score(Xt, yt) > 0.6  # 3 epochs of LeNet-5 on 600 images; chance is 0.1
    assert clf.get_params()["epochs"] == 3 and clf.set_params(epochs=1).epochs == 1


def test_reference_project_000s_grid_search_runs_through_gridsearchcv(small_ds):
    X, y = _xy(small_ds)
    grid = {"model_params": [{"activation": "relu"}, {"activation": "tanh"}], "optimizer": ["adam"],
            "lr": [1e-3], "batch_size": [128], "epochs": [1]}
    search = GridSearchCV(fmnist.Classifier("cnn_dense100"), grid, cv=3).fit(X, y)
    assert len(search.cv_results_["params"]) == 2 and search.best_params_["model_params"]["activation"] in (
        "relu", "tanh")
    assert 0.3 < search.best_score_ and search.best_estimator_.predict(X[:3]).shape == (3,)


def test_cross_val_score_and_a_pipeline(small_ds):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    X, y = _xy(small_ds)
    invert_back = FunctionTransformer(lambda a: 255 - (255 - a))  # a transformer in front, as pipelines have
    pipeline = make_pipeline(invert_back, fmnist.Classifier("mlp_512_64", epochs=15, lr=2e-3))
    scores = cross_val_score(pipeline, X, y, cv=3)
    assert len(scores) == 3 and scores.min() > 0.5


def test_bad_images_and_settings_are_one_line(small_ds):
    X, y = _xy(small_ds, 50)
    with pytest.raises(fmnist.DataError, match=r"X: images have shape \(50, 783\), expected \(N, 28, 28\)"):
        fmnist.Classifier(epochs=1).fit(X[:, 1:], y)
    with pytest.raises(fmnist.FmnistError, match="unknown training setting nope"):
        fmnist.Classifier(settings={"nope": 1}).fit(X, y)
    with pytest.raises(fmnist.DataError, match="1 class"):
        fmnist.Classifier(epochs=1).fit(X, ["a"] * 50)


@pytest.mark.slow
def test_scikit_learns_estimator_checks_that_apply_to_images_pass():
    from sklearn.utils.estimator_checks import check_estimator

    # The checks that feed tabular data (a few columns of random floats) cannot apply to an image classifier,
    # which needs 784 pixels a row: they fail in fit on the one-line shape refusal, and nothing else fails.
    # Those that apply pass: the parameter protocol, cloning, NotFittedError, sparse, NaN and empty input refused
    # with scikit-learn's own messages, one-label and regression targets, y=None.
    results = check_estimator(fmnist.Classifier(epochs=1, device="cpu"), on_fail=None)
    passed = {r["check_name"] for r in results if r["status"] == "passed"}
    assert {"check_no_attributes_set_in_init", "check_parameters_default_constructible", "check_get_params_invariance",
            "check_set_params", "check_estimator_repr", "check_estimators_unfitted", "check_estimator_sparse_array",
            "check_supervised_y_no_nan", "check_classifiers_regression_target", "check_requires_y_none",
            "check_classifiers_one_label", "check_complex_data", "check_fit1d"} <= passed
    for r in results:
        if r["status"] == "failed":
            assert "expected (N, 28, 28)" in str(r["exception"]), (r["check_name"], r["exception"])
    assert len(passed) >= 25
