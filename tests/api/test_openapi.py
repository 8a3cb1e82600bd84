"""The OpenAPI schema lists every answer the API routes can give, refusals included."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import pytest
from fastapi.routing import APIRoute
from pydantic import SecretStr

from taskforce.api._schemas import (
    ErrorAnswer,
    InvalidRequest,
    MissionResult,
    SessionRecords,
    ToolList,
)
from taskforce.api.server import create_app
from taskforce.config import Settings
from tests.api.conftest import CALC_WRITE_MISSION


@pytest.fixture(scope="module", name="schemas")
def fixture_schemas(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, dict[str, Any]]:
    """The OpenAPI schema of an app of the default settings (``False``) and of one with
    ``api.auth_token`` set (``True``), built once for the module: a schema takes a tenth
    of a second to build, and it does not depend on where the state and the workspace
    are (see ``test_the_schema_is_the_same_wherever_the_state_is``), so the tests that
    send requests to an app of their own compare its answers with ``schemas[False]``."""
    root = tmp_path_factory.mktemp("openapi")
    settings = Settings(state_dir=root / "state", workspace_dir=root / "workspace")
    guarded = settings.model_copy(
        update={"api": settings.api.model_copy(update={"auth_token": SecretStr("t0ken")})}
    )
    return {False: create_app(settings).openapi(), True: create_app(guarded).openapi()}


def _responses(schema: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation["responses"]
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    }


def _component(schema: dict[str, Any], ref: str) -> dict[str, Any]:
    """The component schema a ``$ref`` names."""
    component: dict[str, Any] = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return component


def _declared_200(schema: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    """The schema a route declares for its JSON 200."""
    answer = schema["paths"][path][method]["responses"]["200"]
    return _component(schema, answer["content"]["application/json"]["schema"]["$ref"])


def _items(schema: dict[str, Any], declared: dict[str, Any], field: str) -> dict[str, Any]:
    """The schema of the items of ``declared``'s list ``field``."""
    return _component(schema, declared["properties"][field]["items"]["$ref"])


def _assert_fits(declared: dict[str, Any], answered: dict[str, Any]) -> None:
    """An answer has exactly the declared properties, and all of them are required."""
    assert set(answered) == set(declared["properties"]) == set(declared["required"])


def _client(app: Any) -> httpx.AsyncClient:
    """A client of ``app`` in process."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


class TestOpenAPI:
    def test_the_schema_is_the_same_wherever_the_state_is(
        self, settings: Settings, schemas: dict[bool, dict[str, Any]]
    ) -> None:
        """An app of the default settings with its state and workspace elsewhere declares
        the same schema as the module's (which the tests below read for their own app)."""
        assert schemas[False] == create_app(settings).openapi()

    @pytest.mark.parametrize("path", ["/api/v1/execute", "/api/v1/execute/stream"])
    def test_mission_routes_list_their_refusals(
        self, schemas: dict[bool, dict[str, Any]], path: str
    ) -> None:
        """A full process or a shutdown (503), a long or slow body (413, 408) and a body
        whose Content-Type is not JSON (415) are declared."""
        responses = _responses(schemas[False])[("post", path)]
        assert {"200", "408", "413", "415", "422", "503"} == set(responses)
        refused = responses["503"]
        ref = refused["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorAnswer")
        assert "Retry-After" in refused["headers"]
        not_json = responses["415"]["content"]["application/json"]["schema"]["$ref"]
        assert not_json.endswith("/ErrorAnswer")

    def test_the_stream_answers_server_sent_events(
        self, schemas: dict[bool, dict[str, Any]]
    ) -> None:
        """The stream route's 200 is declared as `text/event-stream`, not as JSON; the plain
        route's stays JSON."""
        responses = _responses(schemas[False])
        assert ["text/event-stream"] == list(
            responses[("post", "/api/v1/execute/stream")]["200"]["content"]
        )
        assert ["application/json"] == list(
            responses[("post", "/api/v1/execute")]["200"]["content"]
        )

    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    async def test_each_streamed_event_fits_the_declared_event(
        self, settings: Settings, schemas: dict[bool, dict[str, Any]], agent_type: str
    ) -> None:
        """The stream's 200 declares one event (as an SSE parser reads it: its `event` and
        its `data`, as OpenAPI models an event stream), and every event sent fits it,
        its data JSON whose `kind` is the event's name."""
        app = create_app(settings)
        answer = schemas[False]["paths"]["/api/v1/execute/stream"]["post"]["responses"]["200"]
        declared = answer["content"]["text/event-stream"]["schema"]
        async with _client(app) as client:
            body = {"mission": CALC_WRITE_MISSION, "agent_type": agent_type}
            streamed = (await client.post("/api/v1/execute/stream", json=body)).text
        events = [
            dict(line.split(": ", 1) for line in block.splitlines())
            for block in streamed.split("\n\n")
            if block
        ]
        assert "result" == events[-1]["event"]
        for event in events:
            jsonschema.validate(event, declared)
            assert event["event"] == json.loads(event["data"])["kind"]

    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    async def test_the_declared_result_is_the_one_answered(
        self, settings: Settings, schemas: dict[bool, dict[str, Any]], agent_type: str
    ) -> None:
        """`/execute`'s 200 declares the result's shape: exactly the keys a real answer has
        (its steps' too), all required, and the answer fits it."""
        app = create_app(settings)
        schema = schemas[False]
        declared = _declared_200(schema, "post", "/api/v1/execute")
        step = _items(schema, declared, "steps")
        async with _client(app) as client:
            body = {"mission": CALC_WRITE_MISSION, "agent_type": agent_type}
            result = (await client.post("/api/v1/execute", json=body)).json()
        assert result["steps"]
        _assert_fits(declared, result)
        for answered in result["steps"]:
            _assert_fits(step, answered)
        MissionResult.model_validate(result)

    async def test_the_declared_tool_list_is_the_one_answered(
        self, settings: Settings, schemas: dict[bool, dict[str, Any]]
    ) -> None:
        """`/tools`' 200 declares the list's shape: exactly the keys a real answer has (its
        tools' too), all required, and the answer fits it."""
        app = create_app(settings)
        schema = schemas[False]
        declared = _declared_200(schema, "get", "/api/v1/tools")
        tool = _items(schema, declared, "tools")
        async with _client(app) as client:
            listed = (await client.get("/api/v1/tools")).json()
        assert listed["tools"]
        _assert_fits(declared, listed)
        for answered in listed["tools"]:
            _assert_fits(tool, answered)
        ToolList.model_validate(listed)

    @pytest.mark.parametrize("agent_type", ["lean", "legacy"])
    async def test_the_declared_session_is_the_one_answered(
        self, settings: Settings, schemas: dict[bool, dict[str, Any]], agent_type: str
    ) -> None:
        """`/sessions/{session_id}`'s 200 declares the session's shape: exactly the keys a
        real answer has (its missions' and their steps' too), all required, and the answer
        fits it."""
        app = create_app(settings)
        schema = schemas[False]
        declared = _declared_200(schema, "get", "/api/v1/sessions/{session_id}")
        mission = _items(schema, declared, "missions")
        step = _items(schema, mission, "steps")
        async with _client(app) as client:
            body = {"mission": CALC_WRITE_MISSION, "agent_type": agent_type, "session_id": "s"}
            assert 200 == (await client.post("/api/v1/execute", json=body)).status_code
            session = (await client.get("/api/v1/sessions/s")).json()
        _assert_fits(declared, session)
        (answered,) = session["missions"]
        _assert_fits(mission, answered)
        assert answered["steps"]
        for answered_step in answered["steps"]:
            _assert_fits(step, answered_step)
        SessionRecords.model_validate(session)

    def test_every_route_with_a_json_body_declares_its_415(
        self, settings: Settings, schemas: dict[bool, dict[str, Any]]
    ) -> None:
        """Each route that takes a JSON body (and so answers 415) declares it; no other does."""
        app = create_app(settings)
        responses = _responses(schemas[False])
        with_body = {
            (method.lower(), route.path)
            for route in app.routes
            if isinstance(route, APIRoute) and route.body_field is not None
            for method in route.methods or ()
        }
        assert {("post", "/api/v1/execute"), ("post", "/api/v1/execute/stream")} <= with_body
        assert with_body == {key for key, answers in responses.items() if "415" in answers}

    def test_session_route_lists_unknown_and_unavailable(
        self, schemas: dict[bool, dict[str, Any]]
    ) -> None:
        """An unknown session (404) and an unreachable store (503) are declared."""
        responses = _responses(schemas[False])[("get", "/api/v1/sessions/{session_id}")]
        assert {"200", "404", "422", "503"} == set(responses)

    def test_401_is_declared_only_with_a_token(self, schemas: dict[bool, dict[str, Any]]) -> None:
        """With api.auth_token every /api/v1 route declares its 401; without it none does."""
        with_token = _responses(schemas[True])
        api_routes = [key for key in with_token if key[1].startswith("/api/v1/")]
        assert api_routes
        assert all("401" in with_token[key] for key in api_routes)
        assert not any("401" in answers for answers in _responses(schemas[False]).values())
        assert "401" not in with_token[("get", "/health")]

    def test_the_bearer_scheme_is_declared_only_with_a_token(
        self, schemas: dict[bool, dict[str, Any]]
    ) -> None:
        """With api.auth_token every /api/v1 route requires the declared bearer scheme (so
        /docs can send the token); without it no scheme and no route requires one."""
        schema = schemas[True]
        assert {"bearer": {"type": "http", "scheme": "bearer"}} == {
            name: {k: v for k, v in scheme.items() if k != "description"}
            for name, scheme in schema["components"]["securitySchemes"].items()
        }
        operations = {
            (method, path): operation
            for path, item in schema["paths"].items()
            for method, operation in item.items()
        }
        api_routes = [key for key in operations if key[1].startswith("/api/v1/")]
        assert api_routes
        assert all([{"bearer": []}] == operations[key].get("security") for key in api_routes)
        assert "security" not in operations[("get", "/health")]
        assert "securitySchemes" not in schemas[False]["components"]

    @pytest.mark.parametrize(
        ("body", "model"),
        [
            ({"mission": "   "}, ErrorAnswer),  # refused by the executor: one reason
            ({"mission": 5, "x": 1}, InvalidRequest),  # refused by validation: a list
            ('{"mission": NaN}', InvalidRequest),
        ],
    )
    async def test_the_declared_422_is_the_one_answered(
        self,
        settings: Settings,
        schemas: dict[bool, dict[str, Any]],
        body: Any,
        model: type[ErrorAnswer | InvalidRequest],
    ) -> None:
        """Both shapes of a mission route's 422 are declared, and each answer fits one."""
        app = create_app(settings)
        schema = schemas[False]["paths"]["/api/v1/execute"]["post"]["responses"]["422"]
        refs = schema["content"]["application/json"]["schema"]["anyOf"]
        assert {"#/components/schemas/InvalidRequest", "#/components/schemas/ErrorAnswer"} == {
            ref["$ref"] for ref in refs
        }
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            content = body if isinstance(body, str) else None
            payload = None if isinstance(body, str) else body
            headers = {"content-type": "application/json"}
            answer = await client.post(
                "/api/v1/execute", json=payload, content=content, headers=headers
            )
        assert 422 == answer.status_code
        model.model_validate(answer.json())
