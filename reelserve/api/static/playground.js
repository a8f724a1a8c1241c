// The reelserve playground: one page over the public /v1 API, with the key the user enters.
// This module builds the form from the served model, submits it, and wires the page together; the
// result area, the history and the API client live in their own modules.
// API data only ever reaches the DOM through textContent (never innerHTML).

import { adapterRequest, offerAdapters, showAdapterHint, wireAdapters } from "./adapters.js";
import { api, apiKey, dropKey, onUnauthorized, storeKey } from "./api.js";
import { $, copyText, guard, text } from "./dom.js";
import { clearErrors, showError } from "./errors.js";
import { forgetThumbnails, loadHistory, nextPage, previousPage, refreshHistory, resetPaging } from "./history.js";
import { imageFields, imageName, offerImage, showFit, wireImage } from "./image.js";
import { allowRemix, offerRemix, wireRemix } from "./remix.js";
import { cancel, onSettled, onShown, show, shownVideo, stopStream } from "./result.js";
import { curlSnippet, pythonSnippet } from "./snippets.js";

// With "Live preview" on, about this many previews come in a run (one every steps / PREVIEWS steps).
const PREVIEWS = 5;

let model = null; // the served model's /v1/models entry, once the server has answered

// A history card was opened: its request goes into the form, ready to run again (or to change).
document.addEventListener("reelserve:reuse", (event) => {
  const video = event.detail;
  const [width, height] = String(video.size).split("x");
  const values = {
    prompt: video.prompt, negative_prompt: video.negative_prompt || "", width, height,
    fps: video.fps, num_inference_steps: video.num_inference_steps, guidance_scale: video.guidance_scale,
    guidance_scale_2: video.guidance_scale_2 ?? "", seed: String(video.seed), priority: video.priority || "",
  };
  for (const [field, value] of Object.entries(values)) {
    if (value !== undefined && value !== null && $(field)) $(field).value = String(value);
  }
  relabelFrames();
  $("num_frames").value = String(video.num_frames);
  formChanged();
});

/* ---------- API key ---------- */

function askForKey(message) {
  $("key-panel").hidden = false;
  $("key-error").textContent = apiKey() ? message || "That key was refused." : "";
  $("cancel-key").hidden = true;
  $("app").hidden = true;
  $("api-key").focus();
}

function showKeyActions() {
  $("key-actions").hidden = !apiKey();
}

function saveKey(event) {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (!key) {
    $("key-error").textContent = "Enter a key.";
    return;
  }
  storeKey(key);
  $("api-key").value = "";
  $("key-panel").hidden = true;
  return boot();
}

function changeKey() {
  $("key-panel").hidden = false;
  $("key-error").textContent = "";
  $("cancel-key").hidden = false;
  $("api-key").focus();
}

function forgetKey() {
  dropKey();
  stopStream();
  forgetThumbnails();
  showKeyActions();
  return boot();
}

/* ---------- the form, built from the model's parameters ---------- */

function fillSelect(select, values, chosen, label = String) {
  select.replaceChildren(...values.map((value) => {
    const option = new Option(label(value), String(value));
    option.selected = String(value) === String(chosen);
    return option;
  }));
}

function range(min, max, step) {
  const values = [];
  for (let v = min; v <= max; v += step) values.push(v);
  return values;
}

function setNumber(input, spec, step) {
  input.min = spec.min;
  input.max = spec.max;
  if (step !== undefined) input.step = step;
  input.value = spec.default ?? "";
}

// "4n+1" -> every legal frame count from min to max; anything unknown falls back to 1..max. A single
// frame is a still image, not a video: the choices start at two frames or more.
function frameCounts(spec) {
  const form = /^(\d+)n\+(\d+)$/.exec(spec.form || "");
  const [k, r] = form ? [Number(form[1]), Number(form[2])] : [1, 0];
  return range(spec.min, spec.max, 1).filter((n) => n > 1 && n % k === r % k);
}

function frameLabel(frames) {
  const fps = Number($("fps").value) || model.parameters.fps.default;
  const seconds = (frames - 1) / fps;
  return `${frames} frames · ${seconds.toFixed(seconds < 10 ? 2 : 1).replace(/\.?0+$/, "")} s`;
}

function buildForm() {
  const p = model.parameters;
  const sizes = (spec) => range(spec.multiple_of || spec.min, spec.max, spec.multiple_of || 1).filter((v) => v >= spec.min);
  // A model card's trained shapes are offered; the API still takes the rest of the range, with a warning.
  fillSelect($("width"), p.width.offered || sizes(p.width), p.width.default);
  fillSelect($("height"), p.height.offered || sizes(p.height), p.height.default);
  setNumber($("fps"), p.fps, 1);
  fillSelect($("num_frames"), p.num_frames.offered || frameCounts(p.num_frames), p.num_frames.default, frameLabel);
  setNumber($("num_inference_steps"), p.num_inference_steps, 1);
  setNumber($("guidance_scale"), p.guidance_scale);
  $("guidance-2-field").hidden = !p.guidance_scale_2;
  if (p.guidance_scale_2) setNumber($("guidance_scale_2"), p.guidance_scale_2);
  const priority = p.priority || { enum: ["standard"], default: "standard" };
  fillSelect($("priority"), priority.enum, priority.default);
  $("prompt").maxLength = p.prompt?.max_length ?? 2000;
  $("negative_prompt").value = p.negative_prompt?.default ?? "";

  showCard();

  const info = $("server-info");
  const accelerations = model.accelerations || [];
  info.replaceChildren(text("span", `Model ${model.id}`));
  for (const acc of accelerations) info.append(text("span", acc, "chip"));
  if (!accelerations.length) info.append(text("span", "no accelerations", "chip muted"));
  offerImage(model.inputs);
  allowRemix(model.inputs);
  formChanged();
}

// What the model can draw, and prompts that work: a click puts one in the prompt box.
function showCard() {
  $("model-about").textContent = model.about || "";
  $("model-about").hidden = !model.about;
  const examples = model.examples || [];
  $("examples").replaceChildren(...examples.map((prompt) => {
    const button = text("button", prompt, "example");
    button.type = "button";
    button.addEventListener("click", () => {
      $("prompt").value = prompt;
      updateSnippets();
      $("prompt").focus();
    });
    return button;
  }));
  $("examples").hidden = !examples.length;
}

function relabelFrames() {
  for (const option of $("num_frames").options) option.textContent = frameLabel(Number(option.value));
}

// The request exactly as the API will get it, as JSON text: the seed goes in as raw digits because a
// JS number would round it. The first frame's data URL goes in only when `image` is asked for (the
// snippets read the image from a file instead). Steps and guidance stay out when a chosen adapter
// recommends them and the user has not set them: the server applies the adapter's.
function requestJson({ image = false } = {}) {
  const body = { model: model.id, prompt: $("prompt").value };
  const { input_reference: reference, ...fit } = imageFields();
  if (image && reference) body.input_reference = reference;
  Object.assign(body, fit);
  if ($("negative_prompt").value) body.negative_prompt = $("negative_prompt").value;
  const adapters = adapterRequest();
  const numbers = ["width", "height", "num_frames", "fps", "num_inference_steps", "guidance_scale"];
  if (model.parameters.guidance_scale_2) numbers.push("guidance_scale_2");
  for (const id of numbers.filter((field) => !adapters.unset.has(field))) {
    const value = $(id).value.trim();
    if (value !== "") body[id] = Number(value);
  }
  if (adapters.loras) body.loras = adapters.loras;
  body.priority = $("priority").value;
  const every = previewEvery(body.num_inference_steps ?? adapters.steps ?? model.parameters.num_inference_steps.default);
  if (every !== undefined) body.preview_every = every;
  const seed = seedDigits();
  const json = JSON.stringify(body);
  return seed ? `${json.slice(0, -1)},"seed":${seed}}` : json;
}

// With "Live preview" on, a preview every this many of `steps` steps; off, the server's default.
function previewEvery(steps) {
  if (!$("preview_every").checked || !model.parameters.preview_every) return undefined;
  return Math.max(1, Math.floor(steps / PREVIEWS));
}

// JSON forbids leading zeros, so "007" is sent as 7.
function seedDigits() {
  return $("seed").value.replace(/\D/g, "").replace(/^0+(?=\d)/, "");
}

/* ---------- submitting ---------- */

async function submit(event) {
  event.preventDefault();
  clearErrors();
  const button = $("generate");
  button.disabled = true;
  try {
    started(await api("/v1/videos", { method: "POST", body: requestJson({ image: true }) }));
  } catch (error) {
    if (error.name !== "AbortError" && error.status !== 401) showError(error);
  } finally {
    button.disabled = false;
  }
}

// A job was created here (a generation or a remix): the result area follows it, the history shows it.
function started(video) {
  resetPaging();
  show(video);
  refreshHistory();
}

function reuseSeed() {
  const video = shownVideo();
  if (video?.seed == null) return;
  $("seed").value = String(video.seed);
  updateSnippets();
  $("seed").focus();
}

/* ---------- code snippets ---------- */

// Any change to the form: the video's size may now differ from the image's, an adapter's recommended
// steps may now apply or not, and the snippets follow.
function formChanged() {
  showFit();
  showAdapterHint();
  updateSnippets();
}

function updateSnippets() {
  if (!model) return;
  const json = requestJson();
  $("snippet-curl").textContent = curlSnippet(json, location.origin, apiKey(), imageName());
  $("snippet-python").textContent = pythonSnippet(json, location.origin, apiKey(), imageName());
}

function copy(id) {
  updateSnippets();
  return copyText($(id), $("copy-status"));
}

/* ---------- wiring ---------- */

async function boot() {
  $("fatal").hidden = true;
  showKeyActions();
  try {
    const models = await api("/v1/models");
    model = models.data[0];
  } catch (error) {
    if (error.status === 401) return; // the key form is up; saving a key boots again
    $("fatal").textContent = `Cannot reach the server: ${error.message}`;
    $("fatal").hidden = false;
    return;
  }
  $("key-panel").hidden = true;
  $("app").hidden = false;
  // Answered without a key: the server has no API keys, so its list is everyone's jobs, not "yours".
  $("history-title").textContent = apiKey() ? "Your videos" : "All videos on this server";
  buildForm();
  resetPaging();
  await Promise.all([offerAdapters(model.parameters.loras), loadHistory()]);
}

function wire() {
  onUnauthorized(askForKey);
  onSettled(refreshHistory);
  onShown(offerRemix);
  wireImage(formChanged);
  wireAdapters(formChanged);
  wireRemix({ started, previewEvery });

  $("key-form").addEventListener("submit", guard(saveKey, $("key-error")));
  $("change-key").addEventListener("click", changeKey);
  $("cancel-key").addEventListener("click", () => { $("key-panel").hidden = true; });
  $("forget-key").addEventListener("click", guard(forgetKey));

  const form = $("generate-form");
  form.addEventListener("submit", submit);
  form.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener("input", formChanged);
  form.addEventListener("change", formChanged);
  $("fps").addEventListener("input", relabelFrames);
  // Digits only: anything else could never be a seed.
  $("seed").addEventListener("input", () => {
    const digits = $("seed").value.replace(/\D/g, "");
    if (digits !== $("seed").value) $("seed").value = digits;
  });

  $("cancel").addEventListener("click", guard(cancel));
  $("reuse-seed").addEventListener("click", reuseSeed);
  $("history-refresh").addEventListener("click", guard(loadHistory, $("history-error")));
  $("history-next").addEventListener("click", guard(nextPage, $("history-error")));
  $("history-prev").addEventListener("click", guard(previousPage, $("history-error")));
  $("copy-curl").addEventListener("click", () => copy("snippet-curl"));
  $("copy-python").addEventListener("click", () => copy("snippet-python"));
}

wire();
guard(boot, $("fatal"))();
