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


@handler("counter")
def counter(req: Request, ctx: Context) -> Response:
    """Adds one to the install's counter in KV storage; compare-and-set, so no increment is ever lost."""
    try:
        for _ in range(8):
            entry = ctx.kv.get("counter")
            count = int(entry.value) + 1 if entry else 1
            try:
                ctx.kv.set("counter", str(count), if_revision=entry.revision if entry else 0)
            except HostError as error:
                if error.code == "conflict":
                    continue  # another call got in between: read again
                raise
            return Response.json({"count": count})
    except HostError as error:
        return Response.json({"error": {"code": error.code, "message": error.message}}, status=503)
    return Response.json({"error": {"code": "conflict", "message": "the counter kept changing"}}, status=409)


@handler("upstream")
def upstream(req: Request, ctx: Context) -> Response:
    """Calls ?url= (default https://example.com/) with the install's secret API_KEY as the x-api-key header."""
    url = req.query.get("url") or "https://example.com/"
    try:
        answer = ctx.http.fetch(url, headers={"x-api-key": ctx.secrets.get("API_KEY")}, timeout_ms=2000)
    except HostError as error:
        return Response.json({"error": {"code": error.code, "message": error.message}}, status=502)
    content_type = answer.headers.get("content-type", "application/octet-stream")
    return Response(answer.status, {"content-type": content_type}, answer.body)
