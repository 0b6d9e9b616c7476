"""The Gemini teacher (paper_personas/teachers/gemini.py): how it reads the API's error bodies (RetryInfo, quota
kinds) and what the loopback server refuses as the real API does. Runs of sdg.py against it are in test_sdg.py."""

import pytest
from google.genai import errors
from tenacity import RetryCallState

from paper_personas.teachers import base, gemini


def test_retry_info_delay_is_read_from_a_real_429_error():
    body = {
        "error": {
            "code": 429,
            "status": "RESOURCE_EXHAUSTED",
            "message": "quota",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}],
        }
    }
    error = errors.ClientError(429, body)
    assert gemini.error_facts(error).retry_delay_s == 37.0
    assert gemini.is_retryable(error)
    assert not gemini.is_retryable(errors.ClientError(404, {"error": {"code": 404}}))


@pytest.mark.parametrize("asked, low, high", [("7s", 7.0, 8.0), ("86400s", 300.0, 301.0)])
def test_retry_info_is_waited_out_up_to_a_cap(asked, low, high):
    body = {
        "error": {"code": 429, "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": asked}]}
    }
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})
    state.set_exception((errors.ClientError, errors.ClientError(429, body), None))
    wait = base.wait_for(state, gemini.error_facts)
    assert low <= wait <= high  # the delay asked for, plus up to 1 s of jitter; a day is capped at 5 minutes


def test_a_per_minute_429_waits_for_retry_info_and_a_bare_429_backs_off():
    from fake_gemini import error_body, quota_body
    from google.genai import errors

    def wait(body):
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})
        state.set_exception((errors.ClientError, errors.ClientError(429, body), None))
        return gemini.classify(state.outcome.exception()), base.wait_for(state, gemini.error_facts)

    kind, waited = wait(quota_body("gemini-2.5-flash", per_day=False, delay_s=7))
    assert kind == base.RETRYABLE and 7 <= waited <= 8  # RetryInfo's 7 s plus up to 1 s of jitter
    kind, waited = wait(error_body(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."))
    assert kind == base.RETRYABLE and 0 <= waited <= 2  # first backoff: full jitter over 2 s
    kind, _ = wait(quota_body("gemini-2.5-flash", per_day=True, delay_s=47))
    assert kind == base.DAILY_QUOTA  # though it asks for only 47 s


def test_the_server_rejects_a_thinking_budget_as_the_real_api_does():
    from fake_gemini import thinking_problem

    assert thinking_problem("gemini-2.5-pro", 0) == "Budget 0 is invalid. This model only works in thinking mode."
    assert thinking_problem("gemini-2.5-flash", 0) is None and thinking_problem("gemini-2.5-pro", -1) is None
