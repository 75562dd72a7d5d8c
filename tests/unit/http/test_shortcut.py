"""The catch-all route reached without the router (`proxy.http.edge.shortcut_handler`): the same
answers, middlewares and match info as through the router, and the router whenever a request
could be another route's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from proxy.config import Settings
from proxy.http.edge import SHORTCUT, EdgeRunner, Shortcut
from proxy.runtime.edge import FORWARD_ROUTE, EveryPath

TAG = web.AppKey("tag", str)


class _Server(TestServer):
    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return EdgeRunner(self.app, Settings(upstream="http://127.0.0.1:9"), **kwargs)


OWN = ("/healthz", "/proxy/")


def _app(*, own: tuple[str, ...] = OWN, shortcut: bool = True) -> web.Application:
    @web.middleware
    async def mark(request: web.Request, handler: Any) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        response.headers["X-Middleware"] = "ran"
        return response

    async def catch_all(request: web.Request) -> web.Response:
        info = request.match_info
        return web.json_response(
            {"route": info.route.resource.name if info.route.resource else None,
             "app": request.app[TAG], "method": request.method}
        )  # fmt: skip

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"route": "healthz", "app": request.app[TAG]})

    app = web.Application(middlewares=[mark])
    app[TAG] = "gateway"
    app.router.add_get("/healthz", healthz)
    resource = EveryPath(name=FORWARD_ROUTE)
    app.router.register_resource(resource)
    resource.add_route("*", catch_all)
    if shortcut:
        app[SHORTCUT] = Shortcut(FORWARD_ROUTE, own)
    return app


async def _client(app: web.Application) -> TestClient[web.Request, web.Application]:
    client = TestClient(_Server(app, host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
def resolved(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The paths the router resolved."""
    paths: list[str] = []
    resolve = web.UrlDispatcher.resolve

    async def counted(self: web.UrlDispatcher, request: web.Request) -> Any:
        paths.append(request.path)
        return await resolve(self, request)

    monkeypatch.setattr(web.UrlDispatcher, "resolve", counted)
    yield paths


async def test_a_catch_all_request_gets_the_routes_match_info_app_and_middlewares(
    resolved: list[str],
) -> None:
    client = await _client(_app())
    try:
        for method in ("GET", "POST", "DELETE"):
            resp = await client.request(method, "/crm/v3/objects/contacts/1?x=1")
            assert resp.status == 200
            assert resp.headers["X-Middleware"] == "ran"
            body = await resp.json()
            assert body == {"route": FORWARD_ROUTE, "app": "gateway", "method": method}
        assert resolved == []
    finally:
        await client.close()


async def test_the_apps_own_paths_still_go_through_the_router(resolved: list[str]) -> None:
    client = await _client(_app())
    try:
        resp = await client.get("/healthz")
        assert (await resp.json()) == {"route": "healthz", "app": "gateway"}
        assert resp.headers["X-Middleware"] == "ran"
        # Under an own prefix but no own route: the router finds the catch-all, as before.
        resp = await client.get("/healthzz")
        assert (await resp.json())["route"] == FORWARD_ROUTE
        assert resolved == ["/healthz", "/healthzz"]
    finally:
        await client.close()


async def test_a_request_that_expects_100_continue_gets_it_from_the_router(
    resolved: list[str],
) -> None:
    client = await _client(_app())
    try:
        resp = await client.post("/crm/v3/objects/notes", data=b"{}", expect100=True)
        assert resp.status == 200
        assert (await resp.json())["route"] == FORWARD_ROUTE
        assert resolved == ["/crm/v3/objects/notes"]
    finally:
        await client.close()


async def test_no_shortcut_when_a_route_lies_outside_the_named_prefixes(
    resolved: list[str],
) -> None:
    client = await _client(_app(own=("/proxy/",)))  # /healthz is not under it
    try:
        resp = await client.get("/healthz")
        assert (await resp.json())["route"] == "healthz"
        resp = await client.get("/crm/v3/objects/contacts/1")
        assert (await resp.json())["route"] == FORWARD_ROUTE
        assert resolved == ["/healthz", "/crm/v3/objects/contacts/1"]
    finally:
        await client.close()


async def test_no_shortcut_without_the_app_key(resolved: list[str]) -> None:
    client = await _client(_app(shortcut=False))
    try:
        resp = await client.get("/crm/v3/objects/contacts/1")
        assert (await resp.json())["route"] == FORWARD_ROUTE
        assert resolved == ["/crm/v3/objects/contacts/1"]
    finally:
        await client.close()
