//! iCalendar helpers shared by the calendar mailets: lenient parsing with calcard, text
//! decoding of raw calendar bytes, splitting a body that holds several VCALENDAR objects,
//! calendar addresses (`mailto:` or RFC 7986 `EMAIL=`), and the scheduling fields of a
//! calendar's first VEVENT (or VTODO).

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use calcard::Entry;
use calcard::icalendar::{
    ICalendar, ICalendarComponent, ICalendarComponentType, ICalendarProperty,
};
use mail_parser::decoders::charsets::map::charset_decoder;

use crate::address::MailAddress;

mod pieces;
pub mod props;

use pieces::{PIECEWISE_FROM, facts_of_pieces, pieces};
pub use props::{
    address_text, cal_address, date_time_text, dtstamp, first_value, method, method_field,
    recurrence_id, sequence, uid, value_text,
};

/// Why a text is not an iCalendar object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing but blanks.
    #[error("empty calendar")]
    Empty,
    /// Another component at the top (a bare VEVENT).
    #[error("top-level component is {0}, not VCALENDAR")]
    NotVCalendar(String),
    /// No component at all.
    #[error("no VCALENDAR component")]
    NoVCalendar,
    /// What calcard stopped at (a line that is no property, a missing END…), described.
    #[error("{0}")]
    Malformed(String),
}

/// Parses an iCalendar object the way ical4j's relaxed mode would accept it: unknown
/// properties and malformed lines are skipped, folded lines are unfolded, a missing `END`
/// at end of input is tolerated. Fails when the text is not a `VCALENDAR` at all.
pub fn parse(text: &str) -> Result<ICalendar, ParseError> {
    let text = text.trim_start_matches('\u{feff}').trim_start();
    if text.is_empty() {
        return Err(ParseError::Empty);
    }
    match ICalendar::parse(text) {
        Ok(calendar) => match calendar.components.first() {
            Some(root) if root.component_type == ICalendarComponentType::VCalendar => Ok(calendar),
            Some(root) => Err(ParseError::NotVCalendar(
                root.component_type.as_str().to_string(),
            )),
            None => Err(ParseError::NoVCalendar),
        },
        Err(entry) => Err(ParseError::Malformed(describe_failure(entry))),
    }
}

/// What the calendar mailets read from one calendar, computed from one parse.
#[derive(Clone, Debug, Default)]
pub struct CalendarFacts {
    /// The scheduling fields of the first VEVENT, else of the first VTODO; `None` with
    /// neither.
    pub fields: Option<SchedulingFields>,
    /// Whether the calendar has a VEVENT (esn-sabre, like James, only takes events).
    pub has_event: bool,
    /// The VCALENDAR's METHOD as written.
    pub method: Option<String>,
    /// ORGANIZER addresses of every VEVENT and VTODO (see [`address_text`]; invalid ones
    /// left out).
    pub organizers: Vec<MailAddress>,
    /// ATTENDEE addresses of every VEVENT and VTODO (see [`address_text`]; invalid ones
    /// left out).
    pub attendees: Vec<MailAddress>,
}

impl CalendarFacts {
    /// Reads the facts of a parsed calendar.
    pub fn of(calendar: &ICalendar) -> CalendarFacts {
        let method = method(calendar).map(str::to_string);
        let addresses = |prop: ICalendarProperty| -> Vec<MailAddress> {
            calendar
                .components
                .iter()
                .filter(|c| is_scheduled(&c.component_type))
                .flat_map(|e| e.properties(&prop).filter_map(cal_address))
                .collect()
        };
        CalendarFacts {
            fields: SchedulingFields::of(calendar),
            has_event: first_event(calendar).is_some(),
            method,
            organizers: addresses(ICalendarProperty::Organizer),
            attendees: addresses(ICalendarProperty::Attendee),
        }
    }
}

/// The components iTIP schedules and mailetd collects: events and tasks (RFC 5546 3.2, 3.4).
pub fn is_scheduled(kind: &ICalendarComponentType) -> bool {
    matches!(
        kind,
        ICalendarComponentType::VEvent | ICalendarComponentType::VTodo
    )
}

/// The byte ranges of the VCALENDAR objects of a text, each from its `BEGIN:VCALENDAR`
/// line to the end of its `END:VCALENDAR` line. A text with fewer than two is one range,
/// the whole text, so a single calendar is kept exactly as written.
pub fn calendar_ranges(text: &str) -> Vec<Range<usize>> {
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let name = line.trim_start_matches('\u{feff}').trim_end();
        if name.eq_ignore_ascii_case("BEGIN:VCALENDAR") {
            starts.push(at);
        } else if name.eq_ignore_ascii_case("END:VCALENDAR") {
            ends.push(at + line.len());
        }
        at += line.len();
    }
    if starts.len() < 2 {
        return std::iter::once(0..text.len()).collect();
    }
    starts
        .iter()
        .enumerate()
        .map(|(i, &start)| {
            let limit = starts.get(i + 1).copied().unwrap_or(text.len());
            let end = ends
                .iter()
                .copied()
                .find(|&e| e > start && e <= limit)
                .unwrap_or(limit);
            start..end
        })
        .collect()
}

/// The key of the `index`-th (from 0) calendar of the map entry `key`: `key` itself for
/// the first, `key#2`, `key#3`… for the next ones.
pub fn calendar_key(key: &str, index: usize) -> String {
    match index {
        0 => key.to_string(),
        n => format!("{key}#{}", n + 1),
    }
}

/// One calendar object of a mail, parsed once: its text (decoded, shared) and what the
/// calendar mailets read from it. `ICalendarParser` makes it; `ICALToHeader`,
/// `ICALToJsonAttribute` and `CalDavCollect` read its facts instead of parsing again, and
/// every per-recipient JSON document and outbox job shares its text instead of copying it.
/// The parse tree is not kept: it is several times the size of the text.
pub struct ParsedCalendar {
    text: Arc<str>,
    facts: CalendarFacts,
}

impl ParsedCalendar {
    /// Parses `text` (see [`parse`]) and keeps its facts.
    pub fn parse(text: impl Into<Arc<str>>) -> Result<ParsedCalendar, ParseError> {
        let text = text.into();
        let facts = facts(&text)?;
        Ok(ParsedCalendar { text, facts })
    }

    /// The calendar's text, as decoded from the mail.
    pub fn text(&self) -> &Arc<str> {
        &self.text
    }

    /// What the mailets read from it.
    pub fn facts(&self) -> &CalendarFacts {
        &self.facts
    }
}

impl std::fmt::Debug for ParsedCalendar {
    // not the text: it can be megabytes, and traces and logs print attribute values
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParsedCalendar")
            .field("bytes", &self.text.len())
            .field("fields", &self.facts.fields)
            .finish()
    }
}

impl PartialEq for ParsedCalendar {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

/// The facts of a calendar text. A large one is parsed one top-level component at a time
/// (see `ical::pieces`): calcard's tree of a whole calendar is several times its text (a 25 MB
/// calendar of 100,000 events took over 300 MB), a piece's tree is small.
pub fn facts(text: &str) -> Result<CalendarFacts, ParseError> {
    if text.len() >= PIECEWISE_FROM
        && let Some(pieces) = pieces(text)
    {
        return Ok(facts_of_pieces(&pieces));
    }
    parse(text).map(|calendar| CalendarFacts::of(&calendar))
}

/// The scheduling fields of a calendar text (see [`facts`]).
pub fn scheduling_fields(text: &str) -> Result<Option<SchedulingFields>, ParseError> {
    facts(text).map(|f| f.fields)
}

fn describe_failure(entry: Entry) -> String {
    match entry {
        Entry::InvalidLine(line) => {
            let line: String = line.chars().take(60).collect();
            format!("expected BEGIN:VCALENDAR, found {line:?}")
        }
        Entry::VCard(_) => "a vCard, not an iCalendar object".into(),
        Entry::UnexpectedComponentEnd { expected, found } => format!(
            "END:{} where END:{} was expected",
            found.as_str(),
            expected.as_str()
        ),
        Entry::UnterminatedComponent(name) => format!("BEGIN:{name} has no END"),
        Entry::TooManyComponents => "too many components".into(),
        Entry::Eof => "no BEGIN:VCALENDAR found".into(),
        other => format!("not an iCalendar object ({other:?})"),
    }
}

/// Reads raw calendar bytes as text: UTF-8 (a BOM is dropped); bytes that are not UTF-8
/// were written in a legacy charset nobody declared, most often Windows-1252 (Outlook),
/// which is read as such instead of being replaced by U+FFFD.
pub fn bytes_to_text(bytes: &[u8]) -> Cow<'_, str> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => match charset_decoder(b"windows-1252") {
            Some(decode) => Cow::Owned(decode(bytes)),
            None => String::from_utf8_lossy(bytes),
        },
    }
}

/// The first VEVENT of a calendar, else its first VTODO, in document order.
pub fn first_scheduled(calendar: &ICalendar) -> Option<&ICalendarComponent> {
    first_event(calendar).or_else(|| {
        calendar
            .components
            .iter()
            .find(|c| c.component_type == ICalendarComponentType::VTodo)
    })
}

/// The first VEVENT of a calendar, in document order.
pub fn first_event(calendar: &ICalendar) -> Option<&ICalendarComponent> {
    calendar
        .components
        .iter()
        .find(|c| c.component_type == ICalendarComponentType::VEvent)
}

/// The scheduling fields James reads from a calendar (`ICALAttributeDTO`, `ICALToHeader`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SchedulingFields {
    /// The calendar's METHOD (`REQUEST`, `REPLY`, `CANCEL`…).
    pub method: Option<String>,
    /// The first VEVENT's (else VTODO's) UID.
    pub uid: Option<String>,
    /// Its SEQUENCE; none when absent or not an integer (ical4j drops it).
    pub sequence: Option<String>,
    /// Its DTSTAMP in iCalendar form (`20170106T115036Z`); none if invalid.
    pub dtstamp: Option<String>,
    /// Its RECURRENCE-ID in iCalendar form; none if invalid.
    pub recurrence_id: Option<String>,
}

impl SchedulingFields {
    /// Reads the fields of the first VEVENT, else of the first VTODO (James reads events
    /// only; tasks are collected by the caldav dialect); `None` with neither.
    pub fn of(calendar: &ICalendar) -> Option<SchedulingFields> {
        let event = first_scheduled(calendar)?;
        Some(SchedulingFields {
            method: method_field(calendar),
            uid: uid(event),
            sequence: sequence(event).map(|n| n.to_string()),
            dtstamp: dtstamp(event),
            recurrence_id: recurrence_id(event),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pieces::{SKIM_FROM, piece_calendar};

    const INVITE: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\n\
        UID:abc-123\r\nSEQUENCE:2\r\nDTSTAMP:20170106T115036Z\r\n\
        RECURRENCE-ID;TZID=Europe/Paris:20240115T100000\r\nSUMMARY:Réunion\r\n\
        END:VEVENT\r\nEND:VCALENDAR\r\n";

    #[test]
    fn reads_scheduling_fields_as_written() {
        let calendar = parse(INVITE).unwrap();
        let fields = SchedulingFields::of(&calendar).unwrap();
        assert_eq!(fields.method.as_deref(), Some("REQUEST"));
        assert_eq!(fields.uid.as_deref(), Some("abc-123"));
        assert_eq!(fields.sequence.as_deref(), Some("2"));
        assert_eq!(fields.dtstamp.as_deref(), Some("20170106T115036Z"));
        assert_eq!(fields.recurrence_id.as_deref(), Some("20240115T100000"));
    }

    #[test]
    fn date_recurrence_id_and_missing_fields() {
        let calendar = parse(
            "BEGIN:VCALENDAR\nBEGIN:VEVENT\nRECURRENCE-ID;VALUE=DATE:20240115\nDTSTAMP:garbage\nSEQUENCE:two\nEND:VEVENT\nEND:VCALENDAR\n",
        )
        .unwrap();
        let fields = SchedulingFields::of(&calendar).unwrap();
        assert_eq!(fields.recurrence_id.as_deref(), Some("20240115"));
        assert_eq!(fields.dtstamp, None);
        assert_eq!(fields.method, None);
        assert_eq!(fields.uid, None);
        assert_eq!(fields.sequence, None);
    }

    #[test]
    fn lenient_about_missing_end_and_unknown_lines() {
        let calendar = parse(
            "BEGIN:VCALENDAR\r\nX-WR-CALNAME:Work\r\nthis line is junk\r\nBEGIN:VEVENT\r\nUID:x\r\n",
        )
        .unwrap();
        assert_eq!(
            SchedulingFields::of(&calendar).unwrap().uid.as_deref(),
            Some("x")
        );
    }

    #[test]
    fn tolerates_client_quirks() {
        // LF-only lines, a tab fold, blank lines, lower-case names, a quoted Windows TZID,
        // an unknown property with parameters, leading blank lines and a BOM
        let text = "\u{feff}\n\nbegin:vcalendar\nmethod:request\n\nBEGIN:VEVENT\n\
            DTSTART;TZID=\"W. Europe Standard Time\":20240115T100000\n\
            X-ALT-DESC;FMTTYPE=text/html:<html>\n\t<body/></html>\nuid:quirky\n\
            DTSTAMP:20240110T090000Z\nEND:VEVENT\nEND:VCALENDAR\n";
        let calendar = parse(text).unwrap();
        let fields = SchedulingFields::of(&calendar).unwrap();
        assert_eq!(fields.uid.as_deref(), Some("quirky"));
        assert_eq!(fields.method.as_deref(), Some("REQUEST"));
        assert_eq!(fields.dtstamp.as_deref(), Some("20240110T090000Z"));
    }

    #[test]
    fn rejects_what_is_not_a_calendar() {
        assert!(parse("").is_err());
        assert!(parse("VERSION:2.0\r\nBEGIN:VEVENT\r\nEND:VEVENT\r\n").is_err());
        assert!(parse("BEGIN:VCARD\r\nFN:x\r\nEND:VCARD\r\n").is_err());
        assert!(parse("BEGIN:VEVENT\r\nUID:x\r\nEND:VEVENT\r\n").is_err());
        assert!(parse("<html>404</html>").is_err());
    }

    #[test]
    fn addresses_come_from_mailto_else_the_email_parameter() {
        let calendar = parse(
            "BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:a\r\n\
             ORGANIZER;CN=H;EMAIL=\"Helene@iCloud.example\":/1288/principal/\r\n\
             ATTENDEE;EMAIL=bob@example.org:urn:uuid:0b1c\r\n\
             ATTENDEE;EMAIL=other@example.org:MAILTO:carol@example.org\r\n\
             ATTENDEE:https://cal.example/principals/nobody/\r\n\
             END:VEVENT\r\nBEGIN:VTODO\r\nUID:t\r\nATTENDEE:mailto:dan@example.org\r\nEND:VTODO\r\nEND:VCALENDAR\r\n",
        )
        .unwrap();
        let facts = CalendarFacts::of(&calendar);
        let text = |list: &[MailAddress]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(text(&facts.organizers), ["Helene@icloud.example"]);
        assert_eq!(
            text(&facts.attendees),
            ["bob@example.org", "carol@example.org", "dan@example.org"]
        );
        assert!(facts.has_event);
    }

    #[test]
    fn several_calendars_in_one_text_are_split() {
        let one = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:1\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let two = one.replace("UID:1", "UID:2");
        assert_eq!(
            calendar_ranges(one),
            Vec::from_iter(std::iter::once(0..one.len()))
        );
        let text = format!("\r\n{one}{two}\r\n");
        let parts: Vec<&str> = calendar_ranges(&text)
            .into_iter()
            .map(|r| &text[r])
            .collect();
        assert_eq!(parts, [one, two.as_str()]);
    }

    #[test]
    fn a_large_calendar_read_piecewise_has_the_facts_of_a_whole_parse() {
        let mut text = String::from(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VTIMEZONE\r\nTZID:X\r\nBEGIN:STANDARD\r\n\
             DTSTART:16010101T030000\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n",
        );
        for n in 0..3000 {
            text.push_str(&format!(
                "BEGIN:VEVENT\r\nUID:u{n}\r\nSEQUENCE:{n}\r\nDTSTAMP:20240110T090000Z\r\n\
                 ORGANIZER:mailto:o{n}@example.com\r\nATTENDEE:mailto:a{n}@example.com\r\n\
                 DESCRIPTION:{}\r\n \r\n  continued\r\nBEGIN:VALARM\r\nACTION:DISPLAY\r\n\
                 END:VALARM\r\nEND:VEVENT\r\n",
                "x".repeat(60)
            ));
        }
        // a root property after the events counts as in a whole parse
        text.push_str("METHOD:REQUEST\r\nEND:VCALENDAR\r\n");
        assert!(text.len() >= PIECEWISE_FROM);
        let cut = pieces(&text).expect("plain structure");
        assert_eq!(cut.len(), 3 + 3000);
        let whole = CalendarFacts::of(&parse(&text).unwrap());
        let piecewise = facts(&text).unwrap();
        assert_eq!(piecewise.fields, whole.fields);
        assert_eq!(
            piecewise.fields.as_ref().unwrap().method.as_deref(),
            Some("REQUEST")
        );
        assert_eq!(piecewise.method, whole.method);
        assert_eq!(piecewise.organizers, whole.organizers);
        assert_eq!(piecewise.attendees, whole.attendees);
        assert_eq!(piecewise.attendees.len(), 3000);
        // without its END the calendar is parsed whole, leniently
        let unterminated = text.trim_end_matches("END:VCALENDAR\r\n");
        assert!(pieces(unterminated).is_none());
        assert_eq!(facts(unterminated).unwrap().fields, whole.fields);
    }

    #[test]
    fn an_event_with_a_megabyte_description_has_the_facts_of_a_whole_parse() {
        let description: String = (0..15_000)
            .map(|n| format!(" line {n} of the agenda;ATTENDEE:mailto:no@example.com\r\n"))
            .collect();
        let text = format!(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\n\
             UID:big-1\r\nSEQUENCE:2\r\nDTSTAMP:20240110T090000Z\r\n\
             DESCRIPTION:start\r\n{description}\
             ORGANIZER;CN=O:mailto:o@example.com\r\nattendee;CN=\"A, B\":mailto:a@exam\r\n ple.com\r\n\
             X-ATTENDEE:mailto:x@example.com\r\nRECURRENCE-ID:20240111T090000Z\r\n\
             BEGIN:VALARM\r\nACTION:DISPLAY\r\nEND:VALARM\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
        );
        let cut = pieces(&text).expect("plain structure");
        assert!(
            cut.iter().any(|p| p.len() >= SKIM_FROM),
            "a piece is skimmed"
        );
        assert!(piece_calendar(cut[1]).len() < 1024);
        let whole = CalendarFacts::of(&parse(&text).unwrap());
        let piecewise = facts(&text).unwrap();
        assert_eq!(piecewise.fields, whole.fields);
        assert_eq!(
            piecewise.fields.as_ref().unwrap().uid.as_deref(),
            Some("big-1")
        );
        assert_eq!(piecewise.has_event, whole.has_event);
        assert_eq!(piecewise.method, whole.method);
        assert_eq!(piecewise.organizers, whole.organizers);
        assert_eq!(piecewise.attendees, whole.attendees);
        assert_eq!(piecewise.attendees[0].to_string(), "a@example.com");
    }

    #[test]
    fn undeclared_latin1_is_not_mangled() {
        assert_eq!(bytes_to_text(b"R\xe9union"), "Réunion");
        assert_eq!(bytes_to_text("Réunion".as_bytes()), "Réunion");
        assert_eq!(bytes_to_text(b"\xef\xbb\xbfBEGIN"), "BEGIN");
    }
}
