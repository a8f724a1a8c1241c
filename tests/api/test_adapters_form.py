"""``loras`` in a form body (tiny model, real HTTP): multipart/form-data, as the playground's snippets send
it beside an uploaded first frame, and a urlencoded form carry it as JSON text, held to the JSON rules;
a bad one is a 422 naming the same field as in a JSON body, with nothing created."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from lora_files import lora_file
from support import ALICE, TENANT_KEYS, RunningServer, auth, final_video, serve

FIELDS = {"prompt": "a paper boat on a river", "size": "32x32", "num_frames": "5", "num_inference_steps": "2"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    directory = tmp_path_factory.mktemp("adapters")
    lora_file(directory / "style.safetensors", seed=1)
    lora_file(directory / "grain.safetensors", seed=2)
    with serve(tmp_path_factory.mktemp("data") / "data", adapters_dir=directory, **TENANT_KEYS) as running:
        running.client.headers.update(auth(ALICE))
        yield running


def multipart(server: RunningServer, loras: str, **fields: str) -> dict:
    """A multipart/form-data create (every part a text field, no file), as ``curl --form-string`` sends it."""
    parts = {name: (None, value) for name, value in {**FIELDS, **fields, "loras": loras}.items()}
    response = server.client.post("/v1/videos", files=parts)
    return {"http": response.status_code, **response.json()}


def test_a_multipart_form_names_adapters_as_json_text(server: RunningServer) -> None:
    listed = {a["name"]: a["sha256"] for a in server.client.get("/v1/adapters").json()["data"]}
    loras = json.dumps([{"name": "style", "scale": 0.7}, {"name": "grain"}], separators=(",", ":"))
    job = multipart(server, loras, seed="5")
    assert job["http"] == 200, job
    assert job["loras"] == [{"name": "style", "sha256": listed["style"], "scale": 0.7},
                            {"name": "grain", "sha256": listed["grain"], "scale": 1.0}]
    done = final_video(server, job["id"], ALICE)
    assert done["status"] == "completed" and done["loras"] == job["loras"]
    # The same request as JSON is the same video: the cache answers it.
    body = {**FIELDS, "num_frames": 5, "num_inference_steps": 2, "seed": 5, "loras": json.loads(loras)}
    again = server.client.post("/v1/videos", json=body).json()
    assert again["cached"] is True and again["loras"] == job["loras"]


def test_a_urlencoded_form_names_adapters_too(server: RunningServer) -> None:
    form = {**FIELDS, "seed": "6", "loras": '[{"name": "grain", "scale": -0.5}]'}
    response = server.client.post("/v1/videos", data=form)
    assert response.status_code == 200, response.text
    assert [(lora["name"], lora["scale"]) for lora in response.json()["loras"]] == [("grain", -0.5)]
    assert final_video(server, response.json()["id"], ALICE)["status"] == "completed"


def test_a_bad_loras_field_names_it_and_creates_nothing(server: RunningServer) -> None:
    before = len(server.server.store.list(10_000, None))
    cases = [
        ('[{"name": "style", "scale": 9}]', "loras.0.scale", "at most 4"),
        ('[{"name": "style", "scale": "0.5"}]', "loras.0.scale", "not text"),  # JSON rules: no "0.5" for 0.5
        ('[{"name": "nothing"}]', "loras[0].name", "no adapter 'nothing'"),
        ('[{"name": "style"}, {"name": "style"}]', "loras[1].name", "twice"),
        ('[{"name": "style"}, {"name": "grain"}, {"name": "style"}, {"name": "grain"}, {"name": "style"}]',
         "loras", "at most 4"),
        ('{"name": "style"}', "loras", "JSON list"),
        ("style", "loras", "JSON list"),
        ("[" * 150 + "]" * 150, "loras.0", "must be a JSON object"),  # deep nesting: still a 422
        ('[{"name": "style", "weight": 1}]', "loras.0.weight", "unknown field"),
    ]
    for loras, param, words in cases:
        refused = multipart(server, loras)
        assert refused["http"] == 422, refused
        error = refused["error"]
        assert error["param"] == param and words in error["message"], (loras, error)
    assert len(server.server.store.list(10_000, None)) == before
