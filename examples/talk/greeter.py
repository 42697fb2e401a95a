"""The Python half of the README's worked example: an app that offers an HTTP service and
answers the messages in its inbox.

orchestratr launches it (a message with ``"launch": true`` does). It serves ``GET /hello`` on a
port of its own and says so in its ``launched`` notification (the service ``greeter-api``), so
other apps find it with ``GET /services``; then it reads its inbox, and answers each message
``{"name": ...}`` with a message of its own to the sender's inbox.

Needs only the standard library and orchestratr's ``client.py`` (installed, or copied beside).
"""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from orchestratr import client

NAME = "greeter"


class Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"hello": "from the greeter"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: this is an example."""


def main() -> None:
    server = HTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client.notify_launched(NAME, pid=os.getpid(), services=[{
        "name": "greeter-api", "type": "_http._tcp", "port": server.server_port,
        "txt": {"path": "/hello"}}])
    for message in client.inbox(NAME):  # what waited for us first, then each new one
        data = message["data"] if isinstance(message["data"], dict) else {}
        print(f"greeter: message {message['id']} from {message['from']}: {data}", flush=True)
        if message["from"]:
            client.send(message["from"], {"greeting": f"hello, {data.get('name', 'you')}"},
                        sender=NAME)


if __name__ == "__main__":
    main()
