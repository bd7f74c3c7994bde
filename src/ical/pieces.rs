//! Facts of a large calendar read one top-level component at a time: calcard's tree of a
//! whole calendar is several times its text (a 25 MB calendar of 100,000 events took over
//! 300 MB), a piece's tree is small.

use super::props::method_field;
use super::{CalendarFacts, parse};

/// The size from which a calendar is parsed piecewise.
pub(super) const PIECEWISE_FROM: usize = 256 * 1024;

/// The body of a well-formed VCALENDAR cut into its top-level components and the runs of
/// VCALENDAR properties between them, in order, each a slice of `text`. `None` when the
/// structure is not plain (no `BEGIN:VCALENDAR` first, an `END` missing or unmatched): such
/// a calendar is parsed whole, with all of calcard's leniency.
pub(super) fn pieces(text: &str) -> Option<Vec<&str>> {
    let body = text.trim_start_matches('\u{feff}').trim_start();
    let mut lines = body.split_inclusive('\n');
    let first = lines.next()?;
    if !first.trim_end().eq_ignore_ascii_case("BEGIN:VCALENDAR") {
        return None;
    }
    let mut pieces = Vec::new();
    let mut depth = 1usize;
    let mut start = first.len();
    let mut at = first.len();
    let keyword = |line: &str, word: &str| {
        line.len() > word.len() && line[..word.len()].eq_ignore_ascii_case(word)
    };
    for line in lines {
        let end = at + line.len();
        if keyword(line, "BEGIN:") {
            if depth == 1 && start < at {
                pieces.push(&body[start..at]);
                start = at;
            }
            depth += 1;
        } else if keyword(line, "END:") {
            depth -= 1;
            if depth == 1 {
                pieces.push(&body[start..end]);
                start = end;
            } else if depth == 0 {
                if start < at {
                    pieces.push(&body[start..at]);
                }
                return Some(pieces);
            }
        }
        at = end;
    }
    None
}

/// [`CalendarFacts`] read piece by piece, as one parse of the whole would give them.
pub(super) fn facts_of_pieces(pieces: &[&str]) -> CalendarFacts {
    let mut facts = CalendarFacts::default();
    let mut method_value = None;
    for piece in pieces {
        let text = piece_calendar(piece);
        let Ok(calendar) = parse(&text) else {
            continue;
        };
        let of_piece = CalendarFacts::of(&calendar);
        if facts.method.is_none() {
            facts.method = of_piece.method;
            method_value = method_field(&calendar);
        }
        // the first VEVENT's fields, else the first VTODO's, as in a whole parse
        if facts.fields.is_none() || (!facts.has_event && of_piece.has_event) {
            facts.fields = of_piece.fields;
        }
        facts.has_event |= of_piece.has_event;
        facts.organizers.extend(of_piece.organizers);
        facts.attendees.extend(of_piece.attendees);
    }
    if let Some(fields) = &mut facts.fields {
        fields.method = method_value;
    }
    facts
}

/// The properties [`CalendarFacts::of`] reads, with the component boundaries.
const READ_PROPERTIES: [&str; 9] = [
    "BEGIN",
    "END",
    "UID",
    "SEQUENCE",
    "DTSTAMP",
    "RECURRENCE-ID",
    "METHOD",
    "ORGANIZER",
    "ATTENDEE",
];

/// A piece as a calendar of its own. From [`SKIM_FROM`] bytes on, only the lines of
/// [`READ_PROPERTIES`] (and their folded continuations) are kept: calcard's tree of a
/// megabyte DESCRIPTION is several times its size, and nothing reads it.
pub(super) fn piece_calendar(piece: &str) -> String {
    const BEGIN: &str = "BEGIN:VCALENDAR\r\n";
    const END: &str = "END:VCALENDAR\r\n";
    if piece.len() < SKIM_FROM {
        return format!("{BEGIN}{piece}{END}");
    }
    let mut text = String::from(BEGIN);
    let mut keep = false;
    for line in piece.split_inclusive('\n') {
        if !line.starts_with([' ', '\t']) {
            let name = line.split([';', ':']).next().unwrap_or_default().trim();
            keep = READ_PROPERTIES.iter().any(|p| p.eq_ignore_ascii_case(name));
        }
        if keep {
            text.push_str(line);
        }
    }
    text.push_str(END);
    text
}

/// The size from which a piece is skimmed (see [`piece_calendar`]).
pub(super) const SKIM_FROM: usize = 64 * 1024;
