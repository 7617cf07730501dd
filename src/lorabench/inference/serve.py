"""`lorabench serve`: a run (or a saved ensemble) behind HTTP, on FastAPI + uvicorn.

- `POST /predict` {"texts": [...]} or {"records": [{column: value}, ...]} (the columns the run's `data.text`
  template reads), optional "threshold": answers {"predictions": [...], "threshold": ...}, each prediction the
  row `lorabench predict --probabilities` writes for it (label, label_name, probability, prob_<name>; multi_label:
  labels and prob_<label>; regression: prediction).
- `GET /health`, `GET /metadata` (model, task, labels, threshold, the run's metrics, batching and limits, the
  batches served so far), `GET /` (a page to type a text and see the probabilities), `GET /docs` and
  `/openapi.json` (FastAPI's).
- Concurrent requests are batched (`Batcher`): a pass takes every request waiting when it starts (those that came
  while the previous pass ran), up to `max_batch_rows` rows, and waits at most `max_wait_ms` (default 0) for more;
  one forward pass at a time, on the device the run's precision names.
- Too many rows or too long a text: 413; a malformed body: 422 (malformed JSON: 400); each with one line
  {"error": "..."}, and the server stays up. SIGTERM (uvicorn) stops accepting and finishes the requests in flight.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from lorabench.errors import LorabenchError
from lorabench.inference.onnx import ONNX_INFO, is_onnx_export
from lorabench.inference.predict import Predictor, check_request, open_predictor, predictions


class PredictRequest(BaseModel):
    """Rows to predict: `texts` (the text itself, for a run whose data.text is one column) or `records` (objects with
    the columns its data.text template reads); optional `threshold` (binary tasks: on P(positive); multi_label: every
    label)."""
    model_config = ConfigDict(extra="forbid")
    texts: list[str] | None = None
    records: list[dict[str, Any]] | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class ServeSettings:
    """How the server batches and what it accepts: `max_batch_rows` rows per forward pass, `max_wait_ms` (ms) a row
    waits for others (0: none; the requests that arrived while the previous pass ran are batched anyway, so a lone
    client waits for nothing and concurrent ones share passes), `max_rows` rows per request, `max_chars` characters
    per text (longer requests: 413)."""
    max_batch_rows: int = 64
    max_wait_ms: float = 0.0
    max_rows: int = 256
    max_chars: int = 20_000

    def check(self) -> None:
        """Raises `LorabenchError` naming the first setting out of range."""
        for name in ("max_batch_rows", "max_rows", "max_chars"):
            if getattr(self, name) < 1:
                raise LorabenchError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise LorabenchError(f"--max-wait-ms must be >= 0, got {self.max_wait_ms}")


@dataclass
class _Job:
    frame: pd.DataFrame
    future: asyncio.Future


@dataclass
class Batcher:
    """Batches the rows of concurrent requests into shared forward passes. `submit(frame)` -> (rows, classes)
    float64 outputs of those rows. Each forward pass takes the waiting requests in arrival order up to
    `max_batch_rows` rows (a larger request goes alone), waiting at most `max_wait_ms` after the first for more.
    `batches` records (requests, rows) of every pass."""
    predictor: Predictor
    settings: ServeSettings
    batches: list[tuple[int, int]] = field(default_factory=list)
    _queue: asyncio.Queue | None = None
    _task: asyncio.Task | None = None

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._queue is not None:
            await self._queue.join()
        if self._task is not None:
            self._task.cancel()

    async def submit(self, frame: pd.DataFrame) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(frame, future))
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        carry: _Job | None = None
        while True:
            first = carry or await self._queue.get()
            carry = None
            jobs, rows = [first], len(first.frame)
            deadline = loop.time() + self.settings.max_wait_ms / 1000
            while rows < self.settings.max_batch_rows:
                try:  # what is already waiting (requests that came during the previous pass) goes first
                    job = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    if deadline <= loop.time():
                        break
                    try:
                        job = await asyncio.wait_for(self._queue.get(), deadline - loop.time())
                    except asyncio.TimeoutError:
                        break
                if rows + len(job.frame) > self.settings.max_batch_rows:
                    carry = job  # first in the next pass
                    break
                jobs.append(job)
                rows += len(job.frame)
            frame = pd.concat([j.frame for j in jobs], ignore_index=True)
            try:
                out = await loop.run_in_executor(None, self._forward, frame)
                self.batches.append((len(jobs), rows))
                start = 0
                for j in jobs:
                    j.future.set_result(out[start:start + len(j.frame)])
                    start += len(j.frame)
            except Exception as e:  # noqa: BLE001 - every waiting request gets the error, the loop goes on
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(e)
            finally:
                for _ in jobs:
                    self._queue.task_done()

    def _forward(self, frame: pd.DataFrame) -> np.ndarray:
        return self.predictor.probs(frame, "request", max(len(frame), 1), False)


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and v != v:
        return None
    return v


def create_app(run_dir: str | Path, settings: ServeSettings | None = None, *, predictor: Predictor | None = None,
               backend: str = "auto"):
    """The FastAPI app serving `run_dir` (a run or an ensemble folder, loaded once). Raises `LorabenchError` for a
    folder that is neither, as `predict` does."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse

    settings = settings or ServeSettings()
    settings.check()
    run = predictor or open_predictor(run_dir, True, keep_loaded=True, backend=backend)
    batcher = Batcher(run, settings)
    template = run.data_cfg["text"]

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="lorabench serve", version="1", lifespan=lifespan,
                  description=f"Predictions of {run_dir} ({run.task}), as `lorabench predict` writes them.")
    app.state.batcher = batcher

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = (exc.errors() or [{}])[0]
        if first.get("type") == "json_invalid":
            return error(400, f"malformed JSON: {first.get('ctx', {}).get('error', first.get('msg', ''))}")
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return error(422, f"{where or 'body'}: {first.get('msg', 'invalid')}")

    def frame_of(req: PredictRequest) -> pd.DataFrame:
        if (req.texts is None) == (req.records is None):
            raise _Refused(422, "give exactly one of `texts` (a list of strings) or `records` (a list of objects)")
        n = len(req.texts if req.texts is not None else req.records)
        if n == 0:
            raise _Refused(422, "no rows to predict")
        if n > settings.max_rows:
            raise _Refused(413, f"{n} rows in one request; at most {settings.max_rows} (--max-rows)")
        if req.texts is not None:
            if "{" in template:
                raise _Refused(422, f"this run builds its text from columns ({template!r}): send `records`")
            frame = pd.DataFrame({template: req.texts})
        else:
            frame = pd.DataFrame.from_records(req.records)
        for col in frame.columns:
            longest = frame[col].map(lambda v: len(v) if isinstance(v, str) else 0).max()
            if longest > settings.max_chars:
                raise _Refused(413, f"a text of {longest} characters in {col!r}; at most {settings.max_chars} "
                                    "(--max-chars)")
        return frame

    @app.post("/predict")
    async def predict(req: PredictRequest):
        """The predictions of the rows, as `lorabench predict --probabilities` writes them."""
        try:
            frame = frame_of(req)
            check_request(run, frame, "request", req.threshold, "default")
            if req.threshold is not None and not 0.0 < req.threshold < 1.0:
                raise _Refused(422, f"threshold must be in (0, 1), got {req.threshold}")
        except _Refused as e:
            return error(e.status, str(e))
        except LorabenchError as e:
            return error(422, str(e).splitlines()[0])
        try:
            probs = await batcher.submit(frame)
            out, thr = predictions(run, frame, probs, req.threshold, probabilities=True)
        except LorabenchError as e:
            return error(422, str(e).splitlines()[0])
        except Exception as e:  # noqa: BLE001 - the request fails, the server stays up
            return error(500, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        rows = [{k: _plain(v) for k, v in r.items()} for r in out.to_dict("records")]
        return {"predictions": rows, "threshold": thr}

    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):  # 404, 405: one line too
        return error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metadata")
    async def metadata():
        """What is served: the run, its task, labels, threshold and metrics; batching and limits; batches so far."""
        rec = run.record or {}
        shared = [b for b in batcher.batches if b[0] > 1]
        return json.loads(json.dumps({
            "run": str(run_dir), "kind": rec.get("kind") or "run", "label": rec.get("label"),
            "model": (rec.get("model") or {}).get("name") if rec.get("kind") != "ensemble" else
            [m.get("label") for m in rec.get("members", [])],
            "task": run.task, "labels": run.names, "label_values": run.values, "threshold": run.threshold,
            "text": template, "metrics": rec.get("metrics"), "settings": settings.__dict__,
            "backend": "onnx" if is_onnx_export(run_dir) else "torch",
            "onnx": _onnx_info(run_dir),
            "batches": {"count": len(batcher.batches), "rows": sum(b[1] for b in batcher.batches),
                        "largest_rows": max((b[1] for b in batcher.batches), default=0),
                        "shared": len(shared), "most_requests": max((b[0] for b in batcher.batches), default=0)},
        }, default=str))

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return _PAGE.replace("__TITLE__", _escape(str(run_dir)))

    return app


def _onnx_info(run_dir: str | Path) -> dict | None:
    """What `onnx.json` says of an ONNX folder (opset, quantize, the export's check), None for a run folder."""
    p = Path(run_dir) / ONNX_INFO
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _escape(s: str) -> str:
    import html
    return html.escape(s)


@contextlib.contextmanager
def in_thread(app, host: str = "127.0.0.1", port: int = 0):
    """Serve `app` (`create_app`) with uvicorn in a background thread of this process, for a notebook, a test or a
    benchmark; yields its base URL (`port` 0: a free port) and stops it (finishing requests in flight) on exit."""
    import threading

    import uvicorn
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise LorabenchError(f"the server did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(60)


def serve(run_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8000, settings: ServeSettings | None = None,
          on_ready=None, backend: str = "auto") -> None:
    """Serve `run_dir` until SIGTERM / Ctrl-C (uvicorn; its graceful shutdown finishes requests in flight).
    `on_ready(url)` is called once the socket listens."""
    import socket

    import uvicorn
    try:  # a port in use or an address this machine does not have: one line, before the model is loaded
        with socket.create_server((host, port)):
            pass
    except OSError as e:
        raise LorabenchError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    app = create_app(run_dir, settings, backend=backend)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=30)
    server = uvicorn.Server(config)
    if on_ready is not None:
        original = server.startup

        async def startup(sockets=None):
            await original(sockets=sockets)
            on_ready(f"http://{host}:{port}")
        server.startup = startup
    try:
        server.run()
    except SystemExit as e:  # uvicorn's own exit when it cannot start (it logs why: -v shows it)
        raise LorabenchError(f"the server on {host}:{port} could not start (exit {e.code}); run with -v for why") from e


_PAGE = """<!DOCTYPE html><html><head><meta charset='utf-8'><title>lorabench serve</title><link rel='icon' href='data:,'>
<style>body{font-family:system-ui,sans-serif;max-width:760px;margin:2em auto;padding:0 1em;color:#222}
textarea{width:100%;height:6em;font-size:15px}button{font-size:15px;padding:0.4em 1em;margin:0.5em 0}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
.bar{background:#4a78c2;height:10px}.err{color:#b00020}</style></head><body>
<h1>lorabench serve</h1><p>__TITLE__</p>
<textarea id='text' placeholder='Type a text'></textarea><br><button id='go'>Predict</button>
<div id='out'></div>
<script>
document.getElementById('go').onclick = async () => {
  const out = document.getElementById('out');
  const text = document.getElementById('text').value;
  const r = await fetch('/predict', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                     body: JSON.stringify({texts: [text]})});
  const body = await r.json();
  if (!r.ok) { out.innerHTML = '<p class="err"></p>'; out.firstChild.textContent = body.error; return; }
  const row = body.predictions[0];
  const table = document.createElement('table');
  for (const [k, v] of Object.entries(row)) {
    const tr = table.insertRow();
    tr.insertCell().textContent = k;
    const cell = tr.insertCell();
    cell.textContent = typeof v === 'number' ? v.toFixed(4) : JSON.stringify(v);
    if (k.startsWith('prob_')) { const bar = document.createElement('div'); bar.className = 'bar';
      bar.style.width = (100 * v) + 'px'; cell.appendChild(bar); }
  }
  out.replaceChildren(table);
};
</script></body></html>
"""
