"""Schemathesis against the live portal: every operation of /api/schema/, fed generated
and schema-derived hostile input, must never answer with a server error.

The portal runs under gunicorn with production settings (DEBUG off) on a free loopback
port, reading the test database (PostgreSQL in CI); the examples per operation and the
whole run's time are bounded, and the seed is fixed so that a failure can be replayed
(``DSS_SCHEMATHESIS_SEED`` picks another)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

from tests.portal.hostile import build_world

pytestmark = pytest.mark.django_db(transaction=True)

MAX_EXAMPLES = 8
MAX_SECONDS = 90


@pytest.fixture
def world(demo_datasets, tmp_path, settings, django_user_model):
    return build_world(demo_datasets, tmp_path, settings, django_user_model)


@pytest.fixture
def unthrottled_portal(transactional_db, tmp_path, collected_static):
    """The portal under gunicorn as ``gunicorn_portal``, with request rates high enough
    that throttling (429) does not stand between the generated input and the code."""
    from tests.conftest import running_gunicorn

    rates = {f"DSS_API_RATE_{who}": "100000/min" for who in ("ANON", "USER", "TOKEN", "PILOT")}
    with running_gunicorn(tmp_path, collected_static, **rates) as url:
        yield url


def test_no_api_operation_answers_with_a_server_error(world, unthrottled_portal, tmp_path):
    from tests.conftest import api_token

    token = api_token(world["user"])
    st = Path(sys.executable).parent / "st"
    report = tmp_path / "junit.xml"
    run = subprocess.run(
        [
            str(st),
            "run",
            f"{unthrottled_portal}/api/schema/",
            "--header",
            f"Authorization: Token {token}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--max-time",
            str(MAX_SECONDS),
            "--seed",
            os.environ.get("DSS_SCHEMATHESIS_SEED", "20261201"),
            # One worker: hypothesis reads its strategies' lambdas with ast.parse, which
            # CPython 3.11.7 can break when two threads do it at once ("AST constructor
            # recursion depth mismatch").
            "--workers",
            "1",
            # Revoking or rotating a token would revoke the one this run uses and leave every
            # later call a 401; those routes' hostile input is in test_hostile_input.py.
            "--exclude-path-regex",
            r"^/api/tokens/\{id\}/(revoke|rotate)/$",
            "--request-timeout",
            "60",
            "--report",
            "junit",
            "--report-junit-path",
            str(report),
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=MAX_SECONDS + 120,
        cwd=tmp_path,  # its cache of crashes stays out of the checkout
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    summary = run.stdout[-8000:]
    print(summary)
    assert run.returncode == 0, summary + run.stderr[-2000:]
    # it did test the API: one test case per operation in the report, none failed
    cases = ElementTree.parse(report).getroot().iter("testcase")
    names = [c.get("name") for c in cases if c.find("skipped") is None]
    assert len(names) >= 40, summary
    assert any("POST /api/skims/" in n for n in names), names
