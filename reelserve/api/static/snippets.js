// The current request as code to paste elsewhere. Pure functions of the request's JSON text, the
// server's origin and the key (null when the server needs none), so they can be read without a page.

import { parseJson } from "./api.js";

const shellQuote = (s) => `'${s.replaceAll("'", `'\\''`)}'`;

export function curlSnippet(json, origin, key) {
  const lines = [`curl -sS ${shellQuote(`${origin}/v1/videos`)}`];
  if (key) lines.push(`-H ${shellQuote(`Authorization: Bearer ${key}`)}`);
  lines.push(`-H 'Content-Type: application/json'`, `-d ${shellQuote(json)}`);
  return lines.join(" \\\n  ");
}

// JSON string literals are valid Python string literals, and the only other values here are numbers
// (the seed stays raw digits).
export function pythonSnippet(json, origin, key) {
  const body = parseJson(json);
  const { model, prompt, width, height } = body;
  const extra = Object.entries(body).filter(([k]) => !["model", "prompt", "width", "height"].includes(k));
  const py = (k, v) => (k === "seed" ? String(v) : JSON.stringify(v));
  const lines = [
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url=${JSON.stringify(`${origin}/v1`)}, api_key=${JSON.stringify(key || "unused")})`,
    "video = client.videos.create(",
    `    model=${JSON.stringify(model)},`,
    `    prompt=${JSON.stringify(prompt)},`,
  ];
  if (width !== undefined && height !== undefined) lines.push(`    size="${width}x${height}",`);
  // videos.create types only model/prompt/size/seconds; reelserve's own fields travel in extra_body.
  if (extra.length) {
    lines.push("    extra_body={");
    for (const [k, v] of extra) lines.push(`        ${JSON.stringify(k)}: ${py(k, v)},`);
    lines.push("    },");
  }
  lines.push(")", "print(video.id, video.status)");
  return lines.join("\n");
}
