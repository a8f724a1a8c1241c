"""The peers ``bench/peers.py`` measures reelserve against, serving the very pipeline reelserve serves
(loaded by reelserve's own loader, called as diffusers' ``pipeline(...)``) and encoding with the same
MP4 encoder. Each answers ``POST /predict {"prompt": ..., "seed": ...}`` with the MP4 itself.

- ``naive``: FastAPI + diffusers, one request at a time (what a user writes first).
- ``litserve``: LitServe with dynamic batching (``--max-batch``, ``--window-ms``): one ``predict``
  per batch, one pipeline call for its rows, each row with its own seeded generator.

    python bench/peer_servers.py naive --port 8101 --model micro --size 64x64 --frames 17 --steps 25 --guidance 5
    python bench/peer_servers.py litserve --port 8102 ... --max-batch 4 --window-ms 50

Bench-only: LitServe is the ``bench`` extra (``pip install -e '.[bench]'``), never a server dependency.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
from dataclasses import dataclass
from typing import Any

import litserve as ls
from fastapi import FastAPI, Request, Response


@dataclass(frozen=True)
class Shape:
    model: str
    width: int
    height: int
    frames: int
    steps: int
    guidance: float
    fps: int
    device: str


class Generator:
    """The served pipeline, called the way diffusers documents it, a batch of rows per call."""

    def __init__(self, shape: Shape) -> None:
        from reelserve.models import LoadOptions, load_model

        self.shape = shape
        self.model = load_model(shape.model, LoadOptions(device=shape.device))  # type: ignore[arg-type]
        self.generate([("warm-up", 0)])

    def generate(self, rows: list[tuple[str, int]]) -> list[bytes]:
        import torch

        from reelserve.video import encode_mp4

        shape, model = self.shape, self.model
        output = model.pipeline(
            prompt=[prompt for prompt, _ in rows],
            negative_prompt=[""] * len(rows),
            height=shape.height, width=shape.width, num_frames=shape.frames,
            num_inference_steps=shape.steps, guidance_scale=shape.guidance,
            generator=[torch.Generator(model.device).manual_seed(seed) for _, seed in rows],
            output_type="np", max_sequence_length=model.max_sequence_length,
        )
        return [encode_mp4(video, shape.fps) for video in output.frames]


def serve_naive(shape: Shape, port: int) -> None:
    import uvicorn

    generator = Generator(shape)
    one_at_a_time = threading.Lock()
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        body = await request.json()

        def run() -> bytes:
            with one_at_a_time:
                return generator.generate([(body["prompt"], int(body["seed"]))])[0]

        return Response(await asyncio.to_thread(run), media_type="video/mp4")

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


class VideoAPI(ls.LitAPI):  # type: ignore[misc]
    """LitServe's worker processes receive it pickled, so it lives at module level."""

    def __init__(self, shape: Shape, max_batch: int, window_ms: float) -> None:
        super().__init__(max_batch_size=max_batch, batch_timeout=window_ms / 1000)
        self.shape, self.batched = shape, max_batch > 1

    def setup(self, device: Any) -> None:
        self.generator = Generator(self.shape)

    # No annotations here: LitServe builds its route from them, and reads a missing one as the JSON body.
    def decode_request(self, request):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201
        return request["prompt"], int(request["seed"])

    def batch(self, inputs: list[tuple[str, int]]) -> list[tuple[str, int]]:
        return list(inputs)

    def predict(self, rows: Any) -> Any:
        videos = self.generator.generate(rows if self.batched else [rows])
        return videos if self.batched else videos[0]

    def unbatch(self, output: list[bytes]) -> list[bytes]:
        return list(output)

    def encode_response(self, output):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN201
        return Response(content=output, media_type="video/mp4")


def serve_litserve(shape: Shape, port: int, max_batch: int, window_ms: float) -> None:
    api = VideoAPI(shape, max_batch, window_ms)
    server = ls.LitServer(api, accelerator="cpu" if shape.device == "cpu" else "auto", timeout=600)
    server.run(host="127.0.0.1", port=port, log_level="warning", generate_client_file=False,
               api_server_worker_type="thread")


def add_shape_options(parser: argparse.ArgumentParser) -> None:
    """What every server of a peer comparison serves alike: model, clip shape, steps, guidance, device."""
    parser.add_argument("--model", default="micro")
    parser.add_argument("--size", default="64x64")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--device", default="cpu")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["naive", "litserve"])
    parser.add_argument("--port", type=int, required=True)
    add_shape_options(parser)
    parser.add_argument("--max-batch", type=int, default=4)
    parser.add_argument("--window-ms", type=float, default=50.0)
    args = parser.parse_args()
    width, height = (int(n) for n in args.size.split("x"))
    shape = Shape(args.model, width, height, args.frames, args.steps, args.guidance, args.fps, args.device)
    if args.kind == "naive":
        serve_naive(shape, args.port)
    else:
        serve_litserve(shape, args.port, args.max_batch, args.window_ms)


if __name__ == "__main__":
    main()
