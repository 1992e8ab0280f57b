// Drives tus-js-client (web/node_modules, pinned by web/package-lock.json) from Node for
// tests/e2e/test_tus_clients.py. One JSON line on stdout describes what happened.
//   node tus_client.cjs upload  ENDPOINT KEY FILE NAME CHUNK [ABORT_AT_BYTES]
//   node tus_client.cjs resume  UPLOAD_URL KEY FILE CHUNK
//   node tus_client.cjs badsum  ENDPOINT KEY FILE NAME CHUNK      (a wrong Upload-Checksum)
//   node tus_client.cjs override ENDPOINT KEY FILE NAME CHUNK     (PATCH sent as POST with
//                                                                  X-HTTP-Method-Override)
//   node tus_client.cjs head    UPLOAD_URL KEY FILE               (resume only: no creation)
//   node tus_client.cjs terminate UPLOAD_URL KEY
"use strict";
const fs = require("fs");
const path = require("path");
const tus = require(path.join(__dirname, "..", "..", "web", "node_modules", "tus-js-client"));

const [mode, target, key, file, nameOrChunk, chunkArg, abortArg] = process.argv.slice(2);
const out = (value) => process.stdout.write(JSON.stringify(value) + "\n");
const statusOf = (error) =>
  error && error.originalResponse ? error.originalResponse.getStatus() : null;

function options(extra) {
  return {
    headers: { Authorization: `Bearer ${key}` },
    retryDelays: null,
    storeFingerprintForResuming: false,
    ...extra,
  };
}

if (mode === "terminate") {
  tus.Upload.terminate(target, options({}))
    .then(() => out({ ok: true }))
    .catch((error) => out({ ok: false, status: statusOf(error), error: String(error) }));
} else {
  const data = fs.readFileSync(file);
  const resuming = mode === "resume" || mode === "head";
  const chunkSize = Number(resuming ? nameOrChunk : chunkArg) || Infinity;
  const abortAt = Number(abortArg || 0);
  let firstProgress = null;
  let fileId = null;
  const methods = new Set(); // the methods the client really sent
  const upload = new tus.Upload(
    data,
    options({
      endpoint: resuming ? undefined : target,
      uploadUrl: resuming ? target : undefined,
      chunkSize,
      metadata: resuming ? {} : { filename: nameOrChunk, filetype: "image/jpeg", kind: "e2e" },
      overridePatchMethod: mode === "override",
      onBeforeRequest(req) {
        methods.add(req.getMethod());
        if (mode === "badsum" && req.getMethod() === "PATCH") {
          req.setHeader("Upload-Checksum", "sha256 " + Buffer.alloc(32).toString("base64"));
        }
      },
      onAfterResponse(req, res) {
        fileId = res.getHeader("Sluice-File-Id") || fileId;
      },
      onProgress(sent) {
        if (firstProgress === null) firstProgress = sent;
        if (abortAt && sent >= abortAt) {
          upload.abort().then(() => out({ aborted: true, url: upload.url, sent }));
        }
      },
      onSuccess() {
        out({ ok: true, url: upload.url, fileId, firstProgress, methods: [...methods].sort() });
      },
      onError(error) {
        out({ ok: false, url: upload.url, status: statusOf(error), error: String(error) });
      },
    }),
  );
  upload.start();
}
