"""`lorabench serve` (issue 26, item 1): a tiny run and a saved ensemble served on a free local port, asked with a real
HTTP client (urllib), answer what `lorabench predict` writes for the same rows; concurrent requests share forward
passes; bad requests are one-line 4xx and the server stays up; SIGTERM finishes the requests in flight."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from browser_support import CHROMIUM_ARGS
from lorabench.cli import main
from lorabench.inference.serve import ServeSettings, create_app, in_thread

CONFIG = """
name: serve
data: {max_train_samples: 160, max_eval_samples: 60}
model: {max_length: 32}
train: {epochs: 1, batch_size: 16, learning_rate: 1.0e-3, serving_cost: false}
ensemble_top: 2
models:
  - name: tfidf-logreg
  - name: tiny-bert
"""
TEXTS = ["forest fire near la ronge sask canada", "what a lovely day", "flood warning for the river tonight",
         "13,000 people receive #wildfires evacuation orders", "I love fruits", "storm damage on main street",
         "the sky is on fire tonight", "residents asked to shelter in place", "new album out now", "earthquake hits"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    (tmp / "c.yaml").write_text(CONFIG)
    assert main(["compare", str(tmp / "c.yaml"), "--output-dir", str(tmp / "c")]) == 0
    pd.DataFrame({"id": range(len(TEXTS)), "text": TEXTS}).to_csv(tmp / "rows.csv", index=False)
    return tmp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(run_dir: Path, **settings):
    """`create_app` on a free 127.0.0.1 port, in a thread of this process (`serve.in_thread`); yields (URL, app)."""
    app = create_app(run_dir, ServeSettings(**settings))
    with in_thread(app) as url:
        yield url, app


def post(url: str, body, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url + "/predict", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get(url: str, path: str):
    with urllib.request.urlopen(url + path, timeout=30) as r:
        body = r.read()
        return r.status, (json.loads(body) if r.headers.get_content_type() == "application/json" else body.decode())


def predicted(runs: Path, run_dir: Path, name: str) -> pd.DataFrame:
    out = runs / f"{name}.jsonl"
    assert main(["predict", str(run_dir), "--input", str(runs / "rows.csv"), "--output", str(out),
                 "--probabilities"]) == 0
    return pd.DataFrame([json.loads(x) for x in out.read_text().splitlines()])


def test_served_predictions_equal_predict_and_requests_share_batches(runs):
    run_dir = runs / "c" / "tiny-bert-seed42"
    want = predicted(runs, run_dir, "tiny")
    cols = ["prob_not_disaster", "prob_disaster"]
    with served(run_dir, max_wait_ms=20) as (url, app):
        assert get(url, "/health") == (200, {"status": "ok"})
        status, body = post(url, {"texts": TEXTS})
        assert status == 200
        got = pd.DataFrame(body["predictions"])
        assert list(got.columns) == ["label", "label_name", "probability", *cols]
        assert got[cols].to_numpy() == pytest.approx(want[cols].to_numpy(), abs=1e-6)
        assert got["label"].tolist() == want["label"].tolist()
        status, body = post(url, {"records": [{"text": t} for t in TEXTS[:3]], "threshold": 0.3})
        assert status == 200 and body["threshold"] == 0.3

        # 200 concurrent requests from a bounded pool: every answer right, some forward passes shared
        def ask(i: int):
            rows = [TEXTS[(i + j) % len(TEXTS)] for j in range(1 + i % 3)]
            status, body = post(url, {"texts": rows})
            return i, rows, status, body
        with ThreadPoolExecutor(max_workers=32) as pool:
            answers = list(pool.map(ask, range(200)))
        index = {t: k for k, t in enumerate(TEXTS)}
        for i, rows, status, body in answers:
            assert status == 200, (i, body)
            p = np.array([[r[c] for c in cols] for r in body["predictions"]])
            assert p == pytest.approx(want[cols].to_numpy()[[index[t] for t in rows]], abs=1e-6), i
        meta = get(url, "/metadata")[1]
        assert meta["task"] == "single_label" and meta["labels"] == ["not_disaster", "disaster"]
        assert meta["metrics"]["val"]["f1"] is not None
        assert meta["batches"]["shared"] > 0 and meta["batches"]["most_requests"] > 1, meta["batches"]
        assert sum(n for n, _ in app.state.batcher.batches) == 202  # every request in exactly one pass
        print("batches:", meta["batches"])


@pytest.mark.parametrize("body, raw, status, message", [
    (None, b'{"texts": ["a"', 400, "malformed JSON"),
    ({"txt": ["a"]}, None, 422, "txt: Extra inputs are not permitted"),
    ({}, None, 422, "give exactly one of `texts`"),
    ({"texts": "a text"}, None, 422, "texts: Input should be a valid list"),
    ({"records": [{"tweet": "a"}]}, None, 422, "no column 'text' for data.text"),
    ({"texts": ["a"] * 9}, None, 413, "9 rows in one request; at most 8 (--max-rows)"),
    ({"texts": ["x" * 101]}, None, 413, "a text of 101 characters in 'text'; at most 100"),
    ({"texts": ["a"], "threshold": 1.5}, None, 422, "threshold must be in (0, 1)"),
])
def test_bad_requests_are_one_line_4xx_and_the_server_stays_up(runs, body, raw, status, message):
    with served(runs / "c" / "tiny-bert-seed42", max_rows=8, max_chars=100) as (url, _):
        got, answer = post(url, body, raw)
        assert got == status and list(answer) == ["error"] and message in answer["error"], answer
        assert "\n" not in answer["error"]
        assert post(url, {"texts": ["still up"]})[0] == 200


def test_an_ensemble_folder_serves_the_ensembles_probabilities(runs):
    folder = runs / "c" / "ensemble"
    want = predicted(runs, folder, "ensemble")
    with served(folder) as (url, _):
        status, body = post(url, {"texts": TEXTS})
        meta = get(url, "/metadata")[1]
    assert status == 200 and meta["kind"] == "ensemble"
    got = pd.DataFrame(body["predictions"])
    cols = ["prob_not_disaster", "prob_disaster"]
    assert got[cols].to_numpy() == pytest.approx(want[cols].to_numpy(), abs=1e-6)


@pytest.mark.system
def test_sigterm_finishes_the_requests_in_flight(runs):
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "lorabench"), "serve", str(runs / "c" / "tiny-bert-seed42"),
                             "--port", str(port), "--max-wait-ms", "1500"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            with contextlib.suppress(OSError):
                if get(url, "/health")[0] == 200:
                    break
            time.sleep(0.1)
        with ThreadPoolExecutor(max_workers=8) as pool:
            futures = [pool.submit(post, url, {"texts": [t]}) for t in TEXTS[:8]]
            time.sleep(0.5)  # the requests wait in the batcher (max_wait_ms 1500) when SIGTERM comes
            proc.send_signal(signal.SIGTERM)
            answers = [f.result(timeout=60) for f in futures]
        assert [s for s, _ in answers] == [200] * 8, answers
        # uvicorn re-raises the signal once it has shut down gracefully: the process ends by SIGTERM, as asked
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = proc.stdout.read()
    assert "serving" in out and "Traceback" not in out, out


@pytest.mark.browser
def test_the_page_predicts_a_typed_text_in_headless_chromium(runs, chromium):
    sync_playwright, executable = chromium
    errors = []
    with served(runs / "c" / "tiny-bert-seed42") as (url, _), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            page = browser.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(url + "/", wait_until="load", timeout=30_000)
            page.fill("#text", "forest fire near la ronge")
            page.click("#go")
            page.wait_for_selector("#out table", timeout=30_000)
            cells = page.eval_on_selector_all("#out td", "els => els.map(e => e.textContent)")
        finally:
            browser.close()
    assert errors == [], errors
    assert "prob_disaster" in cells and "label_name" in cells, cells


def test_a_port_in_use_is_a_one_line_error(runs, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(runs / "c" / "tiny-bert-seed42"), "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot listen on 127.0.0.1:{port}" in err[0], err


def test_unknown_paths_and_methods_answer_one_line_json(runs):
    with served(runs / "c" / "tiny-bert-seed42") as (url, _):
        for method, path, code in (("GET", "/nope", 404), ("GET", "/predict", 405)):
            req = urllib.request.Request(url + path, method=method)
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=30)
            assert e.value.code == code and list(json.loads(e.value.read())) == ["error"]
        assert get(url, "/metadata")[1]["backend"] == "torch"
