//! What iTIP application reads and writes on components, after RFC 5546's defaults (a
//! missing SEQUENCE is 0), on top of the shared accessors of [`crate::ical::props`].

use std::cmp::Ordering;

use calcard::icalendar::{ICalendarComponent, ICalendarEntry, ICalendarProperty, ICalendarValue};

use crate::ical::props::{self, date_time_text};
pub(super) use crate::ical::props::{address_lowercase as address, organizer};

pub(super) fn timestamp(entry: Option<&ICalendarEntry>) -> Option<i64> {
    match entry?.values.first()? {
        ICalendarValue::PartialDateTime(pdt) => pdt.to_timestamp(),
        _ => None,
    }
}

/// The RECURRENCE-ID as text (`20240115T100000`), or none for a master.
pub(super) fn rid(comp: &ICalendarComponent) -> Option<String> {
    props::recurrence_id(comp)
}

/// The SEQUENCE, 0 when absent (RFC 5545 3.8.7.4).
pub(super) fn sequence(comp: &ICalendarComponent) -> i64 {
    props::sequence(comp).unwrap_or(0)
}

/// DTSTAMP as UTC text, which sorts in time order.
pub(super) fn dtstamp(comp: &ICalendarComponent) -> String {
    props::dtstamp(comp).unwrap_or_default()
}

/// RFC 5546 §2.1.5: SEQUENCE, then DTSTAMP.
pub(super) fn version_cmp(a: &ICalendarComponent, b: &ICalendarComponent) -> Ordering {
    sequence(a)
        .cmp(&sequence(b))
        .then_with(|| dtstamp(a).cmp(&dtstamp(b)))
}

pub(super) fn address_eq(entry: &ICalendarEntry, lowercased: &str) -> bool {
    address(entry).as_deref() == Some(lowercased)
}

pub(super) fn has_exdate(comp: &ICalendarComponent, key: &str) -> bool {
    comp.properties(&ICalendarProperty::Exdate)
        .flat_map(|e| e.values.iter())
        .any(|v| date_time_text(v).as_deref() == Some(key))
}

pub(super) fn set(comp: &mut ICalendarComponent, name: ICalendarProperty, value: ICalendarValue) {
    comp.entries.retain(|e| e.name != name);
    comp.entries.push(ICalendarEntry {
        name,
        params: Vec::new(),
        values: vec![value],
    });
}

pub(super) fn copy_entry(
    from: &ICalendarComponent,
    to: &mut ICalendarComponent,
    name: &ICalendarProperty,
) {
    if let Some(entry) = from.property(name).cloned() {
        to.entries.retain(|e| &e.name != name);
        to.entries.push(entry);
    }
}
