"""The device pool stops in bounded time whatever the parent's signal dispositions.

Each case runs in a subprocess that ignores SIGINT and SIGTERM, as a background job of a non-interactive
shell does after Dagster mapped SIGTERM to SIGINT's disposition: there sentence-transformers' own
`stop_multi_process_pool` waited forever on workers that ignored SIGTERM too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

IGNORE_SIGNALS = """
import signal
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
"""

# a worker that ignores SIGTERM, as any worker does when it inherits the parent's dispositions
STUBBORN = (
    IGNORE_SIGNALS
    + """
import json, time
import torch.multiprocessing as mp
from pipeline.embed_pool import stop_pool

if __name__ == "__main__":
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=time.sleep, args=(600,), daemon=True)
    p.start()
    time.sleep(1.0)
    pool = {"input": ctx.Queue(), "output": ctx.Queue(), "processes": [p]}
    started = time.monotonic()
    killed = stop_pool(pool, timeout_s=2.0)
    print(json.dumps({"seconds": time.monotonic() - started, "killed": len(killed)}))
"""
)

EMBEDDER = (
    IGNORE_SIGNALS
    + """
import json, sys, time
from pipeline.embed_config import EmbedConfig
from pipeline.embedder import Embedder

if __name__ == "__main__":
    emb = Embedder(EmbedConfig(model_dir=sys.argv[1], device="cpu", devices="cpu,cpu", batch_size=2, progress=False))
    vecs = emb.encode(["a short text", "another one", "three", "and four"])
    started = time.monotonic()
    emb.close()
    seconds = time.monotonic() - started
    # stopped at once, while the worker is still starting up (importing torch, loading the model)
    from pipeline.embed_pool import start_pool, stop_pool
    pool = start_pool(emb._st, ["cpu"])
    started = time.monotonic()
    killed = stop_pool(pool)
    print(json.dumps({
        "seconds": seconds,
        "rows": len(vecs),
        "starting_seconds": time.monotonic() - started,
        "starting_killed": len(killed),
    }))
"""
)


def _run(script: str, *args: str, timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    # SIGKILL on timeout: the child ignores SIGTERM
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall"] = time.monotonic() - started
    out["stderr"] = proc.stderr
    return out


def test_a_worker_that_ignores_sigterm_is_killed_after_the_join_timeout():
    out = _run(STUBBORN, timeout=120)
    assert out["killed"] == 1
    assert 1.5 <= out["seconds"] < 10


def test_the_embedding_pool_closes_with_sigterm_and_sigint_ignored(tmp_path):
    out = _run(EMBEDDER, str(tmp_path / "models"), timeout=300)
    assert out["rows"] == 4
    # the workers run with the default SIGTERM from their start, so terminate() ends them, busy or still
    # starting, and nothing waits for the kill
    assert out["seconds"] < 5, out
    assert out["starting_killed"] == 0 and out["starting_seconds"] < 5, out
    assert "did not exit on SIGTERM" not in out["stderr"]
