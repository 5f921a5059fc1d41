"""MAD and its SP ablation (paper Eqs. 2-8, docs/method.md#mad) against hand computations
and invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mmanet.losses.mad import mad_loss, relation_matrix, sample_weights, teacher_uncertainty

# A 3-sample, 2-d case whose relations are 0/1 (orthogonal or parallel vectors):
#   teacher  v = [e1, e1, e2] -> r_t = [[1,1,0],[1,1,0],[0,0,1]]
#   student  u = [e1, e2, e2] -> r_d = [[1,0,0],[0,1,1],[0,1,1]]
#   r_t - r_d = [[0,1,0],[1,0,-1],[0,-1,0]]  ->  g = [1, 2, 1]
TEACHER = [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
STUDENT = [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]
GAPS = [1.0, 2.0, 1.0]

# Teacher logits over two classes: [0, 0] (entropy log 2), [3, 0], [20, 0] (entropy ~ 0).
LOGITS = [[0.0, 0.0], [3.0, 0.0], [20.0, 0.0]]


def binary_entropy(margin: float) -> float:
    """Entropy of softmax([margin, 0]), written out."""
    p = 1.0 / (1.0 + math.exp(-margin))
    q = math.exp(-margin) / (1.0 + math.exp(-margin))
    return -(p * math.log(p) + q * math.log(q))


ENTROPIES = [math.log(2.0), binary_entropy(3.0), binary_entropy(20.0)]


def t(values, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def close(actual: torch.Tensor, expected: float, rel: float = 1e-5, abs_: float = 1e-6) -> bool:
    return actual.item() == pytest.approx(expected, rel=rel, abs=abs_)


# ---------------------------------------------------------------- hand computations


def test_binary_entropy_helper():
    assert binary_entropy(0.0) == pytest.approx(math.log(2.0))
    assert binary_entropy(20.0) < 1e-7


def test_relation_matrix_cosine_hand_case():
    expected_teacher = [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    expected_student = [[1, 0, 0], [0, 1, 1], [0, 1, 1]]
    torch.testing.assert_close(relation_matrix(t(TEACHER)), t(expected_teacher))
    torch.testing.assert_close(relation_matrix(t(STUDENT), "cosine"), t(expected_student))
    # 45 degrees, and the cosine does not see the length
    r = relation_matrix(t([[3.0, 0.0], [2.0, 2.0]]))
    torch.testing.assert_close(r, t([[1.0, 1 / math.sqrt(2)], [1 / math.sqrt(2), 1.0]]))


def test_relation_matrix_gram_hand_case():
    # u u^T = [[1, 1], [1, 2]], rows divided by sqrt(2) and sqrt(5)
    r = relation_matrix(t([[1.0, 0.0], [1.0, 1.0]]), "gram")
    s2, s5 = math.sqrt(2.0), math.sqrt(5.0)
    torch.testing.assert_close(r, t([[1 / s2, 1 / s2], [1 / s5, 2 / s5]]))


def test_relation_matrix_unknown_kind_raises():
    with pytest.raises(ValueError, match="relation"):
        relation_matrix(t(TEACHER), "euclidean")


def test_teacher_uncertainty_hand_case():
    three_class = [[0.0, 0.0, 0.0]]
    torch.testing.assert_close(teacher_uncertainty(t(LOGITS)), t(ENTROPIES))
    assert close(teacher_uncertainty(t(three_class)), math.log(3.0))


def test_teacher_uncertainty_dense_is_mean_of_pixel_entropies():
    # (b, k, h, w) = (3, 2, 1, 2); the logits of pixel (0, x) of sample i are logits[i, :, 0, x]
    pixel_logits = [
        [[0.0, 0.0], [0.0, 0.0]],  # sample 0: both pixels [0, 0]
        [[0.0, 0.0], [3.0, 0.0]],  # sample 1: [0, 0] and [3, 0]
        [[3.0, 0.0], [20.0, 0.0]],  # sample 2: [3, 0] and [20, 0]
    ]
    dense = t(pixel_logits).permute(0, 2, 1).unsqueeze(2)  # (3, 2, 1, 2)
    assert dense.shape == (3, 2, 1, 2)
    expected = [
        math.log(2.0),
        (math.log(2.0) + binary_entropy(3.0)) / 2,
        (binary_entropy(3.0) + binary_entropy(20.0)) / 2,
    ]
    torch.testing.assert_close(teacher_uncertainty(dense), t(expected))


def test_sample_weights_hand_case():
    pi = [math.log(2.0), math.log(3.0), 0.0]
    softmax = [2 / 6, 3 / 6, 1 / 6]  # exp(pi) = 2, 3, 1
    total = math.log(2.0) + math.log(3.0)
    linear = [math.log(2.0) / total, math.log(3.0) / total, 0.0]
    torch.testing.assert_close(sample_weights(t(pi)), t(softmax))
    torch.testing.assert_close(sample_weights(t(pi), "linear"), t(linear))
    torch.testing.assert_close(sample_weights(t(pi), "uniform"), t([1 / 3] * 3))
    with pytest.raises(ValueError, match="weighting"):
        sample_weights(t(pi), "max")


def test_mad_softmax_weighting_hand_case():
    exp_pi = [math.exp(h) for h in ENTROPIES]
    expected = sum(e * g for e, g in zip(exp_pi, GAPS, strict=True)) / sum(exp_pi)
    loss = mad_loss(t(STUDENT), t(TEACHER), t(LOGITS))
    assert loss.dim() == 0
    assert close(loss, expected)
    assert close(mad_loss(t(STUDENT), t(TEACHER), t(LOGITS), weighting="softmax"), expected)


def test_mad_linear_weighting_hand_case():
    expected = sum(h * g for h, g in zip(ENTROPIES, GAPS, strict=True)) / sum(ENTROPIES)
    loss = mad_loss(t(STUDENT), t(TEACHER), t(LOGITS), weighting="linear")
    assert close(loss, expected)


def test_mad_linear_weighting_ignores_a_confident_sample():
    # sample 1 (gap 2) gets a ~0-entropy teacher: its weight is ~0 under "linear"
    logits = [[0.0, 0.0], [30.0, 0.0], [0.0, 0.0]]
    loss = mad_loss(t(STUDENT), t(TEACHER), t(logits), weighting="linear")
    assert close(loss, 1.0)  # (log2 * 1 + log2 * 1) / (2 log2)


def test_mad_uniform_weighting_is_sp():
    loss = mad_loss(t(STUDENT), t(TEACHER), t(LOGITS), weighting="uniform")
    assert close(loss, sum(GAPS) / 3)


def test_mad_weighting_is_over_samples_not_columns():
    # gram relations are not symmetric, so weighting the columns would give another value
    student = [[1.0, 0.0], [1.0, 1.0]]  # gram rows: [1, 1]/sqrt2, [1, 2]/sqrt5
    teacher = [[1.0, 0.0], [0.0, 2.0]]  # gram rows: [1, 0], [0, 1]
    logits = [[0.0, 0.0], [20.0, 0.0]]
    s2, s5 = math.sqrt(2.0), math.sqrt(5.0)
    g0 = (1 - 1 / s2) ** 2 + (0 - 1 / s2) ** 2
    g1 = (0 - 1 / s5) ** 2 + (1 - 2 / s5) ** 2
    w0, w1 = math.exp(math.log(2.0)), math.exp(binary_entropy(20.0))
    expected = (w0 * g0 + w1 * g1) / (w0 + w1)
    column_reading = (w0 * ((1 - 1 / s2) ** 2 + 1 / 5) + w1 * (1 / 2 + (1 - 2 / s5) ** 2)) / (
        w0 + w1
    )
    loss = mad_loss(t(student), t(teacher), t(logits), relation="gram")
    assert close(loss, expected)
    assert abs(expected - column_reading) > 0.05


def test_mad_gram_differs_from_cosine_on_the_same_inputs():
    student = [[1.0, 0.0], [1.0, 1.0]]
    teacher = [[1.0, 0.0], [0.0, 2.0]]
    logits = [[0.0, 0.0], [0.0, 0.0]]  # equal entropies: weights 1/2, 1/2
    s2, s5 = math.sqrt(2.0), math.sqrt(5.0)
    gram = ((1 - 1 / s2) ** 2 + 1 / 2 + 1 / 5 + (1 - 2 / s5) ** 2) / 2
    cosine = 1 / 2  # r_t = I, r_d off-diagonal 1/sqrt2: each row gap (1/sqrt2)^2
    assert close(mad_loss(t(student), t(teacher), t(logits), relation="gram"), gram)
    assert close(mad_loss(t(student), t(teacher), t(logits), relation="cosine"), cosine)


def test_mad_gap_is_squared():
    # r_t - r_d = [[0, 1/sqrt2], [1/sqrt2, 0]]: squared gap 1/2 per row, whatever the weights
    student = [[1.0, 0.0], [0.0, 1.0]]
    teacher = [[1.0, 0.0], [1.0, 1.0]]
    for weighting in ("softmax", "linear", "uniform"):
        loss = mad_loss(t(student), t(teacher), t(LOGITS[:2]), weighting=weighting)
        assert close(loss, 0.5), weighting
    # the sign of the discrepancy does not matter: swapping student and teacher gives the same
    assert close(mad_loss(t(teacher), t(student), t(LOGITS[:2])), 0.5)


def test_mad_flattens_feature_maps():
    # (b, c, h, w) = (3, 1, 1, 2) features: the same numbers as the (3, 2) case
    student = t(STUDENT).reshape(3, 1, 1, 2)
    teacher = t(TEACHER).reshape(3, 1, 1, 2)
    expected = mad_loss(t(STUDENT), t(TEACHER), t(LOGITS), weighting="uniform")
    assert close(mad_loss(student, teacher, t(LOGITS), weighting="uniform"), expected.item())
    assert close(expected, 4 / 3)


def test_mad_dense_logits_hand_case():
    # segmentation: features (3, 2, 1, 1) and class logits (3, 2, 1, 2)
    student = t(STUDENT).reshape(3, 2, 1, 1)
    teacher = t(TEACHER).reshape(3, 2, 1, 1)
    pixel_logits = [
        [[0.0, 0.0], [0.0, 0.0]],
        [[0.0, 0.0], [3.0, 0.0]],
        [[20.0, 0.0], [20.0, 0.0]],
    ]
    dense = t(pixel_logits).permute(0, 2, 1).unsqueeze(2)  # (3, 2, 1, 2)
    pi = [
        math.log(2.0),
        (math.log(2.0) + binary_entropy(3.0)) / 2,
        binary_entropy(20.0),
    ]
    exp_pi = [math.exp(h) for h in pi]
    expected = sum(e * g for e, g in zip(exp_pi, GAPS, strict=True)) / sum(exp_pi)
    assert close(mad_loss(student, teacher, dense), expected)
    linear = sum(h * g for h, g in zip(pi, GAPS, strict=True)) / sum(pi)
    assert close(mad_loss(student, teacher, dense, weighting="linear"), linear)


def test_mad_gradient_flows_only_into_the_student():
    student = t(STUDENT).add(0.1).requires_grad_(True)
    teacher = t(TEACHER).requires_grad_(True)
    logits = t(LOGITS).requires_grad_(True)
    loss = mad_loss(student, teacher, logits)
    loss.backward()
    assert student.grad is not None
    assert student.grad.abs().sum().item() > 0
    assert teacher.grad is None
    assert logits.grad is None


def test_mad_does_not_modify_its_inputs():
    student, teacher, logits = t(STUDENT), t(TEACHER), t(LOGITS)
    mad_loss(student, teacher, logits, relation="gram")
    assert torch.equal(student, t(STUDENT))
    assert torch.equal(teacher, t(TEACHER))
    assert torch.equal(logits, t(LOGITS))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("relation", ["cosine", "gram"])
def test_mad_low_precision_inputs_give_fp32(dtype, relation):
    loss = mad_loss(t(STUDENT, dtype), t(TEACHER, dtype), t(LOGITS, dtype), relation=relation)
    reference = mad_loss(t(STUDENT), t(TEACHER), t(LOGITS), relation=relation)
    assert loss.dtype == torch.float32
    # 0, 1, 3 and 20 are exact in both formats, so the result matches the fp32 one
    assert close(loss, reference.item())


def test_mad_float64_input_is_reduced_in_fp32():
    loss = mad_loss(t(STUDENT, torch.float64), t(TEACHER, torch.float64), t(LOGITS, torch.float64))
    assert loss.dtype == torch.float32


# ---------------------------------------------------------------- properties


@st.composite
def mad_inputs(draw):
    """Student and teacher features (b, d) with rows of norm >= 0.1, teacher logits (b, k)."""
    b = draw(st.integers(2, 5))
    d = draw(st.integers(1, 4))
    k = draw(st.integers(2, 4))
    values = st.floats(-10, 10, allow_nan=False, allow_infinity=False, width=32)
    student = draw(arrays(np.float32, (b, d), elements=values))
    teacher = draw(arrays(np.float32, (b, d), elements=values))
    logits = draw(arrays(np.float32, (b, k), elements=values))
    for features in (student, teacher):  # push near-zero rows away from the origin
        features[np.linalg.norm(features, axis=1) < 0.1, 0] += 1.0
    return torch.from_numpy(student), torch.from_numpy(teacher), torch.from_numpy(logits)


RELATIONS = st.sampled_from(["cosine", "gram"])
WEIGHTINGS = st.sampled_from(["softmax", "linear", "uniform"])
PROPERTY_SETTINGS = settings(max_examples=30, deadline=None)


@PROPERTY_SETTINGS
@given(inputs=mad_inputs(), relation=RELATIONS, weighting=WEIGHTINGS)
def test_mad_is_non_negative(inputs, relation, weighting):
    student, teacher, logits = inputs
    loss = mad_loss(student, teacher, logits, relation=relation, weighting=weighting)
    assert torch.isfinite(loss)
    assert loss.item() >= 0.0


@PROPERTY_SETTINGS
@given(inputs=mad_inputs(), relation=RELATIONS, weighting=WEIGHTINGS)
def test_mad_is_zero_when_student_equals_teacher(inputs, relation, weighting):
    _, teacher, logits = inputs
    loss = mad_loss(teacher.clone(), teacher, logits, relation=relation, weighting=weighting)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


@PROPERTY_SETTINGS
@given(
    inputs=mad_inputs(),
    relation=RELATIONS,
    weighting=WEIGHTINGS,
    student_scale=st.floats(0.01, 100.0),
    teacher_scale=st.floats(0.01, 100.0),
)
def test_mad_is_invariant_to_positive_scaling(
    inputs, relation, weighting, student_scale, teacher_scale
):
    student, teacher, logits = inputs
    reference = mad_loss(student, teacher, logits, relation=relation, weighting=weighting)
    scaled_student = mad_loss(
        student * student_scale, teacher, logits, relation=relation, weighting=weighting
    )
    scaled_teacher = mad_loss(
        student, teacher * teacher_scale, logits, relation=relation, weighting=weighting
    )
    for value in (scaled_student, scaled_teacher):
        assert value.item() == pytest.approx(reference.item(), rel=1e-4, abs=1e-5)


@PROPERTY_SETTINGS
@given(inputs=mad_inputs(), relation=RELATIONS, weighting=WEIGHTINGS, data=st.data())
def test_mad_is_invariant_to_permuting_the_batch(inputs, relation, weighting, data):
    student, teacher, logits = inputs
    b = student.shape[0]
    order = torch.tensor(data.draw(st.permutations(range(b))))
    reference = mad_loss(student, teacher, logits, relation=relation, weighting=weighting)
    permuted = mad_loss(
        student[order], teacher[order], logits[order], relation=relation, weighting=weighting
    )
    assert permuted.item() == pytest.approx(reference.item(), rel=1e-5, abs=1e-5)
