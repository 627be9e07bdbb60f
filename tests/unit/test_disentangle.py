"""The four disentanglement scores (infogan_dist/disentangle/) on representations with
known answers, and against independent implementations of the same definitions written
here plainly (loops, sklearn's mutual_info_score, scipy-free entropies) on the same
draws: they agree within 1e-9 (float64 summation order is all that differs).

Sizes are small (hundreds of votes and points) so the file runs in seconds; the
tolerances of the statistical claims are 4 standard deviations at these sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import mutual_info_score
from sklearn.svm import LinearSVC

from infogan_dist.disentangle import (
    MIN_POINTS,
    SCORES,
    FactorData,
    dci,
    factorvae,
    mig,
    mutual_info_matrix,
    sap,
    score_all,
)

SIZES = [3, 3, 4, 4, 4]  # 18 classes: DCI fits 100 stages x 18 trees
DCI = dict(num_train=200, num_test=100)
NAMES = ["shape", "scale", "orientation", "pos_x", "pos_y"]
FV = dict(batch_size=64, num_train=400, num_eval=2000, num_variance_estimate=1000)
AGREE = 1e-9  # independent implementations on the same draws


@pytest.fixture(scope="module")
def grid():
    """Every combination once, rows shuffled (the table, not the order, finds them)."""
    f = np.indices(SIZES).reshape(len(SIZES), -1).T
    f = f[np.random.default_rng(5).permutation(len(f))]
    return FactorData.from_factors(f, SIZES, NAMES), f.astype(np.float64)


def as_factors(rows_factors, perm=(2, 0, 4, 1, 3), scale=(0.1, 2.0, 0.5, 3.0, 1.0),
               shift=(1.0, -2.0, 0.0, 5.0, 0.3)):
    """The representation that is the factors, permuted and rescaled (positive scales)."""
    codes = rows_factors[:, list(perm)] * np.array(scale) + np.array(shift)
    return lambda rows: codes[rows]


def random_codes(n_rows, d=5, seed=1):
    codes = np.random.default_rng(seed).normal(size=(n_rows, d))
    return lambda rows: codes[rows]


def mixed(rows_factors):
    """The factors, standardised, with the first two codes mixed (their sum and
    difference): each of the two now carries two factors."""
    z = (rows_factors - rows_factors.mean(0)) / rows_factors.std(0)
    z[:, [0, 1]] = np.stack([z[:, 0] + z[:, 1], z[:, 0] - z[:, 1]], axis=1)
    return lambda rows: z[rows]


def standardised(rows_factors):
    z = (rows_factors - rows_factors.mean(0)) / rows_factors.std(0)
    return lambda rows: z[rows]


# --- known answers ---------------------------------------------------------------------------
def test_the_factors_themselves_score_factorvae_1_and_mig_of_the_entropies(grid):
    data, f = grid
    rep = as_factors(f)
    out = factorvae.score(rep, data, 0, **FV)
    assert out["factorvae"] == 1.0 and out["train_accuracy"] == 1.0
    assert out["num_active_dims"] == 5
    m = mig.score(rep, data, 0, num_train=3000)
    # every factor has <= 20 classes: each class its own bin, so the code that is the
    # factor holds all of the factor's (empirical) entropy
    top = np.max(m["mi_matrix"], axis=0)
    np.testing.assert_allclose(top, m["entropy"], rtol=1e-12)
    assert m["mig"] > 0.95
    # the permutation and the positive rescaling change nothing
    assert mig.score(lambda rows: f[rows], data, 0, num_train=3000)["mig"] == m["mig"]


def test_random_codes_score_factorvae_one_in_f_and_mig_near_0(grid):
    data, f = grid
    rep = random_codes(len(f))
    out = factorvae.score(rep, data, 0, **FV)
    # eval votes are independent of the trained classifier: accuracy 1/F in expectation
    sd = math.sqrt(0.2 * 0.8 / FV["num_eval"])
    assert abs(out["factorvae"] - 1 / len(SIZES)) < 4 * sd
    assert mig.score(rep, data, 0, num_train=3000)["mig"] < 0.03
    assert sap.score(rep, data, 0, num_train=1000, num_test=1000)["sap"] < 0.05
    assert dci.score(rep, data, 0, **DCI)["dci"] < 0.2


def test_mixing_two_codes_lowers_mig_and_dci(grid):
    data, f = grid
    pure, mix = standardised(f), mixed(f)
    assert mig.score(pure, data, 3, num_train=2000)["mig"] > 0.9
    assert mig.score(mix, data, 3, num_train=2000)["mig"] < 0.7
    pure_dci = dci.score(pure, data, 3, **DCI)["dci"]
    assert pure_dci > 0.9
    # two of five codes each split between two factors: about 1 - log_5(2) for those
    assert dci.score(mix, data, 3, **DCI)["dci"] < pure_dci - 0.1


def test_the_factors_beat_random_codes(grid):
    data, f = grid
    names = ["factorvae", "mig", "sap"]  # DCI: in the two tests above
    rand = score_all(random_codes(len(f)), data, seed=3, fraction=0.05, names=names)
    both = score_all(standardised(f), data, seed=3, fraction=0.05, names=names)
    for name in names:
        assert both[name][name] > rand[name][name] + 0.2, name


def test_scores_draw_from_their_own_streams(grid):
    """One score's value does not depend on which others run with it."""
    data, f = grid
    rep = mixed(f)
    alone = score_all(rep, data, seed=7, fraction=0.05, names=["mig"])
    together = score_all(rep, data, seed=7, fraction=0.05, names=["sap", "factorvae", "mig"])
    assert alone["mig"] == together["mig"]


def test_mutual_info_matrix_names_the_factor_of_each_code(grid):
    data, f = grid
    perm = [2, 0, 4, 1, 3]
    factors = data.sample_factors(2000, np.random.default_rng(0))
    codes = f[data.rows_of(factors)][:, perm]
    m = mutual_info_matrix(codes, factors)
    assert m.shape == (5, 5) and (m >= 0).all()
    assert np.argmax(m, axis=1).tolist() == perm


def test_factor_data_refuses_an_incomplete_grid_and_bad_classes():
    f = np.indices([2, 3]).reshape(2, -1).T
    with pytest.raises(ValueError, match=r"toy holds 5 of the 6 factor combinations.*missing"):
        FactorData.from_factors(f[1:], [2, 3], ["a", "b"], what="toy")
    with pytest.raises(ValueError, match=r"factor b has classes outside 0..1"):
        FactorData.from_factors(f, [2, 2], ["a", "b"])
    with pytest.raises(ValueError, match="must be >= 2"):
        FactorData.from_factors(f[:, :1], [1], ["a"])
    data = FactorData.from_factors(np.concatenate([f, f]), [2, 3])  # duplicates: first row
    assert data.rows_of(f).tolist() == list(range(6))


def test_non_finite_codes_are_one_line_errors(grid):
    data, f = grid
    with pytest.raises(ValueError, match="not all finite"):
        mig.score(lambda rows: np.full((len(rows), 3), np.nan), data, 0, num_train=100)


# --- independent implementations --------------------------------------------------------------
def draw_factors(rng, n):
    """FactorData.sample_factors' documented draw: factor by factor, n at a time."""
    return np.stack([rng.integers(s, size=n) for s in SIZES], axis=1)


def test_factorvae_agrees_with_a_loop_implementation(grid):
    data, f = grid
    rep = mixed(f)
    got = factorvae.score(rep, data, np.random.default_rng(11), **FV)

    rng = np.random.default_rng(11)
    b = FV["batch_size"]
    z = rep(np.arange(len(f)))  # codes by row

    def codes_of(factors):
        return np.array([z[data.table[np.ravel_multi_index(tuple(int(x) for x in row), SIZES)]]
                         for row in factors])

    def variance(x):  # ddof = 1, by hand
        mean = sum(x) / len(x)
        return sum((v - mean) ** 2 for v in x) / (len(x) - 1)

    codes = codes_of(draw_factors(rng, FV["num_variance_estimate"]))
    global_var = [variance(codes[:, j]) for j in range(codes.shape[1])]
    active = [j for j, v in enumerate(global_var) if math.sqrt(v) >= 0.05]

    def votes(m):
        index = rng.integers(len(SIZES), size=m)
        factors = draw_factors(rng, m * b).reshape(m, b, len(SIZES))
        table = [[0] * len(global_var) for _ in SIZES]
        for v in range(m):
            fv = factors[v].copy()
            fv[:, index[v]] = fv[0, index[v]]
            c = codes_of(fv)
            ratios = [variance(c[:, j]) / global_var[j] for j in active]
            table[index[v]][ratios.index(min(ratios))] += 1
        return table

    train = votes(FV["num_train"])
    classifier = [max(range(len(SIZES)), key=lambda k: train[k][j]) for j in range(5)]
    evaluation = votes(FV["num_eval"])
    acc = sum(evaluation[classifier[j]][j] for j in range(5)) / FV["num_eval"]
    assert got["factorvae"] == pytest.approx(acc, abs=AGREE)
    assert 0.3 < acc < 1.0  # a case that is neither trivial nor random


def test_mig_agrees_with_sklearn_mutual_info_score(grid):
    data, f = grid
    rep = mixed(f)
    got = mig.score(rep, data, np.random.default_rng(4), num_train=2000)
    factors = draw_factors(np.random.default_rng(4), 2000)
    codes = rep(np.array([data.table[np.ravel_multi_index(tuple(r), SIZES)] for r in factors]))
    gaps = []
    for k in range(len(SIZES)):
        mis = []
        for i in range(codes.shape[1]):
            edges = np.histogram(codes[:, i], 20)[1][:-1]
            mis.append(mutual_info_score(factors[:, k], np.digitize(codes[:, i], edges)))
        mis.sort(reverse=True)
        gaps.append((mis[0] - mis[1]) / mutual_info_score(factors[:, k], factors[:, k]))
    assert got["mig"] == pytest.approx(sum(gaps) / len(gaps), abs=AGREE)


def entropy_base(p, base):
    total = sum(p)
    return -sum(x / total * math.log(x / total, base) for x in p if x > 0)


def test_dci_agrees_with_a_loop_implementation(grid):
    data, f = grid
    # 6 codes for 5 factors, so that the two entropies' bases (F and d) differ
    z = np.concatenate([mixed(f)(np.arange(len(f))), random_codes(len(f), 1)(np.arange(len(f)))],
                       axis=1)
    d = z.shape[1]

    def rep(rows):
        return z[rows]

    got = dci.score(rep, data, np.random.default_rng(2), **DCI)
    rng = np.random.default_rng(2)
    f_train, f_test = draw_factors(rng, DCI["num_train"]), draw_factors(rng, DCI["num_test"])
    seeds = rng.integers(2**31 - 1, size=len(SIZES))
    z_train, z_test = (rep(np.array([data.table[np.ravel_multi_index(tuple(r), SIZES)]
                                     for r in ff])) for ff in (f_train, f_test))
    r = np.zeros((d, len(SIZES)))
    test_acc = []
    for k in range(len(SIZES)):
        model = GradientBoostingClassifier(random_state=int(seeds[k])).fit(z_train, f_train[:, k])
        r[:, k] = np.abs(model.feature_importances_)
        test_acc.append(np.mean(model.predict(z_test) == f_test[:, k]))
    assert got["informativeness_test"] == pytest.approx(np.mean(test_acc), abs=AGREE)
    # column k is factor k's (the pool fits the factors with most classes first)
    np.testing.assert_allclose(got["importance"], r, atol=AGREE)
    total = r.sum()
    want = sum((1 - entropy_base(r[i] + 1e-11, len(SIZES))) * r[i].sum() / total
               for i in range(d))
    assert got["dci"] == pytest.approx(want, abs=AGREE)
    complete = sum((1 - entropy_base(r[:, k] + 1e-11, d)) * r[:, k].sum() / total
                   for k in range(len(SIZES)))
    assert got["completeness"] == pytest.approx(complete, abs=AGREE)


def test_sap_agrees_with_a_loop_implementation(grid):
    data, f = grid
    rep = mixed(f)
    got = sap.score(rep, data, np.random.default_rng(9), num_train=600, num_test=300)
    rng = np.random.default_rng(9)
    f_train, f_test = draw_factors(rng, 600), draw_factors(rng, 300)
    seed = int(rng.integers(2**31 - 1))
    rows = [np.array([data.table[np.ravel_multi_index(tuple(r), SIZES)] for r in ff])
            for ff in (f_train, f_test)]
    z_train, z_test = rep(rows[0]), rep(rows[1])
    gaps = []
    for k in range(len(SIZES)):
        accs = []
        for i in range(5):
            svm = LinearSVC(C=0.01, class_weight="balanced", random_state=seed)
            svm.fit(z_train[:, [i]], f_train[:, k])
            accs.append(float(np.mean(svm.predict(z_test[:, [i]]) == f_test[:, k])))
        accs.sort()
        gaps.append(accs[-1] - accs[-2])
    assert got["sap"] == pytest.approx(sum(gaps) / len(gaps), abs=AGREE)


def test_a_tiny_fraction_still_gives_every_score_enough_points(grid):
    """Each scaled count is at least MIN_POINTS: with 2 points (the old floor) a factor
    took one class among them, and SAP's SVM refused to fit (a traceback through `infogan
    eval --disentanglement-fraction 0.0001`) while MIG divided by a zero entropy."""
    data, f = grid
    for name in SCORES.names():
        assert all(v >= MIN_POINTS for k, v in SCORES[name].scaled_sizes(1e-6).items()
                   if k != "batch_size"), name
    out = score_all(standardised(f), data, seed=0, fraction=1e-6)
    assert all(0 <= out[name][name] <= 1 for name in SCORES.names())
    with pytest.raises(ValueError, match="MIG: factor 1 takes one class among the 4 points"):
        mig.mig_of(np.eye(4)[:, :2], np.array([[0, 1], [1, 1], [0, 1], [1, 1]]))
