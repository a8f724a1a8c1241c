// A tiny Server-Sent Events parser over fetch's body (EventSource cannot send the auth header).
export async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let type = "message";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    // Not splitting on a lone \r: a \r\n torn between two chunks must not read as an empty line.
    const lines = buffer.split(/\r?\n/);
    buffer = lines.pop(); // the last piece may be half a line
    for (const line of lines) {
      if (line === "") {
        if (data.length) yield { type, data: data.join("\n") };
        type = "message";
        data = [];
      } else if (line.startsWith(":")) {
        // a keep-alive ping
      } else {
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (name === "event") type = value;
        else if (name === "data") data.push(value);
      }
    }
  }
}
