// The current request as code to paste elsewhere. Pure functions of the request's JSON text, the
// server's origin and the key (null when the server needs none), so they can be read without a page.
// A first frame is never pasted into a snippet as a data URL: the snippet reads it from a file
// (`image`, a plain file name: letters, digits, ".", "_" and "-"), the way the openai SDK uploads it
// (multipart/form-data). A form field holds text: a list or object (`loras`) goes in as its JSON text.

import { parseJson } from "./api.js";

const shellQuote = (s) => `'${s.replaceAll("'", `'\\''`)}'`;
const formText = (v) => (v !== null && typeof v === "object" ? JSON.stringify(v) : String(v));

function curlHead(url, key) {
  const lines = [`curl -sS ${shellQuote(url)}`];
  if (key) lines.push(`-H ${shellQuote(`Authorization: Bearer ${key}`)}`);
  return lines;
}

// JSON, or with an image a multipart form: the file as -F, every other field as --form-string (taken
// literally: -F would read a value starting with @ or < as a file).
export function curlSnippet(json, origin, key, image = null) {
  const lines = curlHead(`${origin}/v1/videos`, key);
  if (image) {
    lines.push(`-F input_reference=@${image}`);
    for (const [k, v] of Object.entries(parseJson(json))) lines.push(`--form-string ${shellQuote(`${k}=${formText(v)}`)}`);
  } else {
    lines.push(`-H 'Content-Type: application/json'`, `-d ${shellQuote(json)}`);
  }
  return lines.join(" \\\n  ");
}

export function remixCurlSnippet(id, json, origin, key) {
  const lines = curlHead(`${origin}/v1/videos/${id}/remix`, key);
  lines.push(`-H 'Content-Type: application/json'`, `-d ${shellQuote(json)}`);
  return lines.join(" \\\n  ");
}

// JSON string literals are valid Python string literals, and the only other values here are numbers
// (the seed stays raw digits); a list or object is written by extraLine.
const py = (k, v) => (k === "seed" ? String(v) : JSON.stringify(v));

// The SDK's videos.create sends a multipart form (with a file or without), where it would spell a list
// as bracketed keys (loras[][name]=...): there a list or object goes as its JSON text, which the server
// parses. Its remix sends JSON.
function extraLine(k, v, form) {
  if (!form || v === null || typeof v !== "object") return `${JSON.stringify(k)}: ${py(k, v)},`;
  const text = JSON.stringify(v).replaceAll("\\", "\\\\").replaceAll("'", "\\'");
  return `${JSON.stringify(k)}: '${text}',  # JSON text: a form field`;
}

// One openai SDK call: `args` are its own lines, `extra` the fields it does not type, which travel
// in extra_body (`form`: in a multipart form).
function pythonCall(origin, key, call, args, extra, form = false) {
  const lines = [
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url=${JSON.stringify(`${origin}/v1`)}, api_key=${JSON.stringify(key || "unused")})`,
    `video = ${call}(`,
    ...args.map((arg) => `    ${arg},`),
  ];
  if (extra.length) {
    lines.push("    extra_body={");
    for (const [k, v] of extra) lines.push(`        ${extraLine(k, v, form)}`);
    lines.push("    },");
  }
  lines.push(")", "print(video.id, video.status)");
  return lines.join("\n");
}

export function pythonSnippet(json, origin, key, image = null) {
  const body = parseJson(json);
  const { model, prompt, width, height } = body;
  // videos.create types only model/prompt/size/seconds/input_reference; reelserve's own fields go in extra_body.
  const extra = Object.entries(body).filter(([k]) => !["model", "prompt", "width", "height"].includes(k));
  const args = [`model=${JSON.stringify(model)}`, `prompt=${JSON.stringify(prompt)}`];
  if (width !== undefined && height !== undefined) args.push(`size="${width}x${height}"`);
  if (image) args.push(`input_reference=open(${JSON.stringify(image)}, "rb")`);
  return pythonCall(origin, key, "client.videos.create", args, extra, true);
}

export function remixPythonSnippet(id, json, origin, key) {
  const body = parseJson(json);
  const extra = Object.entries(body).filter(([k]) => k !== "prompt");
  return pythonCall(origin, key, "client.videos.remix", [JSON.stringify(id), `prompt=${JSON.stringify(body.prompt)}`], extra);
}
