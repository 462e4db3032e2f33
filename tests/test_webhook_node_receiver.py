"""A receiver written to the seed's webhook spec, in Node, accepts a real engine run's deliveries.

The receiver is what the seed describes: ``X-Webhook-Signature`` must equal the hex HMAC-SHA256 of
``JSON.stringify(JSON.parse(body))`` (``crypto.createHmac``), else 401. The engine runs the smoke job on the
demo model with a learning rate of 5e-05 (Python's json writes ``5e-05``, JavaScript ``0.00005``: a body
written by Python's json would fail here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.webhooks import SEED_STATUSES
from tests.engine_helpers import SAMPLE, run_engine, tiny_spec, write_spec

pytestmark = pytest.mark.slow
SECRET = "whsec_node_receiver_4f1a"
RECEIVER_JS = r"""
const http = require('http');
const crypto = require('crypto');
const fs = require('fs');
const secret = process.env.WEBHOOK_SECRET;
const log = process.argv[2];

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    const body = Buffer.concat(chunks).toString('utf8');
    const given = String(req.headers['x-webhook-signature'] || '');
    let payload = null;
    let ok = false;
    try {
      payload = JSON.parse(body);
      const expected = crypto.createHmac('sha256', secret).update(JSON.stringify(payload)).digest('hex');
      ok = given.length === expected.length && crypto.timingSafeEqual(Buffer.from(given), Buffer.from(expected));
    } catch (error) {
      ok = false;
    }
    fs.appendFileSync(log, JSON.stringify({ok, signature: given, body}) + '\n');
    res.writeHead(ok ? 200 : 401);
    res.end();
  });
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
"""


class NodeReceiver:
    def __init__(self, folder: Path, node: str) -> None:
        script = folder / "receiver.js"
        script.write_text(RECEIVER_JS, encoding="utf-8")
        self.log = folder / "received.jsonl"
        self.log.touch()
        env = {**os.environ, "WEBHOOK_SECRET": SECRET}
        self.process = subprocess.Popen([node, str(script), str(self.log)], stdout=subprocess.PIPE, text=True, env=env)
        assert self.process.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.process.stdout.readline())}/webhooks/training"

    def received(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines()]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[NodeReceiver]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed here (apt-get install nodejs; .ci/run installs it in CI)")
    running = NodeReceiver(tmp_path, node)
    yield running
    running.stop()


def test_a_seed_spec_node_receiver_accepts_a_real_runs_deliveries_and_rejects_a_tampered_one(
    receiver: NodeReceiver, demo_model: Path, tmp_path: Path
) -> None:
    spec = write_spec(
        tiny_spec(demo_model, SAMPLE, f"webhook_url={receiver.url}", "learning_rate=5e-05"), tmp_path / "spec.json"
    )
    result = run_engine(spec, tmp_path / "work", TRAINING_WEBHOOK_SECRET=SECRET)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    deliveries = receiver.received()
    assert deliveries and all(d["ok"] for d in deliveries), [d for d in deliveries if not d["ok"]][:1]
    payloads = [json.loads(d["body"]) for d in deliveries]
    statuses = [p["status"] for p in payloads]
    assert set(statuses) <= set(SEED_STATUSES)
    assert {"preprocessing", "model_loaded", "training"} <= set(statuses) and statuses[-1] == "completed"
    assert {"model_loading", "evaluating", "packaging"} <= {p["stage"] for p in payloads}
    assert any('"learning_rate":0.00005' in d["body"] for d in deliveries)
    assert "webhook_failed" not in (tmp_path / "work" / "events.jsonl").read_text(encoding="utf-8")

    # The same delivery with one value changed, or signed in the prefixed style, is refused.
    genuine = deliveries[-1]
    tampered = genuine["body"].replace('"status":"completed"', '"status":"failed"')
    assert tampered != genuine["body"]
    headers = {"Content-Type": "application/json", "X-Webhook-Signature": genuine["signature"]}
    assert httpx.post(receiver.url, content=tampered.encode(), headers=headers).status_code == 401
    prefixed = {**headers, "X-Webhook-Signature": "sha256=" + genuine["signature"]}
    assert httpx.post(receiver.url, content=genuine["body"].encode(), headers=prefixed).status_code == 401
    assert httpx.post(receiver.url, content=genuine["body"].encode(), headers=headers).status_code == 200
    assert [d["ok"] for d in receiver.received()[len(deliveries) :]] == [False, False, True]
