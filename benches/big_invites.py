#!/usr/bin/env python3
"""Large invitations for scripts/bench-memory and the memory tests (issue 18): writes one
RFC 5322 message whose text/calendar part (base64, as Outlook sends it) is about --ics-kb
kilobytes and holds --events VEVENTs, organised by alice.martin@partner.example.

  big_invites.py --ics-kb 105 --events 1 --out mail.eml
  big_invites.py --ics-kb 25600 --events 100000 --out mail.eml

The first VEVENT's UID is printed on stdout. The size is reached with a long DESCRIPTION
(folded at 75 octets) on each event, so the parse has real work to do.
"""

import argparse
import base64
import sys
import uuid

ORGANIZER = "alice.martin@partner.example"


def fold(line):
    out = [line[:75]]
    rest = line[75:]
    while rest:
        out.append(" " + rest[:74])
        rest = rest[74:]
    return "\r\n".join(out) + "\r\n"


def calendar(ics_bytes, events, uid):
    head = (
        "BEGIN:VCALENDAR\r\nPRODID:-//mailetd bench//big invites//EN\r\nVERSION:2.0\r\n"
        "METHOD:REQUEST\r\n"
    )
    tail = "END:VCALENDAR\r\n"

    def event(n, description):
        return (
            "BEGIN:VEVENT\r\n"
            f"UID:{uid if n == 0 else f'{uid}-{n}'}\r\n"
            "DTSTAMP:20261201T090000Z\r\n"
            f"DTSTART:2027{1 + n % 12:02d}{1 + n % 28:02d}T100000Z\r\n"
            f"SUMMARY:Review {n}\r\n"
            f"ORGANIZER:mailto:{ORGANIZER}\r\n"
            + ("ATTENDEE;RSVP=TRUE:mailto:bob@example.org\r\n" if n == 0 else "")
            + (fold("DESCRIPTION:" + description) if description else "")
            + "END:VEVENT\r\n"
        )

    bare = len(head) + len(tail) + events * len(event(1, ""))
    per_event = max(0, (ics_bytes - bare) // max(events, 1))
    # the folds add 3 octets every 74
    text = ("Agenda item, notes and minutes. " * (per_event // 32 + 1))[: per_event * 74 // 77]
    return head + "".join(event(n, text) for n in range(events)) + tail


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ics-kb", type=int, required=True)
    parser.add_argument("--events", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    uid = str(uuid.uuid4())
    ics = calendar(args.ics_kb * 1024, args.events, uid).encode()
    body = base64.encodebytes(ics).decode().replace("\n", "\r\n")
    message = (
        f"From: Alice Martin <{ORGANIZER}>\r\n"
        "To: Bob <bob@example.org>\r\n"
        "Subject: Large invitation\r\n"
        f"Message-ID: <{uid}@partner.example>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="b1"\r\n'
        "\r\n"
        "--b1\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "You are invited.\r\n"
        "--b1\r\n"
        'Content-Type: text/calendar; charset=utf-8; method=REQUEST\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n" + body + "--b1--\r\n"
    )
    with open(args.out, "w", newline="") as f:
        f.write(message)
    print(uid)


if __name__ == "__main__":
    sys.exit(main())
