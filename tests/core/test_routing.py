"""Routes, requests and the request phase: 404, hooks, origins, subprotocols, draining."""

from __future__ import annotations

import itertools
import logging
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ikisocket_core import (
    Accept,
    DuplicateUUID,
    Headers,
    Hub,
    LocalProtocolError,
    Reject,
    Request,
    Route,
    Websocket,
)
from ikisocket_core._routing import Match, Router
from ikisocket_core.testing import TestClient, WebSocketRejected


def noop(kws: Websocket) -> None:
    """A route callback that does nothing."""


def params_of(pattern: str, path: str) -> dict[str, str] | None:
    return Route(pattern, noop).match(path)


# -- route patterns -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "params"),
    [
        ("/ws", "/ws", {}),
        ("/ws", "/ws/", None),
        ("/ws", "/wsx", None),
        ("/ws/:id", "/ws/42", {"id": "42"}),
        ("/ws/:id", "/ws/", None),
        ("/ws/:id", "/ws/1/2", None),
        ("/ws/{id}", "/ws/42", {"id": "42"}),
        ("/ws/{id}", "/ws", None),
        ("/ws/:id?", "/ws/42", {"id": "42"}),
        ("/ws/:id?", "/ws", {"id": ""}),
        ("/ws/:id?", "/ws/", None),
        ("/ws/:id?/x", "/ws/x", {"id": ""}),
        ("/ws/:id?/x", "/ws/5/x", {"id": "5"}),
        ("/ws/item:id?", "/ws/item", {"id": ""}),
        ("/ws/item:id?", "/ws/item123", {"id": "123"}),
        ("/files/*", "/files/a/b/c.txt", {"*": "a/b/c.txt"}),
        ("/files/*", "/files/", {"*": ""}),
        ("/files/*", "/files/a\nb", {"*": "a\nb"}),
        ("/files/*", "/files", None),
        ("/r/:room/u/{user}", "/r/lobby/u/bob", {"room": "lobby", "user": "bob"}),
        ("/v1.0/:id", "/v1.0/7", {"id": "7"}),
        ("/v1.0/:id", "/v1x0/7", None),
        ("/ws/:wild/*", "/ws/a/b/c", {"wild": "a", "*": "b/c"}),
        ("/ws/:w", "/ws/a", {"w": "a"}),
    ],
)
def test_route_patterns(pattern: str, path: str, params: dict[str, str] | None) -> None:
    assert params_of(pattern, path) == params


@pytest.mark.parametrize("pattern", ["ws", "", "/a/:id/{id}", "/a/*/b/*", "/a/:x/:x?"])
def test_malformed_routes_are_refused(pattern: str) -> None:
    with pytest.raises(LocalProtocolError):
        Route(pattern, noop)


def test_router_first_match_wins_and_refuses_duplicates() -> None:
    router = Router()
    specific = router.add("/ws/admin", noop)
    general = router.add("/ws/:id", noop)
    assert router.match("/ws/admin") == Match(specific, {})
    assert router.match("/ws/bob") == Match(general, {"id": "bob"})
    assert router.match("/elsewhere") is None
    with pytest.raises(LocalProtocolError):
        router.add("/ws/:id", noop)
    assert router.routes == [specific, general]


def test_hub_match_and_decorator_form() -> None:
    hub = Hub()

    @hub.websocket("/ws/:id")
    def on_open(kws: Websocket) -> None:
        pass

    found = hub.match("/ws/1")
    assert found is not None
    assert found.route.callback is on_open
    assert found.params == {"id": "1"}
    assert hub.match("/nope") is None


@given(st.text(min_size=1).filter(lambda s: "/" not in s))
def test_a_param_value_round_trips_through_the_route(value: str) -> None:
    hub = Hub()
    seen: list[str] = []
    hub.websocket("/ws/:id", lambda kws: seen.append(kws.params["id"]))
    hub.websocket("/alt/{id}", lambda kws: seen.append(kws.params["id"]))
    client = TestClient(hub)
    with client.websocket_connect("/ws/" + quote(value, safe="")):
        pass
    with client.websocket_connect("/alt/" + quote(value, safe="") + "?x=1"):
        pass
    assert seen == [value, value]


@given(st.lists(st.text(min_size=1).filter(lambda s: "/" not in s), max_size=4))
def test_the_wildcard_captures_the_rest_of_the_path(segments: list[str]) -> None:
    rest = "/".join(segments)
    request = Request.from_target("/files/" + "/".join(quote(s, safe="") for s in segments))
    assert params_of("/files/*", request.path) == {"*": rest}


@given(
    st.dictionaries(st.text(min_size=1), st.text(), max_size=5),
)
def test_query_parameters_round_trip(query: dict[str, str]) -> None:
    request = Request.from_target("/ws?" + urlencode(query))
    assert request.query() == query


@given(
    st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"),
        min_size=1,
    ),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126)),
)
def test_header_names_are_case_insensitive(name: str, value: str) -> None:
    headers = Headers([(name, value)])
    for spelling in (name, name.lower(), name.upper(), name.swapcase()):
        assert spelling in headers
        assert headers[spelling] == value


# -- requests -------------------------------------------------------------------------------


def test_request_path_must_start_with_a_slash() -> None:
    with pytest.raises(LocalProtocolError):
        Request(path="ws")


def test_request_from_target_str_or_bytes_gives_the_same_request() -> None:
    as_str = Request.from_target(
        "/ws/caf%C3%A9?a=1&b=&a=2", [("Host", "x"), ("X-Token", "t")], client=("h", 1)
    )
    as_bytes = Request.from_target(
        b"/ws/caf%C3%A9?a=1&b=&a=2", [(b"Host", b"x"), (b"X-Token", "t")], client=("h", 1)
    )
    assert as_str == as_bytes
    assert as_str.path == "/ws/café"
    assert as_str.query_string == "a=1&b=&a=2"
    assert as_str.query() == {"a": "1", "b": ""}
    assert as_str.client == ("h", 1)
    assert as_str.scheme == "ws"
    assert Request.from_target("/ws", scheme="wss").scheme == "wss"


def test_request_target_without_a_path_is_the_root() -> None:
    assert Request.from_target("?x=1").path == "/"


def test_headers_merge_repeats_and_list_values() -> None:
    headers = Headers(
        [("Sec-WebSocket-Protocol", "chat, v2"), ("sec-websocket-protocol", " v3 ,"), ("A", "1")]
    )
    assert headers["SEC-WEBSOCKET-PROTOCOL"] == "chat, v2,  v3 ,"
    assert headers.get_list("Sec-Websocket-Protocol") == ["chat", "v2", "v3"]
    assert headers.get_list("missing") == []
    assert sorted(headers) == ["a", "sec-websocket-protocol"]
    assert len(headers) == 2
    assert 42 not in headers  # type: ignore[comparison-overlap]
    assert headers.get("missing") is None
    assert repr(Headers([("A", "1")])) == "Headers((('A', '1'),))"
    with pytest.raises(KeyError):
        headers["missing"]


def test_requests_share_header_names_and_common_values() -> None:
    """Open connections keep their request: what every client sends alike is held once."""

    def received() -> Request:
        # As decoded from the wire, each request's strings are new objects.
        return Request.from_target(
            b"/ws",
            [
                (b"Host", b"example.test"),
                (b"upgrade", b"websocket"),
                (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
                (b"Cookie", b"session=abc"),
            ],
        )

    first, second = received().headers, received().headers
    assert first.raw == second.raw
    assert dict(first) == dict(second)
    for (name_a, value_a), (name_b, value_b) in zip(first.raw, second.raw, strict=True):
        assert name_a is name_b
        if name_a.lower() in ("host", "upgrade"):
            assert value_a is value_b
    assert next(iter(first)) is next(iter(second))  # the lower-case names too
    # The key and the cookie are each client's own: not interned (nothing to share).
    assert first["sec-websocket-key"] is not second["sec-websocket-key"]
    assert first["cookie"] is not second["cookie"]


def test_request_subprotocols_and_origin() -> None:
    request = Request.from_target(
        "/", [("Sec-WebSocket-Protocol", "b, a"), ("Origin", "https://x.test")]
    )
    assert request.subprotocols == ["b", "a"]
    assert request.origin == "https://x.test"
    assert Request.from_target("/").origin is None


@pytest.mark.parametrize(
    ("raw", "cookies"),
    [
        (None, {}),
        ("", {}),
        ("session=abc; theme=dark", {"session": "abc", "theme": "dark"}),
        ('quoted="a b"', {"quoted": "a b"}),
        ("bad<name=1; ok=2", {}),  # malformed: none at all rather than a guess
    ],
)
def test_cookies(raw: str | None, cookies: dict[str, str]) -> None:
    headers = [] if raw is None else [("Cookie", raw)]
    assert Request.from_target("/", headers).cookies() == cookies


def test_two_cookie_headers_are_joined_with_a_semicolon() -> None:
    # Regression: they were joined with ", ", which made {'a': '1,'} of "a=1" and "b=2".
    request = Request.from_target("/", [("Cookie", "a=1"), ("cookie", "b=2; c=3")])
    assert request.cookies() == {"a": "1", "b": "2", "c": "3"}
    assert request.headers["Cookie"] == "a=1; b=2; c=3"
    other = Request.from_target("/", [("X-A", "1"), ("x-a", "2")])
    assert other.headers["x-a"] == "1, 2"  # every other header keeps RFC 9110's comma
    client = TestClient(make_hub())
    with client.websocket_connect("/ws/1", headers=[("cookie", "a=1"), ("cookie", "b=2")]) as ws:
        assert ws.kws.cookies == {"a": "1", "b": "2"}


# -- the request phase through the hub ------------------------------------------------------


def make_hub(**options: Any) -> Hub:
    numbers = itertools.count(1)
    hub = Hub(uuid_factory=lambda: f"c{next(numbers)}", **options)
    hub.websocket("/ws/:id", noop)
    return hub


def test_unknown_path_is_refused_with_404() -> None:
    hub = make_hub()
    with pytest.raises(WebSocketRejected) as info:
        TestClient(hub).websocket_connect("/nowhere")
    assert info.value.status == 404
    assert hub.connections == ()
    reject = hub.open(Request.from_target("/nowhere"))
    assert isinstance(reject, Reject)
    assert reject.status == 404


def test_connection_sees_params_query_headers_and_cookies() -> None:
    hub = make_hub()
    client = TestClient(hub)
    header_forms: list[Any] = [{"X-Token": "t1"}, [("X-Token", "t1"), ("x-token", "t2")]]
    seen = []
    for headers in header_forms:
        with client.websocket_connect(
            "/ws/alice?room=1&room=2&empty=",
            headers=headers,
            cookies={"session": "s3cr3t", "theme": "dark"},
        ) as ws:
            kws = ws.kws
            seen.append(kws.headers["x-token"])
            assert kws.params == {"id": "alice"}
            assert kws.query == {"room": "1", "empty": ""}
            assert kws.headers["X-TOKEN"] == kws.headers["x-token"]
            assert kws.headers["Host"] == "testserver"
            assert kws.cookies == {"session": "s3cr3t", "theme": "dark"}
            assert kws.request.path == "/ws/alice"
            assert kws.request.client is not None
    assert seen == ["t1", "t1, t2"]


@pytest.mark.parametrize("verdict", [None, True, Accept()])
def test_before_upgrade_accepting(verdict: Any) -> None:
    hub = make_hub()
    seen: list[Request] = []

    @hub.before_upgrade
    def hook(request: Request) -> Any:
        seen.append(request)
        return verdict

    with TestClient(hub).websocket_connect("/ws/1?t=x") as ws:
        assert ws.uuid == "c1"
        assert ws.kws.attributes == {}
    assert [r.query() for r in seen] == [{"t": "x"}]


@pytest.mark.parametrize(
    ("verdict", "status", "reason"),
    [
        (False, 403, "forbidden"),
        (Reject(status=401, reason="who are you?"), 401, "who are you?"),
        (Reject(status=503), 503, ""),
    ],
)
def test_before_upgrade_refusing(verdict: Any, status: int, reason: str) -> None:
    hub = make_hub()
    hub.before_upgrade(lambda request: verdict)
    with pytest.raises(WebSocketRejected) as info:
        TestClient(hub).websocket_connect("/ws/1")
    assert (info.value.status, info.value.reason) == (status, reason)
    assert hub.connections == ()


def test_before_upgrade_only_runs_for_routed_paths() -> None:
    hub = make_hub()
    calls: list[str] = []
    hub.before_upgrade(lambda request: calls.append(request.path))
    with pytest.raises(WebSocketRejected):
        TestClient(hub).websocket_connect("/other")
    assert calls == []


def test_before_upgrade_accept_chooses_uuid_attributes_and_subprotocol() -> None:
    hub = make_hub(subprotocols=["json"])

    @hub.before_upgrade
    def hook(request: Request) -> Accept:
        token = request.headers["authorization"]
        chosen = "chat.v2" if "chat.v2" in request.subprotocols else None
        return Accept(uuid=token, attributes={"user": token}, subprotocol=chosen)

    client = TestClient(hub)
    ws = client.websocket_connect(
        "/ws/1", headers={"Authorization": "u1"}, subprotocols=["json", "chat.v2"]
    )
    assert ws.uuid == "u1"
    assert ws.kws.get_attribute("user") == "u1"
    assert ws.kws.subprotocol == "chat.v2"
    # The same identity while it is connected: refused, not stolen.
    with pytest.raises(WebSocketRejected) as info:
        client.websocket_connect("/ws/1", headers={"Authorization": "u1"})
    assert info.value.status == 409
    assert hub.connections == ("u1",)
    ws.close()
    with client.websocket_connect("/ws/2", headers={"Authorization": "u1"}) as again:
        assert again.kws.subprotocol is None  # offered none
        assert again.uuid == "u1"


def refused_once(
    caplog: pytest.LogCaptureFixture,
    hub: Hub,
    target: str,
    status: int,
    level: int = logging.INFO,
    **kwargs: Any,
) -> logging.LogRecord:
    """Open ``target``: it is refused with ``status``, logged once on "ikisocket", nothing kept."""
    caplog.clear()
    before = hub.connections
    with caplog.at_level(level, logger="ikisocket"):
        answer = hub.open(Request.from_target(target, **kwargs))
    assert isinstance(answer, Reject)
    assert answer.status == status
    assert hub.connections == before
    records = [r for r in caplog.records if r.name == "ikisocket"]
    assert len(records) == 1
    return records[0]


def test_before_upgrade_accept_of_a_subprotocol_not_offered_is_a_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = make_hub()
    hub.before_upgrade(lambda request: Accept(subprotocol="never-offered"))
    record = refused_once(caplog, hub, "/ws/1", 500, headers=[("sec-websocket-protocol", "chat")])
    assert record.exc_info is not None
    assert "'never-offered'" in str(record.exc_info[1])
    with pytest.raises(WebSocketRejected) as refused:  # the same answer through a driver
        TestClient(hub).websocket_connect("/ws/1", subprotocols=["chat"])
    assert refused.value.status == 500


def test_before_upgrade_returning_something_else_is_a_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = make_hub()
    hub.before_upgrade(lambda request: "yes")  # type: ignore[arg-type,return-value]
    record = refused_once(caplog, hub, "/ws/1", 500)
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], LocalProtocolError)
    hub.before_upgrade(lambda request: 1)  # type: ignore[arg-type,return-value]
    refused_once(caplog, hub, "/ws/1", 500)  # 1 == True, but it is not True


def test_a_uuid_factory_repeating_a_live_uuid_gets_409(caplog: pytest.LogCaptureFixture) -> None:
    hub = Hub(uuid_factory=lambda: "same")
    hub.websocket("/ws", noop)
    assert isinstance(hub.open(Request.from_target("/ws")), Websocket)
    # Only at DEBUG: the driver logs the refusal itself, with the peer's address.
    record = refused_once(caplog, hub, "/ws", 409, logging.DEBUG)
    assert record.levelno == logging.DEBUG
    assert "'same' is already connected" in record.getMessage()
    assert hub.connections == ("same",)


def test_a_uuid_factory_raising_duplicate_uuid_gets_409(caplog: pytest.LogCaptureFixture) -> None:
    def taken() -> str:
        raise DuplicateUUID("u1")

    hub = Hub(uuid_factory=taken)
    hub.websocket("/ws", noop)
    record = refused_once(caplog, hub, "/ws", 409, logging.DEBUG)
    assert "'u1'" in record.getMessage()


@pytest.mark.parametrize("made", [RuntimeError("no entropy"), "", 7])
def test_a_failing_or_invalid_uuid_factory_gets_500(
    caplog: pytest.LogCaptureFixture, made: object
) -> None:
    def factory() -> str:
        if isinstance(made, Exception):
            raise made
        return made  # type: ignore[return-value]

    hub = Hub(uuid_factory=factory)
    hub.websocket("/ws", noop)
    record = refused_once(caplog, hub, "/ws", 500)
    assert record.exc_info is not None
    with pytest.raises(WebSocketRejected) as refused:
        TestClient(hub).websocket_connect("/ws")
    assert refused.value.status == 500


def test_an_accept_with_attributes_that_are_no_mapping_gets_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = make_hub()
    hub.before_upgrade(lambda request: Accept(attributes=5))  # type: ignore[arg-type]
    refused_once(caplog, hub, "/ws/1", 500)


def test_allowed_origins() -> None:
    hub = make_hub(allowed_origins=["https://app.test"])
    client = TestClient(hub)
    with pytest.raises(WebSocketRejected) as info:
        client.websocket_connect("/ws/1", origin="https://evil.test")
    assert info.value.status == 403
    with client.websocket_connect("/ws/1", origin="https://app.test"):
        pass
    with client.websocket_connect("/ws/1"):  # no Origin: not a browser, passes
        pass
    # Without allowed_origins, any origin passes.
    with TestClient(make_hub()).websocket_connect("/ws/1", origin="https://evil.test"):
        pass


@pytest.mark.parametrize(
    ("server", "offered", "chosen"),
    [
        (["v2", "v1"], ["v1", "v2"], "v2"),  # the server's preference wins
        (["v2", "v1"], ["v1"], "v1"),
        (["v2"], ["v9"], None),
        ([], ["v1"], None),
        (["v1"], [], None),
    ],
)
def test_subprotocol_negotiation(server: list[str], offered: list[str], chosen: str | None) -> None:
    hub = make_hub(subprotocols=server)
    with TestClient(hub).websocket_connect("/ws/1", subprotocols=offered) as ws:
        assert ws.kws.subprotocol == chosen


def test_draining_refuses_new_connections_with_503_and_keeps_existing() -> None:
    hub = make_hub()
    hub.on("message", lambda ep: ep.kws.emit("echo: " + ep.text))
    client = TestClient(hub)
    with client.websocket_connect("/ws/1") as ws:
        assert hub.accepting
        hub.stop_accepting()
        assert not hub.accepting
        with pytest.raises(WebSocketRejected) as info:
            client.websocket_connect("/ws/2")
        assert info.value.status == 503
        with pytest.raises(WebSocketRejected) as info:
            client.websocket_connect("/nowhere")
        assert info.value.status == 503
        ws.send_text("still")
        assert ws.receive_text() == "echo: still"
        hub.resume_accepting()
        assert hub.accepting
        with client.websocket_connect("/ws/3") as other:
            assert other.kws.is_alive
