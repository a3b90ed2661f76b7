"""A Determined master emulator for tests: a real HTTP server on 127.0.0.1 answering the REST
endpoints the `det` CLI (determined 0.38) uses to log in, create an experiment, list
experiments, and follow one and its trials.

Every response body is first read back with the `determined` package's own generated
bindings (`determined.common.api.bindings.v1...Response.from_json`), so a wrong shape fails
here instead of in the CLI. An experiment runs one emulated trial per task: the trial runs
`tests/fake_eval_framework.py` with the experiment's hyperparameters, which writes a real
eval-framework output folder where `hyperparameters.output_dir` says. The experiment is then
COMPLETED (ERROR when the trial fails). The server stops after `max_seconds` or
`max_requests`, whichever comes first.

    uv run python -m tests.determined_master --max-seconds 600   # prints its URL
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from determined.common.api import bindings

PUBLIC = ("/info", "/api/v1/master", "/api/v1/auth/login")
FAKE = Path(__file__).with_name("fake_eval_framework.py")
TOKEN = "emulated-token"
USER = {
    "id": 1,
    "username": "determined",
    "active": True,
    "admin": True,
    "agentUserGroup": None,
    "displayName": "determined",
    "modifiedAt": "2026-01-01T00:00:00Z",
    "remote": False,
}
MASTER_INFO = {
    "version": "0.38.1",
    "masterId": "emulated",
    "clusterId": "emulated",
    "clusterName": "emulated",
    "telemetryEnabled": False,
}

INFO = {"version": "0.38.1", "master_id": "emulated", "cluster_id": "emulated",
        "cluster_name": "emulated"}  # fmt: skip


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Master:
    """The experiments the emulator holds, their trials and the requests it served."""

    def __init__(self, *, max_seconds: float = 300, max_requests: int = 5000) -> None:
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.requests: list[tuple[str, str]] = []
        self.experiments: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> Master:
        self._thread.start()
        return self

    def _serve(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        self._server.timeout = 0.2
        while time.monotonic() < deadline and len(self.requests) < self.max_requests:
            self._server.handle_request()
        self._server.server_close()

    def stop(self) -> None:
        self.max_seconds = 0
        self._thread.join(timeout=5)

    def __enter__(self) -> Master:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # experiments ----------------------------------------------------------------------

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        config = yaml.safe_load(body["config"])
        with self._lock:
            exp_id = len(self.experiments) + 1
            hp = config.get("hyperparameters", {})
            tasks = hp["task_args"]
            tasks = tasks["vals"] if isinstance(tasks, dict) and "vals" in tasks else [tasks]
            exp = {
                "id": exp_id,
                "config": config,
                "original": body["config"],
                "state": "STATE_ACTIVE",
                "start": _now(),
                "end": None,
                "trials": [
                    {"id": exp_id * 100 + i, "state": "STATE_ACTIVE", "task_args": t}
                    for i, t in enumerate(tasks)
                ],
            }
            self.experiments[exp_id] = exp
        threading.Thread(target=self._run_trials, args=(exp,), daemon=True).start()
        return exp

    def _run_trials(self, exp: dict[str, Any]) -> None:
        hp = exp["config"]["hyperparameters"]
        failed = False
        for trial in exp["trials"]:
            argv = _trial_argv(hp, trial["task_args"])
            quiet = subprocess.DEVNULL
            code = subprocess.call(argv, timeout=120, stdout=quiet, stderr=quiet)
            with self._lock:
                trial["state"] = "STATE_COMPLETED" if code == 0 else "STATE_ERROR"
            failed = failed or code != 0
        with self._lock:
            exp["state"] = "STATE_ERROR" if failed else "STATE_COMPLETED"
            exp["end"] = _now()

    def experiment_json(self, exp: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            data = {
                "archived": False,
                "config": exp["config"],
                "id": exp["id"],
                "jobId": f"job-{exp['id']}",
                "name": str(exp["config"].get("name", "")),
                "numTrials": len(exp["trials"]),
                "originalConfig": exp["original"],
                "projectId": 1,
                "projectOwnerId": 1,
                "searcherType": exp["config"].get("searcher", {}).get("name", "single"),
                "startTime": exp["start"],
                "state": exp["state"],
                "username": "determined",
                "trialIds": [t["id"] for t in exp["trials"]],
                "hyperparameters": exp["config"].get("hyperparameters"),
            }
            if exp["end"]:
                data["endTime"] = exp["end"]
        return data

    def trial_json(self, exp: dict[str, Any], trial: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            return {
                "id": trial["id"],
                "experimentId": exp["id"],
                "startTime": exp["start"],
                "state": trial["state"],
                "restarts": 0,
                "hparams": {**exp["config"]["hyperparameters"], "task_args": trial["task_args"]},
                "totalBatchesProcessed": 0,
                "totalCheckpointSize": "0",
                "searcherMetricsValue": None,
            }

    # HTTP -------------------------------------------------------------------------------

    def answer(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any, Any]:
        """(status, JSON body, the bindings class that must read it back)."""
        parts = path.split("?")[0].strip("/").split("/")
        if method == "GET" and parts == ["info"]:
            # The CLI's version check; the one answer no generated binding describes.
            return 200, INFO, None
        if parts[:2] != ["api", "v1"]:
            return 404, {"error": {"error": "not found"}}, None
        route = parts[2:]
        if method == "GET" and route == ["master"]:
            return 200, MASTER_INFO, bindings.v1GetMasterResponse
        if method == "POST" and route == ["auth", "login"]:
            return 200, {"token": TOKEN, "user": USER}, bindings.v1LoginResponse
        if method == "GET" and route == ["me"]:
            return 200, {"user": USER}, bindings.v1GetMeResponse
        if method == "POST" and route == ["experiments"]:
            exp = self.create(body)
            out = {"config": exp["config"], "experiment": self.experiment_json(exp)}
            return 200, out, bindings.v1CreateExperimentResponse
        if method == "GET" and route == ["experiments"]:
            exps = [self.experiment_json(e) for e in self.experiments.values()]
            page = {"offset": 0, "limit": 0, "startIndex": 0, "endIndex": len(exps),
                    "total": len(exps)}  # fmt: skip
            return 200, {"experiments": exps, "pagination": page}, bindings.v1GetExperimentsResponse
        if len(route) >= 2 and route[0] == "experiments" and route[1].isdigit():
            exp = self.experiments.get(int(route[1]))
            if exp is None:
                return 404, {"error": {"error": "experiment not found"}}, None
            if method == "GET" and len(route) == 2:
                out = {"experiment": self.experiment_json(exp), "jobSummary": None}
                return 200, out, bindings.v1GetExperimentResponse
            if method == "GET" and route[2:] == ["trials"]:
                trials = [self.trial_json(exp, t) for t in exp["trials"]]
                page = {"offset": 0, "limit": 0, "startIndex": 0, "endIndex": len(trials),
                        "total": len(trials)}  # fmt: skip
                out = {"trials": trials, "pagination": page}
                return 200, out, bindings.v1GetExperimentTrialsResponse
        return 404, {"error": {"error": f"no route {method} {path}"}}, None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        master = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _reply(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else {}
                master.requests.append((method, self.path))
                public = self.path.split("?")[0] in PUBLIC
                if not public and self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    status, out, model = 401, {"error": {"error": "unauthenticated"}}, None
                else:
                    status, out, model = master.answer(method, self.path, body)
                if model is not None:
                    model.from_json(json.loads(json.dumps(out)))  # a wrong shape fails here
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._reply("GET")

            def do_POST(self) -> None:
                self._reply("POST")

        return Handler


def _trial_argv(hp: dict[str, Any], task: dict[str, Any]) -> list[str]:
    """eval-framework's Determined context turns hyperparameters into its run arguments."""
    argv = [sys.executable, str(FAKE), "--context", "determined"]
    argv += ["--llm-name", hp["llm_name"], "--output-dir", str(hp["output_dir"])]
    argv += ["--task-name", task["task_name"], "--num-fewshot", str(task["num_fewshot"])]
    for key in ("num_samples", "max_tokens", "batch_size"):
        if task.get(key) is not None:
            argv += [f"--{key.replace('_', '-')}", str(task[key])]
    llm_args = hp.get("llm_args") or {}
    if llm_args:
        argv += ["--llm-args", *(f"{k}={v}" for k, v in llm_args.items())]
    return argv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-seconds", type=float, default=600)
    args = parser.parse_args()
    master = Master(max_seconds=args.max_seconds).start()
    print(master.url, flush=True)
    master._thread.join()


if __name__ == "__main__":
    main()
