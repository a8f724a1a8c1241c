from pathlib import Path

from reelserve.models import model_version, weights_source
from reelserve.models.fingerprint import directory_fingerprint


def _checkpoint(root: Path, weights: bytes) -> Path:
    (root / "transformer").mkdir(parents=True)
    (root / "transformer" / "config.json").write_text('{"num_layers": 4}')
    (root / "transformer" / "model.safetensors").write_bytes(weights)
    return root


def test_same_bytes_same_version_and_any_change_a_new_one(tmp_path: Path) -> None:
    big = bytes(range(256)) * 20_000  # 5 MB: hashed by its ends, not whole
    a = _checkpoint(tmp_path / "a", big)
    assert directory_fingerprint(a) == directory_fingerprint(_checkpoint(tmp_path / "b", big))
    changed_head = _checkpoint(tmp_path / "c", b"\xff" + big[1:])
    changed_tail = _checkpoint(tmp_path / "d", big[:-1] + b"\x01")
    longer = _checkpoint(tmp_path / "e", big + b"\x00")
    fingerprints = {directory_fingerprint(p) for p in (a, changed_head, changed_tail, longer)}
    assert len(fingerprints) == 4
    (a / "transformer" / "config.json").write_text('{"num_layers": 5}')
    assert len(fingerprints | {directory_fingerprint(a)}) == 5


def test_versions_name_their_kind(tmp_path: Path) -> None:
    assert model_version("tiny", weights_source("tiny", None)).startswith("tiny:code:")
    assert model_version("micro", weights_source("micro", None)).startswith("micro:sha256:")
    assert model_version("wan2.2-ti2v-5b", None).startswith("wan2.2-ti2v-5b:code:")
    assert model_version("wan2.2-ti2v-5b", "Wan-AI/Wan2.2-TI2V-5B-Diffusers") == "wan2.2-ti2v-5b:hub:Wan-AI/Wan2.2-TI2V-5B-Diffusers"
    local = _checkpoint(tmp_path / "w", b"weights")
    assert model_version("micro", str(local)) == f"micro:sha256:{directory_fingerprint(local)[:16]}"
