// What the platform says about itself (admin/config.json): where extension pages are served
// from and the upload limits.

import { adminJson } from "./api.js";

// The defaults let the page work when the file cannot be read; the server enforces the real limits.
export const config = {
  runner_public_base: "",
  max_bundle_bytes: 200 * 1024 * 1024,
  multipart_threshold_bytes: 0,
};

export async function loadConfig() {
  const loaded = await adminJson("config.json");
  if (loaded) {
    Object.assign(config, loaded);
  }
}
