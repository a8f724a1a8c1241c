// The result area: one video at a time, followed live over SSE until it is final, then played.

import { api, FINAL } from "./api.js";
import { $, report, statusLabel, text } from "./dom.js";
import { sseEvents } from "./sse.js";

const state = {
  current: null, // the video object shown in the result area
  stream: null, // AbortController of the SSE stream being read
  etaTimer: null,
  videoUrl: null,
};
// What this run's live events have shown so far: the step count and the ETA come from it.
const live = { step: null, total: null, firstStep: null, firstAt: null, lastAt: null, eta: null };

// Run when a followed video turns final here (the history must show it); the page hands it in, so
// this module need not import the history, which imports this one.
let settled = () => {};
// Run with the video the result area shows whenever that changes (null: none), and again when it
// turns final: what a shown video offers (a remix) lives in another module.
let shown = () => {};

export function onSettled(handler) {
  settled = handler;
}

export function onShown(handler) {
  shown = handler;
}

export function shownVideo() {
  return state.current;
}

export function stopStream() {
  state.stream?.abort();
  state.stream = null;
  clearInterval(state.etaTimer);
  state.etaTimer = null;
}

// Shows a video object in the result area, and follows it live until it is final.
export function show(video) {
  stopStream();
  state.current = video;
  resetResult();
  renderWarnings(video);
  shown(video);
  Object.assign(live, { step: null, total: null, firstStep: null, firstAt: null, lastAt: null, eta: null });
  if (FINAL.has(video.status)) {
    renderFinal(video).catch((error) => report(error, $("form-error")));
  } else {
    renderLive({ status: video.status, progress: video.progress, estimated_completion_at: video.estimated_completion_at });
    follow(video.id);
  }
}

// A deleted video's content is gone, so it cannot stay on screen.
export function clearIfShown(id) {
  if (state.current?.id !== id) return;
  stopStream();
  state.current = null;
  resetResult();
  shown(null);
  $("job-live").hidden = true;
  $("job-status").textContent = "Deleted.";
}

function resetResult() {
  if (state.videoUrl) URL.revokeObjectURL(state.videoUrl);
  state.videoUrl = null;
  $("result-video").removeAttribute("src");
  $("result-preview").removeAttribute("src");
  $("result-preview").hidden = true;
  $("player").hidden = true;
  $("details").hidden = true;
  $("details").replaceChildren();
  $("badges").replaceChildren();
  $("warnings").replaceChildren();
  $("warnings").hidden = true;
  $("job-status").classList.remove("error");
  setProgress(0);
}

function setProgress(value) {
  // The attribute, not just the property: it is what assistive tech and observers see.
  $("progress").setAttribute("value", String(value));
}

function renderLive(event) {
  $("job-live").hidden = false;
  $("cancel").disabled = false;
  const parts = [statusLabel(event.status)];
  if (event.status === "queued" && event.queue_position != null) {
    // queue_position counts the jobs ahead (0 = next)
    parts.push(event.queue_position === 0 ? "next in line" : `${event.queue_position} ahead in the queue`);
  }
  if (event.total_steps) live.total = event.total_steps;
  if (event.type === "progress" && event.step != null) {
    live.step = event.step;
    if (live.firstStep === null) [live.firstStep, live.firstAt] = [event.step, event.at];
    live.lastAt = event.at;
  }
  if (event.type === "preview" && event.preview) showPreview(event);
  if (live.step != null && live.total) parts.push(`step ${live.step} of ${live.total}`);
  $("job-status").textContent = parts.join(" · ");
  if (event.progress != null) setProgress(event.progress);
  live.eta = etaFrom(event);
  renderEta();
}

// A live preview (an animated WebP as a data: URL, from the SSE stream) in place of the video to come.
function showPreview(event) {
  const image = $("result-preview");
  image.src = event.preview;
  image.dataset.step = String(event.step);
  image.title = `preview at step ${event.step} of ${event.total_steps}`;
  image.hidden = false;
}

// The server's estimate when it gives one; otherwise from the step rate seen so far.
function etaFrom(event) {
  if (event.estimated_completion_at) return event.estimated_completion_at * 1000;
  if (live.step != null && live.firstStep !== null && live.step > live.firstStep && live.total) {
    const perStep = (live.lastAt - live.firstAt) / (live.step - live.firstStep);
    return (live.lastAt + perStep * (live.total - live.step)) * 1000;
  }
  return live.eta;
}

function renderEta() {
  if (!live.eta) {
    $("eta").textContent = "";
    return;
  }
  const left = Math.max(0, Math.round((live.eta - Date.now()) / 1000));
  $("eta").textContent = left > 0 ? `about ${left} s left` : "finishing…";
}

async function follow(id) {
  const controller = new AbortController();
  state.stream = controller;
  state.etaTimer = setInterval(renderEta, 1000);
  try {
    const response = await api(`/v1/videos/${encodeURIComponent(id)}/events`, { signal: controller.signal, raw: true });
    for await (const { data } of sseEvents(response.body)) {
      if (state.stream !== controller) return;
      const event = JSON.parse(data);
      if (FINAL.has(event.status)) break;
      renderLive(event);
    }
  } catch (error) {
    if (error.name === "AbortError" || state.stream !== controller) return;
    // A dropped stream is not the job failing: the final GET below tells what really happened.
  }
  if (state.stream !== controller) return;
  stopStream();
  const video = await api(`/v1/videos/${encodeURIComponent(id)}`).catch(() => null);
  if (!video || state.current?.id !== id) return;
  if (FINAL.has(video.status)) {
    state.current = video;
    await renderFinal(video).catch((error) => report(error, $("form-error")));
    settled();
  } else {
    // The stream broke before the end: pick it up again, after a pause so a failing server is not hammered.
    setTimeout(() => { if (state.current?.id === id && !state.stream) show(video); }, 1000);
  }
}

export async function cancel() {
  const id = state.current?.id;
  if (!id) return;
  $("cancel").disabled = true;
  let video;
  try {
    video = await api(`/v1/videos/${encodeURIComponent(id)}/cancel`, { method: "POST" });
  } catch (error) {
    if (error.status !== 409) throw error;
    video = await api(`/v1/videos/${encodeURIComponent(id)}`); // it finished first
  }
  if (state.current?.id !== id) return;
  stopStream();
  state.current = video;
  await renderFinal(video);
  settled();
}

/* ---------- the finished job ---------- */

async function renderFinal(video) {
  $("job-live").hidden = true;
  const status = $("job-status");
  if (video.status === "completed") {
    setProgress(100);
    status.textContent = video.cached ? "Completed (from the cache)" : "Completed";
  } else if (video.status === "failed") {
    status.textContent = `Failed: ${video.error?.message || "unknown error"}`;
    status.classList.add("error");
  } else {
    status.textContent = "Cancelled";
  }
  renderBadges(video);
  renderDetails(video);
  shown(video);
  if (video.status !== "completed") return;
  const response = await api(`/v1/videos/${encodeURIComponent(video.id)}/content`, { raw: true });
  const blob = await response.blob();
  if (state.current?.id !== video.id) return;
  if (state.videoUrl) URL.revokeObjectURL(state.videoUrl);
  state.videoUrl = URL.createObjectURL(blob);
  $("result-video").src = state.videoUrl;
  $("result-video").onloadedmetadata = fitPixels;
  $("download").href = state.videoUrl;
  $("download").download = `${video.id}.mp4`;
  $("player").hidden = false;
}

// A small video is shown at a whole multiple of its size (crisp pixels, image-rendering: pixelated),
// as large as fits the player's width and 60% of the window's height; never shrunk below 1x.
export function fitPixels() {
  const video = $("result-video");
  if (!video.videoWidth) return;
  const room = Math.min(video.parentElement.clientWidth / video.videoWidth,
                        (window.innerHeight * 0.6) / video.videoHeight);
  const scale = Math.max(1, Math.floor(room));
  video.style.width = `${video.videoWidth * scale}px`;
  video.style.height = `${video.videoHeight * scale}px`;
  video.dataset.scale = String(scale);
}

function renderBadges(video) {
  const badges = $("badges");
  badges.replaceChildren();
  if (video.cached) {
    const similarity = video.cache_similarity != null ? ` · ${(video.cache_similarity * 100).toFixed(1)}% similar` : "";
    const badge = text("span", `cached${similarity}`, "badge cached");
    badge.id = "badge-cached";
    if (video.cache_matched_prompt) badge.title = `matched prompt: ${video.cache_matched_prompt}`;
    badges.append(badge);
  }
  if (video.degraded) {
    const lowered = Object.entries(video.degraded)
      .map(([name, change]) => `${name.replaceAll("_", " ")} ${change.requested}→${change.ran}`)
      .join(", ");
    const badge = text("span", `degraded: ${lowered}`, "badge degraded");
    badge.id = "badge-degraded";
    if (video.degraded_reason) badge.title = video.degraded_reason;
    badges.append(badge);
    if (video.degraded_reason) badges.append(text("span", video.degraded_reason, "muted small"));
  }
}

// What the server says the user should know about this video (e.g. a prompt the model may not follow).
function renderWarnings(video) {
  const list = $("warnings");
  list.replaceChildren(...(video.warnings || []).map((warning) => text("li", warning)));
  list.hidden = list.childElementCount === 0;
}

function seconds(value) {
  return value == null ? "–" : `${value.toFixed(value < 10 ? 2 : 1)} s`;
}

// What the video started from besides its prompt, if anything.
function madeFrom(video) {
  if (video.remixed_from_video_id) return `remix of ${video.remixed_from_video_id} at strength ${video.strength}`;
  if (video.input_reference) return `from an image${video.input_fit ? ` (fitted: ${video.input_fit})` : ""}`;
  if (video.strength != null) return `re-drawn from a clip at strength ${video.strength}`;
  return null;
}

// The adapters a video ran with, each at its scale: "style × 0.7, grain × 1".
export function adaptersRan(loras) {
  return loras.map((lora) => `${lora.name} × ${lora.scale}`).join(", ");
}

function renderDetails(video) {
  const t = video.timings || {};
  const rows = [
    ["Prompt", video.prompt, "detail-prompt"],
    ["Made", new Date(video.created_at * 1000).toLocaleString(), "detail-created"],
    ["ID", video.id, "detail-id"],
    ...(madeFrom(video) ? [["Made from", madeFrom(video), "detail-source"]] : []),
    ...(video.loras?.length ? [["Adapters", adaptersRan(video.loras), "detail-loras"]] : []),
    ["Seed", String(video.seed), "detail-seed"],
    ["Size", video.size, "detail-size"],
    ["Frames", `${video.num_frames} at ${video.fps} fps (${video.seconds} s)`, "detail-frames"],
    ["Steps", String(video.num_inference_steps), "detail-steps"],
    ["Guidance", video.guidance_scale_2 != null ? `${video.guidance_scale} / ${video.guidance_scale_2}` : String(video.guidance_scale), "detail-guidance"],
    ...(video.flow_shift != null ? [["Shift", String(video.flow_shift), "detail-shift"]] : []),
    ["Timings", `queue ${seconds(t.queue_s)} · inference ${seconds(t.inference_s)} · encode ${seconds(t.encode_s)} · total ${seconds(t.total_s)}`
      + (t.first_preview_s != null ? ` · first preview ${seconds(t.first_preview_s)}` : ""), "detail-timings"],
  ];
  const list = $("details");
  list.replaceChildren(...rows.flatMap(([name, value, id]) => {
    const dd = text("dd", value);
    dd.id = id;
    return [text("dt", name), dd];
  }));
  list.hidden = false;
}
