"""Videos stored in S3 (moto's real standalone server): served through the API with HTTP Range, or
handed out as presigned URLs."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import httpx
import pytest
from support import RunningServer, serve, wait_until

from reelserve.server import Server
from reelserve.settings import Settings
from reelserve.storage.s3 import StorageUnavailable
from reelserve.video import probe_mp4

BODY = {"prompt": "a paper boat on a river", "size": "32x32", "num_frames": 5, "num_inference_steps": 2}


@pytest.fixture
def bucket(moto_url: str) -> str:
    name = f"videos-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1").create_bucket(Bucket=name)
    return name


def s3_settings(moto_url: str, bucket: str, **more: object) -> dict[str, object]:
    return {"storage": "s3", "s3_bucket": bucket, "s3_endpoint_url": moto_url, "s3_region": "us-east-1", **more}


def completed_video(running: RunningServer) -> dict:
    created = running.client.post("/v1/videos", json=BODY)
    assert created.status_code == 200, created.text
    video_id = created.json()["id"]

    def done() -> dict | None:
        video = running.client.get(f"/v1/videos/{video_id}").json()
        return video if video["status"] in ("completed", "failed") else None

    video = wait_until(done, timeout=120)
    assert video["status"] == "completed", video
    return video


def test_videos_live_in_the_bucket_and_the_api_serves_ranges(tmp_path: Path, moto_url: str, bucket: str) -> None:
    with serve(tmp_path / "data", **s3_settings(moto_url, bucket, s3_prefix="prod/")) as running:
        video = completed_video(running)
        whole = running.client.get(f"/v1/videos/{video['id']}/content")
        assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
        assert probe_mp4(whole.content).frames == 5
        head = running.client.get(f"/v1/videos/{video['id']}/content", headers={"Range": "bytes=0-99"})
        assert head.status_code == 206 and head.content == whole.content[:100]
        assert head.headers["content-range"] == f"bytes 0-99/{len(whole.content)}"
        tail = running.client.get(f"/v1/videos/{video['id']}/content", headers={"Range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == whole.content[-10:]
        past = running.client.get(f"/v1/videos/{video['id']}/content", headers={"Range": "bytes=999999-"})
        assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(whole.content)}"
        thumbnail = running.client.get(f"/v1/videos/{video['id']}/content", params={"variant": "thumbnail"})
        assert thumbnail.status_code == 200 and thumbnail.content[:2] == b"\xff\xd8"  # a JPEG
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=moto_url).list_objects_v2(Bucket=bucket)["Contents"]]
    assert all(key.startswith("prod/") for key in keys) and any(video["id"] in key for key in keys)
    assert not (tmp_path / "data" / "files").exists() or not any((tmp_path / "data" / "files").rglob("*.mp4"))


def test_presigned_delivery_redirects_to_the_object_store(tmp_path: Path, moto_url: str, bucket: str) -> None:
    with serve(tmp_path / "data", **s3_settings(moto_url, bucket, content_delivery="presigned")) as running:
        video = completed_video(running)
        answer = running.client.get(f"/v1/videos/{video['id']}/content", follow_redirects=False)
        assert answer.status_code == 307
        location = answer.headers["location"]
        assert location.startswith(moto_url) and "Signature" in location  # signed, not a public URL
        fetched = httpx.get(location, timeout=30)
        assert fetched.status_code == 200 and probe_mp4(fetched.content).frames == 5


def test_bad_storage_settings_fail_at_start_with_a_reason(tmp_path: Path, moto_url: str) -> None:
    with pytest.raises(ValueError, match="s3_bucket"):
        Settings(data_dir=tmp_path, storage="s3")
    with pytest.raises(ValueError, match="needs storage 's3'"):
        Settings(data_dir=tmp_path, content_delivery="presigned")
    missing = Settings(data_dir=tmp_path, model="tiny", **s3_settings(moto_url, "no-such-bucket"))
    with pytest.raises(StorageUnavailable, match="does not exist"):
        Server(missing)
