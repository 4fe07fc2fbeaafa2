"""The published API: every error a route can answer is declared with its body, and the limits the
code enforces are in the schema, so a client generated from /openapi.json is right."""

from workbench.providers.params import MAX_PROMPT_CHARS, MAX_STOP_CHARS, MAX_STOPS


def body_schema(schema: dict, operation: dict) -> str:
    return operation["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]


def test_each_route_declares_the_errors_it_can_answer_with_their_bodies(api):
    schema = api.get("/openapi.json").json()
    paths = schema["paths"]

    generate = paths["/generate"]["post"]["responses"]
    assert {"400", "401", "409", "413", "415", "422", "429", "503"} <= set(generate)
    assert body_schema(schema, generate["422"]) == "ErrorBody"
    assert body_schema(schema, generate["503"]) == "ProviderFailureBody"
    assert "Retry-After" in generate["429"]["headers"]
    chat = paths["/v1/chat/completions"]["post"]["responses"]
    assert {body_schema(schema, chat[code]) for code in ("400", "401", "413", "429", "503")} == {"OpenAIErrorBody"}
    assert "422" not in chat  # /v1 answers invalid input with OpenAI's 400
    assert body_schema(schema, paths["/v1/models/{model_id}"]["get"]["responses"]["404"]) == "OpenAIErrorBody"
    assert "text/event-stream" in chat["200"]["content"]
    assert {"404", "409"} <= set(paths["/train/{experiment_name}/resume"]["post"]["responses"])
    assert "404" in paths["/providers/{provider}"]["delete"]["responses"]
    # Only what applies: a route without a body cannot answer that its body is too large.
    assert "413" not in paths["/providers"]["get"]["responses"]
    assert set(paths["/health"]["get"]["responses"]) == {"200"}


def test_the_limits_the_code_enforces_are_in_the_schema(api):
    schema = api.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    params = components["GenerateParams"]["properties"]
    prompt = next(s for s in params["prompt"]["anyOf"] if s.get("type") == "string")
    assert prompt["maxLength"] == MAX_PROMPT_CHARS and prompt["minLength"] == 1
    assert params["temperature"]["minimum"] == 0 and params["temperature"]["maximum"] == 2
    stops = next(s for s in params["stop"]["anyOf"] if s.get("type") == "array")
    assert stops["items"]["maxLength"] == MAX_STOP_CHARS and stops["maxItems"] == MAX_STOPS
    name = next(p for p in schema["paths"]["/train/{experiment_name}/status"]["get"]["parameters"]
                if p["name"] == "experiment_name")
    assert name["schema"]["pattern"].startswith("^") and name["schema"]["pattern"].endswith("$")
    assert api.get("/train/bad%20name/status").status_code == 422
    assert components["HealthResponse"]["properties"]["ready"]["type"] == "boolean"
    start = components["StartRequest"]["properties"]
    assert start["experiment_name"]["pattern"] == name["schema"]["pattern"]  # body and path agree
    assert start["seed"]["maximum"] >= 2**64 - 1 and start["weight_decay"]["maximum"] == 1.0
    # This service has no token: clients generated from the schema must not be made to send one.
    assert {} in schema["paths"]["/status"]["get"]["security"]
