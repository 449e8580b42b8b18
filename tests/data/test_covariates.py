"""Tests of the covariate registry (rnadiff.data._covariates) on real obs tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from rnadiff import InputError
from rnadiff.data._covariates import Covariate, CovariateRegistry, conditions_frame

NORMAN_SETUP = {
    "perturbation_key": "condition",
    "control": "ctrl",
    "cell_type_key": "cell_type",
    "combination_sep": "+",
}
KANG_SETUP = {
    "perturbation_key": "group_id",
    "control": "ctrl",
    "cell_type_key": "cluster_id",
    "categorical_keys": ["sample_id"],
    "continuous_keys": ["tsne1"],
}


@pytest.fixture
def norman_registry(norman_tiny) -> CovariateRegistry:
    return CovariateRegistry.fit(norman_tiny.obs, NORMAN_SETUP)


def hot_tokens(registry: CovariateRegistry, key: str, row: np.ndarray) -> set[str]:
    """The tokens set to one in an encoded row; every entry must be 0 or 1."""
    assert set(np.unique(row)) <= {0.0, 1.0}
    return {registry[key].tokens[i] for i in np.flatnonzero(row)}


def encode_conditions(registry: CovariateRegistry, values: list[str]) -> np.ndarray:
    return registry.encode(pd.DataFrame({"condition": values}), allow_missing=True)["condition"]


# ------------------------------------------------------------------ categorical
def test_categorical_covariates_are_one_hot_in_sorted_token_order(kang_small):
    registry = CovariateRegistry.fit(kang_small.obs, KANG_SETUP)
    assert registry.keys == ["group_id", "cluster_id", "sample_id", "tsne1"]
    assert registry.perturbation_key == "group_id" and registry.control == "ctrl"
    roles = {c.key: c.role for c in registry.covariates}
    assert roles == {
        "group_id": "perturbation",
        "cluster_id": "cell_type",
        "sample_id": "categorical",
        "tsne1": "continuous",
    }
    encoded = registry.encode(kang_small.obs)
    for key in ("group_id", "cluster_id", "sample_id"):
        values = kang_small.obs[key].astype(str).to_numpy()
        tokens = registry[key].tokens
        assert list(tokens) == sorted(set(values))
        assert encoded[key].dtype == np.float32
        assert encoded[key].shape == (kang_small.n_obs, len(tokens))
        np.testing.assert_array_equal(encoded[key].sum(axis=1), 1.0)
        np.testing.assert_array_equal(np.asarray(tokens)[encoded[key].argmax(axis=1)], values)


def test_cell_type_names_with_the_separator_stay_whole(kang_small):
    # "CD14+ Monocytes" holds a "+", but only perturbations are split into combinations
    registry = CovariateRegistry.fit(kang_small.obs, {**KANG_SETUP, "combination_sep": "+"})
    assert "CD14+ Monocytes" in registry["cluster_id"].tokens
    assert registry["cluster_id"].parts("CD14+ Monocytes") == ["CD14+ Monocytes"]


def test_combinations_are_encoded_as_their_parts(norman_tiny, norman_registry):
    conditions = norman_tiny.obs["condition"].astype(str)
    parts = {p for c in conditions for p in c.split("+")}
    assert set(norman_registry["condition"].tokens) == parts
    assert norman_registry.control == "ctrl"
    encoded = norman_registry.encode(norman_tiny.obs)["condition"]
    for value, row in zip(conditions, encoded, strict=True):
        # the control is the identity of combinations: "MEIS1+ctrl" is the single MEIS1
        expected = set(value.split("+")) - {"ctrl"} or {"ctrl"}
        assert hot_tokens(norman_registry, "condition", row) == expected
    double = np.flatnonzero(conditions == "MAP2K6+ELMSAN1")
    assert len(double) == 2
    for i in double:
        assert encoded[i].sum() == 2.0
        assert hot_tokens(norman_registry, "condition", encoded[i]) == {"MAP2K6", "ELMSAN1"}


def test_combination_order_and_spaces_do_not_matter(norman_registry):
    rows = encode_conditions(norman_registry, ["ctrl+ETS2", "ETS2+ctrl", " ETS2 + ctrl "])
    np.testing.assert_array_equal(rows[0], rows[1])
    np.testing.assert_array_equal(rows[0], rows[2])
    assert hot_tokens(norman_registry, "condition", rows[0]) == {"ETS2"}  # ctrl: identity


def test_unseen_combination_of_known_parts_encodes(norman_tiny, norman_registry):
    new = "CEBPB+KLF1"
    assert new not in set(norman_tiny.obs["condition"].astype(str))
    row = encode_conditions(norman_registry, [new])[0]
    assert hot_tokens(norman_registry, "condition", row) == {"CEBPB", "KLF1"}


@pytest.mark.parametrize("value", ["MAP2K6+NOTAGENE", "NOTAGENE", "NOTAGENE+ctrl"])
def test_unknown_part_is_named(norman_registry, value):
    with pytest.raises(InputError) as info:
        encode_conditions(norman_registry, ["ctrl", value])
    message = str(info.value)
    assert "'NOTAGENE'" in message and "'condition'" in message


def test_unknown_value_of_a_plain_category_is_named(kang_small):
    registry = CovariateRegistry.fit(kang_small.obs, KANG_SETUP)
    obs = kang_small.obs.iloc[:3].copy()
    obs["cluster_id"] = ["B cells", "Neurons", "B cells"]
    with pytest.raises(InputError, match=r"unknown value 'Neurons' in column 'cluster_id'") as e:
        registry.encode(obs)
    assert "train with some of its cells" in str(e.value)  # what to do about it


# ------------------------------------------------------------------ continuous
def test_dose_is_log1p_then_standardized():
    doses = np.array([0.0, 10.0, 100.0, 1000.0, 10000.0, 10.0])
    obs = pd.DataFrame({"dose": doses, "drug": ["a", "b", "a", "b", "a", "b"]})
    registry = CovariateRegistry.fit(obs, {"dose_key": "dose", "categorical_keys": ["drug"]})
    cov = registry["dose"]
    assert cov.role == "dose" and cov.log and not cov.categorical
    assert cov.mean == pytest.approx(np.log1p(doses).mean())
    assert cov.std == pytest.approx(np.log1p(doses).std())
    encoded = registry.encode(obs)["dose"]
    assert encoded.dtype == np.float32
    np.testing.assert_allclose(encoded.mean(), 0.0, atol=1e-6)
    np.testing.assert_allclose(encoded.std(), 1.0, rtol=1e-5)
    new = registry.encode(pd.DataFrame({"dose": [50.0], "drug": ["a"]}))["dose"]
    np.testing.assert_allclose(new, (np.log1p(50.0) - cov.mean) / cov.std, rtol=1e-6)


def test_continuous_covariate_is_standardized_without_log(kang_small):
    registry = CovariateRegistry.fit(kang_small.obs, KANG_SETUP)
    cov = registry["tsne1"]
    assert not cov.log
    tsne = kang_small.obs["tsne1"].to_numpy()
    assert cov.mean == pytest.approx(tsne.mean()) and cov.std == pytest.approx(tsne.std())
    encoded = registry.encode(kang_small.obs)["tsne1"]
    np.testing.assert_allclose(encoded, (tsne - tsne.mean()) / tsne.std(), rtol=1e-5, atol=1e-6)


def test_constant_continuous_covariate_does_not_divide_by_zero():
    registry = CovariateRegistry.fit(pd.DataFrame({"t": [24.0, 24.0, 24.0]}), {"time_key": "t"})
    np.testing.assert_array_equal(registry.encode(pd.DataFrame({"t": [24.0, 48.0]}))["t"], [0, 24])


def test_negative_dose_in_training_is_named():
    with pytest.raises(InputError, match=r"dose column 'dose' holds negative values"):
        CovariateRegistry.fit(pd.DataFrame({"dose": [1.0, -2.0]}), {"dose_key": "dose"})


@pytest.mark.filterwarnings("ignore:invalid value encountered in log1p:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:divide by zero encountered in log1p:RuntimeWarning")
@pytest.mark.parametrize("dose", [-5.0, -1.0])
def test_negative_dose_in_new_conditions_is_named(dose):
    registry = CovariateRegistry.fit(
        pd.DataFrame({"dose": [0.0, 10.0, 100.0]}), {"dose_key": "dose"}
    )
    with pytest.raises(InputError, match="'dose'"):
        registry.encode(pd.DataFrame({"dose": [dose]}))


def test_non_numeric_dose_column_is_named(norman_tiny):
    # Norman's dose_val holds combination doses such as "1+1": not a number
    with pytest.raises(InputError, match=r"column 'dose_val' must be numeric"):
        CovariateRegistry.fit(norman_tiny.obs, {"dose_key": "dose_val"})


# ------------------------------------------------------------------ serialization
@pytest.mark.parametrize("dataset", ["kang", "norman"])
def test_to_dict_from_dict_round_trip(request, dataset):
    if dataset == "kang":
        obs = request.getfixturevalue("kang_small").obs
        setup = {**KANG_SETUP, "dose_key": "tsne2"}
        obs = obs.assign(tsne2=obs["tsne2"] - obs["tsne2"].min())  # a non-negative "dose"
    else:
        obs, setup = request.getfixturevalue("norman_tiny").obs, NORMAN_SETUP
    registry = CovariateRegistry.fit(obs, setup)
    restored = CovariateRegistry.from_dict(json.loads(json.dumps(registry.to_dict())))
    assert restored == registry
    assert all(isinstance(c.tokens, tuple) for c in restored.covariates)
    before, after = registry.encode(obs), restored.encode(obs)
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])


# ------------------------------------------------------------------ missing values
def test_allow_missing_gives_null_rows(kang_small):
    registry = CovariateRegistry.fit(kang_small.obs, KANG_SETUP)
    obs = pd.DataFrame({"group_id": ["stim", None, "ctrl"], "tsne1": [1.0, np.nan, 2.0]})
    encoded = registry.encode(obs, allow_missing=True)  # cluster_id, sample_id: absent
    assert encoded.keys() == {"group_id", "cluster_id", "sample_id", "tsne1"}
    tokens = registry["group_id"].tokens
    np.testing.assert_array_equal(encoded["group_id"][0], np.asarray(tokens) == "stim")
    np.testing.assert_array_equal(encoded["group_id"][1], 0.0)
    np.testing.assert_array_equal(encoded["group_id"][2], np.asarray(tokens) == "ctrl")
    for key in ("cluster_id", "sample_id"):
        assert encoded[key].shape == (3, len(registry[key].tokens))
        np.testing.assert_array_equal(encoded[key], 0.0)
    cov = registry["tsne1"]
    np.testing.assert_allclose(
        encoded["tsne1"][[0, 2]], (np.array([1.0, 2.0]) - cov.mean) / cov.std
    )
    assert np.isnan(encoded["tsne1"][1])


def test_missing_values_are_an_error_without_allow_missing(kang_small):
    registry = CovariateRegistry.fit(kang_small.obs, KANG_SETUP)
    obs = kang_small.obs.iloc[:4].copy()
    obs["group_id"] = obs["group_id"].astype(object)
    obs.iloc[1, obs.columns.get_loc("group_id")] = None
    with pytest.raises(InputError, match=r"column 'group_id' has 1 missing values"):
        registry.encode(obs)
    with pytest.raises(InputError, match=r"column 'cluster_id' \(a covariate of the model\)"):
        registry.encode(kang_small.obs.iloc[:4].drop(columns="cluster_id"))


# ------------------------------------------------------------------ registry checks
def test_control_must_occur_in_the_perturbation_column(norman_tiny):
    with pytest.raises(InputError, match=r"control value 'non-targeting' does not occur"):
        CovariateRegistry.fit(norman_tiny.obs, {**NORMAN_SETUP, "control": "non-targeting"})


def test_a_column_registered_twice_is_an_error(kang_small):
    setup = {**KANG_SETUP, "categorical_keys": ["cluster_id"]}
    with pytest.raises(InputError, match="registered twice"):
        CovariateRegistry.fit(kang_small.obs, setup)


def test_unknown_covariate_lookup_is_named(norman_registry):
    with pytest.raises(InputError, match=r"'dose' is not a covariate"):
        norman_registry["dose"]


def test_conditions_frame_accepts_dict_list_and_frame(norman_registry):
    one = conditions_frame({"condition": "ctrl"}, norman_registry)
    many = conditions_frame([{"condition": "ctrl"}, {"cell_type": "A549"}], norman_registry)
    frame = conditions_frame(pd.DataFrame({"condition": ["ctrl"]}, index=["x"]), norman_registry)
    assert one.to_dict("records") == [{"condition": "ctrl"}]
    assert len(many) == 2 and many["condition"].isna().tolist() == [False, True]
    assert list(frame.index) == [0]
    with pytest.raises(InputError, match=r"unknown covariates \['drug'\]"):
        conditions_frame({"condition": "ctrl", "drug": "x"}, norman_registry)
    with pytest.raises(InputError, match="no conditions"):
        conditions_frame([], norman_registry)


def test_covariate_parts_without_separator():
    assert Covariate("c", "categorical").parts("A+B") == ["A+B"]
    assert Covariate("p", "perturbation", sep="+").parts("A+B+") == ["A", "B"]


def test_control_inside_a_combination_is_the_single_perturbation(norman_registry):
    frame = pd.DataFrame({"condition": ["MEIS1+ctrl", "MEIS1", "ctrl+MEIS1", "ctrl"]})
    encoded = norman_registry.encode(frame, allow_missing=True)["condition"]
    assert np.array_equal(encoded[0], encoded[1]) and np.array_equal(encoded[1], encoded[2])
    assert hot_tokens(norman_registry, "condition", encoded[3]) == {"ctrl"}
