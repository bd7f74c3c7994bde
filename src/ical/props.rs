//! The one set of property accessors on calcard components: METHOD, UID, SEQUENCE,
//! DTSTAMP, RECURRENCE-ID, ORGANIZER and ATTENDEE addresses, as the calendar mailets
//! (scheduling fields, alignment) and the caldav dialect's iTIP application read them.

use calcard::icalendar::{
    ICalendar, ICalendarComponent, ICalendarComponentType, ICalendarEntry, ICalendarParameterName,
    ICalendarProperty, ICalendarValue, ICalendarValueType,
};

use crate::address::MailAddress;

/// The first value of a component's first `prop`.
pub fn first_value<'a>(
    component: &'a ICalendarComponent,
    prop: &ICalendarProperty,
) -> Option<&'a ICalendarValue> {
    component.property(prop)?.values.first()
}

/// A value as trimmed, non-empty text (integers and dates as iCalendar writes them).
pub fn value_text(value: &ICalendarValue) -> Option<String> {
    let text = match value {
        ICalendarValue::Integer(n) => n.to_string(),
        ICalendarValue::PartialDateTime(_) => date_time_text(value)?,
        other => other.as_text()?.to_string(),
    };
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// The METHOD of a calendar's VCALENDAR, as written.
pub fn method(calendar: &ICalendar) -> Option<&str> {
    calendar
        .components
        .iter()
        .find(|c| c.component_type == ICalendarComponentType::VCalendar)
        .and_then(|root| first_value(root, &ICalendarProperty::Method))
        .and_then(ICalendarValue::as_text)
}

/// The METHOD, trimmed; none when absent or blank (the `method` of James's JSON).
pub fn method_field(calendar: &ICalendar) -> Option<String> {
    let method = method(calendar)?.trim();
    (!method.is_empty()).then(|| method.to_string())
}

/// A component's UID (trimmed, non-empty).
pub fn uid(component: &ICalendarComponent) -> Option<String> {
    first_value(component, &ICalendarProperty::Uid).and_then(value_text)
}

/// A component's SEQUENCE; none when absent or not an integer (ical4j drops it).
pub fn sequence(component: &ICalendarComponent) -> Option<i64> {
    first_value(component, &ICalendarProperty::Sequence).and_then(ICalendarValue::as_integer)
}

/// A component's DTSTAMP in iCalendar form (`20170106T115036Z`, which sorts in time
/// order); none if absent or invalid.
pub fn dtstamp(component: &ICalendarComponent) -> Option<String> {
    first_value(component, &ICalendarProperty::Dtstamp).and_then(date_time_text)
}

/// A component's RECURRENCE-ID in iCalendar form (`20240115T100000`); none for a master.
pub fn recurrence_id(component: &ICalendarComponent) -> Option<String> {
    first_value(component, &ICalendarProperty::RecurrenceId).and_then(date_time_text)
}

/// The mail address of an ORGANIZER or ATTENDEE, as written: the `mailto:` value, else the
/// RFC 7986 `EMAIL` parameter (Apple CalendarServer writes principal URLs and `urn:uuid:`
/// values with the address in `EMAIL="…"`), else a bare value that looks like an address.
pub fn address_text(entry: &ICalendarEntry) -> Option<&str> {
    let value = entry.values.first().and_then(ICalendarValue::as_text);
    let value = value.map(str::trim).unwrap_or_default();
    match value.split_once(':') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("mailto") => Some(rest.trim()),
        _ => entry
            .parameter(&ICalendarParameterName::Email)
            .and_then(|p| p.as_text())
            .map(str::trim)
            .map(|p| p.strip_prefix("mailto:").unwrap_or(p))
            .filter(|p| !p.is_empty())
            .or_else(|| (!value.contains(':') && value.contains('@')).then_some(value)),
    }
}

/// [`address_text`] lowercased, for comparisons; none when empty.
pub fn address_lowercase(entry: &ICalendarEntry) -> Option<String> {
    address_text(entry)
        .map(|a| a.trim().to_ascii_lowercase())
        .filter(|a| !a.is_empty())
}

/// A cal-address as a mail address ([`address_text`]); invalid ones are ignored.
pub fn cal_address(entry: &ICalendarEntry) -> Option<MailAddress> {
    MailAddress::parse(address_text(entry)?)
        .ok()
        .filter(|a| !a.domain.is_empty())
}

/// A component's ORGANIZER address, lowercased ([`address_lowercase`]).
pub fn organizer(component: &ICalendarComponent) -> Option<String> {
    component
        .property(&ICalendarProperty::Organizer)
        .and_then(address_lowercase)
}

/// A DATE or DATE-TIME value as iCalendar writes it (`20240115`, `20240115T100000`,
/// `20240115T090000Z`); text that calcard could not read as a date is no date.
pub fn date_time_text(value: &ICalendarValue) -> Option<String> {
    let ICalendarValue::PartialDateTime(dt) = value else {
        return None;
    };
    dt.year?;
    let format = if dt.hour.is_some() {
        ICalendarValueType::DateTime
    } else {
        ICalendarValueType::Date
    };
    let mut out = String::new();
    dt.format_as_ical(&mut out, &format).ok()?;
    Some(out)
}
