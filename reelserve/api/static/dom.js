// Small helpers every part of the playground shares.
// API data only ever reaches the DOM through textContent (never innerHTML): text() is the way in.

const STATUS_TEXT = {
  queued: "Queued", in_progress: "Generating", completed: "Completed", failed: "Failed", cancelled: "Cancelled",
};

export const $ = (id) => document.getElementById(id);

export function text(tag, content, className) {
  const element = document.createElement(tag);
  element.textContent = content;
  if (className) element.className = className;
  return element;
}

// A status the page has no wording for (a newer server's) is still shown, as the API spells it.
export function statusLabel(status) {
  return STATUS_TEXT[status] || status;
}

// Every event handler runs through this, so a failed request shows up on the page instead of as an
// unhandled rejection.
export function guard(fn, where = $("form-error")) {
  return async (...args) => {
    try {
      await fn(...args);
    } catch (error) {
      report(error, where);
    }
  };
}

export function report(error, where) {
  if (error.name === "AbortError" || error.status === 401) return; // the key form is already up
  where.textContent = error.message;
  where.hidden = false;
}

// Puts a snippet's text on the clipboard, and says so in `note`. Clipboard access needs a secure
// context and permission: without it the text is left selected, to copy by hand.
export async function copyText(element, note) {
  try {
    if (!navigator.clipboard) throw new Error("no clipboard");
    await navigator.clipboard.writeText(element.textContent);
    note.textContent = "Copied to the clipboard.";
  } catch {
    const range = document.createRange();
    range.selectNodeContents(element);
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    note.textContent = "Could not reach the clipboard: the snippet is selected, copy it by hand.";
  }
}
