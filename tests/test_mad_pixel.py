"""MAD with granularity="pixel" (docs/method.md#segmentation): blocked, linear-memory relations."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from mmanet.losses.mad import mad_loss, pooled_size

WEIGHTINGS = ("softmax", "linear", "uniform")


def direct_pixel_mad(student, teacher, logits, relation="cosine", weighting="softmax"):
    """Unblocked reference written out: explicit N x N relation matrices, N = b*h*w."""
    b, c, h, w = student.shape
    u = student.permute(0, 2, 3, 1).reshape(b * h * w, c)  # pixel vectors, image-major
    v = teacher.permute(0, 2, 3, 1).reshape(b * h * w, teacher.shape[1])
    if relation == "cosine":
        un = u / u.norm(dim=1, keepdim=True)
        vn = v / v.norm(dim=1, keepdim=True)
        r_d, r_t = un @ un.T, vn @ vn.T
    else:
        gu, gv = u @ u.T, v @ v.T
        r_d = gu / gu.norm(dim=1, keepdim=True)
        r_t = gv / gv.norm(dim=1, keepdim=True)
    assert r_d.shape == (b * h * w, b * h * w)
    gap = ((r_t - r_d) ** 2).sum(dim=1)
    p = torch.softmax(logits, dim=1)  # logits already at (h, w)
    entropy = -(p * torch.log(p)).sum(dim=1).reshape(-1)
    if weighting == "softmax":
        weights = torch.exp(entropy) / torch.exp(entropy).sum()
    elif weighting == "linear":
        weights = entropy / entropy.sum()
    else:
        weights = torch.full_like(entropy, 1.0 / entropy.numel())
    return (weights * gap).sum()


def small_case(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(2, 3, 2, 3, generator=g, dtype=dtype)  # N = 12 pixels
    teacher = torch.randn(2, 4, 2, 3, generator=g, dtype=dtype)  # teacher may have other c
    logits = torch.randn(2, 5, 2, 3, generator=g, dtype=dtype) * 2
    return student, teacher, logits


# ------------------------------------------------------------------ blocked == direct


@pytest.mark.parametrize("relation", ["cosine", "gram"])
@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_blocked_equals_direct_value_and_gradient(relation, weighting):
    student, teacher, logits = small_case()
    ref_student = student.clone().requires_grad_(True)
    expected = direct_pixel_mad(ref_student, teacher, logits, relation, weighting)
    expected.backward()
    # N = 12: block sizes that divide it, that do not (5, 7), one row, and all rows at once
    for block_rows in (1, 3, 5, 7, 12, 100, None):
        leaf = student.clone().requires_grad_(True)
        loss = mad_loss(
            leaf,
            teacher,
            logits,
            relation=relation,
            weighting=weighting,
            granularity="pixel",
            block_rows=block_rows,
        )
        assert loss.dtype == torch.float32
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6), block_rows
        loss.backward()
        torch.testing.assert_close(
            leaf.grad, ref_student.grad, rtol=1e-4, atol=1e-6, msg=f"block_rows={block_rows}"
        )


def test_cosine_backward_matches_float64_autograd_of_direct_formula():
    # the hand-written cosine backward against autograd on the direct formula, random maps
    student, teacher, logits = small_case(seed=3)
    ref = student.clone().requires_grad_(True)
    direct_pixel_mad(ref, teacher, logits).backward()
    leaf = student.float().clone().requires_grad_(True)
    mad_loss(leaf, teacher.float(), logits.float(), granularity="pixel", block_rows=5).backward()
    torch.testing.assert_close(leaf.grad.double(), ref.grad, rtol=1e-4, atol=1e-6)
    assert ref.grad.abs().sum() > 0


def test_teacher_and_logits_get_no_gradient():
    student, teacher, logits = (x.float() for x in small_case())
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    logits.requires_grad_(True)
    mad_loss(student, teacher, logits, granularity="pixel", block_rows=5).backward()
    assert student.grad is not None and teacher.grad is None and logits.grad is None


# ------------------------------------------------------------------ hand case


def entropy_of(margin: float) -> float:
    """Entropy of softmax([margin, 0]), written out."""
    p = 1 / (1 + math.exp(-margin))
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def test_two_pixel_hand_case_cosine():
    # one image, a 1 x 2 map, 2 channels.  Teacher pixels 2 e1, 5 e1 -> r_t = [[1, 1], [1, 1]];
    # student pixels e1, (3, 3) -> r_d = [[1, c], [c, 1]], c = 1/sqrt2;  g = [(1-c)^2] * 2,
    # so every weighting (weights sum to one) gives (1 - c)^2.
    student = torch.tensor([[[[1.0, 3.0]], [[0.0, 3.0]]]])  # (b, c, h, w) = (1, 2, 1, 2)
    teacher = torch.tensor([[[[2.0, 5.0]], [[0.0, 0.0]]]])
    logits = torch.tensor([[[[0.0, 20.0]], [[0.0, 0.0]]]])  # pixel logits [0, 0] and [20, 0]
    for weighting in WEIGHTINGS:
        loss = mad_loss(student, teacher, logits, weighting=weighting, granularity="pixel")
        assert loss.item() == pytest.approx((1 - 1 / math.sqrt(2)) ** 2, rel=1e-5)


def test_two_pixel_hand_case_gram_with_weights():
    # student pixels (1, 0), (1, 1): Gram [[1, 1], [1, 2]] -> rows [1, 1]/sqrt2, [1, 2]/sqrt5
    # teacher pixels (1, 0), (0, 2): Gram [[1, 0], [0, 4]] -> rows [1, 0], [0, 1]
    student = torch.tensor([[[[1.0, 1.0]], [[0.0, 1.0]]]])
    teacher = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]]]])
    logits = torch.tensor([[[[0.0, 20.0]], [[0.0, 0.0]]]])  # entropies log 2 and H(20)
    s2, s5 = math.sqrt(2.0), math.sqrt(5.0)
    g0 = (1 - 1 / s2) ** 2 + (1 / s2) ** 2
    g1 = (1 / s5) ** 2 + (1 - 2 / s5) ** 2
    pi0, pi1 = math.log(2.0), entropy_of(20.0)
    softmax = (2.0 * g0 + math.exp(pi1) * g1) / (2.0 + math.exp(pi1))  # exp(log 2) = 2
    linear = (pi0 * g0 + pi1 * g1) / (pi0 + pi1)
    uniform = (g0 + g1) / 2
    for weighting, expected in (("softmax", softmax), ("linear", linear), ("uniform", uniform)):
        loss = mad_loss(
            student, teacher, logits, relation="gram", weighting=weighting, granularity="pixel"
        )
        assert loss.item() == pytest.approx(expected, rel=1e-5), weighting
    # cosine on the same pixels: r_t = I, r_d off-diagonal 1/sqrt2 -> g = [1/2, 1/2]
    assert mad_loss(student, teacher, logits, granularity="pixel").item() == pytest.approx(0.5)


def test_pooling_of_features_and_logits():
    assert pooled_size(60, 80) == (30, 40)
    assert pooled_size(15, 20) == (15, 20)
    assert pooled_size(64, 32) == (30, 32)
    assert pooled_size(60, 80, (6, 8)) == (6, 8)
    with pytest.raises(ValueError, match="pool"):
        pooled_size(4, 4, (0, 2))
    # a 4 x 6 map pooled to 2 x 3 equals the direct formula on 2 x 2 averaged maps/logits
    g = torch.Generator().manual_seed(1)
    student = torch.randn(2, 3, 4, 6, generator=g)
    teacher = torch.randn(2, 3, 4, 6, generator=g)
    logits = torch.randn(2, 4, 8, 12, generator=g)  # logits at a finer resolution
    avg = torch.nn.functional.avg_pool2d
    expected = direct_pixel_mad(avg(student, 2), avg(teacher, 2), avg(logits, 4))
    loss = mad_loss(student, teacher, logits, granularity="pixel", pool=(2, 3), block_rows=4)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # default pool leaves a map under 30 x 40 alone (logits pooled to the feature grid)
    full = direct_pixel_mad(student, teacher, avg(logits, 2))
    assert mad_loss(student, teacher, logits, granularity="pixel").item() == pytest.approx(
        full.item(), rel=1e-5
    )


def test_pixel_argument_errors():
    student, teacher, logits = (x.float() for x in small_case())
    with pytest.raises(ValueError, match="granularity"):
        mad_loss(student, teacher, logits, granularity="image")
    with pytest.raises(ValueError, match="dense teacher logits"):
        mad_loss(student, teacher, logits.mean(dim=(2, 3)), granularity="pixel")
    with pytest.raises(ValueError, match=r"\(b, c, h, w\)"):
        mad_loss(student.flatten(1), teacher.flatten(1), logits, granularity="pixel")
    with pytest.raises(ValueError, match="block_rows"):
        mad_loss(student, teacher, logits, granularity="pixel", block_rows=0)


def test_sample_granularity_is_unchanged():
    student, teacher, logits = (x.float() for x in small_case())
    assert torch.equal(
        mad_loss(student, teacher, logits), mad_loss(student, teacher, logits, granularity="sample")
    )


# ------------------------------------------------------------------ invariances


@pytest.mark.parametrize("relation", ["cosine", "gram"])
@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_zero_for_equal_inputs_and_scale_invariant(relation, weighting):
    student, teacher, logits = (x.float() for x in small_case(seed=2))
    teacher = teacher[:, :3]
    kwargs = {"relation": relation, "weighting": weighting, "granularity": "pixel"}
    assert mad_loss(teacher.clone(), teacher, logits, block_rows=5, **kwargs).item() == (
        pytest.approx(0.0, abs=1e-6)
    )
    reference = mad_loss(student, teacher, logits, block_rows=5, **kwargs).item()
    assert reference > 1e-3
    for scale in (0.01, 3.0, 100.0):
        scaled_s = mad_loss(student * scale, teacher, logits, block_rows=7, **kwargs).item()
        scaled_t = mad_loss(student, teacher * scale, logits, block_rows=7, **kwargs).item()
        assert scaled_s == pytest.approx(reference, rel=1e-4)
        assert scaled_t == pytest.approx(reference, rel=1e-4)


# ------------------------------------------------------------------ linear memory

# Runs in a fresh interpreter.  glibc's malloc is told (MALLOC_MMAP_THRESHOLD_) to serve
# every block over 64 KiB by mmap and to unmap it on free, so the process's resident set
# follows the live torch tensors.  The peak resident set (VmHWM in /proc/self/status; not
# ru_maxrss, which also holds the forked pytest parent's size from before exec) is reset
# just before the call (writing 5 to /proc/self/clear_refs); VmHWM after the call minus
# VmRSS before it is the peak extra memory.  A warm-up
# call on a tiny map first loads lazily imported code.  The script prints that growth over the
# forward AND backward of the 9,600-pixel loss, and, as a control that the measure does
# see torch memory, the growth from one N x N fp32 tensor.
_MEMORY_SCRIPT = textwrap.dedent(
    """
    import time, torch
    from mmanet.losses.mad import mad_loss

    def status_mb(field):  # VmHWM: peak resident set of this process image; VmRSS: now
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
        raise RuntimeError(field)

    def peak_mb():
        return status_mb("VmHWM")

    def current_mb():
        return status_mb("VmRSS")

    def reset_peak():  # Linux >= 4.0: VmHWM restarts from the current resident set
        try:
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")
        except OSError:
            pass  # then the stale, higher peak only overestimates the growth

    torch.manual_seed(0)
    b, c, h, w = 8, 64, 30, 40
    student = torch.randn(b, c, h, w, requires_grad=True)
    teacher, logits = torch.randn(b, c, h, w), torch.randn(b, 19, h, w)
    small = (student[:1, :, :4, :4], teacher[:1, :, :4, :4], logits[:1, :, :4, :4])
    mad_loss(*small, granularity="pixel").backward()
    student.grad = None
    reset_peak()
    base = current_mb()
    start = time.perf_counter()
    loss = mad_loss(student, teacher, logits, granularity="pixel")
    middle = time.perf_counter()
    loss.backward()
    end = time.perf_counter()
    assert torch.isfinite(loss) and student.grad.abs().sum() > 0
    used = peak_mb() - base
    n = b * h * w
    reset_peak()
    base = current_mb()
    square = torch.ones(n, n)
    control = peak_mb() - base
    del square
    print(f"{used:.1f} {control:.1f} {middle - start:.2f} {end - middle:.2f}")
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs glibc and ru_maxrss")
def test_9600_pixels_forward_and_backward_in_linear_memory():
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="2")
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    used, control, forward_s, backward_s = (float(x) for x in result.stdout.split())
    quadratic_mb = 9600 * 9600 * 4 / 2**20  # 351.6 MiB for one N x N fp32 matrix
    print(f"peak growth {used} MiB, N x N control {control} MiB, {forward_s}s + {backward_s}s")
    assert control > 0.9 * quadratic_mb  # the measure does see torch allocations
    assert used < 100.0  # linear: well under a single N x N matrix
