"""Run a Wan transformer's forward pass through ONNX Runtime: ``OnnxTransformerBackend``.

The pipeline keeps its transformer object, because it also reads ``config``, ``dtype`` and
``cache_context`` from it; only the instance's ``forward`` is replaced. Each input shape is exported
once, to ``cache_dir/<model key>/<shape tag>.onnx``, and any later backend (in this process or
another) with the same cache directory and model key loads that file instead of exporting again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput

log = logging.getLogger(__name__)

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)
INPUT_NAMES = ("hidden_states", "timestep", "encoder_hidden_states")
OUTPUT_NAME = "sample"
# Timestep value for export-only inputs; tracing is value-independent, any in-range step will do.
_EXAMPLE_TIMESTEP = 500.0
_SAFE_KEY = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ForwardShape:
    """The input shapes of one transformer call. One exported graph serves exactly one of these.

    ``frames``, ``height`` and ``width`` are latent sizes (after the VAE), not pixels.
    ``timestep_length`` is set only for per-token timesteps, shape ``(batch, timestep_length)``
    (Wan2.2 TI2V's ``expand_timesteps``); None means one timestep per sample, shape ``(batch,)``.
    """

    batch: int
    channels: int
    frames: int
    height: int
    width: int
    text_length: int
    timestep_length: int | None = None

    @classmethod
    def of(
        cls, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor
    ) -> ForwardShape:
        """The shape of a call with these inputs. Raises ``ValueError`` when they do not fit together."""
        if hidden_states.ndim != 5:
            raise ValueError(
                f"hidden_states must be (batch, channels, frames, height, width); got {tuple(hidden_states.shape)}"
            )
        batch, channels, frames, height, width = hidden_states.shape
        if timestep.ndim not in (1, 2) or timestep.shape[0] != batch:
            raise ValueError(f"timestep must be ({batch},) or ({batch}, tokens); got {tuple(timestep.shape)}")
        if encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[0] != batch:
            raise ValueError(
                f"encoder_hidden_states must be ({batch}, text length, text dim); got {tuple(encoder_hidden_states.shape)}"
            )
        return cls(
            batch=batch,
            channels=channels,
            frames=frames,
            height=height,
            width=width,
            text_length=encoder_hidden_states.shape[1],
            timestep_length=timestep.shape[1] if timestep.ndim == 2 else None,
        )

    def tag(self, dtype: torch.dtype) -> str:
        """A file-name-safe name for this shape at ``dtype``, e.g. ``b2-c16-f5-h8-w8-t32-float32``."""
        tag = (
            f"b{self.batch}-c{self.channels}-f{self.frames}-h{self.height}-w{self.width}-t{self.text_length}"
        )
        if self.timestep_length is not None:
            tag += f"-ts{self.timestep_length}"
        return f"{tag}-{str(dtype).removeprefix('torch.')}"

    def example_inputs(
        self, text_dim: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Float32 inputs of this shape, for tracing (the values do not matter)."""
        timestep_shape = (self.batch,) if self.timestep_length is None else (self.batch, self.timestep_length)
        return (
            torch.zeros(self.batch, self.channels, self.frames, self.height, self.width, device=device),
            torch.full(timestep_shape, _EXAMPLE_TIMESTEP, device=device),
            torch.zeros(self.batch, self.text_length, text_dim, device=device),
        )


class _Float32Forward(torch.nn.Module):
    """The graph's interface: three float32 tensors in, the float32 sample out.

    Calls the class's own forward, not the instance attribute, so exporting while the backend is
    installed does not recurse into the backend. Inputs are cast to the transformer's dtype inside
    the graph, so a half-precision model still takes float32 from the caller.
    """

    def __init__(self, transformer: torch.nn.Module) -> None:
        super().__init__()
        self.transformer = transformer
        self.compute_dtype = transformer.dtype
        # Mirror the transformer's mode without eval(), which would also switch the caller's model.
        self.training = transformer.training

    def forward(
        self, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor
    ) -> torch.Tensor:
        sample = type(self.transformer).forward(
            self.transformer,
            hidden_states=hidden_states.to(self.compute_dtype),
            timestep=timestep,
            encoder_hidden_states=encoder_hidden_states.to(self.compute_dtype),
            return_dict=False,
        )[0]
        return sample.float()


def _export(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], path: Path) -> str:
    """Write ``module`` traced at ``inputs`` to ``path`` as one self-contained ONNX file.

    Tries the dynamo exporter, then the TorchScript one; returns the name of the one that worked.
    Raises ``RuntimeError`` carrying both errors when neither does.
    """
    names = {"input_names": list(INPUT_NAMES), "output_names": [OUTPUT_NAME]}
    try:
        torch.onnx.export(module, inputs, path, dynamo=True, external_data=False, verbose=False, **names)
        return "dynamo"
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; all mean "try the other"
        dynamo_error = exc
        log.warning("dynamo ONNX export failed (%s); trying the TorchScript exporter", exc)
    try:
        torch.onnx.export(module, inputs, path, dynamo=False, **names)
        return "torchscript"
    except Exception as exc:
        raise RuntimeError(
            f"ONNX export failed with both exporters; dynamo: {dynamo_error}; torchscript: {exc}"
        ) from exc


def _export_atomically(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], target: Path) -> str:
    """Export to a temporary file beside ``target`` and rename it into place, so ``target`` is
    either absent or complete even if this process dies mid-export (or several export at once)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    os.close(handle)
    temp = Path(temp_name)
    try:
        exporter = _export(module, inputs, temp)
        with temp.open("rb") as written:
            os.fsync(written.fileno())
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    return exporter


def _directory_for(model_key: str) -> str:
    """``model_key`` as one safe path component: verbatim when it already is one; otherwise (a
    ``name:sha256:...`` version, a hub id with a slash) escaped, with a hash so escapes cannot collide."""
    if _SAFE_KEY.fullmatch(model_key) and model_key not in (".", ".."):
        return model_key
    if not model_key:
        raise ValueError("model_key must not be empty")
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", model_key)
    return f"{readable}-{hashlib.sha256(model_key.encode()).hexdigest()[:8]}"


def _checked_providers(providers: Sequence[str]) -> list[str]:
    if isinstance(providers, str):
        providers = [providers]
    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if not providers or missing:
        raise ValueError(
            f"onnxruntime providers {missing or list(providers)} are not available here; "
            f"available: {', '.join(available)}"
        )
    return list(providers)


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().to("cpu", torch.float32).numpy())


class OnnxTransformerBackend:
    """Serves a ``WanTransformer3DModel``'s forward from ONNX Runtime, one graph per input shape.

    :param cache_dir: where exported graphs live, as ``cache_dir/<model key>/<shape tag>.onnx``.
    :param model_key: names the weights, e.g. model name plus weights fingerprint. The caller must
        change it when the weights change: a cached graph has the weights baked in.
    :param providers: onnxruntime execution providers, in order of preference. ``ValueError``,
        naming the available ones, if any is not available.
    :param intra_op_threads: threads per session; None keeps onnxruntime's default (one per core).

    ``exports`` counts graphs this instance exported, ``sessions`` the sessions it created.
    """

    def __init__(
        self,
        cache_dir: Path,
        model_key: str,
        providers: Sequence[str] = DEFAULT_PROVIDERS,
        intra_op_threads: int | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.model_dir = self.cache_dir / _directory_for(model_key)
        self.providers = _checked_providers(providers)
        self.intra_op_threads = intra_op_threads
        self.exports = 0
        self.sessions = 0
        self._sessions: dict[str, ort.InferenceSession] = {}
        self._transformer: torch.nn.Module | None = None
        self._instance_forward: Any = None  # a forward set on the instance before us, to put back
        # One export per shape even when two pipeline threads ask at once.
        self._lock = threading.Lock()

    def path_for(self, shape: ForwardShape, dtype: torch.dtype) -> Path:
        """Where the graph for ``shape`` at ``dtype`` is (or will be) cached."""
        return self.model_dir / f"{shape.tag(dtype)}.onnx"

    def install(self, transformer: torch.nn.Module) -> None:
        """Route ``transformer``'s calls through onnxruntime; everything else about it is untouched.

        Raises ``RuntimeError`` if this backend is already installed, and ``ValueError`` for a
        transformer under accelerate hooks (``enable_model_cpu_offload``): those move weights per
        call, which a graph with its own copy of the weights would silently bypass.
        """
        if self._transformer is not None:
            raise RuntimeError("this backend is already installed; uninstall() it first")
        if hasattr(transformer, "_hf_hook"):
            raise ValueError("the ONNX backend cannot run a transformer with accelerate hooks (cpu_offload)")
        self._instance_forward = transformer.__dict__.get("forward")
        self._transformer = transformer
        transformer.forward = self.forward

    def uninstall(self) -> None:
        """Give the transformer its own forward back. Cached sessions stay loaded for a re-install."""
        if self._transformer is None:
            return
        if self._instance_forward is None:
            del self._transformer.forward
        else:
            self._transformer.forward = self._instance_forward
        self._transformer = None
        self._instance_forward = None

    def warm_up(self, shapes: Iterable[ForwardShape]) -> None:
        """Export or load the graph for each shape now, so no request pays for it."""
        transformer = self._installed()
        for shape in shapes:
            self._session(transformer, shape)

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_states_image: torch.Tensor | None = None,
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> tuple[torch.Tensor] | Transformer2DModelOutput:
        """``WanTransformer3DModel.forward``'s contract, run by onnxruntime.

        The sample comes back on ``hidden_states``' device and dtype. Image conditioning and
        ``attention_kwargs`` (a LoRA scale) are not in the graph: ``ValueError`` if given.
        """
        if encoder_hidden_states_image is not None:
            raise ValueError("the ONNX backend does not support encoder_hidden_states_image (image-to-video)")
        if attention_kwargs:
            raise ValueError(f"the ONNX backend cannot apply attention_kwargs {sorted(attention_kwargs)}")
        transformer = self._installed()
        session = self._session(transformer, ForwardShape.of(hidden_states, timestep, encoder_hidden_states))
        feeds = dict(
            zip(INPUT_NAMES, map(_to_numpy, (hidden_states, timestep, encoder_hidden_states)), strict=True)
        )
        (sample,) = session.run([OUTPUT_NAME], feeds)
        output = torch.from_numpy(sample).to(device=hidden_states.device, dtype=hidden_states.dtype)
        return Transformer2DModelOutput(sample=output) if return_dict else (output,)

    def _installed(self) -> torch.nn.Module:
        if self._transformer is None:
            raise RuntimeError("install() the backend on a transformer first")
        return self._transformer

    def _session(self, transformer: torch.nn.Module, shape: ForwardShape) -> ort.InferenceSession:
        dtype = transformer.dtype
        tag = shape.tag(dtype)
        with self._lock:
            session = self._sessions.get(tag)
            if session is not None:
                return session
            path = self.path_for(shape, dtype)
            if not path.is_file():
                self._export(transformer, shape, path)
            options = ort.SessionOptions()
            if self.intra_op_threads is not None:
                options.intra_op_num_threads = self.intra_op_threads
            session = ort.InferenceSession(str(path), sess_options=options, providers=self.providers)
            self.sessions += 1
            self._sessions[tag] = session
            return session

    def _export(self, transformer: torch.nn.Module, shape: ForwardShape, path: Path) -> None:
        inputs = shape.example_inputs(transformer.config.text_dim, transformer.device)
        with torch.no_grad():
            exporter = _export_atomically(_Float32Forward(transformer), inputs, path)
        self.exports += 1
        log.info("exported %s with the %s exporter", path, exporter)
