"""`juicer serve --workers 4` on a real PostgreSQL: the end-to-end loop with one scheduler and every worker swapping.

Starts the real service as a user does (the Fashion-MNIST demo, the session's Label Studio: a project of its own)
with ``store.url`` on the session's PostgreSQL, plays 100 labels through Label Studio with `juicer simulate`, and
checks from the aggregated ``/metrics`` that exactly one of the four worker processes ran the scheduler and that
each of them served with the newest model afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.served import ServedJuicer, answers_ready, data_folder, link_built_backbones, subprocess_env
from tests.support.wait import poll

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

REPO = Path(__file__).resolve().parents[2]
WORKERS = 4


TOKEN = "workers-token-123"  # /metrics needs the API token


def _get(url: str, timeout: float = 10) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def per_worker(url: str) -> dict[str, dict[str, float]]:
    """{metric: {pid or "pid/version": value}} for the per-worker gauges of one scrape."""
    found: dict[str, dict[str, float]] = {"scheduler": {}, "model": {}}
    for family in text_string_to_metric_families(_get(f"{url}/metrics").decode()):
        for sample in family.samples:
            if sample.name == "juicer_scheduler_running":
                found["scheduler"][sample.labels["pid"]] = sample.value
            elif sample.name == "juicer_model_info":
                found["model"][f"{sample.labels['pid']}/{sample.labels['model_version']}"] = sample.value
    return found


@pytest.fixture(scope="module")
def served(free_port, postgres, label_studio):
    """`juicer serve --workers 4` on PostgreSQL, until /readyz answers and every worker has loaded."""
    data_dir = data_folder(label_studio.files_root.parent / f"workers-{label_studio.project_title('d').split()[-1]}")
    link_built_backbones(data_dir)
    port = free_port()
    env = subprocess_env(
        data_dir,
        JUICER_STORE__URL=postgres.new_database(),
        JUICER_SERVICE__PORT=str(port),
        JUICER_SERVICE__THREADS="4",
        JUICER_SERVICE__API_TOKEN=TOKEN,
        JUICER_SERVICE__RETRAIN_AFTER_LABELS="100000",  # only the simulation's retrains
        JUICER_SERVICE__REVIEW_BATCH_SIZE="20",
        JUICER_SERVICE__SECOND_LOOK_SHARE="0",  # every label a new item: versions at known label counts (second looks: test_second_look)
        JUICER_LABEL_STUDIO__URL=label_studio.url,
        JUICER_LABEL_STUDIO__TOKEN=label_studio.token,
        JUICER_LABEL_STUDIO__PROJECT_TITLE=label_studio.project_title("workers"),
    )

    def every_worker_ready(url: str) -> bool:
        return answers_ready(url) and len(per_worker(url)["scheduler"]) >= WORKERS

    args = ["--workers", str(WORKERS), "--demo-pool", "150", "--holdout", "100"]
    with ServedJuicer(data_dir, port, env, args, ready=every_worker_ready) as service:
        yield service


def test_four_workers_on_postgresql_run_the_loop_with_one_scheduler_and_all_swap(served):
    url = served.url
    assert sorted(per_worker(url)["scheduler"].values()) == [0.0] * (WORKERS - 1) + [1.0]  # exactly one scheduler
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "simulate", "--labels", "100", "--order", "uncertainty",
         "--retrain-every", "50", "--service", url, "--wait", "300"],
        cwd=REPO, env=served.env, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:] + served.tail(3000)
    points = json.loads(result.stdout[result.stdout.index("{") :])["points"]
    counts = [p["n_labels"] for p in points]
    assert counts[0] == 10 and counts[-1] == 110 and counts == sorted(set(counts))  # one version per retrain
    assert points[-1]["holdout_accuracy"] > points[0]["holdout_accuracy"]
    newest = points[-1]["model_version"]

    def every_worker_serves_the_newest() -> bool:
        for _ in range(8 * WORKERS):  # new connections: gunicorn hands them to whichever worker accepts first
            _get(f"{url}/healthz")
        seen = per_worker(url)
        pids = [pid for pid in seen["scheduler"]]
        return len(pids) == WORKERS and all(seen["model"].get(f"{pid}/{newest}") == 1.0 for pid in pids)

    poll(every_worker_serves_the_newest, 60, f"every worker serving {newest}")
    assert sum(per_worker(url)["scheduler"].values()) == 1.0  # still one scheduler after the loop
