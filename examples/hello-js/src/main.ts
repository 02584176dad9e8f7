// The hello extension in TypeScript: each handler is named in manifest.json's api.endpoints.
import { handler, HostError, Response, type Context, type Request } from "@ext-platform/sdk";

export { handle } from "@ext-platform/sdk"; // the component's entry point: the SDK routes to the handlers

handler("hello", (req: Request, ctx: Context): Response => {
  const name = req.query.name || "world";
  ctx.log.info(`GET /hello for ${name}`);
  return Response.json({ message: `Hello, ${name}!` });
});

handler("info", (_req: Request, ctx: Context): Response =>
  Response.json({ extension: ctx.extensionId, version: ctx.version, tenant: ctx.tenantId }),
);

handler("echo", (req: Request): Response =>
  new Response(200, { "content-type": req.headers["content-type"] ?? "application/octet-stream" }, req.body),
);

// Adds one to the install's counter in KV storage; compare-and-set, so no increment is ever lost.
handler("counter", (_req: Request, ctx: Context): Response => {
  try {
    for (let attempt = 0; attempt < 8; attempt++) {
      const entry = ctx.kv.get("counter");
      const count = entry ? Number(new TextDecoder().decode(entry.value)) + 1 : 1;
      try {
        ctx.kv.set("counter", String(count), entry ? entry.revision : 0);
        return Response.json({ count });
      } catch (error) {
        if (!(error instanceof HostError) || error.code !== "conflict") throw error;
      }
    }
    return Response.json({ error: { code: "conflict", message: "the counter kept changing" } }, 409);
  } catch (error) {
    if (!(error instanceof HostError)) throw error;
    return Response.json({ error: { code: error.code, message: error.detail } }, 503);
  }
});

// Calls ?url= (default https://example.com/) with the install's secret API_KEY as the x-api-key header.
handler("upstream", (req: Request, ctx: Context): Response => {
  const url = req.query.url || "https://example.com/";
  try {
    const answer = ctx.http.fetch(url, { headers: { "x-api-key": ctx.secrets.get("API_KEY") }, timeoutMs: 2000 });
    const contentType = answer.headers["content-type"] ?? "application/octet-stream";
    return new Response(answer.status, { "content-type": contentType }, answer.body);
  } catch (error) {
    if (!(error instanceof HostError)) throw error;
    return Response.json({ error: { code: error.code, message: error.detail } }, 502);
  }
});
