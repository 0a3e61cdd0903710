"""A user's images and results stay theirs: the report, the gallery and /metrics need the API token by default,
a browser gets the Basic prompt for them, Prometheus scrapes with a Bearer token, health stays open."""

from __future__ import annotations

import base64

import pytest

from config import load_settings

PROBLEM = "application/problem+json"
PRIVATE = ["/report", "/report.png", "/gallery", "/gallery.gif", "/metrics"]
PUBLIC = ["/healthz", "/readyz", "/openapi.json"]


def basic(password: str, user: str = "anyone") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def anonymous(app, trained):
    """A client with no credential, on a service with a model (the pages show real results)."""
    return app.test_client()


def test_by_default_only_what_carries_no_user_data_is_public():
    assert load_settings(environ={}).service.public_paths == PUBLIC


@pytest.mark.parametrize("path", PRIVATE)
def test_a_private_page_without_the_token_is_a_401_with_the_browser_prompt(anonymous, path):
    response = anonymous.get(path)
    assert response.status_code == 401 and response.mimetype == PROBLEM
    assert response.headers["WWW-Authenticate"] == 'Basic realm="juicer"'
    assert "Basic auth with the token as password" in response.json["detail"]


@pytest.mark.parametrize("path", PRIVATE)
def test_a_private_page_opens_with_basic_auth_the_token_as_password(anonymous, path):
    response = anonymous.get(path, headers=basic("s3cret"))
    assert response.status_code == 200, response.get_data(as_text=True)[:300]


@pytest.mark.parametrize("user", ["", "juicer", "someone@example.org"])
def test_any_user_name_will_do(anonymous, user):
    assert anonymous.get("/report", headers=basic("s3cret", user)).status_code == 200


@pytest.mark.parametrize("path", PRIVATE)
def test_a_private_page_opens_with_a_bearer_token(anonymous, path):
    assert anonymous.get(path, headers={"Authorization": "Bearer s3cret"}).status_code == 200


@pytest.mark.parametrize("path", ["/report", "/metrics"])
@pytest.mark.parametrize("headers", [basic("wrong"), basic(""), {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}])
def test_a_wrong_credential_is_a_401(anonymous, path, headers):
    response = anonymous.get(path, headers=headers)
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Basic")


def test_prometheus_scrapes_metrics_with_a_bearer_token(anonymous):
    """Prometheus' ``authorization: {credentials_file: .../api-token}`` sends ``Authorization: Bearer <token>``."""
    response = anonymous.get("/metrics", headers={"Authorization": "Bearer s3cret"})
    assert response.status_code == 200 and "juicer_model_info" in response.get_data(as_text=True)


@pytest.mark.parametrize("path", PUBLIC)
def test_health_readiness_and_the_api_description_stay_open(anonymous, path):
    assert anonymous.get(path).status_code == 200


@pytest.mark.parametrize("path", ["/report", "/metrics", "/v1/report"])
@pytest.mark.parametrize("name", ["token", "api_token", "access_token"])
def test_the_token_in_a_query_string_opens_nothing(anonymous, path, name):
    """A query string ends up in logs, browser history and Referer headers: it is never a credential."""
    assert anonymous.get(path, query_string={name: "s3cret"}).status_code == 401


def test_the_report_pages_links_to_the_api_open_with_the_same_browser_login(anonymous):
    """The report links /v1/report and /v1/forecast: a read takes the Basic credential the browser remembered."""
    assert anonymous.get("/v1/report", headers=basic("s3cret")).status_code == 200
    assert anonymous.get("/v1/forecast", headers=basic("s3cret")).status_code == 200


def test_the_api_without_a_token_keeps_its_bearer_challenge(anonymous):
    response = anonymous.get("/v1/models")
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")


def test_basic_auth_never_opens_a_write(anonymous):
    """A browser attaches a remembered Basic credential to other sites' requests too: writes need the Bearer header."""
    response = anonymous.post("/v1/retrain", json={}, headers=basic("s3cret"))
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    assert anonymous.post("/v1/retrain", json={}, headers={"Authorization": "Bearer s3cret"}).status_code != 401


def test_the_openapi_document_says_the_pages_need_the_token(anonymous):
    paths = anonymous.get("/openapi.json").json["paths"]
    for path in PRIVATE:
        assert {"basicAuth": []} in paths[path]["get"]["security"] and {"bearerAuth": []} in paths[path]["get"]["security"]
    for path in PUBLIC:
        assert paths[path]["get"]["security"] == []


def test_with_authentication_off_the_pages_are_open(services):
    from pydantic import SecretStr

    from app import create_app

    service = services.settings.service.model_copy(update={"api_token": SecretStr("none")})
    services.settings = services.settings.model_copy(update={"service": service})
    assert create_app(services=services).test_client().get("/report").status_code == 200


def test_metrics_can_be_exposed_alone(services, trained):
    """``service.public_paths`` plus ``/metrics``: Prometheus scrapes without a token, the pages still need it."""
    from app import create_app

    service = services.settings.service.model_copy(update={"public_paths": [*PUBLIC, "/metrics"]})
    services.settings = services.settings.model_copy(update={"service": service})
    client = create_app(services=services).test_client()
    assert client.get("/metrics").status_code == 200
    assert client.get("/report").status_code == 401
