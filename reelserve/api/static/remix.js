// Remix: the completed video in the result box, re-drawn with a new prompt (POST /v1/videos/{id}/remix).
// The new job is followed as any new one: the page hands in what starting one means, so this module
// needs neither the result area nor the history.

import { api, apiKey } from "./api.js";
import { $, copyText } from "./dom.js";
import { remixCurlSnippet, remixPythonSnippet } from "./snippets.js";

const remix = {
  allowed: false, // the served model takes remixes (its inputs.remix)
  source: null, // the completed video a remix would re-draw
  started: () => {},
  previewEvery: () => undefined,
};

// started(video): follow a created job; previewEvery(steps): the preview_every the form would send.
export function wireRemix({ started, previewEvery }) {
  Object.assign(remix, { started, previewEvery });
  const form = $("remix");
  form.addEventListener("submit", submitRemix);
  form.addEventListener("input", updateRemixSnippets);
  form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  $("remix-strength").addEventListener("input", () => {
    $("remix-strength-value").textContent = String(strength());
  });
  const note = $("remix-copy-status");
  $("copy-remix-curl").addEventListener("click", () => copyText($("snippet-remix-curl"), note));
  $("copy-remix-python").addEventListener("click", () => copyText($("snippet-remix-python"), note));
}

export function allowRemix(inputs) {
  remix.allowed = Boolean(inputs?.remix);
}

// What the result box shows changed (null: nothing): a completed video can be remixed, with its
// own prompt to start from.
export function offerRemix(video) {
  const offered = remix.allowed && video?.status === "completed";
  $("remix").hidden = !offered;
  $("remix-error").textContent = "";
  if (!offered) {
    remix.source = null;
    return;
  }
  if (remix.source?.id !== video.id) $("remix-prompt").value = video.prompt;
  remix.source = video;
  updateRemixSnippets();
}

// The slider's value on the 0.05 grid (a float step could read 0.15000000000000002).
function strength() {
  return Math.round(Number($("remix-strength").value) * 100) / 100;
}

function remixJson() {
  const body = { prompt: $("remix-prompt").value, strength: strength() };
  // The remix runs its share of the source's steps: previews come at the form's rate over those.
  const every = remix.previewEvery(Math.max(1, Math.round(remix.source.num_inference_steps * body.strength)));
  if (every !== undefined) body.preview_every = every;
  return JSON.stringify(body);
}

function updateRemixSnippets() {
  if (!remix.source) return;
  const [id, json] = [remix.source.id, remixJson()];
  $("snippet-remix-curl").textContent = remixCurlSnippet(id, json, location.origin, apiKey());
  $("snippet-remix-python").textContent = remixPythonSnippet(id, json, location.origin, apiKey());
}

async function submitRemix(event) {
  event.preventDefault();
  const source = remix.source;
  if (!source) return;
  $("remix-error").textContent = "";
  const button = $("remix-submit");
  button.disabled = true;
  try {
    const video = await api(`/v1/videos/${encodeURIComponent(source.id)}/remix`, { method: "POST", body: remixJson() });
    remix.started(video);
  } catch (error) {
    if (error.name !== "AbortError" && error.status !== 401) {
      const retry = error.retryAfter ? ` Try again in ${error.retryAfter} s.` : "";
      $("remix-error").textContent = error.message + retry;
    }
  } finally {
    button.disabled = false;
  }
}
