// "Your videos": the caller's own jobs, newest first, a page at a time.

import { api, FINAL } from "./api.js";
import { $, guard, report, statusLabel, text } from "./dom.js";
import { adaptersRan, clearIfShown, show } from "./result.js";

const HISTORY_PAGE = 8;

const paging = {
  cursors: [], // `after` ids of the history pages before this one (a stack, for Previous)
  after: null,
  seq: 0,
  shown: "", // ids and statuses on screen: a poll that changes nothing leaves the cards alone
  timer: null,
};
const thumbs = new Map(); // video id -> blob URL (or null while loading / when unavailable)

// Back to the newest page, for the next load.
export function resetPaging() {
  paging.cursors = [];
  paging.after = null;
}

// The thumbnails were fetched with the old key, which a new one may not see: drop them, and draw the
// cards afresh on the next load.
export function forgetThumbnails() {
  for (const url of thumbs.values()) URL.revokeObjectURL(url);
  thumbs.clear();
  paging.shown = "";
}

// History refreshes run in the background; their failures belong to the history panel.
export function refreshHistory() {
  loadHistory().then(
    () => { $("history-error").textContent = ""; },
    (error) => report(error, $("history-error")),
  );
}

export async function loadHistory() {
  const seq = ++paging.seq;
  const query = new URLSearchParams({ limit: String(HISTORY_PAGE) });
  if (paging.after) query.set("after", paging.after);
  const page = await api(`/v1/videos?${query}`);
  if (seq !== paging.seq) return; // a newer load has started
  if (!page.data.length && paging.cursors.length) {
    paging.after = paging.cursors.pop(); // this page emptied (deletes): step back
    return loadHistory();
  }
  const shown = page.data.map((v) => `${v.id}:${v.status}:${v.progress}`).join(","); // progress too: cards stay live
  if (shown !== paging.shown) $("history").replaceChildren(...page.data.map(card));
  paging.shown = shown;
  // Jobs started elsewhere (another tab, a script) finish without telling this page: poll while any runs.
  clearTimeout(paging.timer);
  if (page.data.some((v) => !FINAL.has(v.status))) paging.timer = setTimeout(refreshHistory, 3000);
  $("history-empty").hidden = page.data.length > 0;
  $("history-prev").disabled = !paging.cursors.length;
  $("history-next").disabled = !page.has_more;
  $("history-next").dataset.after = page.last_id || "";
}

export function nextPage() {
  paging.cursors.push(paging.after);
  paging.after = $("history-next").dataset.after;
  return loadHistory();
}

export function previousPage() {
  if (!paging.cursors.length) return;
  paging.after = paging.cursors.pop();
  return loadHistory();
}

function card(video) {
  const item = document.createElement("li");
  item.className = "card";
  item.dataset.id = video.id;
  item.dataset.status = video.status;

  const open = document.createElement("button");
  open.type = "button";
  open.className = "card-open";
  open.setAttribute("aria-label", `Show video: ${video.prompt}`);
  const thumb = document.createElement("div");
  thumb.className = "thumb";
  if (video.status === "completed") loadThumb(video.id, thumb);
  else thumb.append(text("span", statusLabel(video.status), `thumb-status ${video.status}`));
  open.append(thumb, text("span", video.prompt, "card-prompt"), text("span", cardMeta(video), "card-meta"));
  open.addEventListener("click", guard(() => openJob(video.id), $("history-error")));

  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "card-delete danger ghost";
  remove.textContent = "Delete";
  remove.setAttribute("aria-label", `Delete video: ${video.prompt}`);
  remove.addEventListener("click", guard(() => deleteJob(video.id, video.prompt), $("history-error")));

  item.append(open, remove);
  return item;
}

function cardMeta(video) {
  const state = video.status === "in_progress" ? `${statusLabel(video.status)} ${video.progress}%` : statusLabel(video.status);
  const loras = video.loras?.length ? adaptersRan(video.loras) : null;
  return [state, video.size, `${video.seconds} s`, loras, video.cached ? "cached" : null].filter(Boolean).join(" · ");
}

async function loadThumb(id, holder) {
  const img = document.createElement("img");
  img.alt = "";
  img.width = 160;
  holder.append(img);
  try {
    let url = thumbs.get(id);
    if (!url) {
      const response = await api(`/v1/videos/${encodeURIComponent(id)}/content?variant=thumbnail`, { raw: true });
      url = URL.createObjectURL(await response.blob());
      thumbs.set(id, url);
    }
    img.src = url;
  } catch {
    img.remove();
    holder.append(text("span", "no preview", "thumb-status"));
  }
}

// Opening a card shows that job and puts its request in the form: "generate again" is one click.
async function openJob(id) {
  const video = await api(`/v1/videos/${encodeURIComponent(id)}`);
  show(video);
  document.dispatchEvent(new CustomEvent("reelserve:reuse", { detail: video }));
  $("result-title").scrollIntoView({ behavior: "smooth", block: "start" });
}

async function deleteJob(id, prompt) {
  if (!window.confirm(`Delete this video for good?\n\n${prompt}`)) return;
  await api(`/v1/videos/${encodeURIComponent(id)}`, { method: "DELETE" });
  const url = thumbs.get(id);
  if (url) URL.revokeObjectURL(url);
  thumbs.delete(id);
  clearIfShown(id);
  await loadHistory();
}
