"""The toy testbed's weight geometry (bablate.testbeds.toy_geometry) against closed forms; its
use on trained models is in tests/test_toy.py."""

import numpy as np

from bablate.testbeds import toy_geometry


def test_weight_geometry_closed_forms():
    angles = 2 * np.pi * np.arange(5) / 5
    pentagon = np.stack([np.cos(angles), np.sin(angles)])
    geo = toy_geometry.weight_geometry(pentagon)
    np.testing.assert_allclose(geo.feature_dimensionality, 0.4, atol=1e-9)
    np.testing.assert_allclose(geo.dims_per_feature, 0.4)
    assert geo.features_represented == 5
    # An antipodal pair shares one dimension (D = 1/2); an unused feature has D = 0.
    pair = np.array([[1.0, -1.0, 0.0], [0.0, 0.0, 0.0]])
    geo = toy_geometry.weight_geometry(pair)
    np.testing.assert_allclose(geo.feature_dimensionality, [0.5, 0.5, 0.0])
    np.testing.assert_allclose(geo.superposition[:2], 1.0)
    assert geo.features_represented == 2
    eye = toy_geometry.weight_geometry(np.eye(3))
    np.testing.assert_allclose(eye.feature_dimensionality, 1.0)
    np.testing.assert_allclose(eye.superposition, 0.0)
