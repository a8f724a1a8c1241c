"""``--model`` repeated and ``--model-overrides``: per-model flags parsed with the settings' own types, and
every mistake a 4xx-style message naming the model, the flag and what is allowed."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from reelserve.settings import Settings


def test_each_model_gets_its_own_flags_over_the_servers() -> None:
    settings = Settings(model="micro, tiny", max_batch_size=4,
                        model_overrides="micro:preset=fast; tiny:max_batch_size=8,cfg_batching=false")
    assert settings.models == ["micro", "tiny"] and settings.model == "micro"
    tiny, micro = settings.for_model("tiny"), settings.for_model("micro")
    assert (tiny.model, tiny.max_batch_size, tiny.cfg_batching, tiny.preset) == ("tiny", 8, False, None)
    assert (micro.model, micro.max_batch_size, micro.preset) == ("micro", 4, "fast")
    assert settings.max_batch_size == 4  # the server's own are untouched


@pytest.mark.parametrize(("overrides", "says"), [
    ("wan:preset=fast", "'wan' is not a served model (micro, tiny)"),
    ("tiny:port=1", "'port' cannot differ per model"),
    ("tiny:max_batch_size=many", "tiny:max_batch_size='many'"),
    ("tiny:preset=fastest", "tiny:preset='fastest'"),
])
def test_a_bad_override_names_what_is_wrong(overrides: str, says: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(says)):
        Settings(model="micro,tiny", model_overrides=overrides)


@pytest.mark.parametrize(("model", "says"), [
    ("micro,micro", "names a model twice"), (" , ", "name at least one model"),
])
def test_the_model_list_is_checked(model: str, says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        Settings(model=model)
    with pytest.raises(ValidationError, match="model_path applies to one model"):
        Settings(model="micro,tiny", model_path="/somewhere")
