"""The hello extension in Python: each handler is named in manifest.json's api.endpoints."""

from ext_platform import Context, HostError, Request, Response, WitWorld, handler

__all__ = ["WitWorld"]  # componentize-py's entry point; the SDK routes calls to the handlers below


@handler("hello")
def hello(req: Request, ctx: Context) -> Response:
    name = req.query.get("name") or "world"
    ctx.log.info(f"GET /hello for {name}")
    return Response.json({"message": f"Hello, {name}!"})


@handler("info")
def info(req: Request, ctx: Context) -> Response:
    return Response.json({"extension": ctx.extension_id, "version": ctx.version, "tenant": ctx.tenant_id})


@handler("echo")
def echo(req: Request, ctx: Context) -> Response:
    content_type = req.headers.get("content-type", "application/octet-stream")
    return Response(200, {"content-type": content_type}, req.body)


@handler("fetch")
def fetch(req: Request, ctx: Context) -> Response:
    """Fetches ?url= (default https://example.com/) through the platform's egress checks."""
    url = req.query.get("url") or "https://example.com/"
    try:
        answer = ctx.http.fetch(url, timeout_ms=2000)
    except HostError as error:
        return Response.json({"error": {"code": error.code, "message": error.message}}, status=502)
    return Response.json({"status": answer.status, "bytes": len(answer.body), "body": answer.text()[:200]})
