import numpy as np
import torch

from cola_ray.stages import proxies


def _toy(seed=0, rows=16, cols=64, tokens=400):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    x = torch.randn(tokens, cols, generator=g) * torch.linspace(0.2, 3.0, cols)  # uneven channel scales
    return w, x


def test_wanda_mask_from_given_norms_matches_a_direct_computation():
    w, x = _toy()
    norms = (x ** 2).mean(0)
    got = proxies.compress_weight(w, "wanda", {"sparsity": 0.5, "mask_structure": "0:0"}, norms=norms)
    score = (w.abs() * norms.sqrt()).numpy()
    keep = np.argsort(score, axis=1, kind="stable")[:, w.shape[1] // 2:]  # the largest half of each row stays
    expected = np.zeros_like(score)
    np.put_along_axis(expected, keep, w.numpy()[np.arange(w.shape[0])[:, None], keep], axis=1)
    np.testing.assert_array_equal(got.numpy(), expected)


def test_output_error_is_the_relative_error_on_the_probe_inputs():
    w, x = _toy()
    _, xp = _toy(seed=1)
    h = xp.T @ xp / len(xp)
    w_hat = proxies.compress_weight(w, "sparsegpt", {"sparsity": 0.5, "mask_structure": "0:0"}, hessian=x.T @ x / len(x))
    assert abs(float((w_hat == 0).float().mean()) - 0.5) < 0.01  # SparseGPT's threshold keeps ties
    direct = float(((xp @ (w - w_hat).T) ** 2).sum() / ((xp @ w.T) ** 2).sum())
    assert abs(proxies.output_error(w, w_hat, h) - direct) < 1e-6 * max(1.0, direct)


def test_obs_update_from_the_probes_own_hessian_beats_one_from_other_inputs():
    """SparseGPT/GPTQ calibrated on the inputs they are measured on err less than calibrated on others."""
    w, _ = _toy()
    _, xp = _toy(seed=1)
    other = torch.randn(400, 64, generator=torch.Generator().manual_seed(5))  # flat channel scales
    hp, ho = xp.T @ xp / len(xp), other.T @ other / len(other)
    for family, params in (("sparsegpt", {"sparsity": 0.5}), ("gptq", {"num_bits": 3, "group_size": 32})):
        own = proxies.output_error(w, proxies.compress_weight(w, family, params, hessian=hp), hp)
        far = proxies.output_error(w, proxies.compress_weight(w, family, params, hessian=ho), hp)
        assert own < far, family


def test_coverage_nearest_neighbours_and_threshold():
    probes = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]], np.float32)
    assert proxies.probe_threshold(probes) == 1.0  # leave-one-out NN distances 1, 1, 3
    got = proxies.coverage(probes, np.array([[0.0, 0.1], [0.0, 2.0]], np.float32), 1.0)
    assert np.isclose(got["coverage_nn"], (0.1 + np.hypot(1, 0.1) + 1.0) / 3)
    assert np.isclose(got["coverage_share"], 1 / 3)


def test_statistics_match_errors_and_outlier_recall():
    r = 8
    tri = r * (r + 1) // 2
    probe = proxies.set_stats([np.ones(4), np.ones(4) * 3], [np.ones(2 * tri)] * 2, [np.array([5, 70000])] * 2,
                              [10, 10], slots=2)
    np.testing.assert_allclose(probe.moments, np.full((2, 2), 2.0))  # token-weighted mean of the chunks'
    same = proxies.statistics_match(probe, probe)
    assert same["moment_error"] == 0 and same["hessian_error"] == 0 and same["outlier_recall"] == 1
    half = proxies.set_stats([np.ones(4)], [np.ones(2 * tri) * 2], [np.array([5])], [7], slots=2)
    got = proxies.statistics_match(half, probe)
    assert np.isclose(got["moment_error"], 0.5) and np.isclose(got["hessian_error"], 1.0)
    assert got["outlier_recall"] == 0.5
