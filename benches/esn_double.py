#!/usr/bin/env python3
"""A TEST DOUBLE of esn-sabre's ITIP endpoint and of the OpenPaaS user API, for
scripts/bench-chain only (neither can run here: they need MongoDB, RabbitMQ, LDAP...).

It follows the same contract as tests/it/support/esn_double.rs (spec twake-collector.md
sections 5 and 6) and nothing more:
  GET  /api/users?email=E     admin Basic auth (401 otherwise); 400 without a domain;
                              200 [user] for addresses in --domain, 200 [] otherwise
  ITIP /calendars/{id}        Basic "admin&E:password" (401 otherwise); 400 unless uid is set
                              and sender, recipient, ical are non-empty; 403 unless E is the
                              recipient; 404 unless id is E's id; 204
  PROPFIND /                  207
  GET|PUT /addressbooks/{id}/collected/{uid}.vcf    404/200 / 201, 412 when If-None-Match: *
                              meets a card already PUT (sabre/dav's precondition check)

GET /_counts answers {"card_requests": n, "cards": n}: the address-book requests received
and the distinct cards stored, for the bench's requests per new contact.

Every accepted ITIP is appended to --log as "<unix time> <uid> <recipient>", the time taken
when the request is answered: the bench compares it with the SMTP client's 250 times.
"""

import argparse
import base64
import hashlib
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

OPENPAAS_ADMIN = ("admin@linagora.local", "secret")
DAV_ADMIN = ("admin", "secret123")


def user_id(email):
    return hashlib.sha1(email.encode()).hexdigest()[:24]


def basic(headers):
    value = headers.get("Authorization", "")
    if not value.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(value[6:]).decode().partition(":")
    except ValueError:
        return None
    return user, password


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as esn-sabre behind nginx

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def impersonated(self):
        creds = basic(self.headers)
        if not creds:
            return None
        user, password = creds
        admin, sep, email = user.partition("&")
        if not sep or admin != DAV_ADMIN[0] or password != DAV_ADMIN[1]:
            return None
        if not email.lower().endswith("@" + self.server.domain):
            return None
        return email.lower()

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/_counts":
            with self.server.lock:
                counts = {"card_requests": self.server.card_requests, "cards": len(self.server.cards)}
            return self.answer(200, json.dumps(counts).encode())
        if url.path.endswith("/users"):
            if basic(self.headers) != OPENPAAS_ADMIN:
                return self.answer(401)
            email = parse_qs(url.query).get("email", [""])[0]
            if "@" not in email:
                return self.answer(400, b'{"error":{"details":"\'email\' query parameter must contain a domain part"}}')
            users = []
            if email.endswith("@" + self.server.domain):
                users = [{"preferredEmail": email, "_id": user_id(email), "emails": [email],
                          "state": [], "objectType": "user"}]
            return self.answer(200, json.dumps(users).encode(),
                               [("Content-Type", "application/json;charset=utf-8"),
                                ("Cache-Control", "max-age=60, public")])
        if url.path.startswith("/addressbooks/"):
            self.body()
            if not self.impersonated():
                return self.answer(401)
            with self.server.lock:
                self.server.card_requests += 1
                return self.answer(200 if url.path in self.server.cards else 404)
        return self.answer(404)

    def do_PUT(self):
        self.body()
        if not self.path.startswith("/addressbooks/"):
            return self.answer(404)
        if not self.impersonated():
            return self.answer(401)
        with self.server.lock:
            self.server.card_requests += 1
            if self.path in self.server.cards:
                if self.headers.get("If-None-Match", "").strip() == "*":
                    return self.answer(412)
                return self.answer(204)
            self.server.cards.add(self.path)
        return self.answer(201)

    def do_PROPFIND(self):
        self.body()
        return self.answer(207 if self.impersonated() else 401, b"<d:multistatus xmlns:d=\"DAV:\"/>")

    def do_ITIP(self):
        raw = self.body()
        email = self.impersonated()
        if not email:
            return self.answer(401)
        try:
            doc = json.loads(raw)
        except ValueError:
            return self.answer(400)
        if doc.get("uid") is None or not all(doc.get(k) for k in ("sender", "recipient", "ical")):
            return self.answer(400)
        if "BEGIN:VCALENDAR" not in doc["ical"]:
            return self.answer(500)
        recipient = doc["recipient"].lower()
        if recipient != email:
            return self.answer(403)
        if self.path.rstrip("/") != "/calendars/" + user_id(recipient):
            return self.answer(404)
        self.answer(204)
        self.server.record(doc["uid"], recipient)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512

    def __init__(self, address, domain, log):
        super().__init__(address, Handler)
        self.domain = domain
        self.log = log
        self.lock = threading.Lock()
        self.cards = set()
        self.card_requests = 0

    def record(self, uid, recipient):
        line = f"{time.time():.6f} {uid} {recipient}\n"
        with self.lock:
            self.log.write(line)
            self.log.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--domain", default="example.org")
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    with open(args.log, "a", encoding="utf-8") as log:
        server = Server(("127.0.0.1", args.port), args.domain.lower(), log)
        print(f"esn double on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
