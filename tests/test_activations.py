import numpy as np
import pytest

from ec.activations import ACTIVATIONS, SYMMETRY_CLASSES, get_activation

NAMES = list(ACTIVATIONS)
KINKED = {"relu", "leaky_relu", "selu"}  # derivative jumps at 0


def _points(name):
    x = np.linspace(-6, 6, 241)
    return x[np.abs(x) > 1e-3] if name in KINKED else x


@pytest.mark.parametrize("name", NAMES)
def test_first_and_second_derivatives_match_finite_differences(name):
    act = get_activation(name)
    x, h = _points(name), 1e-6
    fd1 = (act.f(x + h) - act.f(x - h)) / (2 * h)
    fd2 = (act.df(x + h) - act.df(x - h)) / (2 * h)
    np.testing.assert_allclose(act.df(x), fd1, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(act.d2f(x), fd2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_float64_and_stable_at_extremes(name):
    act = get_activation(name)
    x = np.array([-1e300, -745.0, -50.0, 0.0, 50.0, 745.0, 1e300])
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        for fn in (act.f, act.df, act.d2f):
            out = fn(x)
            assert out.dtype == np.float64
            assert out.shape == x.shape
            assert not np.isnan(out).any()


def test_known_values():
    g = get_activation("g")
    np.testing.assert_allclose(g.f(np.array([0.0])), [np.log(2) + 0.5])
    np.testing.assert_allclose(get_activation("softplus").f(np.array([800.0])), [800.0])
    np.testing.assert_allclose(get_activation("gelu").f(np.array([1.0])), [0.8413447460685429])


@pytest.mark.parametrize("name", NAMES)
def test_symmetry_class_holds(name):
    act = get_activation(name)
    assert act.symmetry in SYMMETRY_CLASSES
    x = np.linspace(-4, 4, 81)
    f, fm = act.f(x), act.f(-x)
    c0 = act.f(np.array([0.0]))[0]
    if act.symmetry == "odd":
        np.testing.assert_allclose(fm, -f, atol=1e-12)
    elif act.symmetry == "odd+const":
        np.testing.assert_allclose(fm - c0, -(f - c0), atol=1e-12)
    elif act.symmetry.startswith("even+linear"):
        # sigma(x) - sigma(-x) is linear in x
        d = f - fm
        slope = np.polyfit(x, d, 1)
        np.testing.assert_allclose(np.polyval(slope, x), d, atol=1e-10)
    elif act.symmetry == "none":
        d = f - fm
        assert np.abs(np.polyval(np.polyfit(x, d, 1), x) - d).max() > 1e-3
        assert np.abs(fm + f - 2 * c0).max() > 1e-3
    if act.positive_scaling:
        np.testing.assert_allclose(act.f(3.0 * x), 3.0 * f, atol=1e-12)


def test_unknown_activation_lists_allowed_names():
    with pytest.raises(ValueError, match="allowed: g, softplus"):
        get_activation("swishy")
