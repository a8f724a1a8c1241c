"""Shared by the acceleration tests: the trained micro model, loaded once without accelerations."""

from __future__ import annotations

import pytest

from reelserve.models import LoadedModel, LoadOptions, load_model


@pytest.fixture(scope="session")
def micro_model() -> LoadedModel:
    """Plain eager micro: the reference accelerated runs are compared with. Do not reconfigure it."""
    return load_model("micro", LoadOptions(device="cpu"))
