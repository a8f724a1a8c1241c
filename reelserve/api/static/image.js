// Image to video: the first frame a video may start from, chosen or dropped, shown as a thumbnail
// and read as a data URL for the JSON body (input_reference). An image of another size than the
// video is never resized here, nor silently: the user picks how the server fits it (input_fit).

import { $ } from "./dom.js";

// A file name a snippet can use as it is, in a shell and in Python; any other is called first.png.
const PLAIN_NAME = /^\w[\w.-]*$/;

const image = { dataUrl: null, width: 0, height: 0, name: "", seq: 0 };
// Run whenever the image changes (or whether it needs fitting): the snippets follow it.
let changed = () => {};

export function wireImage(onChange) {
  changed = onChange;
  $("input_reference").addEventListener("change", () => choose($("input_reference").files[0]));
  $("remove-image").addEventListener("click", () => {
    removeImage();
    $("input_reference").focus();
  });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    choose(event.dataTransfer.files[0]);
  });
}

// Offered only when the model takes a first frame (its inputs.image: "optional" or "required").
export function offerImage(inputs) {
  const takes = inputs?.image;
  $("image-field").hidden = !takes;
  $("image-label").textContent = takes === "required" ? "Start from an image (required)" : "Start from an image";
  if (!takes && image.dataUrl) removeImage();
}

export function removeImage() {
  image.seq++;
  Object.assign(image, { dataUrl: null, width: 0, height: 0, name: "" });
  $("input_reference").value = "";
  $("first-frame").hidden = true;
  $("first-frame-image").removeAttribute("src");
  showFit();
  changed();
}

async function choose(file) {
  if (!file) return;
  const seq = ++image.seq;
  $("error-input_reference").textContent = "";
  let dataUrl, size;
  try {
    dataUrl = await readDataUrl(file);
    size = await naturalSize(dataUrl);
  } catch {
    if (seq !== image.seq) return;
    removeImage();
    $("error-input_reference").textContent =
      `${file.name || "That file"} is not an image this browser can read: choose a PNG, JPEG or WebP.`;
    return;
  }
  if (seq !== image.seq) return; // another image was chosen meanwhile
  Object.assign(image, { dataUrl, ...size, name: PLAIN_NAME.test(file.name) ? file.name : "first.png" });
  $("first-frame-image").src = dataUrl;
  $("first-frame").hidden = false;
  showFit();
  changed();
}

function readDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// The size the browser draws the image at (EXIF orientation applied, as the server applies it).
async function naturalSize(url) {
  const probe = new Image();
  probe.src = url;
  await probe.decode();
  return { width: probe.naturalWidth, height: probe.naturalHeight };
}

// Whether the image's size differs from the video's (as the form has it now).
function needsFit() {
  return Boolean(image.dataUrl)
    && (image.width !== Number($("width").value) || image.height !== Number($("height").value));
}

// The fit choice is there exactly when the sizes differ; run when the image or the video's size changes.
export function showFit() {
  const fit = needsFit();
  $("fit-field").hidden = !fit;
  $("fit-hint").textContent = fit
    ? `The image is ${image.width}x${image.height} and the video ${$("width").value}x${$("height").value}.`
    : "";
  $("first-frame-caption").textContent = image.dataUrl ? `First frame · ${image.width}x${image.height}` : "";
}

// What the request body gets from the image: nothing without one; input_fit only when the sizes differ.
export function imageFields() {
  if (!image.dataUrl) return {};
  return needsFit() ? { input_reference: image.dataUrl, input_fit: $("input_fit").value } : { input_reference: image.dataUrl };
}

// The image's file name, for the snippets (null without an image).
export function imageName() {
  return image.dataUrl ? image.name : null;
}
