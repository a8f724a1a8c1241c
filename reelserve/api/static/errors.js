// The API's refusal of a request, shown where it belongs: next to the field its `param` names (with
// aria-invalid on that field), else under the form. The form never second-guesses the API.

import { adapterControl } from "./adapters.js";
import { $ } from "./dom.js";

// Errors naming one of these params are shown next to that field; the page never sends size/seconds,
// but a server may still name them, so they point at the closest control.
const FIELDS = [
  "prompt", "negative_prompt", "width", "height", "num_frames", "fps", "num_inference_steps",
  "guidance_scale", "guidance_scale_2", "seed", "priority", "preview_every", "input_reference", "input_fit",
  "loras",
];
const FIELD_ALIASES = { size: "width", seconds: "num_frames" };

// Every error about an adapter (loras, loras[1].name, loras.0.scale) belongs to the adapters field.
function fieldOf(param) {
  return /^loras\b/.test(param || "") ? "loras" : FIELD_ALIASES[param] || param;
}

export function clearErrors() {
  $("form-error").textContent = "";
  for (const field of FIELDS) $(`error-${field}`).textContent = "";
  for (const invalid of $("generate-form").querySelectorAll("[aria-invalid]")) invalid.removeAttribute("aria-invalid");
}

export function showError(error) {
  const field = fieldOf(error.param);
  if (FIELDS.includes(field)) {
    $(`error-${field}`).textContent = error.message;
    const control = field === "loras" ? adapterControl(error.param) : $(field);
    control.setAttribute("aria-invalid", "true");
    control.focus();
  } else {
    const retry = error.retryAfter ? ` Try again in ${error.retryAfter} s.` : "";
    $("form-error").textContent = error.message + retry;
  }
}
