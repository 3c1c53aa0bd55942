"""The HTTP API against its own OpenAPI document (schemathesis), and its error bodies.

schemathesis reads `GET /v1/openapi.json` and sends generated requests, valid and
invalid, to every operation in it; the run fails on any 5xx answer (the
`not_a_server_error` check) or a request the broker did not answer at all. Path
parameters naming a topic or subscription are drawn, most of the time, from ones this
module creates first (a topic with messages in it, a subscription on it), so requests
get past the 404 and into the handlers. Operations that delete are left out of the
generated run (they would delete that topic for every later request) and checked by
hand below instead.

The explicit checks: malformed JSON, unknown fields, oversized bodies, a body sent as
something other than JSON, and bad ack ids all get a 4xx with the API's JSON error,
`{"error": {"code": ..., "message": ...}}`, and a message a person can read.
"""

import http.client
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

TOPIC = "schema-topic"
SUBSCRIPTION = "schema-sub"
# The generated run's bounds: examples per operation, and a time budget (the run stops
# early when it runs out; the subprocess is killed well after, as a last resort).
MAX_EXAMPLES = 30
MAX_TIME_S = 45
RUN_TIMEOUT_S = 150


class Answer:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"{self.status} {self.body[:500]!r}"


def call(wharf, method, path, body=None, raw=None, content_type="application/json", timeout=30):
    """One request; any status is an answer (no exception for 4xx/5xx)."""
    conn = http.client.HTTPConnection("127.0.0.1", wharf.http_port, timeout=timeout)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {}
        if data is not None and content_type:
            headers["Content-Type"] = content_type
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        return Answer(r.status, dict(r.getheaders()), r.read())
    finally:
        conn.close()


def api_doc(wharf):
    r = call(wharf, "GET", "/v1/openapi.json")
    assert r.status == 200, r
    return r.json()


def queue_paths(doc):
    """The subscription, publish and ack routes, if this build has them."""
    paths = doc["paths"]
    find = lambda suffix: next((p for p in paths if p.endswith(suffix)), None)
    return {
        "publish": find("/messages"),
        "subscription": next((p for p in paths if "/subscriptions/{" in p and p.endswith("}")), None),
        "pull": find("/pull"),
        "ack": find("/ack"),
    }


def fill(template, topic, subscription):
    """A path template with its topic and subscription parameters filled in."""
    out = []
    for part in template.split("/"):
        if part.startswith("{") and part.endswith("}"):
            out.append(topic if "topic" in part else subscription)
        else:
            out.append(part)
    return "/".join(out)


def assert_json_error(r, *statuses, mentions=None):
    assert r.status in statuses, r
    assert r.headers.get("content-type", "").startswith("application/json"), r
    err = r.json()["error"]
    assert isinstance(err["code"], str) and err["code"], r
    assert isinstance(err["message"], str) and len(err["message"]) >= 10, r
    if mentions:
        assert mentions in err["message"], r
    return err


@pytest.fixture(scope="module")
def prepared(wharf):
    """The topic (2 partitions, a few messages) and subscription the run aims at."""
    r = call(wharf, "POST", "/v1/topics", {"name": TOPIC, "partitions": 2})
    assert r.status == 201, r
    doc = api_doc(wharf)
    q = queue_paths(doc)
    if q["subscription"]:
        r = call(wharf, "PUT", fill(q["subscription"], TOPIC, SUBSCRIPTION), {"start": "earliest"})
        assert r.status in (200, 201), r
    if q["publish"]:
        msgs = [{"key": f"k{i}", "value": f"message {i}"} for i in range(20)]
        r = call(wharf, "POST", fill(q["publish"], TOPIC, SUBSCRIPTION), {"messages": msgs})
        assert 200 <= r.status < 300, r
    return doc, q


def schemathesis_config(doc, tmp_path):
    """A schemathesis.toml binding every topic and subscription path parameter to the
    prepared names (70% of the time; otherwise generated, for the 404s; other path
    parameters, such as a message's partition and offset, are generated), and the hooks
    that keep a pull's `wait_ms` short (schemathesis_hooks.py)."""
    names = set()
    for item in doc["paths"].values():
        for op in item.values():
            for p in op.get("parameters", []) if isinstance(op, dict) else []:
                if p.get("in") == "path":
                    names.add(p["name"])
    hooks = Path(__file__).with_name("schemathesis_hooks.py")
    lines = [
        f'hooks = "{hooks}"',
        "[dictionaries.topics]",
        f'values = ["{TOPIC}"]',
        "[dictionaries.subscriptions]",
        f'values = ["{SUBSCRIPTION}"]',
        "[parameters]",
    ]
    for n in sorted(names):
        if "topic" in n:
            d = "topics"
        elif "subscription" in n:
            d = "subscriptions"
        else:
            # Numbers (a message's partition and offset) stay generated.
            continue
        lines.append(f'"path.{n}" = {{ dictionary = "{d}", probability = 0.7 }}')
    path = tmp_path / "schemathesis.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_no_generated_request_gets_a_server_error(wharf, prepared, tmp_path):
    doc, _ = prepared
    config = schemathesis_config(doc, tmp_path)
    deletes = sorted(
        op["operationId"]
        for item in doc["paths"].values()
        for method, op in item.items()
        if method == "delete" and "operationId" in op
    )
    exe = Path(sys.executable).parent / "schemathesis"
    cmd = [
        str(exe), "--config-file", str(config), "run",
        f"http://127.0.0.1:{wharf.http_port}/v1/openapi.json",
        "--checks", "not_a_server_error",
        "--max-examples", str(MAX_EXAMPLES),
        "--max-time", str(MAX_TIME_S),
        "--phases", "examples,coverage,fuzzing,stateful",
        "--workers", "2",
        "--request-timeout", "40",
        "--generation-database", "none",
        "--seed", os.environ.get("SCHEMATHESIS_SEED", "20261128"),
        "--no-color",
        "--report", "ndjson", "--report-dir", str(tmp_path / "report"),
    ]  # fmt: skip
    for op in deletes:
        cmd += ["--exclude-operation-id", op]
    started = time.monotonic()
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=tmp_path)
    took = time.monotonic() - started
    out = run.stdout + run.stderr
    # The summary, for `pytest -s` and for the log of a failure.
    print(out[-3000:])
    assert wharf.proc is not None and wharf.proc.poll() is None, f"the broker died:\n{wharf.log_tail()}\n{out[-4000:]}"
    assert run.returncode == 0, f"schemathesis failed after {took:.0f} s:\n{out[-12000:]}\nbroker log:\n{wharf.log_tail()}"
    # It did test something.
    assert "operations" in out.lower() or "passed" in out.lower(), out[-3000:]


def test_malformed_json_is_refused_with_its_position(wharf):
    r = call(wharf, "POST", "/v1/topics", raw=b'{"name": "x", ')
    assert_json_error(r, 400)


def test_unknown_fields_are_refused_by_name(wharf, prepared):
    r = call(wharf, "POST", "/v1/topics", {"name": f"u-{uuid.uuid4().hex[:8]}", "partitons": 2})
    assert_json_error(r, 400, mentions="partitons")
    _, q = prepared
    if q["publish"]:
        r = call(wharf, "POST", fill(q["publish"], TOPIC, SUBSCRIPTION), {"messages": [{"value": "x", "vaule": 1}]})
        assert_json_error(r, 400, mentions="vaule")
    if q["pull"]:
        r = call(wharf, "POST", fill(q["pull"], TOPIC, SUBSCRIPTION), {"max_mesages": 1})
        assert_json_error(r, 400, mentions="max_mesages")


def test_a_body_that_is_not_json_is_refused(wharf):
    r = call(wharf, "POST", "/v1/topics", raw=b"name=x", content_type="application/x-www-form-urlencoded")
    assert_json_error(r, 415)


def send_oversized(wharf, path, size):
    """A body of `size` bytes (valid JSON, so only its size is wrong). The broker may
    answer before it read the body and close the connection under the sender: the
    answer is read even so."""
    conn = http.client.HTTPConnection("127.0.0.1", wharf.http_port, timeout=30)
    try:
        pad = b" " * (size - 2)
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        try:
            conn.send(b"{" + pad + b"}")
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = conn.getresponse()
        return Answer(r.status, dict(r.getheaders()), r.read())
    finally:
        conn.close()


def test_oversized_bodies_are_refused(wharf, prepared):
    r = send_oversized(wharf, "/v1/topics", 2 * 2**20)
    assert_json_error(r, 413)
    _, q = prepared
    if q["publish"]:
        # Over the publish limit (16 MiB).
        r = send_oversized(wharf, fill(q["publish"], TOPIC, SUBSCRIPTION), 17 * 2**20)
        assert_json_error(r, 413)


def test_bad_ack_ids_are_refused_readably(wharf, prepared):
    _, q = prepared
    if not q["ack"]:
        pytest.skip("this build has no ack route")
    path = fill(q["ack"], TOPIC, SUBSCRIPTION)
    for ids in (["not-an-ack-id"], [""], ["\u00e9\u0000x" * 50]):
        r = call(wharf, "POST", path, {"ack_ids": ids})
        assert_json_error(r, 400, 404, 409, 410, 422)
    r = call(wharf, "POST", path, {"ack_ids": "nope"})
    assert_json_error(r, 400)


def test_deleting_a_topic_twice_is_a_404_the_second_time(wharf):
    name = f"del-{uuid.uuid4().hex[:8]}"
    assert call(wharf, "POST", "/v1/topics", {"name": name}).status == 201
    assert call(wharf, "DELETE", f"/v1/topics/{name}").status == 200
    assert_json_error(call(wharf, "DELETE", f"/v1/topics/{name}"), 404)


def test_deleting_a_subscription_twice_is_a_404_the_second_time(wharf, prepared):
    _, q = prepared
    if not q["subscription"]:
        pytest.skip("this build has no subscription routes")
    path = fill(q["subscription"], TOPIC, f"del-{uuid.uuid4().hex[:8]}")
    assert call(wharf, "PUT", path, {}).status == 201
    assert call(wharf, "DELETE", path).status == 200
    assert_json_error(call(wharf, "DELETE", path), 404)
    # Pulling from it now is a 404 too, not an empty answer.
    assert_json_error(call(wharf, "POST", path + "/pull", {"max_messages": 1}), 404)
