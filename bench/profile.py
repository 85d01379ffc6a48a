"""Where the time goes: sampling profiles of the TaskManager JVM (Java Flight Recorder, through
jcmd) and of the Python UDF workers (py-spy), summarised as the functions with the most samples
on top of the stack (self time) and as shares per part (Flink, Kafka, JSON, JDBC, Python
scoring, ...). Used by `make bench --profile` while a run is in its steady state."""

from __future__ import annotations

import collections
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

# A frame's part of the pipeline, by the first prefix its class or file matches.
JVM_PARTS = (
    ("org.apache.flink.kafka.shaded.org.apache.kafka", "Kafka client"),
    ("org.apache.kafka", "Kafka client"),
    ("org.apache.flink.connector.kafka", "Kafka connector"),
    ("local.anomaly.flink", "the project's operators and format (jvm/)"),
    ("org.apache.flink.formats.json", "JSON format"),
    ("org.apache.flink.shaded.jackson2", "JSON (Jackson)"),
    ("org.apache.flink.connector.jdbc", "JDBC sink / lookup"),
    ("org.postgresql", "PostgreSQL driver"),
    ("org.apache.flink.python", "Python operator (JVM side)"),
    ("org.apache.beam", "Beam (Python operator transport)"),
    ("org.apache.flink.table.runtime.operators.window", "window aggregation"),
    ("org.apache.flink.table.runtime.operators.over", "OVER aggregates"),
    ("org.apache.flink.table.runtime", "Flink SQL runtime"),
    ("org.apache.flink.table.data", "Flink SQL rows"),
    ("org.apache.flink.runtime.state", "state backend"),
    ("org.apache.flink.runtime.io.network", "network / buffers"),
    ("org.apache.flink", "Flink other"),
    ("GeneratedClass", "generated SQL code"),
    ("java.", "JDK"),
    ("jdk.", "JDK"),
    ("sun.", "JDK"),
)
PY_PARTS = (
    ("udfs/", "our scoring UDF"),
    ("common/", "our shared code"),
    ("onnxruntime", "onnxruntime"),
    ("pandas", "pandas"),
    ("numpy", "numpy"),
    ("pyarrow", "pyarrow (Arrow batches)"),
    ("pyflink/fn_execution", "pyflink worker"),
    ("apache_beam", "Beam worker (gRPC transport)"),
    ("grpc", "gRPC"),
    ("threading.py", "idle / waiting"),
    ("queue.py", "idle / waiting"),
)


def part_of(name: str, parts) -> str:
    return next((label for prefix, label in parts if prefix in name), "other")


def summarise(counts: collections.Counter, parts, top: int = 12) -> dict:
    total = sum(counts.values()) or 1
    by_part: collections.Counter = collections.Counter()
    for name, n in counts.items():
        by_part[part_of(name, parts)] += n
    return {
        "samples": sum(counts.values()),
        "top_self": [(name, round(100 * n / total, 1)) for name, n in counts.most_common(top)],
        "parts": [(part, round(100 * n / total, 1)) for part, n in by_part.most_common()],
    }


def profile_jvm(pid: int, seconds: float, out_dir: Path) -> dict:
    """A Flight Recorder recording of ``pid`` for ``seconds``; self samples per method."""
    if not (shutil.which("jcmd") and shutil.which("jfr")):
        return {"error": "jcmd/jfr not found (a JDK, not a JRE, has them)"}
    out_dir.mkdir(parents=True, exist_ok=True)
    recording = out_dir / f"taskmanager-{pid}.jfr"
    subprocess.run(
        ["jcmd", str(pid), "JFR.start", "name=bench", "settings=profile",
         f"duration={int(seconds)}s", f"filename={recording}"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    # The recording is written out when its duration ends; read it once it parses.
    time.sleep(seconds + 3)
    printed = None
    for _ in range(20):
        printed = subprocess.run(
            ["jfr", "print", "--json", "--events", "jdk.ExecutionSample", str(recording)],
            capture_output=True, text=True,
        )  # fmt: skip
        if printed.returncode == 0:
            break
        time.sleep(2)
    if printed is None or printed.returncode != 0:
        return {"error": f"jfr print failed: {printed.stderr[-300:] if printed else ''}"}
    counts: collections.Counter = collections.Counter()
    tasks: collections.Counter = collections.Counter()
    for event in json.loads(printed.stdout)["recording"]["events"]:
        frames = (event["values"].get("stackTrace") or {}).get("frames") or []
        if frames:
            method = frames[0]["method"]
            # JFR writes class names with '/'.
            counts[f"{method['type']['name'].replace('/', '.')}.{method['name']}"] += 1
            tasks[task_of((event["values"].get("sampledThread") or {}).get("javaName") or "")] += 1
    total = sum(tasks.values()) or 1
    return {
        "recording": str(recording),
        **summarise(counts, JVM_PARTS),
        "tasks": [(task, round(100 * n / total, 1)) for task, n in tasks.most_common(8)],
    }


def task_of(thread: str) -> str:
    """A sampled thread's task: a chain's first operator and its last (a sink, or where the
    chain hands on), as the web UI names them; other threads by name."""
    chain = re.sub(r" \(\d+/\d+\)(#\d+)?$", "", thread)
    if " -> " not in chain:
        return re.sub(r"-\d+$", "", chain) or "?"
    operators = [op.strip(" ()") for op in re.split(r" -> |, ", chain)]
    return f"{operators[0]} … {operators[-1]}"


def profile_python(pids: list[int], seconds: float, out_dir: Path) -> dict:
    """py-spy on each Python worker for ``seconds`` (in parallel); self samples per function."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        return {"error": "py-spy not found (`make setup` installs it)"}
    out_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for pid in pids:
        out = out_dir / f"python-worker-{pid}.txt"
        cmd = [
            *(py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds))),
            *("--rate", "50", "--format", "raw", "--nonblocking", "--output", str(out)),
        ]
        procs.append(
            (out, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        )
    counts: collections.Counter = collections.Counter()
    errors = []
    for out, proc in procs:
        _, err = proc.communicate(timeout=seconds + 60)
        if proc.returncode != 0 or not out.exists():
            errors.append(err.decode(errors="replace")[-300:])
            continue
        for line in out.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if stack and n.isdigit():
                counts[stack.split(";")[-1]] += int(n)
    result = summarise(counts, PY_PARTS)
    if errors:
        result["errors"] = errors
    return result
