// The Upload tab: choose a bundle (and its signature), catch what the server would refuse
// anyway before any byte moves, show the upload's progress, its result or its error (with
// Retry where a second attempt can help), and install what was just published.

import { api, ApiError, enc } from "./api.js";
import { catalog, refresh, reload } from "./catalog.js";
import { changeVersion, installVersion } from "./changes.js";
import { config } from "./config.js";
import { elements, formatBytes, isPlainObject, parseJson } from "./dom.js";
import { asApiError, clearBox, showError } from "./errors.js";
import { toast } from "./toast.js";
import { CancelledError, UploadJob } from "./upload-job.js";
import { signatureBadge } from "./widgets.js";

const MAX_SIGNATURE_BYTES = 16 * 1024;

// Failures a second attempt can fix; content problems need a different file instead.
const RETRYABLE = new Set([
  "NETWORK_ERROR",
  "RATE_LIMITED",
  "STORAGE_ERROR",
  "INTERNAL",
  "UPLOAD_EXPIRED",
  "UPLOAD_NOT_FOUND",
  "UPLOAD_CONFLICT",
  "HASH_MISMATCH",
]);

const ui = elements({
  form: "upload-form",
  bundle: "bundle-file",
  signature: "sig-file",
  chosen: "bundle-chosen",
  maxSize: "max-size",
  multipartSize: "multipart-size",
  start: "upload-start",
  cancel: "upload-cancel",
  progress: "upload-progress",
  stage: "upload-stage",
  bar: "upload-bar",
  percent: "upload-percent",
  bytes: "upload-bytes",
  error: "upload-error",
  result: "upload-result",
  resultTitle: "result-title",
  resultExtension: "result-extension",
  resultVersion: "result-version",
  resultSignature: "result-signature",
  resultSize: "result-size",
  resultHash: "result-hash",
  resultInstall: "result-install",
  resultShow: "result-show",
});

// Changes started here show their errors here; this tab has no card list to refocus.
const surface = { box: ui.error, list: null, fallback: null };

let job = null; // the running UploadJob
let lastResult = null;

// `showExtensions()` runs when the person asks to see the published version in its list.
export function initUpload(showExtensions) {
  ui.bundle.addEventListener("change", onBundleChosen);
  ui.signature.addEventListener("change", clearOutcome);
  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    startUpload();
  });
  ui.cancel.addEventListener("click", () => {
    if (job) {
      ui.stage.textContent = "Cancelling…";
      job.cancel();
    }
  });
  ui.resultInstall.addEventListener("click", installUploaded);
  ui.resultShow.addEventListener("click", showExtensions);
}

// The platform's limits, once config.js has read them.
export function showLimits() {
  ui.maxSize.textContent = formatBytes(config.max_bundle_bytes);
  if (config.multipart_threshold_bytes > 0) {
    ui.multipartSize.textContent = `(over ${formatBytes(config.multipart_threshold_bytes)})`;
  }
}

// Stops a running upload (its session is aborted on the server); for signing out.
export function cancelUpload() {
  if (job) {
    job.cancel();
  }
}

function chosenBundle() {
  return ui.bundle.files[0] || null;
}

// A problem with the chosen files that the server would reject anyway, caught before any upload.
function localUploadProblem(file) {
  if (!file) {
    return new ApiError("NO_FILE", "Choose a bundle.tar.zst file to upload.");
  }
  if (file.size > config.max_bundle_bytes) {
    return new ApiError(
      "BUNDLE_TOO_LARGE",
      `${file.name} is ${formatBytes(file.size)}; the limit is ${formatBytes(config.max_bundle_bytes)}. ` +
        "Nothing was uploaded.",
    );
  }
  if (file.size === 0) {
    return new ApiError("BUNDLE_CORRUPT", `${file.name} is empty. Nothing was uploaded.`);
  }
  return null;
}

async function readSignature() {
  const file = ui.signature.files[0];
  if (!file) {
    return null;
  }
  const problem = (message) => new ApiError("SIGNATURE_INVALID", `${file.name} ${message}. Nothing was uploaded.`);
  if (file.size > MAX_SIGNATURE_BYTES) {
    throw problem("is too large to be a signature file");
  }
  const envelope = parseJson(await file.text());
  if (!isPlainObject(envelope)) {
    throw problem("is not a signature file (a JSON object made by extctl sign)");
  }
  return envelope;
}

function onBundleChosen() {
  clearOutcome();
  const file = chosenBundle();
  ui.chosen.textContent = file ? `${file.name}, ${formatBytes(file.size)}` : "";
  const problem = file ? localUploadProblem(file) : null;
  if (problem) {
    showError(ui.error, problem);
  }
}

function clearOutcome() {
  clearBox(ui.error);
  ui.result.hidden = true;
  ui.progress.hidden = true;
}

function setUploading(busy) {
  ui.form.setAttribute("aria-busy", String(busy));
  ui.bundle.disabled = busy;
  ui.signature.disabled = busy;
  ui.start.disabled = busy;
  ui.cancel.hidden = !busy;
  ui.cancel.disabled = false;
}

function showProgress(stage, done, total) {
  const percent = total > 0 ? Math.floor((done * 100) / total) : 0;
  ui.stage.textContent = stage;
  ui.bar.value = percent;
  ui.percent.textContent = `${percent} %`;
  ui.bytes.textContent = `${formatBytes(done)} of ${formatBytes(total)}`;
  if (job && job.finalizing) {
    ui.cancel.disabled = true;
  }
}

function refuse(error) {
  showError(ui.error, error);
  ui.error.focus();
}

async function startUpload() {
  if (job) {
    return;
  }
  clearOutcome();
  const file = chosenBundle();
  const problem = localUploadProblem(file);
  if (problem) {
    refuse(problem);
    return;
  }
  let signature;
  try {
    signature = await readSignature();
  } catch (error) {
    refuse(error);
    return;
  }
  job = new UploadJob(file, signature, showProgress);
  setUploading(true);
  ui.progress.hidden = false;
  showProgress("Preparing…", 0, file.size);
  try {
    showResult(await job.run(), file.size);
  } catch (error) {
    ui.progress.hidden = true;
    if (error instanceof CancelledError) {
      toast("Upload cancelled. Nothing was published.");
    } else {
      const retryable = RETRYABLE.has(asApiError(error).code);
      showError(ui.error, error, { onRetry: retryable ? startUpload : null });
      ui.error.focus();
    }
  } finally {
    job = null;
    setUploading(false);
  }
}

function showResult(result, size) {
  lastResult = result;
  showProgress("Done: uploaded and checked.", size, size);
  const again = result.status === "already_finalized";
  ui.resultTitle.textContent = again
    ? `Already published: ${result.extension} ${result.version}`
    : `Published ${result.extension} ${result.version}`;
  ui.resultExtension.textContent = result.extension;
  ui.resultVersion.textContent = result.version;
  ui.resultSignature.replaceChildren(signatureBadge(result));
  ui.resultSize.textContent = formatBytes(result.size);
  ui.resultHash.textContent = result.content_hash;
  ui.result.hidden = false;
  ui.result.focus();
  reload();
}

async function installUploaded() {
  const result = lastResult;
  if (!result) {
    return;
  }
  try {
    await refresh();
    const record = await api("GET", `extensions/${enc(result.extension)}/versions/${enc(result.version)}`);
    const install = catalog.installs.get(result.extension);
    if (install) {
      await changeVersion(install, result.version, surface);
    } else {
      await installVersion(record, surface);
    }
  } catch (error) {
    showError(ui.error, error);
  }
}
