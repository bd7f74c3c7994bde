#!/usr/bin/env python3
"""SMTP load for scripts/bench-chain where every mail must be distinct (smtp-source -F sends
one file over and over): Google-shaped invitations (multipart/alternative, text/plain +
text/calendar; method=REQUEST) with a unique UID each, sent with smtplib.

  probe     one connection, one mail every --interval seconds to --rcpt; writes
            "<time of the 250> <uid>" per mail to --acks (latency 250 -> delivered)
  distinct  --threads connections sending --count mails as fast as they are accepted;
            --mode contacts: from owner<n>@<domain> to 5 unique external addresses
            (5 new collected contacts per mail); --mode calendar: from an external
            organizer to attendee<n>@<domain> (one new event per mail)
"""

import argparse
import smtplib
import sys
import threading
import time
import uuid

ORGANIZER = "alice.martin@partner.example"


def calendar(uid, organizer, attendees, method="REQUEST"):
    """The invitation's calendar; `method=None` gives the object a calendar stores (what
    mailetd PUTs for a new event, and what scripts/bench-chain PUTs for reference)."""
    attendee_lines = "".join(
        f"ATTENDEE;CUTYPE=INDIVIDUAL;ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:{a}\r\n"
        for a in attendees
    )
    return (
        "BEGIN:VCALENDAR\r\nPRODID:-//Google Inc//Google Calendar 70.9054//EN\r\nVERSION:2.0\r\n"
        "CALSCALE:GREGORIAN\r\n" + (f"METHOD:{method}\r\n" if method else "") + "BEGIN:VEVENT\r\n"
        "DTSTART:20261210T090000Z\r\nDTEND:20261210T100000Z\r\nDTSTAMP:20261122T020000Z\r\n"
        f"ORGANIZER;CN=Alice Martin:mailto:{organizer}\r\nUID:{uid}\r\n{attendee_lines}"
        "CREATED:20261122T020000Z\r\nDESCRIPTION:Weekly sync\r\nLAST-MODIFIED:20261122T020000Z\r\n"
        "LOCATION:Room 4\r\nSEQUENCE:0\r\nSTATUS:CONFIRMED\r\nSUMMARY:Bench sync\r\n"
        "TRANSP:OPAQUE\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def invitation(uid, organizer, attendees, sender=None):
    sender = sender or organizer
    ics = calendar(uid, organizer, attendees)
    boundary = "000000000000" + uuid.uuid4().hex[:16]
    return (
        f"Date: Sun, 22 Nov 2026 02:00:00 +0000\r\nMessage-ID: <{uid}>\r\n"
        f"Subject: Invitation: Bench sync\r\nFrom: Alice Martin <{sender}>\r\n"
        f"To: {', '.join(attendees)}\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain; charset=\"UTF-8\"\r\n\r\n"
        "You have been invited to the following event.\r\n\r\n"
        f"--{boundary}\r\nContent-Type: text/calendar; charset=\"UTF-8\"; method=REQUEST\r\n"
        f"Content-Transfer-Encoding: 7bit\r\n\r\n{ics}\r\n--{boundary}--\r\n"
    )


def probe(args):
    with open(args.acks, "w", encoding="utf-8", buffering=1) as acks, smtplib.SMTP("127.0.0.1", args.port) as smtp:
        smtp.ehlo("probe.bench")
        deadline = time.time() + args.duration
        n = 0
        while time.time() < deadline:
            uid = f"probe-{n}-{uuid.uuid4().hex[:8]}@bench"
            smtp.sendmail(ORGANIZER, [args.rcpt], invitation(uid, ORGANIZER, [args.rcpt]))
            acks.write(f"{time.time():.6f} {uid}\n")
            n += 1
            time.sleep(args.interval)
    print(n)


def distinct(args):
    counter = iter(range(args.count))
    lock = threading.Lock()
    acks = open(args.acks, "w", encoding="utf-8") if args.acks else None
    errors = []

    def worker():
        with smtplib.SMTP("127.0.0.1", args.port) as smtp:
            smtp.ehlo("load.bench")
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                uid = f"load-{n}-{uuid.uuid4().hex[:8]}@bench"
                if args.mode == "contacts":
                    owner = f"owner{n % args.users}@{args.domain}"
                    rcpts = [f"c{n}-{k}@ext.example" for k in range(5)]
                    msg = invitation(uid, owner, rcpts)
                    sender = owner
                else:
                    rcpts = [f"attendee{n % args.users}@{args.domain}"]
                    msg = invitation(uid, ORGANIZER, rcpts)
                    sender = ORGANIZER
                try:
                    smtp.sendmail(sender, rcpts, msg)
                except smtplib.SMTPException as e:
                    errors.append(str(e))
                    continue
                if acks:
                    with lock:
                        acks.write(f"{time.time():.6f} {uid}\n")

    threads = [threading.Thread(target=worker) for _ in range(args.threads)]
    start = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - start
    if acks:
        acks.close()
    if errors:
        print(f"{len(errors)} SMTP errors, first: {errors[0]}", file=sys.stderr)
    print(f"{args.count / elapsed:.0f}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["probe", "distinct"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--acks")
    p.add_argument("--rcpt", default="bob@example.org")
    p.add_argument("--interval", type=float, default=0.02)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--mode", choices=["contacts", "calendar"], default="contacts")
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--domain", default="example.org")
    args = p.parse_args()
    probe(args) if args.command == "probe" else distinct(args)


if __name__ == "__main__":
    main()
