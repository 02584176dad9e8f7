"""The Python SDK for ``wasm-component@1`` extensions (world ``ext:platform/extension-sdk``).

A handler is a function registered under the name the manifest's ``api.endpoints[].handler`` uses::

    from ext_platform import Context, Request, Response, handler

    @handler("hello")
    def hello(req: Request, ctx: Context) -> Response:
        return Response.json({"hello": req.query.get("name", "world")})

The project's ``src/app.py`` imports its handlers and ``WitWorld`` (the component's entry point, which
componentize-py looks for); the SDK routes each call by the endpoint's handler name, turns an unknown
handler into a 404 and an uncaught exception into a 500 (logged), and hides how large bodies travel.
The host's services are typed methods of :class:`Context`: ``ctx.log``, ``ctx.http``, ``ctx.kv`` and
``ctx.secrets``; a refused call raises :class:`HostError` (``.code`` is the WIT case, e.g. ``"denied"``).
"""

from ext_platform._sdk import (
    Context,
    Entry,
    FetchResponse,
    HostError,
    Page,
    Request,
    Response,
    User,
    WitWorld,
    handler,
)

__all__ = [
    "Context",
    "Entry",
    "FetchResponse",
    "HostError",
    "Page",
    "Request",
    "Response",
    "User",
    "WitWorld",
    "handler",
]
