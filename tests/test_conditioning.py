"""Tests for lossdial.conditioning: distributions, LambdaSpace and the lambda parser."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from lossdial.conditioning import (
    Distribution,
    Fixed,
    Grid,
    LambdaSpace,
    LinearDist,
    LogUniform,
    Uniform,
    grid_points_from_space,
    parse_distribution,
    parse_lambda_grid,
    parse_lct,
)

N = 20_000


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def hand_linear_cdf(a: float, b: float, hb: float):
    """Independent CDF of L(a, b, hb): F(x) = h_a (x-a) + (hb-h_a)(x-a)^2 / (2(b-a))."""
    ha = 2.0 / (b - a) - hb

    def F(x):
        u = np.clip(np.asarray(x, dtype=np.float64), a, b) - a
        return ha * u + (hb - ha) * u * u / (2.0 * (b - a))

    return F


def hand_uniform_cdf(a: float, b: float):
    """F(x) = (x - a) / (b - a) on [a, b]."""
    return lambda x: np.clip((np.asarray(x, dtype=np.float64) - a) / (b - a), 0.0, 1.0)


def hand_loguniform_cdf(a: float, b: float):
    """F(x) = (log x - log a) / (log b - log a) on [a, b]."""
    def F(x):
        x = np.clip(np.asarray(x, dtype=np.float64), a, b)
        return (np.log(x) - math.log(a)) / (math.log(b) - math.log(a))

    return F


# Linear settings: README, k = 0 (uniform), hb = 0, hb = 2/(b-a), and the paper's laws.
LINEAR_PARAMS = [
    (0.0, 3.0, 0.33),
    (0.0, 3.0, 1.0 / 3.0),       # k = 0: uniform
    (0.0, 3.0, 0.0),             # hb = 0
    (0.0, 3.0, 2.0 / 3.0),       # hb = 2/(b-a): h_a = 0
    (1.0, 4.0, 0.33),
    (1.0, 4.0, 0.0),
    (0.0, 0.3, 3.33),
    (0.25, 0.75, 2.0),
    (0.25, 0.75, 0.0),
    (-2.0, 5.0, 0.1),
]
CONTINUOUS = [LinearDist(*p) for p in LINEAR_PARAMS] + [
    Uniform(0, 1), Uniform(-2, 5), Uniform(0, 0.3),
    LogUniform(1e-3, 1), LogUniform(0.5, 8),
]
# each continuous law with its CDF written out above (from the parameters given here, not the object)
WITH_HAND_CDF = [(LinearDist(*p), hand_linear_cdf(*p)) for p in LINEAR_PARAMS] + [
    (Uniform(0, 1), hand_uniform_cdf(0, 1)), (Uniform(-2, 5), hand_uniform_cdf(-2, 5)),
    (Uniform(0, 0.3), hand_uniform_cdf(0, 0.3)),
    (LogUniform(1e-3, 1), hand_loguniform_cdf(1e-3, 1)), (LogUniform(0.5, 8), hand_loguniform_cdf(0.5, 8)),
]
ALL_DISTS = CONTINUOUS + [Fixed(1.5), Fixed(-0.33), Grid([0, 1, 2]), Grid([0.1, 0.5], probs=[0.3, 0.7])]


# ------------------------------------------------------------------------ continuous: KS tests
@pytest.mark.parametrize("dist,cdf", WITH_HAND_CDF, ids=lambda d: d.spec() if isinstance(d, Distribution) else "")
def test_ks_against_closed_form_cdf(dist, cdf):
    x = dist.sample(N, gen(123))
    assert x.shape == (N,) and x.dtype == torch.float32 and x.device.type == "cpu"
    lo, hi = dist.support
    assert float(x.min()) >= lo and float(x.max()) <= hi
    assert bool(dist.contains(x.double()).all())
    p = stats.kstest(x.double().numpy(), cdf).pvalue
    assert p > 1e-3, (dist, p)


@pytest.mark.parametrize("dist,cdf", WITH_HAND_CDF, ids=lambda d: d.spec() if isinstance(d, Distribution) else "")
def test_cdf_equals_closed_form(dist, cdf):
    lo, hi = dist.support
    xs = np.linspace(lo - 0.5 * (hi - lo), hi + 0.5 * (hi - lo), 401)
    np.testing.assert_allclose(dist.cdf(torch.from_numpy(xs)).numpy(), cdf(xs), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "source, target_cdf",
    [
        (LinearDist(1, 4, 0.0), hand_uniform_cdf(1, 4)),
        (LinearDist(0, 3, 2 / 3), hand_linear_cdf(0, 3, 0.0)),
        (LinearDist(0, 0.3, 3.33), hand_linear_cdf(0, 0.3, 5.0)),
        (Uniform(1e-3, 1), hand_loguniform_cdf(1e-3, 1)),
        (LogUniform(1e-3, 1), hand_uniform_cdf(1e-3, 1)),
        (LinearDist(0, 3, 0.6), hand_linear_cdf(0, 3, 0.33)),  # a small hb change is caught
    ],
    ids=lambda d: d.spec() if isinstance(d, Distribution) else "",
)
def test_ks_negative_control_fails(source, target_cdf):
    # samples from a different law must FAIL the test: shows the KS checks above have power
    x = source.sample(N, gen(1)).double().numpy()
    assert stats.kstest(x, target_cdf).pvalue < 1e-6


def test_linear_sampler_is_stable_inverse_cdf_of_generator_draws():
    a, b, hb = 0.0, 3.0, 0.33
    d = LinearDist(a, b, hb)
    x = d.sample(1000, gen(5)).double()
    p = torch.rand(1000, generator=gen(5), dtype=torch.float64)
    ha = 2 / (b - a) - hb
    k = (hb - ha) / (b - a)
    expected = a + 2 * p / (ha + torch.sqrt(ha * ha + 2 * k * p))
    torch.testing.assert_close(x, expected.float().double(), atol=1e-6, rtol=0)
    # the inverse CDF really inverts the CDF
    torch.testing.assert_close(d.cdf(expected), p, atol=1e-12, rtol=0)


def test_linear_parameters_and_mean():
    d = LinearDist(0, 3, 0.33)
    assert d.ha == pytest.approx(2 / 3 - 0.33)
    assert d.k == pytest.approx((0.33 - (2 / 3 - 0.33)) / 3)
    # E[X] = int_0^3 x (h_a + k x) dx = h_a 9/2 + k 9
    assert d.mean == pytest.approx(d.ha * 4.5 + d.k * 9.0, rel=1e-12)
    assert LinearDist(0, 3, 1 / 3).mean == pytest.approx(1.5)      # uniform
    assert LinearDist(0, 3, 0).mean == pytest.approx(1.0)           # triangle towards a
    assert LinearDist(0, 3, 2 / 3).mean == pytest.approx(2.0)       # triangle towards b
    assert Uniform(-2, 5).mean == pytest.approx(1.5)
    assert LogUniform(1, math.e).mean == pytest.approx(math.e - 1)


@pytest.mark.parametrize("dist", CONTINUOUS, ids=lambda d: d.spec())
def test_sample_mean_matches_mean(dist):
    x = dist.sample(N, gen(11)).double()
    lo, hi = dist.support
    sd = (hi - lo) / math.sqrt(12) * 1.5  # generous bound on the standard deviation
    assert abs(float(x.mean()) - dist.mean) < 5 * sd / math.sqrt(N)


# ---------------------------------------------------------------------- continuous: pdf and cdf
@pytest.mark.parametrize("dist", CONTINUOUS, ids=lambda d: d.spec())
def test_pdf_cdf_consistency(dist):
    lo, hi = dist.support
    if isinstance(dist, LogUniform):  # geometric grid: accurate trapezoid for 1/x with few points
        xs = torch.logspace(math.log10(lo), math.log10(hi), 20_001, dtype=torch.float64)
        xs[0], xs[-1] = lo, hi
    else:
        xs = torch.linspace(lo, hi, 20_001, dtype=torch.float64)
    pdf = dist.pdf(xs)
    assert pdf.dtype == torch.float64 and pdf.shape == xs.shape
    assert float(pdf.min()) >= 0
    assert float(torch.trapezoid(pdf, xs)) == pytest.approx(1.0, abs=1e-6)
    assert float(torch.trapezoid(xs * pdf, xs)) == pytest.approx(dist.mean, rel=1e-6, abs=1e-9)
    assert float(dist.cdf(lo)) == pytest.approx(0.0, abs=1e-12)
    assert float(dist.cdf(hi)) == pytest.approx(1.0, abs=1e-12)
    assert float(dist.cdf(lo - 1)) == 0.0 and float(dist.cdf(hi + 1)) == 1.0
    assert float(dist.pdf(hi + 0.1 * (hi - lo))) == 0.0
    assert float(dist.pdf(lo - 0.1 * (hi - lo))) == 0.0
    cdf = dist.cdf(xs)
    assert bool((cdf[1:] >= cdf[:-1]).all())
    # pdf is the derivative of cdf (central differences at interior points)
    inner = torch.linspace(lo + 0.01 * (hi - lo), hi - 0.01 * (hi - lo), 101, dtype=torch.float64)
    h = 1e-6 * (hi - lo)
    deriv = (dist.cdf(inner + h) - dist.cdf(inner - h)) / (2 * h)
    torch.testing.assert_close(deriv, dist.pdf(inner), rtol=1e-5, atol=1e-6)


def test_linear_pdf_values():
    d = LinearDist(0, 3, 0.33)
    assert float(d.pdf(3.0)) == pytest.approx(0.33)
    assert float(d.pdf(0.0)) == pytest.approx(2 / 3 - 0.33)
    assert float(d.pdf(1.5)) == pytest.approx(1 / 3)
    assert float(LinearDist(1, 4, 1 / 3).pdf(2.2)) == pytest.approx(1 / 3)
    assert float(LinearDist(0, 3, 0.33).cdf(1.5)) == pytest.approx(
        hand_linear_cdf(0, 3, 0.33)(1.5), rel=1e-12)


def test_linear_extreme_hb_sampling_is_finite_and_inside():
    for hb in (0.0, 2 / 3):
        x = LinearDist(0, 3, hb).sample(100_000, gen(3))
        assert bool(torch.isfinite(x).all())
        assert float(x.min()) >= 0 and float(x.max()) <= 3


def test_float32_samples_never_leave_the_support():
    # b = 0.3 is not a float32; the float32 draws must still be <= 0.3 read back as float64
    x = LinearDist(0, 0.3, 2 / 0.3).sample(200_000, gen(0))
    assert float(x.double().max()) <= 0.3


# -------------------------------------------------------------------------------------- discrete
def test_grid_uniform_frequencies_chi_square():
    g = Grid([2, 0, 1, 1])  # duplicates collapse; uniform over distinct values
    assert g.values == (0.0, 1.0, 2.0)
    x = g.sample(N, gen(4))
    counts = [int((x == v).sum()) for v in g.values]
    assert sum(counts) == N
    assert stats.chisquare(counts).pvalue > 1e-3


def test_grid_weighted_frequencies_and_negative_control():
    g = Grid([0.1, 0.5, 0.9], probs=[0.2, 0.5, 0.3])
    x = g.sample(N, gen(4))
    counts = np.array([int((x == torch.tensor(v, dtype=torch.float32)).sum()) for v in g.values])
    assert counts.sum() == N
    assert stats.chisquare(counts, N * np.array(g.probs)).pvalue > 1e-3
    # negative control: the same counts do not fit a uniform grid
    assert stats.chisquare(counts).pvalue < 1e-6


def test_grid_pmf_cdf_mean_contains():
    g = Grid([0, 1, 2], probs=[0.25, 0.25, 0.5])
    torch.testing.assert_close(g.pdf(torch.tensor([0.0, 0.5, 1.0, 2.0, 3.0])),
                               torch.tensor([0.25, 0.0, 0.25, 0.5, 0.0], dtype=torch.float64))
    torch.testing.assert_close(g.cdf(torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0, 5.0])),
                               torch.tensor([0.0, 0.25, 0.25, 0.5, 1.0, 1.0], dtype=torch.float64))
    assert float(g.pdf(torch.tensor(g.values)).sum()) == pytest.approx(1.0)
    assert g.mean == pytest.approx(1.25)
    assert g.support == (0.0, 2.0)
    assert g.contains(1.0).item() and not g.contains(1.5).item()
    # float32 rounding of a grid value still matches it
    g2 = Grid([0.1, 0.3])
    assert float(g2.pdf(torch.tensor(0.3, dtype=torch.float32))) == pytest.approx(0.5)
    assert float(g2.pdf(torch.tensor(0.3, dtype=torch.float32).double())) == pytest.approx(0.5)


def test_fixed():
    f = Fixed(0.33)
    x = f.sample(1000, gen(0))
    assert x.shape == (1000,) and x.dtype == torch.float32
    assert bool((x == torch.tensor(0.33, dtype=torch.float32)).all())
    assert f.support == (0.33, 0.33) and f.mean == 0.33
    torch.testing.assert_close(f.pdf(torch.tensor([0.33, 0.34])),
                               torch.tensor([1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(f.cdf(torch.tensor([0.3, 0.33, 0.4])),
                               torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64))
    assert bool(f.pdf(x).eq(1).all())


# -------------------------------------------------------------------------------- reproducibility
@pytest.mark.parametrize("dist", ALL_DISTS, ids=lambda d: d.spec())
def test_generator_reproducibility_and_global_rng_untouched(dist):
    state = torch.random.get_rng_state()
    x1 = dist.sample(500, gen(42))
    x2 = dist.sample(500, gen(42))
    x3 = dist.sample(500, gen(43))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(x1, x2)
    if not isinstance(dist, Fixed):
        assert not torch.equal(x1, x3)
    assert dist.sample(0, gen(0)).shape == (0,)


def test_sample_rejects_bad_n():
    with pytest.raises(ValueError, match="n must be a non-negative int"):
        Uniform(0, 1).sample(-1, gen(0))
    with pytest.raises(ValueError, match="n must be a non-negative int"):
        Uniform(0, 1).sample(2.0, gen(0))  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------- validation
def test_linear_rejects_invalid_parameters():
    with pytest.raises(ValueError, match=r"LinearDist\(a=0, b=3, hb=0.9\): hb must be in \[0, 0.6667\]"
                                         r" so that the density at a, h_a = 2/\(b-a\) - hb, is >= 0"):
        LinearDist(0, 3, 0.9)
    with pytest.raises(ValueError, match=r"hb must be in \[0, 0.6667\]"):
        LinearDist(0, 3, -0.01)
    with pytest.raises(ValueError, match=r"hb must be in \[0, 6.667\]"):
        LinearDist(0, 0.3, 6.7)
    with pytest.raises(ValueError, match="a must be < b"):
        LinearDist(3, 0, 0.1)
    with pytest.raises(ValueError, match="a must be < b"):
        LinearDist(1, 1, 0.1)
    with pytest.raises(ValueError, match="hb must be a finite number"):
        LinearDist(0, 3, float("nan"))
    with pytest.raises(ValueError, match="b must be a finite number"):
        LinearDist(0, float("inf"), 0.1)
    # the valid ends are accepted
    assert LinearDist(0, 3, 0).ha == pytest.approx(2 / 3)
    assert LinearDist(0, 3, 2 / 3).ha == pytest.approx(0.0)


def test_other_distributions_reject_invalid_parameters():
    with pytest.raises(ValueError, match="a must be < b"):
        Uniform(1, 1)
    with pytest.raises(ValueError, match="a must be > 0"):
        LogUniform(0, 1)
    with pytest.raises(ValueError, match="a must be < b"):
        LogUniform(2, 1)
    with pytest.raises(ValueError, match="value must be a finite number"):
        Fixed(float("inf"))
    with pytest.raises(ValueError, match="non-empty"):
        Grid([])
    with pytest.raises(ValueError, match="probs must sum to 1"):
        Grid([0, 1], probs=[0.5, 0.4])
    with pytest.raises(ValueError, match="probs must be >= 0"):
        Grid([0, 1], probs=[1.5, -0.5])
    with pytest.raises(ValueError, match="one entry per value"):
        Grid([0, 1], probs=[1.0])
    with pytest.raises(ValueError, match="finite"):
        Grid([0, float("nan")])


def test_equality_and_repr():
    assert LinearDist(0, 3, 0.33) == LinearDist(0.0, 3.0, 0.33)
    assert LinearDist(0, 3, 0.33) != LinearDist(0, 3, 0.34)
    assert Uniform(0, 1) != LogUniform(0.5, 1) and Uniform(0, 1) != Fixed(0)
    assert Grid([0, 1]) == Grid([1, 0, 1])
    assert len({LinearDist(0, 3, 0.33), LinearDist(0, 3, 0.33), Fixed(1)}) == 2
    assert repr(LinearDist(0, 3, 0.33)) == "LinearDist(a=0, b=3, hb=0.33)"
    assert repr(Uniform(0, 0.3)) == "Uniform(a=0, b=0.3)"
    assert repr(Fixed(1.5)) == "Fixed(1.5)"
    assert repr(Grid([0, 1, 2])) == "Grid([0, 1, 2])"


def test_contains_tolerance():
    u = Uniform(0, 0.3)
    assert u.contains(0.3 + 1e-12).item() and not u.contains(0.3 + 1e-6).item()
    assert u.contains(torch.tensor(0.3, dtype=torch.float32)).item()   # float32(0.3) > 0.3
    assert not u.contains(-1e-6).item()
    torch.testing.assert_close(u.contains(torch.tensor([-1.0, 0.1, 1.0])),
                               torch.tensor([False, True, False]))


# ------------------------------------------------------------------------------------ LambdaSpace
def make_space(**kw) -> LambdaSpace:
    return LambdaSpace({"tau": LinearDist(0, 3, 0.33), "gamma": Uniform(0, 0.3),
                        "lr": LogUniform(1e-3, 1e-1), "omega": Fixed(0.5)}, **kw)


def test_space_attributes():
    s = make_space()
    assert s.names == ("tau", "gamma", "lr", "omega") and s.dim == 4
    assert s.supports == {"tau": (0.0, 3.0), "gamma": (0.0, 0.3), "lr": (1e-3, 1e-1),
                          "omega": (0.5, 0.5)}
    assert list(s.distributions) == list(s.names)
    assert s.spec() == "tau~L(0,3,0.33) gamma~U(0,0.3) lr~LogU(0.001,0.1) omega~0.5"
    assert LambdaSpace(parse_lct(s.spec())) == s
    assert LambdaSpace({"tau": "L(0,3,0.33)", "omega": 0.5}).distributions == {
        "tau": LinearDist(0, 3, 0.33), "omega": Fixed(0.5)}
    with pytest.raises(ValueError, match="at least one"):
        LambdaSpace({})
    with pytest.raises(ValueError, match="not a valid identifier"):
        LambdaSpace({"1x": Uniform(0, 1)})
    with pytest.raises(TypeError, match="must be a Distribution"):
        LambdaSpace({"x": [0, 1]})  # type: ignore[dict-item]


def test_space_sample_per_batch_and_per_sample():
    state = torch.random.get_rng_state()
    lam = make_space().sample(64, gen(0))
    assert list(lam) == ["tau", "gamma", "lr", "omega"]
    for name, v in lam.items():
        assert v.shape == () and v.dtype == torch.float32
    assert float(lam["omega"]) == 0.5
    lam_s = make_space(per_sample=True).sample(64, gen(0))
    for v in lam_s.values():
        assert v.shape == (64,) and v.dtype == torch.float32
    assert lam_s["tau"].unique().numel() > 50        # each sample its own lambda
    assert torch.equal(torch.random.get_rng_state(), state)
    # draws come from the one generator, in names order
    g = gen(9)
    lam2 = make_space().sample(8, g)
    g_ref = gen(9)
    assert float(lam2["tau"]) == float(LinearDist(0, 3, 0.33).sample(1, g_ref)[0])
    assert float(lam2["gamma"]) == float(Uniform(0, 0.3).sample(1, g_ref)[0])
    # same seed, same draws
    a, b = make_space().sample(8, gen(1)), make_space().sample(8, gen(1))
    assert all(torch.equal(a[n], b[n]) for n in a)
    with pytest.raises(TypeError, match="torch.Generator"):
        make_space().sample(8, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        make_space().sample(0, gen(0))


def test_space_sample_device_argument():
    lam = make_space().sample(4, gen(0), device="meta")
    assert all(v.device.type == "meta" for v in lam.values())


def test_encode_normalised():
    s = make_space()
    z = s.encode({"tau": torch.tensor([0.0, 1.5, 3.0]), "gamma": torch.tensor([0.0, 0.15, 0.3]),
                  "lr": torch.tensor([1e-3, 1e-2, 1e-1]), "omega": 0.5})
    assert z.shape == (3, 4) and z.dtype == torch.float32
    expected = torch.tensor([[-1.0, -1.0, -1.0, 0.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    torch.testing.assert_close(z, expected, atol=1e-6, rtol=0)
    # log space: 1e-2 is the geometric midpoint of [1e-3, 1e-1]; the arithmetic one is not 0
    z_lin_mid = s.encode({"tau": 0.0, "gamma": 0.0, "lr": (1e-3 + 1e-1) / 2, "omega": 0.5})
    assert float(z_lin_mid[0, 2]) == pytest.approx(math.log10(0.0505) + 2, abs=1e-6)  # not 0
    # out of support values extrapolate
    z_out = s.encode({"tau": 4.5, "gamma": 0.0, "lr": 1e-2, "omega": 0.7})
    assert float(z_out[0, 0]) == pytest.approx(2.0) and float(z_out[0, 3]) == 0.0
    # Grid: ends -> -1/+1; a one-value grid -> 0
    g = LambdaSpace({"w": Grid([0, 1, 2]), "c": Grid([5])})
    torch.testing.assert_close(g.encode({"w": torch.tensor([0.0, 1.0, 2.0]), "c": 5.0}),
                               torch.tensor([[-1.0, 0.0], [0.0, 0.0], [1.0, 0.0]]))


def test_encode_raw_and_broadcast():
    s = make_space(normalize=False)
    z = s.encode({"tau": 2.5, "gamma": torch.tensor(0.1), "lr": 0.01, "omega": 0.5}, batch_size=5)
    assert z.shape == (5, 4)
    torch.testing.assert_close(z, torch.tensor([[2.5, 0.1, 0.01, 0.5]]).expand(5, 4))
    z1 = s.encode({"tau": 2.5, "gamma": 0.1, "lr": 0.01, "omega": 0.5})
    assert z1.shape == (1, 4)
    zb = s.encode({"tau": torch.tensor([1.0, 2.0]), "gamma": 0.1, "lr": 0.01, "omega": 0.5})
    torch.testing.assert_close(zb[:, 0], torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(zb[:, 1], torch.tensor([0.1, 0.1]))
    # a per-sample draw encodes row by row
    lam = make_space(per_sample=True).sample(16, gen(0))
    torch.testing.assert_close(s.encode(lam)[:, 0], lam["tau"])


def test_encode_errors():
    s = make_space()
    with pytest.raises(KeyError, match="tau"):
        s.encode({"tau": 1.0, "gamma": 0.1, "lr": 0.01})
    with pytest.raises(KeyError, match="unexpected"):
        s.encode({"tau": 1.0, "gamma": 0.1, "lr": 0.01, "omega": 0.5, "beta": 1.0})
    with pytest.raises(ValueError, match="batch size"):
        s.encode({"tau": torch.zeros(3), "gamma": torch.zeros(4), "lr": 0.01, "omega": 0.5})
    with pytest.raises(ValueError, match="batch size"):
        s.encode({"tau": torch.zeros(3), "gamma": 0.1, "lr": 0.01, "omega": 0.5}, batch_size=4)
    with pytest.raises(ValueError, match="shape"):
        s.encode({"tau": torch.zeros(3, 1), "gamma": 0.1, "lr": 0.01, "omega": 0.5})
    with pytest.raises(ValueError, match="> 0"):
        s.encode({"tau": 1.0, "gamma": 0.1, "lr": -0.01, "omega": 0.5})


def test_encode_follows_input_device():
    s = LambdaSpace({"tau": Uniform(0, 4), "gamma": Uniform(0, 1)})
    z = s.encode({"tau": torch.zeros(3, device="meta"), "gamma": 0.5})
    assert z.device.type == "meta" and z.shape == (3, 2) and z.dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_encode_cuda():
    s = make_space()
    lam = {k: v.cuda() for k, v in make_space(per_sample=True).sample(8, gen(0)).items()}
    z = s.encode(lam)
    assert z.is_cuda and z.shape == (8, 4)
    torch.testing.assert_close(z.cpu(), s.encode({k: v.cpu() for k, v in lam.items()}))


def test_to_dict_from_dict_round_trip():
    for s in (make_space(), make_space(normalize=False, per_sample=True),
              LambdaSpace({"w": Grid([0, 1], probs=[0.2, 0.8]), "t": Uniform(-1, 1)})):
        d = json.loads(json.dumps(s.to_dict()))
        assert d["format_version"] == 1
        assert d["names"] == list(s.names)
        assert LambdaSpace.from_dict(d) == s
    d = make_space().to_dict()
    assert d["distributions"]["tau"] == "L(0,3,0.33)" and d["supports"]["tau"] == [0.0, 3.0]


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.pop("format_version"), "missing key 'format_version'"),
        (lambda d: d.update(format_version=2), "unsupported format_version 2"),
        (lambda d: d.update(names=["tau"]), "do not match 'names'"),
        (lambda d: d["distributions"].update(tau="L(0,3,0.9)"), r"distributions\['tau'\].*hb must be"),
        (lambda d: d["distributions"].update(tau="Q(1)"), r"distributions\['tau'\].*unknown"),
        (lambda d: d["supports"].update(tau=[0, 4]), r"supports\['tau'\].*does not match"),
        (lambda d: d.update(normalize="yes"), "'normalize' must be true or false"),
        (lambda d: d.update(extra=1), "unknown keys"),
    ],
)
def test_from_dict_rejects_bad_dicts(mutate, match):
    d = json.loads(json.dumps(make_space().to_dict()))
    mutate(d)
    with pytest.raises(ValueError, match=match):
        LambdaSpace.from_dict(d)


def test_from_dict_rejects_non_dict():
    with pytest.raises(ValueError, match="must be a dict"):
        LambdaSpace.from_dict([1, 2])  # type: ignore[arg-type]


def test_check_support():
    s = make_space()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert s.check_support({"tau": 3.0, "gamma": torch.tensor(0.3, dtype=torch.float32),
                                "lr": torch.tensor([1e-3, 1e-1]), "omega": 0.5}) == []
        assert s.check_support({"tau": 3.0 * (1 + 1e-12)}) == []   # within tolerance
        assert s.check_support(s.sample(4, gen(0))) == []
    with pytest.warns(UserWarning, match=r"tau=4 is outside the training support \[0, 3\]; "
                                         r"the model was never trained there"):
        msgs = s.check_support({"tau": 4.0})
    assert msgs == ["tau=4 is outside the training support [0, 3]; the model was never trained there"]
    with pytest.warns(UserWarning) as record:
        msgs = s.check_support({"tau": torch.tensor([0.0, 3.5, 5.0]), "omega": 0.7, "gamma": -0.1})
    assert len(msgs) == 3 and len(record) == 3
    assert "2 of 3 values" in msgs[0]
    assert "omega=0.7" in msgs[2] and "fixed training value 0.5" in msgs[2]
    with pytest.warns(UserWarning, match="not one of the training values"):
        LambdaSpace({"w": Grid([0, 1, 2])}).check_support({"w": 0.5})
    with pytest.raises(KeyError, match="unexpected"):
        s.check_support({"beta": 1.0})


def test_space_equality():
    assert make_space() == make_space()
    assert make_space() != make_space(normalize=False)
    assert make_space() != make_space(per_sample=True)
    a = LambdaSpace({"a": Uniform(0, 1), "b": Uniform(0, 1)})
    b = LambdaSpace({"b": Uniform(0, 1), "a": Uniform(0, 1)})
    assert a != b  # key order defines the encoding columns
    assert "tau~L(0,3,0.33)" in repr(make_space())


# ---------------------------------------------------------------------------------------- parser
@pytest.mark.parametrize(
    "text, expected",
    [
        ("L(0,3,0.33)", LinearDist(0, 3, 0.33)),
        ("Linear(0, 3, 0.33)", LinearDist(0, 3, 0.33)),
        ("  l( 1 ,4, 0 ) ", LinearDist(1, 4, 0)),
        ("LINEAR(0.25,0.75,2)", LinearDist(0.25, 0.75, 2)),
        ("U(0,1)", Uniform(0, 1)),
        ("uniform(-1, 1)", Uniform(-1, 1)),
        ("LogU(1e-3,1)", LogUniform(0.001, 1)),
        ("loguniform(0.01, 1)", LogUniform(0.01, 1)),
        ("{0,1,2}", Grid([0, 1, 2])),
        ("{ 0, 1 ,2 }", Grid([0, 1, 2])),
        ("Grid(0,1,2)", Grid([0, 1, 2])),
        ("grid(2)", Grid([2])),
        ("{0:0.25, 1:0.75}", Grid([0, 1], probs=[0.25, 0.75])),
        ("1.5", Fixed(1.5)),
        (" -2 ", Fixed(-2)),
        ("Fixed(1.5)", Fixed(1.5)),
        ("fixed( 1e-2 )", Fixed(0.01)),
    ],
)
def test_parse_distribution_forms(text, expected):
    d = parse_distribution(text)
    assert type(d) is type(expected) and d == expected


def test_parse_distribution_passthrough():
    d = Uniform(0, 1)
    assert parse_distribution(d) is d
    assert parse_distribution(0.5) == Fixed(0.5)
    assert parse_distribution(3) == Fixed(3)


@pytest.mark.parametrize(
    "dist",
    [LinearDist(0, 3, 0.33), LinearDist(1, 4, 0), LinearDist(0, 0.3, 3.33),
     LinearDist(0.25, 0.75, 2), LinearDist(0, 3, 2 / 3), LinearDist(1e-5, 2e-5, 1e5),
     Uniform(0, 1), Uniform(0.1 + 0.2, 7.25), LogUniform(0.01, 1), LogUniform(1e-7, 3e5),
     Fixed(1.5), Fixed(-0.1), Fixed(0), Grid([0, 1, 2]), Grid([-0.5, 1e-9]),
     Grid([0, 1, 2], probs=[0.2, 0.3, 0.5]), Grid([0, 1, 2], probs=[1 / 3, 1 / 6, 1 / 2])],
    ids=repr,
)
def test_spec_round_trip(dist):
    assert parse_distribution(dist.spec()) == dist


def test_spec_texts():
    assert LinearDist(0, 3, 0.33).spec() == "L(0,3,0.33)"
    assert Uniform(0, 1).spec() == "U(0,1)"
    assert LogUniform(0.01, 1).spec() == "LogU(0.01,1)"
    assert Fixed(1.5).spec() == "1.5"
    assert Grid([0, 1, 2]).spec() == "{0,1,2}"


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty"),
        ("Q(1,2)", "unknown distribution name 'Q'"),
        ("L(0,3)", "takes 3 argument"),
        ("U(0,1,2)", "takes 2 argument"),
        ("L(0,3,x)", "'x' is not a number"),
        ("1.2.3", "not a recognised form"),
        ("{0,1", "unbalanced|must be written"),
        ("{0,,1}", "empty entry"),
        ("{}", "at least one value"),
        ("L(0,3,0.9)", "hb must be in"),
        ("LogU(0,1)", "a must be > 0"),
        ("nan", "finite"),
    ],
)
def test_parse_distribution_errors(text, match):
    with pytest.raises(ValueError, match=match) as err:
        parse_distribution(text)
    assert repr(text) in str(err.value)   # the message quotes the text


def test_parse_distribution_error_lists_forms():
    with pytest.raises(ValueError) as err:
        parse_distribution("banana")
    msg = str(err.value)
    for form in ("L(a,b,hb)", "U(a,b)", "LogU(a,b)", "{v1,v2,...}", "Fixed(1.5)"):
        assert form in msg


def test_parse_lct():
    assert parse_lct("tau~L(0,3,0.33)") == {"tau": LinearDist(0, 3, 0.33)}
    d = parse_lct("tau~L(0,3,0.33) gamma~U(0,0.3)")
    assert list(d) == ["tau", "gamma"] and d["gamma"] == Uniform(0, 0.3)
    d2 = parse_lct("  tau ~ L(0, 3, 0.33) ;gamma~U(0,0.3);  omega~0.5 w~{0, 1} ")
    assert list(d2) == ["tau", "gamma", "omega", "w"]
    assert d2["omega"] == Fixed(0.5) and d2["w"] == Grid([0, 1])
    assert parse_lct({"tau": "L(1,4,0.33)", "omega": 0.5, "g": Uniform(0, 1)}) == {
        "tau": LinearDist(1, 4, 0.33), "omega": Fixed(0.5), "g": Uniform(0, 1)}


@pytest.mark.parametrize(
    "spec, match",
    [
        ("tau~L(0,3,0.33) tau~U(0,1)", "duplicate name 'tau'"),
        ("tau L(0,3,0.33)", "must be NAME~DIST"),
        ("1tau~U(0,1)", "not a valid identifier"),
        ("tau-x~U(0,1)", "not a valid identifier"),
        ("tau~L(0,3,0.33", "unbalanced"),
        ("", "empty"),
        ({}, "empty"),
        ({"tau": [0, 1]}, "distribution string or a number"),
        ({"bad name": "U(0,1)"}, "not a valid identifier"),
        ("tau~W(1)", "unknown distribution name"),
    ],
)
def test_parse_lct_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_lct(spec)


def test_parse_lambda_grid_range():
    pts = parse_lambda_grid("tau=0:4:33")
    vals = [p["tau"] for p in pts]
    assert len(vals) == 33 and vals[0] == 0.0 and vals[-1] == 4.0
    np.testing.assert_allclose(vals, np.linspace(0, 4, 33), rtol=0, atol=1e-12)
    assert parse_lambda_grid("tau=0.5:4:1") == [{"tau": 0.5}]
    assert [p["tau"] for p in parse_lambda_grid("tau=1:0:3")] == [1.0, 0.5, 0.0]


def test_parse_lambda_grid_lists_and_product():
    assert parse_lambda_grid("tau=0,1,2") == [{"tau": 0.0}, {"tau": 1.0}, {"tau": 2.0}]
    assert parse_lambda_grid("tau=1") == [{"tau": 1.0}]
    pts = parse_lambda_grid("tau=0,1,2 gamma=0.1,0.2")
    assert pts == [{"tau": t, "gamma": g} for t in (0.0, 1.0, 2.0) for g in (0.1, 0.2)]
    assert list(pts[0]) == ["tau", "gamma"]
    pts2 = parse_lambda_grid("gamma = 0.1, 0.2; tau=0:1:3")
    assert [(p["gamma"], p["tau"]) for p in pts2] == [
        (0.1, 0.0), (0.1, 0.5), (0.1, 1.0), (0.2, 0.0), (0.2, 0.5), (0.2, 1.0)]
    assert len(parse_lambda_grid("tau=0:4:33 gamma=0,0.1,0.2")) == 99


def test_parse_lambda_grid_mapping():
    pts = parse_lambda_grid({"tau": "0:4:5", "gamma": [0.1, 0.2], "omega": 0.5})
    assert len(pts) == 10 and list(pts[0]) == ["tau", "gamma", "omega"]
    assert [p["tau"] for p in pts[::2]] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert all(p["omega"] == 0.5 for p in pts)
    assert parse_lambda_grid({"tau": np.array([1.0, 2.0])}) == [{"tau": 1.0}, {"tau": 2.0}]
    assert parse_lambda_grid({"tau": "0,1"}) == [{"tau": 0.0}, {"tau": 1.0}]


@pytest.mark.parametrize(
    "spec, match",
    [
        ("tau", "'tau' must be NAME=VALUES"),
        ("tau=0:4", "START:STOP:COUNT"),
        ("tau=0:4:0", "count '0' must be an integer >= 1"),
        ("tau=0:4:2.5", "count '2.5' must be an integer >= 1"),
        ("tau=0:x:3", "'x' is not a number"),
        ("tau=a,b", "'a' is not a number"),
        ("tau=1,,2", "empty value"),
        ("tau=", "no values for 'tau'"),
        ("tau=1 tau=2", "duplicate name 'tau'"),
        ("2x=1", "not a valid identifier"),
        ("tau=inf", "not a finite number"),
        ("", "empty"),
        ({"tau": []}, "empty list"),
        ({"tau": True}, "must be a number"),
    ],
)
def test_parse_lambda_grid_errors(spec, match):
    with pytest.raises(ValueError, match=match) as err:
        parse_lambda_grid(spec)
    if spec not in ("", {"tau": True}) and "duplicate" not in match:
        assert "tau=0:4:33" in str(err.value)  # shows an example


def test_parse_lambda_grid_cap():
    with pytest.raises(ValueError, match="max_points"):
        parse_lambda_grid("a=0:1:1000 b=0:1:1000 c=0:1:1000")


def test_grid_points_from_space():
    s = LambdaSpace({"tau": LinearDist(0, 3, 0.33), "lr": LogUniform(1e-3, 1e-1),
                     "w": Grid([0, 2]), "omega": Fixed(0.5)})
    pts = grid_points_from_space(s, 3)
    assert len(pts) == 3 * 3 * 2 * 1 and list(pts[0]) == ["tau", "lr", "w", "omega"]
    assert sorted({p["tau"] for p in pts}) == [0.0, 1.5, 3.0]
    np.testing.assert_allclose(sorted({p["lr"] for p in pts}), [1e-3, 1e-2, 1e-1], rtol=1e-12)
    assert sorted({p["w"] for p in pts}) == [0.0, 2.0]
    assert {p["omega"] for p in pts} == {0.5}
    assert pts[0] == {"tau": 0.0, "lr": 1e-3, "w": 0.0, "omega": 0.5}   # first name slowest
    assert pts[1]["w"] == 2.0 and pts[1]["tau"] == 0.0
    assert [p["tau"] for p in grid_points_from_space(LambdaSpace({"tau": Uniform(0, 4)}), 1)] == [2.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for p in pts:
            assert s.check_support(p) == []
    big = LambdaSpace({n: Uniform(0, 1) for n in "abc"})
    with pytest.raises(ValueError, match="4096"):
        grid_points_from_space(big, 20)
    with pytest.raises(ValueError, match="k must be"):
        grid_points_from_space(big, 0)
