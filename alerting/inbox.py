"""A webhook receiver for Alertmanager: keeps each notification it gets, as a person would get
it. The local stack runs one as the example route's pager and chat (make notifications lists
what arrived); the tests run one in-process to check what was delivered, by value.

  python -m alerting.inbox --port 9096 --file .state/notifications.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class Inbox:
    """Notifications by receiver path (/pager, /chat): Alertmanager's webhook payloads."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, file: Path | None = None):
        self.received: list[tuple[str, dict]] = []
        self.file = file
        self.lock = threading.Lock()
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    payload = json.loads(body)
                except ValueError:
                    self.send_response(400)
                    self.end_headers()
                    return
                inbox.keep(self.path.strip("/") or "default", payload)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def keep(self, receiver: str, payload: dict) -> None:
        with self.lock:
            self.received.append((receiver, payload))
            if self.file:
                line = {
                    "received_at": datetime.now(UTC).isoformat(),
                    "receiver": receiver,
                    **payload,
                }
                with self.file.open("a") as f:
                    f.write(json.dumps(line) + "\n")

    def notifications(self) -> list[tuple[str, str, dict]]:
        """(receiver, status, alert) for each alert of each notification, in arrival order."""
        with self.lock:
            return [
                (receiver, payload.get("status"), alert)
                for receiver, payload in self.received
                for alert in payload.get("alerts", [])
            ]

    def start(self) -> Inbox:
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def summary_line(record: dict) -> str:
    """One line per notification of the inbox file, for `make notifications`."""
    alerts = record.get("alerts", [])
    names = ", ".join(
        f"{a['labels'].get('device', '?')} ({a['annotations'].get('summary', '')})" for a in alerts
    )
    when, status = record["received_at"][:19], record.get("status", "")
    return f"{when}  {record['receiver']:<6} {status:<9} {names}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alerting.inbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9096)
    parser.add_argument("--file", type=Path, required=True, help="JSON lines, appended")
    parser.add_argument("--show", action="store_true", help="print what the file holds, exit")
    args = parser.parse_args(argv)
    if args.show:
        if not args.file.exists():
            print(f"no notifications yet ({args.file} does not exist)")
            return 0
        lines = args.file.read_text().splitlines()
        for line in lines[-50:]:
            print(summary_line(json.loads(line)))
        print(f"{len(lines)} notification(s) in {args.file}")
        return 0
    inbox = Inbox(args.host, args.port, args.file)
    print(f"inbox: webhook receiver on {inbox.url} -> {args.file}", flush=True)
    try:
        inbox.server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
