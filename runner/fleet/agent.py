"""`runner agent`: the loop that runs on every accelerator host of a fleet.

It claims queued jobs for its device class from the store (db/queue.py), runs each exactly as `runner submit`
would (runner.submit.submit_job, then db.store.push and the alert check), and heartbeats the jobs it holds from a
background thread. Nothing is lost:
- a finished run is written to the local outbox (runner/fleet/outbox.py) before it is pushed and removed after; when the
  store is down the run waits there, the agent keeps heartbeating its job, and replays the outbox before it claims
  anything else;
- a job that raises is handed to db.queue.fail: retried (by any agent of the class) until its attempts are spent,
  then failed with its error;
- SIGTERM or Ctrl-C while a job runs hands the job back (queued again, the attempt not counted) and exits; during
  a push the push is finished first. An agent killed outright (SIGKILL, power loss) stops heartbeating, and any
  other agent requeues its job after --stale-after seconds (an idle one when it looks for work, a busy one from its
  heartbeat thread). Pick --stale-after above the
  store outages you expect: a job whose agent could not heartbeat for longer may be run again elsewhere (both runs
  are then kept; the job is done once).

A job is refused before any rank starts when it cannot fit in this host's device memory (runner.submit's
preflight): its attempt fails with the sizes that would fit, and another agent may take it.

Across hosts: agents started with --nnodes N form one group. Node 0's agent claims jobs as any agent does and runs
a job of exactly N x --nproc-per-node ranks across the group (smaller jobs on its own host); the agents of nodes
1..N-1 claim nothing and keep joining node 0's rendezvous, their ranks taking node 0's job.

A serving job (one with a [serving] section) is measured through the endpoint the agent was given for it
(`--endpoint URL` for every serving job, `--endpoint JOB=URL` for the job named JOB), as `runner submit --endpoint`
measures it; a serving job this agent has no endpoint for fails its attempt with that reason.

Run: runner agent --device 910B3 [--once] [--poll-interval 5] [--endpoint http://127.0.0.1:8000]
     runner agent --device A100 --nnodes 2 --node-rank 0|1 --master-addr HOST0 --nproc-per-node 8
"""
from __future__ import annotations

import datetime as dt
import os
import random
import signal
import socket
import threading

from rich.console import Console

from core.errors import StoreError, UserError


class HandBack(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT while a job runs; BaseException so job code cannot swallow it."""


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}".rstrip(": ")


class Agent:
    def __init__(self, engine, device, *, name: str | None = None, model_path: str | None = None,
                 outbox_dir=None, poll_s: float = 5.0, heartbeat_s: float = 10.0, stale_after_s: float = 120.0,
                 once: bool = False, console: Console | None = None, nodes=None, nproc_per_node: int | None = None,
                 endpoints: dict[str | None, str] | None = None):
        if poll_s <= 0:
            raise UserError(f"--poll-interval must be positive, got {poll_s:g}")
        if not 0 < heartbeat_s < stale_after_s:
            raise UserError(f"--heartbeat ({heartbeat_s:g} s) must be positive and shorter than --stale-after "
                            f"({stale_after_s:g} s), or live jobs would be requeued")
        self.engine, self.device, self.model_path, self.outbox_dir = engine, device, model_path, outbox_dir
        self.endpoints = endpoints or {}  # job name (None: every serving job) -> URL
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.poll_s, self.heartbeat_s, self.stale_after_s, self.once = poll_s, heartbeat_s, stale_after_s, once
        self.console = console or Console(stderr=True, soft_wrap=True)
        from runner.tp.launch import Nodes

        self.nodes = nodes or Nodes()
        self.nproc_per_node = nproc_per_node or device.count
        self.held: dict[int, object] = {}  # job id -> Claim: the running job and those whose run waits in the outbox
        self.ran = 0  # jobs this agent ran to a pushed (or outboxed) run
        self._stop = threading.Event()
        self._in_job = False  # a signal now hands the job back; otherwise it only stops the loop
        self._store_ok = True

    # -- logging -------------------------------------------------------------------------------------------------

    def log(self, message: str) -> None:
        stamp = dt.datetime.now().strftime("%H:%M:%S")
        self.console.print(f"{stamp} agent {self.name}: {message}", highlight=False, markup=False)

    def _store_down(self, error: Exception) -> None:
        if self._store_ok:  # once per outage, not once per poll
            self.log(f"store unreachable, will retry: {error}")
        self._store_ok = False

    def _store_up(self) -> None:
        if not self._store_ok:
            self.log("store reachable again")
        self._store_ok = True

    # -- signals and heartbeats ------------------------------------------------------------------------------------

    def _on_signal(self, signum, _frame) -> None:
        self._stop.set()
        if self._in_job:
            self._in_job = False  # hand back once; a second signal during the hand-back does not interrupt it
            raise HandBack(signal.Signals(signum).name)
        self.log(f"{signal.Signals(signum).name}: stopping after the current step")

    def _heartbeats(self, done: threading.Event) -> None:
        from db import queue

        while not done.wait(self.heartbeat_s):
            claims = list(self.held.values())
            if not claims:
                continue
            try:
                lost = queue.heartbeat(self.engine, claims)
                # busy agents requeue too: were it left to agents looking for work, a dead agent's job would wait
                # until one of them finished its own
                self._requeue_stale()
            except StoreError as e:
                self._store_down(e)
                continue
            except Exception as e:  # noqa: BLE001 - this thread must outlive any one bad beat
                self.log(f"heartbeat failed: {one_line(e)}")
                continue
            for c in lost:
                if self.held.pop(c.job_id, None) is not None:
                    self.log(f"job {c.job_id} is no longer ours (cancelled, or requeued as stale); "
                             "its run, if it finishes, is still stored")

    # -- the loop ----------------------------------------------------------------------------------------------------

    def serve(self) -> int:
        """Work until stopped (or, with once, until no job is queued for this device class). Returns the exit code:
        0, or 3 when runs are left in the outbox because the store could not be reached."""
        main = threading.current_thread() is threading.main_thread()
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
        beat_done = threading.Event()
        beat = threading.Thread(target=self._heartbeats, args=(beat_done,), name="heartbeat", daemon=True)
        beat.start()
        try:
            self._wait_for_store()
            self.log(f"serving {self.device.device_class} ({self.device.name}); outbox {self._outbox()}")
            while not self._stop.is_set():
                if not self._replay():  # (even with once: a run waiting in the outbox is delivered before exit)
                    self._stop.wait(self._poll())
                    continue
                try:
                    claim = self._claim()
                except StoreError as e:
                    self._store_down(e)
                    self._stop.wait(self._poll())
                    continue
                if claim is None:
                    if self.once:
                        break
                    self._stop.wait(self._poll())
                    continue
                self._run(claim)
        finally:
            beat_done.set()
            beat.join(timeout=5)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        from runner.fleet import outbox

        left = outbox.waiting(self.outbox_dir)  # not counting runs other agents on this host are pushing
        self.log(f"stopped after {self.ran} job(s)" + (f"; {len(left)} run(s) wait in the outbox "
                                                       f"{self._outbox()}: replay with `runner push --outbox`"
                                                       if left else ""))
        return 3 if left else 0

    def _wait_for_store(self) -> None:
        """A daemon waits for its store, which may start after it (and may need its schema created); with once, a
        store that cannot be reached fails the agent at once."""
        from db.engine import ensure_schema

        while not self._stop.is_set():
            try:
                ensure_schema(self.engine)
                return
            except StoreError as e:
                if self.once:
                    raise
                self.log(f"waiting for the store: {e}")
                self._stop.wait(max(self.poll_s, 1.0))

    def _outbox(self):
        from runner.fleet import outbox

        return outbox.directory(self.outbox_dir)

    def _poll(self) -> float:
        return self.poll_s * random.uniform(0.8, 1.2)  # jitter: agents started together do not poll together

    def _replay(self) -> bool:
        """Deliver what waits in the outbox; False while the store is unreachable."""
        from runner.fleet import outbox

        if not outbox.pending(self.outbox_dir):  # the cheap look; replay then skips what others are pushing
            return True
        try:
            delivered, ok = outbox.replay(self.engine, self.outbox_dir, on_error=self._rejected), True
        except StoreError as e:
            self._store_down(e)
            delivered, ok = getattr(e, "delivered", []), False
        if ok:
            self._store_up()
        for d in delivered:
            if d.job_id is not None:
                self.held.pop(d.job_id, None)
            self.log(f"replayed run {d.run_id} from the outbox ({'pushed' if d.added else 'already in store'}"
                     + (f", job {d.job_id} done" if d.job_done else "") + ")")
        if ok:  # (with the store down, the periodic `runner alerts check` judges them later)
            self._alerts(sorted({d.fingerprint for d in delivered if d.added}))
        return ok

    def _rejected(self, path, error: Exception) -> None:
        """An outbox document that can never be pushed (set aside in rejected/): its job, if we hold it, fails
        with the reason instead of being heartbeaten forever."""
        from db import queue
        from runner.fleet import outbox

        self.log(f"cannot replay {path}: {one_line(error)}")
        job = outbox.job_of(path)
        claim = self.held.pop(job["job_id"], None) if job else None
        if claim is not None:
            try:
                state = queue.fail(self.engine, claim, f"run could not be stored: {one_line(error)}")
                self.log(f"job {claim.job_id} -> {state}")
            except StoreError as e:
                self._store_down(e)

    def _requeue_stale(self) -> None:
        """Settle other agents' jobs whose heartbeats stopped (from the claim loop and the heartbeat thread)."""
        from db import queue

        stale = queue.requeue_stale(self.engine, self.stale_after_s, [c.token for c in list(self.held.values())])
        for state, ids in stale.items():
            if ids:
                self.log(f"stale heartbeat: job(s) {', '.join(map(str, ids))} -> {state}")

    def _claim(self):
        from db import queue

        self._requeue_stale()
        claim = queue.claim_next(self.engine, self.device.device_class, self.name)
        self._store_up()
        return claim

    def _run(self, claim) -> None:
        from db import queue
        from runner.spec import parse_spec

        if self._stop.is_set():  # the signal came between the claim and here
            self._hand_back(claim, "stop requested")
            return
        self.held[claim.job_id] = claim
        self.log(f"claimed job {claim.job_id} ({claim.job_name}, fingerprint {claim.fingerprint}, "
                 f"attempt {claim.attempt}/{claim.max_attempts})")
        doc = None
        try:
            self._in_job = True
            try:
                if self._stop.is_set():  # the signal came while the job was being claimed
                    raise HandBack("stop requested")
                doc = self._measure(parse_spec(claim.spec))
            finally:
                self._in_job = False
        except HandBack as signame:
            if doc is None:  # a run that finished as the signal came is delivered below, not thrown away
                self.held.pop(claim.job_id, None)
                self._hand_back(claim, str(signame))
                return
        except Exception as e:  # the job failed (bad spec on this host, model error, a rank crashed): retry or fail
            self.held.pop(claim.job_id, None)
            try:
                state = queue.fail(self.engine, claim, one_line(e))
            except StoreError as store_error:
                self._store_down(store_error)
                state = f"unrecorded (store down; requeued after {self.stale_after_s:g} s without heartbeat)"
            self.log(f"job {claim.job_id} attempt {claim.attempt}/{claim.max_attempts} failed: {one_line(e)} "
                     f"-> {state}")
            return
        self.ran += 1
        self._deliver(claim, doc)

    def _measure(self, spec) -> dict:
        """The job's run document: through this agent's endpoint for a serving job, else as `runner submit` runs it."""
        if spec.serving is not None:
            from runner import serving

            endpoint = self.endpoints.get(spec.name, self.endpoints.get(None))
            if endpoint is None:
                raise UserError(f"serving job {spec.name!r} needs an endpoint: start the agent with --endpoint URL "
                                f"(or --endpoint {spec.name}=URL)")
            return serving.run(spec, self.device, endpoint, model_path=self.model_path, console=self.console)
        from runner.submit import submit_job

        return submit_job(spec, self.device, model_path=self.model_path, console=self.console,
                          nodes=self._nodes_for(spec.model.tensor_parallel))

    def _nodes_for(self, size: int):
        """The whole group for a job of exactly its size; this host alone for one that fits here."""
        from runner.tp.launch import Nodes

        group = self.nodes.count * self.nproc_per_node
        if self.nodes.count > 1 and size == group:
            return self.nodes
        if self.device.type == "cpu" or size <= self.device.count:
            return Nodes()
        across = f", or exactly {group} across its {self.nodes.count} nodes" if self.nodes.count > 1 else ""
        raise UserError(f"model.tensor_parallel = {size}: this agent runs up to {self.device.count} ranks on its "
                        f"host{across}")

    def follow(self) -> int:
        """Nodes 1..N-1: join node 0's rendezvous again and again; each time the ranks here take node 0's job."""
        from core.errors import RunError
        from runner.tp import launch

        main = threading.current_thread() is threading.main_thread()
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
        size = self.nodes.count * self.nproc_per_node
        self.log(f"node {self.nodes.rank} of {self.nodes.count}: following {self.nodes.master_addr}:"
                 f"{self.nodes.master_port} with {self.nproc_per_node} rank(s) of {size}")
        try:
            while not self._stop.is_set():
                self._in_job = True
                try:
                    launch.run_tensor_parallel(None, self.device, self.model_path, self.nodes, size=size)
                    self.ran += 1
                    self.log("this node's ranks finished node 0's job")
                except RunError as e:
                    self.log(f"joined run ended without a result: {e}")
                    self._stop.wait(self._poll())
                except HandBack:
                    break
                finally:
                    self._in_job = False
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.log(f"stopped after {self.ran} joined job(s)")
        return 0

    def _hand_back(self, claim, signame: str) -> None:
        from db import queue

        try:
            ok = queue.release(self.engine, claim)
            self.log(f"{signame}: handed job {claim.job_id} back to the queue" if ok else
                     f"{signame}: job {claim.job_id} was no longer ours")
        except StoreError as e:
            self.log(f"{signame}: could not hand job {claim.job_id} back ({e}); it is requeued after "
                     f"{self.stale_after_s:g} s without heartbeat")

    def _deliver(self, claim, doc: dict) -> None:
        from runner.fleet import outbox

        try:  # into the outbox first, so a push that dies half way loses nothing
            d = outbox.deliver_kept(self.engine, doc, (claim.job_id, claim.token), self.outbox_dir,
                                    warn=self.log)
        except StoreError as e:
            self._store_down(e)
            self.log(f"job {claim.job_id}: run {doc['run_id']} kept in the outbox until the store is back")
            return  # still held: the heartbeat thread keeps the claim alive while the run waits
        except UserError as e:  # neither outbox nor store: the run is gone, the job runs again once stale
            self.held.pop(claim.job_id, None)
            self.log(f"job {claim.job_id}: {e}; it is requeued after {self.stale_after_s:g} s without heartbeat")
            return
        self._store_up()
        self.held.pop(claim.job_id, None)
        self.log(f"job {claim.job_id} done: run {d.run_id} " + ("pushed" if d.added else "already in store")
                 + ("" if d.job_done else " (the job was no longer ours: cancelled or taken over)"))
        if d.added:
            self._alerts([d.fingerprint])

    def _alerts(self, fingerprints: list[str]) -> None:
        """Judge the series the new runs belong to, as `runner submit` does; a failure here never fails the job
        (the periodic `runner alerts check` judges them again)."""
        if not fingerprints:
            return
        try:
            from db.alerts.deliver import describe, evaluate_and_deliver

            for change in evaluate_and_deliver(self.engine, fingerprints):
                self.log(describe(change))
        except Exception as e:  # noqa: BLE001 - the run is stored; an alert hiccup must not stop the agent
            self.log(f"alert check after push failed: {one_line(e)}")
