"""Fixtures shared by the test modules."""

import pytest

from deepens.data import load_dataset


@pytest.fixture(scope="session")
def digits():
    """A slice of scikit-learn's digits: 200 training, 100 validation, 100 test.

    Modules that want other sizes define their own ``digits``.
    """
    return load_dataset(
        "digits",
        max_train_samples=200,
        max_validation_samples=100,
        max_test_samples=100,
    )
