"""Ablation: does adding MiniLM's mean-pooled sentence vector to every token state help paraphrases?
A 2,000-step denoiser run from another run's VAE and latents (``--vae-from``), no decoder
refinement, judged on the held-out, paraphrase and image-to-video sets (seeds 0, 1); run it once
per mode, side by side. Results: docs/micro-model.md ("What was tried").

Usage: python bench/micro_pooled_text.py plain|pooled VAE_RUN_DIR OUT_DIR"""
import json, sys, time
from dataclasses import replace
from pathlib import Path

import torch
from diffusers import WanPipeline

import reelserve.micro.train as T
from reelserve.micro.adherence import GenerationSettings, evaluate_image_to_video, evaluate_pipeline
from reelserve.micro.architecture import MAX_SEQUENCE_LENGTH
from reelserve.micro.dataset import eval_prompts, paraphrase_prompts
from reelserve.models.minilm import minilm_components


class Output:
    def __init__(self, h): self.last_hidden_state = h


class PooledMiniLM(torch.nn.Module):
    """MiniLM whose every token state also carries the sentence's mean-pooled vector."""
    def __init__(self, bert):
        super().__init__(); self.bert = bert
    @property
    def dtype(self): return self.bert.dtype
    @property
    def device(self): return self.bert.device
    def forward(self, input_ids, attention_mask=None):
        h = self.bert(input_ids, attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1)
        return Output(h + pooled)


mode, vae_run, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
original = T.build_untrained_pipeline

def build(seed, width=128, layers=4):
    pipe = original(seed, width, layers)
    if mode == "pooled":
        pipe.text_encoder = PooledMiniLM(pipe.text_encoder)
    return pipe

T.build_untrained_pipeline = build
config = replace(T.TrainConfig(), steps=2000, decoder_steps=0, width=128, layers=4, batch=32)  # v2-sized, as measured
start = time.perf_counter()
summary = T.train(config, out, vae_from=vae_run)
train_s = time.perf_counter() - start
parts = minilm_components()
if mode == "pooled":
    parts["text_encoder"] = PooledMiniLM(parts["text_encoder"])
pipe = WanPipeline.from_pretrained(out, **parts)
pipe.set_progress_bar_config(disable=True)
s = GenerationSettings()
result = {"mode": mode, "train_s": round(train_s, 1), "denoiser_loss": summary.get("denoiser_loss")}
for name, prompts in (("heldout", eval_prompts()), ("paraphrase", paraphrase_prompts())):
    r = evaluate_pipeline(pipe, MAX_SEQUENCE_LENGTH, s, prompts)
    result[name] = {k: round(v * 100, 1) for k, v in r.accuracy.items()}
r = evaluate_image_to_video(pipe, MAX_SEQUENCE_LENGTH, s)
result["i2v"] = {k: round(v * 100, 1) for k, v in r.accuracy.items()}
print(json.dumps(result))
(out / "ablation.json").write_text(json.dumps(result, indent=2))
