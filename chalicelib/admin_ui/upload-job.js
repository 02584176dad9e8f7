// One upload, without any DOM: checksum → initiate → PUT straight to storage (or parts, a few
// at a time) → finalize; the session is aborted on cancel or failure, so nothing is left behind.

import { api, ApiError, session } from "./api.js";
import { sleep } from "./dom.js";

const PART_CONCURRENCY = 3;
const PUT_ATTEMPTS = 3;

export class CancelledError extends Error {
  constructor() {
    super("cancelled");
    this.name = "CancelledError";
  }
}

async function sha256Hex(file) {
  if (!window.crypto || !window.crypto.subtle) {
    return null; // not a secure context (plain http on a remote host): the server hashes anyway
  }
  const digest = await window.crypto.subtle.digest("SHA-256", await file.arrayBuffer());
  return Array.from(new Uint8Array(digest), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

// What S3 said, as one of our errors: its XML body carries <Code> and <Message>.
function storageError(xhr) {
  const doc = new DOMParser().parseFromString(xhr.responseText || "", "application/xml");
  const s3Code = doc.querySelector("Code")?.textContent || "";
  const s3Message = doc.querySelector("Message")?.textContent || "";
  const detail = `Storage answered ${xhr.status}${s3Code ? ` ${s3Code}` : ""}${s3Message ? `: ${s3Message}` : ""}.`;
  if (xhr.status >= 500) {
    return new ApiError("STORAGE_ERROR", detail, { status: xhr.status });
  }
  if (["BadDigest", "XAmzContentSHA256Mismatch", "InvalidDigest"].includes(s3Code)) {
    return new ApiError("HASH_MISMATCH", detail, { status: xhr.status });
  }
  if (/expired/i.test(s3Message)) {
    return new ApiError("UPLOAD_EXPIRED", detail, { status: xhr.status });
  }
  return new ApiError("STORAGE_REFUSED", detail, { status: xhr.status });
}

function isTransient(error) {
  return error instanceof ApiError && (error.code === "NETWORK_ERROR" || error.code === "STORAGE_ERROR");
}

// `onProgress(stage, bytesDone, bytesTotal)` hears of every step and every progress event.
export class UploadJob {
  constructor(file, signature, onProgress) {
    this.file = file;
    this.signature = signature;
    this.onProgress = onProgress;
    this.uploadId = null;
    this.cancelled = false; // by the person
    this.stopped = false; // by the person or by a failed part: start nothing new
    this.finalizing = false; // the server is checking the bundle: too late to cancel
    this.requests = new Set();
    this.sent = new Map(); // part number (1 for a single PUT) → bytes sent
    this.uploadingText = "Uploading…";
    this.token = session.token; // so a cancel during sign-out still aborts the session
  }

  async run() {
    this.report("Computing the checksum…");
    const sha256 = await sha256Hex(this.file);
    this.check();
    this.report("Starting the upload…");
    const body = { size: this.file.size };
    if (sha256) {
      body.sha256 = sha256;
    }
    if (this.signature) {
      body.signature = this.signature;
    }
    // Not cancellable in flight: a session created on the server must be known to be aborted.
    const target = await api("POST", "ext-bundles/initiate-upload", body, { token: this.token });
    this.uploadId = target.upload_id;
    try {
      this.check();
      const parts = target.method === "MULTIPART" ? await this.sendParts(target) : await this.sendWhole(target);
      this.check();
      this.finalizing = true;
      this.report("Checking the bundle on the server…");
      const finalize = { upload_id: this.uploadId };
      if (parts) {
        finalize.parts = parts;
      }
      return await api("POST", "ext-bundles/finalize", finalize, { token: this.token });
    } catch (error) {
      await this.abortSession();
      throw error;
    }
  }

  cancel() {
    if (this.finalizing) {
      return;
    }
    this.cancelled = true;
    this.stop();
  }

  stop() {
    this.stopped = true;
    for (const xhr of this.requests) {
      xhr.abort();
    }
  }

  check() {
    if (this.stopped) {
      throw new CancelledError();
    }
  }

  async abortSession() {
    try {
      await api("POST", "ext-bundles/abort", { upload_id: this.uploadId }, { token: this.token, keepSession: true });
    } catch (_error) {
      // Already finalized or failed on the server, or unreachable: staging expires on its own.
    }
  }

  report(stage) {
    const done = [...this.sent.values()].reduce((sum, bytes) => sum + bytes, 0);
    this.onProgress(stage, done, this.file.size);
  }

  async sendWhole(target) {
    this.uploadingText = `Uploading ${this.file.name}…`;
    this.report(this.uploadingText);
    await this.send(target.url, this.file, target.headers || {}, 1);
    return null;
  }

  async sendParts(target) {
    const size = Number(target.part_size);
    const queue = [...target.parts];
    this.uploadingText = `Uploading ${this.file.name} in ${queue.length} parts…`;
    this.report(this.uploadingText);
    const done = [];
    const lane = async () => {
      while (queue.length > 0) {
        this.check();
        const part = queue.shift();
        const start = (part.part_number - 1) * size;
        const etag = await this.send(part.url, this.file.slice(start, start + size), {}, part.part_number);
        if (!etag) {
          throw new ApiError(
            "STORAGE_REFUSED",
            "Storage hid the part's ETag header: its CORS rules must expose ETag for browser uploads.",
          );
        }
        done.push({ part_number: part.part_number, etag });
      }
    };
    try {
      await Promise.all(Array.from({ length: Math.min(PART_CONCURRENCY, queue.length) }, lane));
    } catch (error) {
      this.stop();
      throw this.cancelled ? new CancelledError() : error;
    }
    return done.sort((a, b) => a.part_number - b.part_number);
  }

  // PUT with a few attempts for transient failures (network, 5xx); resolves to the ETag.
  async send(url, blob, headers, key) {
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this.put(url, blob, headers, key);
      } catch (error) {
        if (this.stopped || !isTransient(error) || attempt >= PUT_ATTEMPTS) {
          throw this.cancelled ? new CancelledError() : error;
        }
        this.sent.set(key, 0);
        this.report(`Connection trouble; trying again (attempt ${attempt + 1} of ${PUT_ATTEMPTS})…`);
        await sleep(500 * 2 ** (attempt - 1));
        this.check();
      }
    }
  }

  put(url, blob, headers, key) {
    return new Promise((resolve, reject) => {
      // XMLHttpRequest, not fetch: only it reports upload progress.
      const xhr = new XMLHttpRequest();
      this.requests.add(xhr);
      const settle = (outcome) => {
        this.requests.delete(xhr);
        outcome();
      };
      xhr.open("PUT", url);
      for (const [name, value] of Object.entries(headers)) {
        xhr.setRequestHeader(name, value);
      }
      xhr.upload.addEventListener("progress", (event) => {
        this.sent.set(key, event.loaded);
        this.report(this.uploadingText);
      });
      xhr.addEventListener("load", () =>
        settle(() => {
          if (xhr.status >= 200 && xhr.status < 300) {
            this.sent.set(key, blob.size);
            this.report(this.uploadingText);
            resolve(xhr.getResponseHeader("ETag") || "");
          } else {
            reject(storageError(xhr));
          }
        }),
      );
      xhr.addEventListener("error", () =>
        settle(() => reject(new ApiError("NETWORK_ERROR", "The connection to the storage service failed."))),
      );
      xhr.addEventListener("abort", () => settle(() => reject(new CancelledError())));
      xhr.send(blob);
    });
  }
}
