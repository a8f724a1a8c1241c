// LoRA adapters (`loras`): offered when the server takes them (the model's parameters.loras.max_items
// > 0), chosen from GET /v1/adapters, up to max_items, each with a scale. An adapter may recommend steps
// and guidance, which the server applies when the request sets none: the page then leaves out the fields
// the user has not set, and says so. It never changes the user's fields.
// API data only ever reaches the DOM through textContent (never innerHTML).

import { api } from "./api.js";
import { $, text } from "./dom.js";

// What an adapter may recommend (its `key` in GET /v1/adapters), the field it stands for, and its words.
const RECOMMENDABLE = [
  { key: "steps", field: "num_inference_steps", say: (value) => `${value} steps` },
  { key: "guidance", field: "guidance_scale", say: (value) => `guidance ${value}` },
  // The form has no shift of its own: a recommended one is always the server's to apply.
  { key: "shift", field: "flow_shift", say: (value) => `shift ${value}` },
];
// The fields a user may set that a recommendation stands in for while they have not.
const SETTABLE = ["num_inference_steps", "guidance_scale", "guidance_scale_2"];

const adapters = {
  max: 0, // adapters one request may name (0: the server takes none; the field is hidden)
  scale: { min: -4, max: 4, default: 1 },
  listed: [], // GET /v1/adapters' data: the adapters the key may use
  chosen: [], // { name, input } in the order chosen, which is the request's (the first recommending one wins)
  touched: new Set(), // fields the user has set since the form was built
  seq: 0,
};
// Run whenever the chosen adapters change: the snippets and the hint follow them.
let changed = () => {};

export function wireAdapters(onChange) {
  changed = onChange;
  $("add-adapter").addEventListener("click", () => {
    if ($("loras").value) add($("loras").value, adapters.scale.default, true);
  });
  for (const field of SETTABLE) $(field).addEventListener("input", () => adapters.touched.add(field));
  // A history card was opened: its adapters and the steps and guidance it ran with come into the form.
  document.addEventListener("reelserve:reuse", (event) => reuse(event.detail));
}

// The form was (re)built from the model: `spec` is its parameters.loras. Lists the adapters when it takes any.
export async function offerAdapters(spec) {
  const seq = ++adapters.seq;
  adapters.max = spec?.max_items ?? 0;
  Object.assign(adapters.scale, { min: spec?.items?.scale?.min ?? -4, max: spec?.items?.scale?.max ?? 4,
                                  default: spec?.items?.scale?.default ?? 1 });
  adapters.touched.clear();
  adapters.chosen = [];
  adapters.listed = [];
  $("adapters-field").hidden = true;
  $("error-loras").textContent = "";
  render();
  changed(); // the adapters chosen before (under another key) are gone from the request
  if (!adapters.max) return;
  let listed;
  try {
    listed = (await api("/v1/adapters")).data;
  } catch (error) {
    if (seq !== adapters.seq || error.name === "AbortError" || error.status === 401) return;
    listed = [];
    $("error-loras").textContent = `The adapters could not be listed: ${error.message}`;
  }
  if (seq !== adapters.seq) return; // the form was built again meanwhile
  adapters.listed = listed;
  $("adapters-field").hidden = false;
  render();
}

// What the request gets from the adapters: `loras` when some are chosen; `unset`, the fields to leave out
// so the server applies what a chosen adapter recommends (those the user has not set); and `steps`, the
// recommended steps the server will then run (undefined when the form's own are sent).
export function adapterRequest() {
  const request = { loras: undefined, unset: new Set(), steps: undefined };
  if (!adapters.chosen.length) return request;
  request.loras = adapters.chosen.map(({ name, input }) => {
    const scale = input.value.trim();
    return scale === "" ? { name } : { name, scale: Number(scale) };
  });
  for (const rec of recommended().filter((r) => !userSet(r.field))) {
    request.unset.add(rec.field);
    if (rec.key === "steps") request.steps = rec.value;
    if (rec.key === "guidance" && !userSet("guidance_scale_2")) request.unset.add("guidance_scale_2");
  }
  return request;
}

// Where a 422 about `loras` is shown: the scale it names (loras.0.scale), else the adapter list.
export function adapterControl(param) {
  const match = /^loras(?:\[(\d+)\]|\.(\d+))(?:\.(\w+))?/.exec(param || "");
  const chosen = match ? adapters.chosen[Number(match[1] ?? match[2])] : null;
  return chosen && match[3] === "scale" ? chosen.input : $("loras");
}

// The hint under the list: the limits, and what chosen adapters recommend and whether the server applies it.
export function showAdapterHint() {
  if (!adapters.max) return;
  const { min, max } = adapters.scale;
  const limit = adapters.chosen.length >= adapters.max ? `At most ${adapters.max} per video.`
    : `Up to ${adapters.max}, each with a scale from ${min} to ${max} (1: as trained; 0: off).`;
  const recs = recommended();
  const applied = recs.filter((r) => !userSet(r.field));
  const kept = recs.filter((r) => userSet(r.field));
  const parts = [];
  if (applied.length) {
    const by = new Map();
    for (const r of applied) by.set(r.from, [...(by.get(r.from) || []), r]);
    const what = [...by].map(([from, theirs]) => `${from}'s recommended ${words(theirs.map((r) => r.say(r.value)))}`);
    const unset = applied.filter((r) => $(r.field)).map((r) => r.key); // a shift has no field to set
    parts.push(`The server applies ${words(what)}${unset.length ? `, as you have not set ${unset.join(" or ")}` : ""}.`);
  }
  for (const r of kept) {
    parts.push(`Your ${r.key} (${$(r.field).value.trim()}) ${r.key === "steps" ? "are" : "is"} sent, not ${r.from}'s ${r.say(r.value)}.`);
  }
  $("adapters-hint").textContent = limit;
  $("adapters-recommendation").textContent = parts.join(" ");
}

/* ---------- choosing ---------- */

function find(name) {
  return adapters.listed.find((info) => info.name === name);
}

function add(name, scale, focus = false) {
  if (adapters.chosen.length >= adapters.max || adapters.chosen.some((c) => c.name === name)) return;
  adapters.chosen.push({ name, input: scaleInput(name, scale) });
  render();
  if (focus) adapters.chosen.at(-1).input.focus();
  changed();
}

function remove(name) {
  adapters.chosen = adapters.chosen.filter((c) => c.name !== name);
  render();
  $("loras").focus();
  changed();
}

function reuse(video) {
  for (const field of SETTABLE) adapters.touched.add(field); // the fields now hold what that video ran with
  if (!adapters.max) return;
  adapters.chosen = [];
  for (const lora of (video.loras || []).slice(0, adapters.max)) {
    adapters.chosen.push({ name: lora.name, input: scaleInput(lora.name, lora.scale) });
  }
  render();
  changed();
}

// The first chosen adapter that recommends each value, as the server picks it.
function recommended() {
  return RECOMMENDABLE.flatMap((rec) => {
    const info = adapters.chosen.map((c) => find(c.name)).find((i) => i?.[rec.key] != null);
    return info ? [{ ...rec, value: info[rec.key], from: info.name }] : [];
  });
}

function userSet(field) {
  return adapters.touched.has(field) && $(field).value.trim() !== "";
}

function words(list) {
  return list.length < 2 ? list.join("") : `${list.slice(0, -1).join(", ")} and ${list.at(-1)}`;
}

/* ---------- drawing ---------- */

// An adapter as the list offers it: its name, what it is, and what it recommends.
function describe(info) {
  const recommends = RECOMMENDABLE.filter((r) => info[r.key] != null).map((r) => r.say(info[r.key]));
  return [
    info.name,
    info.description || null,
    recommends.length ? `recommends ${recommends.join(", ")}` : null,
    info.owner === "yours" ? "yours" : null,
  ].filter(Boolean).join(" · ");
}

function render() {
  const left = adapters.listed.filter((info) => !adapters.chosen.some((c) => c.name === info.name));
  const select = $("loras");
  const empty = !adapters.listed.length ? "None on this server yet" : "All chosen";
  select.replaceChildren(...(left.length ? left.map((info) => new Option(describe(info), info.name))
    : [new Option(empty, "")]));
  const full = adapters.chosen.length >= adapters.max;
  select.disabled = !left.length || full;
  $("add-adapter").disabled = !left.length || full;
  $("chosen-adapters").replaceChildren(...adapters.chosen.map(row));
  $("chosen-adapters").hidden = !adapters.chosen.length;
  showAdapterHint();
}

function scaleInput(name, scale) {
  const input = document.createElement("input");
  Object.assign(input, { type: "number", min: String(adapters.scale.min), max: String(adapters.scale.max),
                         step: "0.05", value: String(scale ?? adapters.scale.default), inputMode: "decimal" });
  input.setAttribute("aria-label", `Scale of ${name}`);
  return input;
}

function row({ name, input }) {
  const item = document.createElement("li");
  item.className = "adapter";
  item.dataset.name = name;
  const title = text("span", name, "adapter-name");
  const info = find(name);
  if (info?.description) title.title = info.description;
  const scale = text("label", "scale", "adapter-scale");
  scale.append(input);
  const drop = text("button", "Remove", "ghost");
  drop.type = "button";
  drop.setAttribute("aria-label", `Remove adapter ${name}`);
  drop.addEventListener("click", () => remove(name));
  item.append(title, scale, drop);
  return item;
}
