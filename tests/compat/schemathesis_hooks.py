"""schemathesis hooks for test_http_schema.py (loaded through its generated config).

A pull waits up to `wait_ms` (60 s at most) for messages that may never come. Generated
waits, boundary values such as 59999 included, would only measure that timeout and
outlast the run's time budget, so every request is sent with a short wait instead;
everything else about the request stays as generated.
"""

import schemathesis

MAX_WAIT_MS = 200


def _clamp(body):
    if isinstance(body, dict):
        w = body.get("wait_ms")
        if isinstance(w, int) and not isinstance(w, bool) and w > MAX_WAIT_MS:
            body["wait_ms"] = MAX_WAIT_MS


@schemathesis.hook
def before_call(context, case, kwargs):
    _clamp(case.body)
    _clamp(kwargs.get("json"))
