"""A killed or interrupted `annotate` resumes: no trace lost or duplicated, no finished request sent again."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from support.annotate_script import assert_each_once, make_trace, responder, write_segmented
from support.openai_standin import Faults, OpenAIStandIn
from support.signals import sigint_raises

from openmementos.runtime.manifest import read_manifest

FAULTS = Faults(latency_s=0.15)


def command(in_dir: Path, out_dir: Path, base_url: str) -> list[str]:
    return [
        sys.executable, "-c", "from openmementos.cli import app; app()", "annotate", str(in_dir), str(out_dir),
        "--model", "gpt-4.1-mini", "--base-url", base_url, "--api-key", "sk-test-resume", "--concurrency", "4",
    ]  # fmt: skip


def interrupt_mid_run(server: OpenAIStandIn, cmd: list[str], sig: signal.Signals) -> tuple[Counter[str], int, str]:
    """Start annotate, stop it with `sig` after some answers; return the answers it surely received.

    The child gets SIGINT's default disposition even when this test run ignores it (`nohup make test`),
    and it is killed if it has not stopped within a minute, so the test can fail but never hang.
    """
    with sigint_raises():
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while sum(server.stats().chat_answered.values()) < 20:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "annotate made no progress"
            time.sleep(0.05)
        answered = server.stats().chat_answered
        time.sleep(0.3)  # every answer in the snapshot has reached the client (and its cache) by now
        process.send_signal(sig)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    time.sleep(0.3)  # requests that were in flight at the stand-in finish
    server.set_faults(FAULTS)  # reset the counters: from here on we count what the rerun sends
    return answered, process.returncode, out + err


def resume(server: OpenAIStandIn, cmd: list[str], answered: Counter[str]) -> None:
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    stats = server.stats()
    assert stats.chat_requests > 0, "the rerun had work left"
    resent = [key for key in answered if stats.chat_received[key]]
    assert resent == [], f"{len(resent)} requests answered before the stop were sent again"


def test_sigkill_then_rerun_loses_nothing_and_pays_nothing_twice(tmp_path: Path) -> None:
    traces = [make_trace(n) for n in range(16)]
    in_dir = write_segmented(tmp_path / "segmented", [traces[:8], traces[8:]])
    out = tmp_path / "annotated"
    with OpenAIStandIn(FAULTS, responder=responder) as server:
        cmd = command(in_dir, out, server.base_url)
        answered, code, _ = interrupt_mid_run(server, cmd, signal.SIGKILL)
        assert code == -signal.SIGKILL
        assert not read_manifest(out).complete
        resume(server, cmd, answered)
    rows, quarantined = assert_each_once(out, [trace.id for trace in traces])
    assert not quarantined and read_manifest(out).complete
    assert all(len(row.reviews) == len(row.blocks) for row in rows)


def test_ctrl_c_stops_cleanly_and_the_rerun_finishes(tmp_path: Path) -> None:
    traces = [make_trace(n) for n in range(16)]
    in_dir = write_segmented(tmp_path / "segmented", [traces[:5], traces[5:10], traces[10:]])
    out = tmp_path / "annotated"
    with OpenAIStandIn(FAULTS, responder=responder) as server:
        cmd = command(in_dir, out, server.base_url)
        answered, code, output = interrupt_mid_run(server, cmd, signal.SIGINT)
        assert code == 130 and "rerun to resume" in output, output
        summary = json.loads((out / "annotate_report.json").read_text())
        assert summary["last_run"]["interrupted"] and not summary["complete"]
        resume(server, cmd, answered)
    assert_each_once(out, [trace.id for trace in traces])
    assert json.loads((out / "annotate_report.json").read_text())["traces"]["annotated"] == 16
