"""/metrics serves Prometheus text about requests and model state, one registry per app instance."""

import math

import pytest
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from app.http.metrics import UNMATCHED, Metrics, install_metrics
from app.http.problems import Problem, register_error_handlers


def samples(client):
    """{(sample name, frozenset(labels)): value} from one scrape."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    result = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            result[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return result


def make_app(refresh=None):
    app = Flask("metrics-test")
    register_error_handlers(app)
    metrics = Metrics()

    @app.before_request
    def refuse_secret():  # an earlier-registered-looking hook that refuses, like the API-token check
        from flask import request

        if request.path == "/secret":
            raise Problem(401, "Unauthorized", "no token")

    install_metrics(app, metrics, refresh=refresh)

    @app.get("/v1/models/<version>")
    def model(version):
        return {"version": version}

    @app.post("/v1/predict")
    def predict():
        return {"ok": True}

    @app.get("/secret")
    def secret():
        return {"never": True}

    return app, metrics


def test_requests_are_counted_by_rule_method_and_status():
    app, _ = make_app()
    client = app.test_client()
    client.get("/v1/models/v1")
    client.get("/v1/models/v2")
    client.get("/no/such/route")
    client.get("/secret")
    got = samples(client)
    assert got[("juicer_http_requests_total", frozenset({("endpoint", "/v1/models/<version>"), ("method", "GET"), ("status", "200")}))] == 2
    assert got[("juicer_http_requests_total", frozenset({("endpoint", UNMATCHED), ("method", "GET"), ("status", "404")}))] == 1
    assert got[("juicer_http_requests_total", frozenset({("endpoint", "/secret"), ("method", "GET"), ("status", "401")}))] == 1
    # a request refused by an earlier before-request hook is timed as well
    assert got[("juicer_http_request_duration_seconds_count", frozenset({("endpoint", "/secret"), ("method", "GET")}))] == 1
    assert got[("juicer_http_request_duration_seconds_count", frozenset({("endpoint", "/v1/models/<version>"), ("method", "GET")}))] == 2


def test_refresh_copies_store_state_at_scrape_time():
    state = {"queue": 7, "labels": {"seed": 10, "label-studio": 25}, "model": ("v3", 0.81, 35)}

    def refresh(metrics):
        metrics.set_review_queue_length(state["queue"])
        metrics.set_labels(state["labels"])
        metrics.set_model(*state["model"])

    app, _ = make_app(refresh)
    client = app.test_client()
    got = samples(client)
    assert got[("juicer_review_queue_length", frozenset())] == 7
    assert got[("juicer_labels", frozenset({("source", "label-studio")}))] == 25
    assert got[("juicer_model_holdout_accuracy", frozenset())] == pytest.approx(0.81)
    assert got[("juicer_model_labels", frozenset())] == 35
    assert got[("juicer_model_info", frozenset({("model_version", "v3")}))] == 1

    state.update(queue=2, labels={"seed": 10}, model=("v4", 0.86, 60))
    got = samples(client)
    assert got[("juicer_review_queue_length", frozenset())] == 2
    assert ("juicer_labels", frozenset({("source", "label-studio")})) not in got
    assert ("juicer_model_info", frozenset({("model_version", "v3")})) not in got
    assert got[("juicer_model_info", frozenset({("model_version", "v4")}))] == 1


def test_no_model_yet_is_nan_accuracy():
    metrics = Metrics()
    metrics.set_model(None, None, None)
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    assert math.isnan(families["juicer_model_holdout_accuracy"].samples[0].value)
    assert families["juicer_model_info"].samples == []


def test_a_failing_refresh_still_answers_the_scrape(caplog):
    def refresh(metrics):
        raise RuntimeError("store is locked")

    app, _ = make_app(refresh)
    got = samples(app.test_client())
    assert ("juicer_review_queue_length", frozenset()) in got
    assert "store is locked" in caplog.text


def test_two_apps_in_one_process_do_not_share_counts():
    first, _ = make_app()
    second, _ = make_app()
    first.test_client().get("/v1/models/a")
    got = samples(second.test_client())
    assert not any(name == "juicer_http_requests_total" and ("endpoint", "/v1/models/<version>") in labels for name, labels in got)


WORKER = """
import sys
from app.http.metrics import Metrics
metrics = Metrics()
for _ in range(int(sys.argv[1])):
    metrics.observe_request("/v1/predict", "POST", 200, 0.01)
metrics.set_model(sys.argv[2], 0.9, 10)
if len(sys.argv) > 3:
    metrics.set_model(sys.argv[3], 0.95, 20)
sys.stdout.buffer.write(metrics.render())
"""


def test_several_worker_processes_add_up_in_multiprocess_mode(tmp_path):
    """Three processes write into one folder (as gunicorn's workers do); any one's scrape answers for all."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(repo), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}

    def worker(*args: str) -> str:
        return subprocess.run([sys.executable, "-c", WORKER, *args], env=env, cwd=repo, capture_output=True, text=True,
                              check=True, timeout=60).stdout  # fmt: skip

    worker("3", "v0001")
    worker("4", "v0001", "v0002")  # this one swapped to the new model
    scraped = {}
    for family in text_string_to_metric_families(worker("1", "v0002")):
        for sample in family.samples:
            scraped.setdefault(sample.name, []).append((sample.labels, sample.value))
    requests = [value for labels, value in scraped["juicer_http_requests_total"] if labels["endpoint"] == "/v1/predict"]
    assert requests == [8.0]
    serving = sorted((labels["model_version"], value) for labels, value in scraped["juicer_model_info"])
    assert serving == [("v0001", 0.0), ("v0001", 1.0), ("v0002", 1.0), ("v0002", 1.0)]  # per worker: one old, two new
