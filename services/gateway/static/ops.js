// The /ops page: reads /ops/api with the ops key kept in sessionStorage. Data is only ever
// written with textContent, never parsed as HTML.
"use strict";

const KEY = "sluice.opsKey";
const STATUS_EVERY_MS = 5000;
const $ = (id) => document.getElementById(id);
let lastDeadLetterTotal = null;
let shownMessageId = null;
let keyScope = null; // "ops:read" or "ops:admin" once /ops/api/whoami answered

function key() {
  return sessionStorage.getItem(KEY);
}

function say(text) {
  $("notice").textContent = text;
}

function fail(text) {
  $("error").textContent = text;
}

async function api(path, options = {}) {
  if (!key()) {
    throw new Error("enter an ops key first");
  }
  const headers = { Authorization: `Bearer ${key()}`, Accept: "application/json" };
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
    cache: "no-store",
  });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const message = body && body.error ? `${body.error.code}: ${body.error.message}` : "";
    // A 403 asking for scope="ops:admin" refuses one action to a valid ops:read key: keep it.
    const challenge = response.headers.get("WWW-Authenticate") || "";
    const adminOnly = response.status === 403 && challenge.includes('scope="ops:admin"');
    if ((response.status === 401 || response.status === 403) && !adminOnly) {
      sessionStorage.removeItem(KEY);
      keyScope = null;
    }
    throw new Error(`HTTP ${response.status} ${message}`.trim());
  }
  return body;
}

function cell(row, value, numeric = false) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined ? "–" : String(value);
  if (numeric) {
    td.className = "num";
  }
  row.appendChild(td);
  return td;
}

function fixed(value, digits = 1) {
  return value === null || value === undefined ? null : Number(value).toFixed(digits);
}

function utc(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "") : null;
}

function breakerText(stage, collectedAt) {
  if (!stage.breaker) {
    return null;
  }
  if (stage.breaker === "closed" || !stage.breaker_dependency) {
    return stage.breaker;
  }
  let text = `${stage.breaker}: ${stage.breaker_dependency}`;
  if (stage.breaker_since) {
    const seconds = (Date.parse(collectedAt) - Date.parse(stage.breaker_since)) / 1000;
    if (Number.isFinite(seconds)) {
      text += ` ${Math.max(0, Math.round(seconds))} s`;
    }
  }
  return text;
}

function replaceRows(tbody, rows) {
  tbody.replaceChildren(...rows);
}

async function loadScope() {
  const who = await api("/ops/api/whoami");
  keyScope = who.scope;
  const replayButton = $("replay");
  replayButton.disabled = keyScope !== "ops:admin";
  replayButton.title = replayButton.disabled ? "Replay needs an ops:admin key." : "";
  if (replayButton.disabled) {
    say(`Read-only key (${keyScope}) of ${who.owner}: replay needs an ops:admin key.`);
  }
}

async function loadStatus() {
  const status = await api("/ops/api/status");
  const rows = status.stages.map((stage) => {
    const row = document.createElement("tr");
    const name = document.createElement("th");
    name.scope = "row";
    name.textContent = stage.stage;
    row.appendChild(name);
    cell(row, stage.queue);
    cell(row, stage.ready, true);
    cell(row, stage.in_flight, true);
    cell(row, stage.retrying, true);
    cell(row, stage.consumers, true);
    const dead = cell(row, stage.dead_letters, true);
    if (stage.dead_letters > 0) {
      dead.classList.add("alert");
    }
    cell(row, fixed(stage.rate_in_per_s, 2), true);
    cell(row, fixed(stage.rate_out_per_s, 2), true);
    cell(row, stage.handled, true);
    cell(row, fixed(stage.p50_ms), true);
    cell(row, fixed(stage.p95_ms), true);
    const breaker = cell(row, breakerText(stage, status.collected_at));
    if (stage.breaker && stage.breaker !== "closed") {
      breaker.classList.add("alert");
      breaker.title = stage.breaker_last_error || "";
    }
    return row;
  });
  replaceRows($("stages").tBodies[0], rows);
  const windowS = status.window_s || 60;
  $("stages-caption").textContent = `Updated ${utc(status.collected_at)} UTC; refreshes every ${
    STATUS_EVERY_MS / 1000
  } s. Rates over the last minute; handled and p50/p95 over the last ${windowS} s.`;
  const problems = (status.problems || []).map((text) => {
    const item = document.createElement("li");
    item.textContent = text;
    return item;
  });
  $("problems").replaceChildren(...problems);
  const total = status.stages.reduce((sum, stage) => sum + (stage.dead_letters || 0), 0);
  if (total !== lastDeadLetterTotal) {
    lastDeadLetterTotal = total;
    await loadDeadLetters();
  }
}

function filters() {
  const form = $("filters");
  const chosen = {};
  for (const name of ["stage", "error_type", "older_than", "file_id"]) {
    const value = form.elements[name].value.trim();
    if (value) {
      chosen[name] = value;
    }
  }
  return chosen;
}

async function loadDeadLetters() {
  const query = new URLSearchParams(filters());
  const listing = await api(`/ops/api/dead-letters?${query}`);
  const rows = listing.dead_letters.map((letter) => {
    const row = document.createElement("tr");
    row.dataset.messageId = letter.message_id || "";
    cell(row, letter.stage);
    cell(row, letter.file_id).className = "id";
    cell(row, letter.owner);
    cell(row, letter.event_type);
    cell(row, letter.error_type).className = "error-type";
    cell(row, letter.error_message);
    cell(row, letter.attempts, true);
    cell(row, utc(letter.last_failed_at));
    const actions = cell(row, "");
    if (letter.message_id) {
      const show = document.createElement("button");
      show.type = "button";
      show.textContent = "Show";
      show.setAttribute("aria-label", `Show dead letter ${letter.message_id}`);
      show.addEventListener("click", () => run(() => showDeadLetter(letter.message_id)));
      actions.appendChild(show);
    }
    return row;
  });
  replaceRows($("dead-letters").tBodies[0], rows);
  if (shownMessageId && !listing.dead_letters.some((l) => l.message_id === shownMessageId)) {
    $("detail").hidden = true; // replayed or purged meanwhile: no longer a dead letter
    shownMessageId = null;
  }
  const which = Object.keys(filters()).length ? "matching the filters" : "in every stage";
  $("dlq-caption").textContent = `${listing.count} dead letter(s) ${which}.`;
}

async function showDeadLetter(messageId) {
  const detail = await api(`/ops/api/dead-letters/${encodeURIComponent(messageId)}`);
  $("detail-title").textContent = `Dead letter ${messageId}`;
  $("detail-body").textContent = JSON.stringify(detail, null, 2);
  $("detail").hidden = false;
  shownMessageId = messageId;
}

function replayBody(dryRun) {
  const limit = Number($("f-limit").value || 100);
  return { ...filters(), limit, dry_run: dryRun };
}

function showResult(title, letters) {
  $("result-title").textContent = title;
  const items = letters.map((letter) => {
    const item = document.createElement("li");
    item.textContent = [
      letter.stage,
      `file ${letter.file_id || "–"}`,
      letter.error_type || "no error type",
      `message ${letter.message_id || "–"}`,
    ].join(" · ");
    return item;
  });
  $("result-list").replaceChildren(...items);
  $("result").hidden = false;
}

async function dryRun() {
  const result = await api("/ops/api/dead-letters/replay", {
    method: "POST",
    body: replayBody(true),
  });
  const letters = result.letters || [];
  showResult(`Dry run: ${letters.length} dead letter(s) would be replayed; nothing moved.`, letters);
}

async function replay() {
  const body = replayBody(false);
  const which = Object.keys(filters()).length ? "matching the filters" : "in every stage";
  if (!window.confirm(`Replay up to ${body.limit} dead letter(s) ${which}?`)) {
    return;
  }
  const result = await api("/ops/api/dead-letters/replay", { method: "POST", body });
  showResult(`Replayed ${result.replayed} dead letter(s) to their stage queues.`, result.letters || []);
  lastDeadLetterTotal = null;
  await loadStatus();
}

async function run(action) {
  fail("");
  try {
    await action();
  } catch (error) {
    fail(error.message);
  }
}

async function tick() {
  if (key()) {
    await run(async () => {
      if (keyScope === null) {
        await loadScope();
      }
      await loadStatus();
    });
  }
}

function start() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("ops-key").value.trim();
    $("ops-key").value = "";
    if (value) {
      sessionStorage.setItem(KEY, value);
      say("Key set for this tab.");
      lastDeadLetterTotal = null;
      keyScope = null;
      $("result").hidden = true; // the last key's dry run or replay
      tick();
    }
  });
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    keyScope = null;
    say("Key forgotten.");
  });
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    run(loadDeadLetters);
  });
  $("dry-run").addEventListener("click", () => run(dryRun));
  $("replay").addEventListener("click", () => run(replay));
  say(key() ? "Using the key set in this tab." : "Enter an ops key to start.");
  tick();
  setInterval(tick, STATUS_EVERY_MS);
}

document.addEventListener("DOMContentLoaded", start);
