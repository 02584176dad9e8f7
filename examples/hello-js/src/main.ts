// The hello extension in TypeScript: each handler is named in manifest.json's api.endpoints.
import { handler, Response, type Context, type Request } from "@ext-platform/sdk";

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
