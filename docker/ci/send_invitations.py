#!/usr/bin/env python3
"""SMTP client of scripts/test-image's kill test: sends --count distinct invitations
(benches/chain_load.py's Google-shaped mail, a UID and Message-ID of their own each) to
--rcpt over --threads connections, and appends the UID of every mail the server accepted
with a 250 to --acks, at once. A mail whose session breaks (the container was killed) is
not retried: it never got its 250, so the sender keeps it, as a real MTA would; the client
reconnects until --deadline and goes on with the next mail.
"""

import argparse
import os
import smtplib
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benches"))
from chain_load import ORGANIZER, invitation  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--acks", required=True)
    p.add_argument("--count", type=int, default=500)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--rcpt", default="bob@example.org")
    p.add_argument("--deadline", type=float, default=300, help="seconds")
    args = p.parse_args()

    lock = threading.Lock()
    next_mail = iter(range(args.count))
    failed = []
    end = time.time() + args.deadline
    run = f"{os.getpid()}-{int(time.time())}"
    acks = open(args.acks, "a", encoding="utf-8", buffering=1)

    def take():
        with lock:
            return next(next_mail, None)

    def worker():
        smtp = None
        n = take()
        while n is not None and time.time() < end:
            uid = f"kill-{run}-{n}@test-image"
            try:
                if smtp is None:
                    smtp = smtplib.SMTP("127.0.0.1", args.port, timeout=30)
                    smtp.ehlo("test-image.example")
                smtp.sendmail(ORGANIZER, [args.rcpt], invitation(uid, ORGANIZER, [args.rcpt]))
            except (OSError, smtplib.SMTPException) as e:
                if smtp is not None:
                    # The session broke mid-mail: no 250, the mail stays the sender's.
                    with lock:
                        failed.append((uid, type(e).__name__))
                    n = take()
                smtp = None
                time.sleep(0.2)
                continue
            with lock:
                acks.write(uid + "\n")
            n = take()
        if smtp is not None:
            try:
                smtp.quit()
            except (OSError, smtplib.SMTPException):
                pass

    threads = [threading.Thread(target=worker) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"sent without a 250 (session broken): {len(failed)}", file=sys.stderr)


if __name__ == "__main__":
    main()
