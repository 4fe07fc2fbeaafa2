"""schemathesis over the service's own /openapi.json, every phase (examples, coverage, fuzzing, stateful):
no answer is a 5xx, and every answer is one the schema declares, in the shape and content type it
declares. Bounded in examples and time so CI on 2 cores spends about a minute on it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter

from tests.api.conftest import run_service

MAX_TIME_S = 25
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_headers_conformance,response_schema_conformance")


def test_schemathesis_finds_no_5xx_and_no_answer_the_schema_does_not_declare(tmp_path, models_dir):
    # Short answers keep generation quick; the fuzzer's training jobs run one at a time.
    with run_service(tmp_path / "home", models_dir, WORKBENCH_MAX_TOKENS_LIMIT="16",
                     WORKBENCH_JOB_CONCURRENCY="1") as service:
        report = tmp_path / "report"
        run = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", f"{service.url}/openapi.json",
             "--phases", "examples,coverage,fuzzing,stateful", "--checks", CHECKS,
             "--max-examples", "10", "--max-time", str(MAX_TIME_S), "--workers", "1",
             "--request-timeout", "30", "--no-shrink", "--seed", "1", "--generation-database", "none",
             "--report", "json,ndjson", "--report-dir", str(report), "--no-color"],
            capture_output=True, text=True, timeout=MAX_TIME_S + 120,
        )
        log = service.log_text()

    summary = json.loads(next(report.glob("json-*.json")).read_text())
    events = next(report.glob("ndjson-*.ndjson")).read_text()
    statuses = Counter(int(code) for code in re.findall(r'"status_code":\s*(\d{3})', events))
    print(f"schemathesis: {summary['test_cases']['generated']} cases, answers by status {dict(statuses)}")

    assert summary["operations"]["tested"] == summary["operations"]["selected"] >= 20
    assert not [code for code in statuses if code >= 500], (statuses, run.stdout[-6000:])
    assert summary["failures"] == [], run.stdout[-6000:]
    assert run.returncode == 0, run.stdout[-6000:]
    assert "Traceback" not in log, log[-3000:]
