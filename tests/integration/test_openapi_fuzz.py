"""schemathesis fuzzes every operation of the running service (gunicorn, real backbone): no 5xx, responses
match the OpenAPI document. Label Studio is left out on purpose (a dead URL): the API must answer without it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.served import ServedJuicer, data_folder, service_env

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 30


def test_schemathesis_finds_no_5xx_and_no_schema_mismatch(tmp_path, free_port):
    data_dir = data_folder(tmp_path)
    port = free_port()
    env = service_env(data_dir, port, f"http://127.0.0.1:{free_port()}", "fuzz")
    service = ServedJuicer(data_dir, port, env, args=["--demo-pool", "20", "--holdout", "20"])
    service.start()
    report = tmp_path / "junit.xml"
    try:
        result = subprocess.run(
            [str(Path(sys.executable).parent / "schemathesis"), "run", f"{service.url}/openapi.json",
             "--header", f"Authorization: Bearer {service.token}", "--header", "X-Juicer-Secret: fault-suite-secret",
             "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
             "--max-examples", str(MAX_EXAMPLES), "--phases", "examples,coverage,fuzzing", "--seed", "9",
             "--request-timeout", "60", "--no-shrink", "--report", "junit", "--report-junit-path", str(report)],
            capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path,  # its .schemathesis cache goes there
        )  # fmt: skip
    finally:
        service.stop()
    out = result.stdout + result.stderr
    (tmp_path.parent / "schemathesis.txt").write_text(out)
    assert result.returncode == 0, out[-6000:] + "\n--- service log ---\n" + service.tail()
    assert "Server error" not in out
