"""Users of the ranker: requests to the replicas, and outcome feedback to the *other* one.

Each request is an intent with a known relevant capability (the dataset's test labels);
the user picks the relevant capability when the top-k shows it (``success``), else the
first one shown (``failure``), so a better model earns a higher success rate. Feedback
always goes to the replica that did not serve the ranking: it is accepted only because
served rankings are shared (Redis) and stored only in the shared sink (PostgreSQL).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field


def post(url: str, body: dict, timeout_s: float = 30.0) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {}


@dataclass
class Traffic:
    """A background user population at about ``rate_per_s`` rankings a second."""

    replicas: list[str]
    cases: list[tuple[str, str]]  # (intent text, a relevant capability id)
    rate_per_s: float = 8.0
    top_k: int = 5
    acked: list[str] = field(default_factory=list)  # stored feedback event ids, in order
    served: dict[str, int] = field(default_factory=dict)  # model_version -> rankings
    errors: list[str] = field(default_factory=list)
    _run: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _idle: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Traffic:
        self._run.set()
        self._thread = threading.Thread(target=self._loop, name="traffic", daemon=True)
        self._thread.start()
        return self

    def pause(self) -> None:
        """Stop sending and wait until the request in flight (and its feedback) is done."""
        self._run.clear()
        self._idle.wait(timeout=120)

    def resume(self) -> None:
        self._run.set()

    def stop(self) -> None:
        self._stop.set()
        self._run.set()
        if self._thread is not None:
            self._thread.join(timeout=120)

    def _loop(self) -> None:
        cases = itertools.cycle(enumerate(self.cases))
        n = 0
        while not self._stop.is_set():
            if not self._run.is_set():
                self._idle.set()
                self._run.wait()
                continue
            self._idle.clear()
            t0 = time.monotonic()
            i, (intent, relevant) = next(cases)
            try:
                self._one(n, intent, relevant, user=f"user-{i % 40}")
            except OSError as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            n += 1
            time.sleep(max(0.0, 1.0 / self.rate_per_s - (time.monotonic() - t0)))
        self._idle.set()

    def _one(self, n: int, intent: str, relevant: str, user: str) -> None:
        serve, other = self.replicas[n % 2], self.replicas[(n + 1) % 2]
        body = {"instances": [{"intent": intent, "top_k": self.top_k, "user_id": user}]}
        status, out = post(f"{serve}/v1/models/caprank:predict", body)
        if status != 200:
            self.errors.append(f"predict {status}: {out}")
            return
        pred = out["predictions"][0]
        version = str(pred["model_version"])
        self.served[version] = self.served.get(version, 0) + 1
        shown = [r["capability_id"] for r in pred["rankings"]]
        if not shown:
            return
        hit = relevant in shown
        feedback = {
            "request_id": pred["request_id"],
            "selected_capability": relevant if hit else shown[0],
            "outcome": "success" if hit else "failure",
            "execution_time_ms": 100,
            "user_id": user,
        }
        status, out = post(f"{other}/v1/feedback", feedback)
        if status in (200, 201, 202) and out.get("status") == "stored":
            self.acked.append(out["event_id"])
        else:
            self.errors.append(f"feedback {status}: {out}")
