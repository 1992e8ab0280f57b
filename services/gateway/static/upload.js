// The /upload page: uploads over tus 1.0 with the vendored tus-js-client (window.tus), then
// follows each file through GET /v1/files/{id}/events (Server-Sent Events read with fetch and
// sse.js's readEvents, since EventSource cannot send an Authorization header) and shows its
// status and thumbnail.
// The API key lives in sessionStorage only. Data is only ever written with textContent.
"use strict";

const KEY = "sluice.apiKey";
const CHUNK_BYTES = 5 * 1024 * 1024; // docs/uploads.md: 5 MiB chunks (seed 002)
const RETRY_DELAYS_MS = [0, 1000, 3000, 5000, 10000, 20000];
const STAGES = ["received", "scanned", "stored", "thumbnailed", "committed"];
const MAX_UPLOADS_AT_ONCE = 2;
// HTTP/1.1 browsers open about 6 connections per origin; an open event stream holds one.
const MAX_STREAMS_AT_ONCE = 3;
const STREAM_RETRIES = 20;
const HISTORY_LOOKS = 4; // reads of an available file's history while a stage is missing
const $ = (id) => document.getElementById(id);

function key() {
  return sessionStorage.getItem(KEY);
}

function say(text) {
  $("notice").textContent = text;
}

function fail(text) {
  $("error").textContent = text;
}

function size(bytes) {
  if (bytes < 1024 * 1024) {
    return `${(bytes / 1024).toFixed(1)} KiB`;
  }
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// "HTTP 415 unsupported_type: <the gateway's message>" from a status and a body's text.
function httpText(status, bodyText) {
  let detail = "";
  try {
    const body = JSON.parse(bodyText);
    if (body && body.error) {
      detail = `${body.error.code}: ${body.error.message}`;
    }
  } catch (_) {
    detail = (bodyText || "").slice(0, 200);
  }
  return `HTTP ${status} ${detail}`.trim();
}

// A refused key: forget it, so the next action asks for another.
function keyRefused(status) {
  if (status === 401 || status === 403) {
    sessionStorage.removeItem(KEY);
    return true;
  }
  return false;
}

// At most `limit` tasks at once; the others wait their turn in order.
function limiter(limit) {
  let running = 0;
  const waiting = [];
  return async (task) => {
    if (running >= limit) {
      await new Promise((resolve) => waiting.push(resolve));
    }
    running += 1;
    try {
      return await task();
    } finally {
      running -= 1;
      const next = waiting.shift();
      if (next) {
        next();
      }
    }
  };
}
const uploadTurn = limiter(MAX_UPLOADS_AT_ONCE);
const streamTurn = limiter(MAX_STREAMS_AT_ONCE);

// ---- the key ---------------------------------------------------------------------------------

async function useKey(candidate) {
  fail("");
  say("");
  const response = await fetch("/v1/files?limit=1", {
    headers: { Authorization: `Bearer ${candidate}`, Accept: "application/json" },
    cache: "no-store",
  });
  if (!response.ok) {
    sessionStorage.removeItem(KEY);
    fail(`Key refused: ${httpText(response.status, await response.text())}`);
    return;
  }
  sessionStorage.setItem(KEY, candidate);
  say("Key accepted; kept in this tab only. Choose files to upload.");
}

// ---- one file's row --------------------------------------------------------------------------

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function newItem(file, versionOf) {
  const node = $("upload-item").content.firstElementChild.cloneNode(true);
  node.dataset.name = file.name;
  node.dataset.state = "uploading";
  node.querySelector(".name").textContent = file.name;
  const bar = node.querySelector(".bytes");
  bar.max = Math.max(file.size, 1);
  bar.setAttribute("aria-label", `bytes of ${file.name} sent`);
  $("uploads").appendChild(node);
  $("empty").hidden = true;
  // versionOf: the file this upload becomes the next version of (tus metadata file_id), or
  // null for a new file; version: its number, once the gateway names it.
  return { file, node, fileId: null, versionOf, version: null, committed: false };
}

function part(item, selector) {
  return item.node.querySelector(selector);
}

function setStatus(item, state, text) {
  item.node.dataset.state = state;
  const status = part(item, ".status");
  status.textContent = text;
  status.className = `status ${state}`;
}

function note(item, text) {
  const li = document.createElement("li");
  li.textContent = text;
  part(item, ".notes").appendChild(li);
}

function clock(iso) {
  const when = new Date(iso);
  return Number.isNaN(when.getTime()) ? "" : when.toLocaleTimeString();
}

// ---- tus upload ------------------------------------------------------------------------------

function shouldRetry(err) {
  const response = err.originalResponse;
  if (!response) {
    return navigator.onLine !== false; // network error: retry while the browser is online
  }
  const status = response.getStatus();
  // Server trouble, a busy upload or slot, a stale offset: worth another try. A refused key or
  // a refused file is not.
  return status >= 500 || [408, 409, 423, 429].includes(status);
}

function upload(item) {
  return new Promise((resolve) => {
    const file = item.file;
    const metadata = { filename: file.name };
    if (file.type) {
      metadata.filetype = file.type;
    }
    if (item.versionOf) {
      metadata.file_id = item.versionOf;
    }
    const bar = part(item, ".bytes");
    const text = part(item, ".bytes-text");
    const tusUpload = new tus.Upload(file, {
      endpoint: `${window.location.origin}/v1/uploads/`,
      chunkSize: CHUNK_BYTES,
      retryDelays: RETRY_DELAYS_MS,
      metadata,
      headers: { Authorization: `Bearer ${key()}` },
      removeFingerprintOnSuccess: true,
      // The same file chosen as a new file and as a new version are two uploads: neither may
      // resume the other's.
      fingerprint: async (f, options) => {
        const base = await tus.defaultOptions.fingerprint(f, options);
        return item.versionOf ? `${base}-version-of-${item.versionOf}` : base;
      },
      onShouldRetry: (err) => shouldRetry(err),
      onAfterResponse: (_request, response) => {
        // The PATCH that completes the upload (or a HEAD after it) names the file.
        const fileId = response.getHeader("Sluice-File-Id");
        if (fileId) {
          item.fileId = fileId;
        }
        const version = Number(response.getHeader("Sluice-Version-Number"));
        if (version > 0) {
          item.version = version;
        }
      },
      onProgress: (sent, total) => {
        bar.value = sent;
        const percent = Math.floor((100 * sent) / total);
        text.textContent = `${size(sent)} of ${size(total)} sent (${percent} %)`;
      },
      onError: (err) => {
        const response = err.originalResponse;
        let message = `upload failed: ${err.message}`;
        if (response) {
          message = `upload refused: ${httpText(response.getStatus(), response.getBody())}`;
          if (keyRefused(response.getStatus())) {
            fail(`${message}. Enter a valid key.`);
          }
        }
        setStatus(item, "error", message);
        resolve(false);
      },
      onSuccess: () => {
        bar.value = bar.max;
        text.textContent = `${size(file.size)} sent`;
        if (!item.fileId) {
          setStatus(item, "error", "uploaded, but the gateway named no file (Sluice-File-Id)");
          resolve(false);
          return;
        }
        if (item.versionOf && !item.version) {
          setStatus(item, "error", "uploaded, but the gateway named no version number");
          resolve(false);
          return;
        }
        part(item, ".file-id").textContent = item.versionOf
          ? `file id ${item.fileId}, version ${item.version}`
          : `file id ${item.fileId}`;
        item.node.dataset.fileId = item.fileId;
        item.node.dataset.version = item.version || "";
        setStatus(item, "following", "uploaded; waiting for the pipeline");
        resolve(true);
      },
    });
    // A file uploaded in part before (another try, or before a page reload) resumes.
    tusUpload
      .findPreviousUploads()
      .then((previous) => {
        if (previous.length > 0) {
          tusUpload.resumeFromPreviousUpload(previous[0]);
          note(item, "resuming an earlier upload of this file");
        }
        tusUpload.start();
      })
      .catch((err) => {
        setStatus(item, "error", `upload failed: ${err.message}`);
        resolve(false);
      });
  });
}

// ---- following a file (readEvents: sse.js) ---------------------------------------------

function onStageEvent(item, message) {
  let body;
  try {
    body = JSON.parse(message.data);
  } catch (_) {
    return;
  }
  const stage = (body.type || message.event).replace(/^file\./, "");
  const li = part(item, `.stages li[data-stage="${stage}"]`);
  if (li) {
    li.classList.add("done");
    li.textContent = `${stage} ✓ ${clock(body.recorded_at)}`;
  } else if (stage !== "rejected") {
    note(item, body.detail ? `${stage}: ${body.detail}` : stage);
  }
  if (stage === "rejected") {
    setStatus(item, "rejected", `rejected: ${body.detail || "no reason given"}`);
  } else if (stage === "committed") {
    item.committed = true;
  } else if (item.node.dataset.state === "following") {
    setStatus(item, "following", `${stage}; waiting for the next stage`);
  }
}

// Follows the file's events until file.committed, reconnecting with Last-Event-ID after a cut
// (the gateway then sends only the events after it: none twice, none missed).
async function follow(item) {
  const version = item.versionOf ? `?version=${item.version}` : ""; // only this version's
  const url = `/v1/files/${encodeURIComponent(item.fileId)}/events${version}`;
  let lastId = null;
  let failures = 0; // tries in a row that brought no event
  for (;;) {
    if (failures > STREAM_RETRIES) {
      setStatus(item, "error", `lost the file's event stream; see GET /v1/files/${item.fileId}`);
      return false;
    }
    if (failures > 0) {
      await sleep(Math.min(1000 * failures, 10000));
    }
    const headers = { Authorization: `Bearer ${key()}`, Accept: "text/event-stream" };
    if (lastId !== null) {
      headers["Last-Event-ID"] = lastId;
    }
    let response;
    try {
      response = await fetch(url, { headers, cache: "no-store" });
    } catch (_) {
      failures += 1; // the network: try again
      continue;
    }
    if (!response.ok) {
      const message = httpText(response.status, await response.text());
      if (keyRefused(response.status)) {
        setStatus(item, "error", `following refused: ${message}`);
        fail(`${message}. Enter a valid key.`);
        return false;
      }
      if (![404, 429, 503].includes(response.status)) {
        setStatus(item, "error", `following failed: ${message}`);
        return false;
      }
      failures += 1; // not recorded yet, or too many streams: try again
      continue;
    }
    let received = 0;
    try {
      await readEvents(response.body, (message) => {
        received += 1;
        if (message.id !== null) {
          lastId = message.id;
        }
        onStageEvent(item, message);
      });
    } catch (_) {
      // cut mid-stream: reconnect from lastId
    }
    if (item.committed) {
      return true;
    }
    failures = received > 0 ? 1 : failures + 1;
  }
}

// ---- the outcome -----------------------------------------------------------------------------

// A stage the stream did not show: the commit stage records file.committed with the final
// event, and an earlier stage's event that reached it late (a retry) is recorded after it,
// when the stream has ended. The file's history has it; an available file has every stage.
function markFromHistory(item, history) {
  for (const event of history || []) {
    const stage = String(event.type).replace(/^file\./, "");
    const li = part(item, `.stages li[data-stage="${stage}"]`);
    if (li && !li.classList.contains("done")) {
      li.classList.add("done");
      li.textContent = `${stage} ✓ ${clock(event.recorded_at)}`;
    }
  }
  return STAGES.every((stage) => part(item, `.stages li[data-stage="${stage}"]`).matches(".done"));
}

async function showOutcome(item) {
  let info = null;
  for (let look = 0; look < HISTORY_LOOKS; look += 1) {
    if (look > 0) {
      await sleep(1000);
    }
    const file = `/v1/files/${encodeURIComponent(item.fileId)}`;
    const url = item.versionOf ? `${file}/versions/${item.version}` : file;
    const response = await fetch(url, {
      headers: { Authorization: `Bearer ${key()}`, Accept: "application/json" },
      cache: "no-store",
    });
    const text = await response.text();
    if (!response.ok) {
      setStatus(item, "error", `status unavailable: ${httpText(response.status, text)}`);
      return;
    }
    info = JSON.parse(text);
    if (markFromHistory(item, info.history) || info.status !== "available") {
      break;
    }
  }
  // A file says why in status_reason; a version (GET …/versions/{n}) in rejection_reason.
  const why = info.status_reason || info.rejection_reason;
  const reason = why ? `: ${why}` : "";
  setStatus(item, info.status, `${info.status}${reason}`);
  const thumbs = (info.thumbnails || []).filter((t) => t.url);
  if (thumbs.length === 0) {
    if (info.thumbnail_error) {
      note(item, `no thumbnail: ${info.thumbnail_error}`);
    }
    return;
  }
  thumbs.sort((a, b) => a.size_px - b.size_px);
  const thumb = thumbs[0];
  const figure = part(item, ".thumb");
  const img = figure.querySelector("img");
  img.alt = `Thumbnail of ${item.file.name}`;
  img.width = thumb.width;
  img.height = thumb.height;
  img.addEventListener("error", () => note(item, "the thumbnail could not be loaded"));
  img.src = thumb.url;
  figure.querySelector("figcaption").textContent = `${thumb.width}×${thumb.height} thumbnail`;
  figure.hidden = false;
}

async function handle(file, versionOf) {
  const item = newItem(file, versionOf);
  const uploaded = await uploadTurn(() => upload(item));
  showUnfinished().catch(() => {});
  if (!uploaded) {
    return;
  }
  const followed = await streamTurn(() => follow(item));
  if (followed) {
    await showOutcome(item);
  }
}

function start(files) {
  fail("");
  if (!key()) {
    fail("Enter an API key first: nothing was uploaded.");
    return;
  }
  const versionOf = $("version-of").value.trim().toLowerCase() || null;
  if (versionOf && !UUID.test(versionOf)) {
    fail(`"${versionOf}" is not a file id (a UUID): nothing was uploaded.`);
    return;
  }
  for (const file of files) {
    handle(file, versionOf).catch((err) => fail(`${file.name}: ${err.message}`));
  }
}

// Names the uploads this browser left unfinished (tus-js-client keeps their URLs in
// localStorage), so the user knows which files to choose again to resume them.
async function showUnfinished() {
  const storage = tus.defaultOptions.urlStorage;
  if (!storage || !storage.findAllUploads) {
    return;
  }
  const unfinished = await storage.findAllUploads();
  const names = unfinished
    .map((entry) => (entry.metadata && entry.metadata.filename) || "")
    .filter((name) => name);
  $("unfinished").textContent = names.length
    ? `Unfinished uploads in this browser: ${names.join(", ")}. ` +
      "Choose the same file again to resume it."
    : "";
}

// ---- wiring ----------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  if (typeof tus === "undefined" || !tus.isSupported) {
    fail("This browser cannot run the tus client: uploads are not possible here.");
    return;
  }
  if (key()) {
    say("Using the key kept in this tab.");
  }
  showUnfinished().catch(() => {}); // a hint only
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("api-key");
    const candidate = input.value.trim();
    input.value = "";
    if (candidate) {
      useKey(candidate).catch((err) => fail(`Key check failed: ${err.message}`));
    }
  });
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    fail("");
    say("Key forgotten.");
  });
  const input = $("files");
  input.addEventListener("change", () => {
    start(Array.from(input.files));
    input.value = ""; // choosing the same file again starts (or resumes) it again
  });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    start(Array.from(event.dataTransfer.files));
  });
});
