// Server-Sent Events read from a fetch() body, for the /upload page (upload.js): a browser's
// EventSource cannot send an Authorization header. A plain script: defines readEvents.
"use strict";

// Calls onMessage({id, event, data}) for each message of an SSE body (WHATWG HTML, "Server-sent
// events": lines end with CRLF, LF or CR; a blank line dispatches; ":" starts a comment).
async function readEvents(body, onMessage) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let data = [];
  let event = "";
  let id = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      return;
    }
    buffer += value;
    const lines = buffer.split(/\r\n|\n|\r(?!$)/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === "") {
        if (data.length > 0) {
          onMessage({ id, event: event || "message", data: data.join("\n") });
        }
        data = [];
        event = "";
        continue;
      }
      if (line.startsWith(":")) {
        continue; // a keep-alive comment
      }
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let text = colon < 0 ? "" : line.slice(colon + 1);
      if (text.startsWith(" ")) {
        text = text.slice(1);
      }
      if (field === "data") {
        data.push(text);
      } else if (field === "event") {
        event = text;
      } else if (field === "id" && !text.includes("\0")) {
        id = text;
      }
    }
  }
}
