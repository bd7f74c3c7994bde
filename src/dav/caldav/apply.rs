//! iTIP application (RFC 5546) to the recipient's stored copy of an event or a task
//! (VTODO, scheduled the same way), as a CalDAV
//! server's own scheduling would do it: pure functions on calcard values, no I/O. The
//! handler reads the stored copy, calls [`apply`] and writes what it returns.
//!
//! Versions are compared as RFC 5546 §2.1.5 says: SEQUENCE first, then DTSTAMP. A REQUEST
//! with a master replaces every stored VEVENT (the organizer sends the whole event); one
//! with only RECURRENCE-ID components adds or replaces those instances. The user's own
//! data survives where RFC 5546 lets it: the attendee's PARTSTAT when the SEQUENCE did not
//! change, and VALARMs the organizer's copy does not carry.

use std::cmp::Ordering;

use calcard::common::PartialDateTime;
use calcard::icalendar::{
    ICalendar, ICalendarComponent, ICalendarComponentType, ICalendarEntry, ICalendarParameter,
    ICalendarParameterName, ICalendarProperty, ICalendarStatus, ICalendarValue,
};
use serde::{Deserialize, Serialize};

use crate::ical::date_time_text;

/// The iTIP methods (RFC 5546 §1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// PUBLISH: an event without attendee semantics.
    Publish,
    /// REQUEST: an invitation or an update from the organizer.
    Request,
    /// REPLY: an attendee's answer, to the organizer.
    Reply,
    /// ADD: new instances of a recurring event.
    Add,
    /// CANCEL: the event or some instances are cancelled.
    Cancel,
    /// REFRESH: an attendee asks for the latest version.
    Refresh,
    /// COUNTER: an attendee proposes a change.
    Counter,
    /// DECLINECOUNTER: the organizer refuses a COUNTER.
    DeclineCounter,
}

impl Method {
    /// The METHOD of a calendar, if it is an iTIP one.
    pub fn of(calendar: &ICalendar) -> Option<Method> {
        let root = calendar.components.first()?;
        let text = root
            .property(&ICalendarProperty::Method)?
            .values
            .first()?
            .as_text()?;
        Some(match text.trim().to_ascii_uppercase().as_str() {
            "PUBLISH" => Method::Publish,
            "REQUEST" => Method::Request,
            "REPLY" => Method::Reply,
            "ADD" => Method::Add,
            "CANCEL" => Method::Cancel,
            "REFRESH" => Method::Refresh,
            "COUNTER" => Method::Counter,
            "DECLINECOUNTER" => Method::DeclineCounter,
            _ => return None,
        })
    }

    /// The METHOD as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Publish => "PUBLISH",
            Method::Request => "REQUEST",
            Method::Reply => "REPLY",
            Method::Add => "ADD",
            Method::Cancel => "CANCEL",
            Method::Refresh => "REFRESH",
            Method::Counter => "COUNTER",
            Method::DeclineCounter => "DECLINECOUNTER",
        }
    }
}

/// The `CalDavCollect` parameters that change how a message is applied (after RFC 9671's
/// `processcalendar` tagged arguments). Travels in the job payload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Options {
    /// `:updatesonly`: never create an event the recipient does not have.
    pub updates_only: bool,
    /// `:deletecancelled`: a CANCEL of the whole event deletes it.
    pub delete_canceled: bool,
    /// `:organizers`: addresses or domains (lowercase) allowed to create events; empty = any.
    pub organizers: Vec<String>,
    /// `:allowpublic`: apply METHOD:PUBLISH too.
    pub allow_public: bool,
}

impl Options {
    fn may_create(&self, organizer: Option<&str>) -> Result<(), String> {
        if self.updates_only {
            return Err("the event is not in the calendar and updatesOnly is set".into());
        }
        if self.organizers.is_empty() {
            return Ok(());
        }
        let organizer = organizer.unwrap_or("").to_ascii_lowercase();
        let domain = organizer.rsplit_once('@').map(|(_, d)| d);
        if self
            .organizers
            .iter()
            .any(|o| *o == organizer || Some(o.as_str()) == domain)
        {
            Ok(())
        } else {
            Err(format!(
                "organizer {organizer:?} is not in organizers: it may not create events"
            ))
        }
    }
}

/// What to do with the stored copy.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// No copy exists: store this one (`If-None-Match: *`).
    Create(ICalendar),
    /// Replace the stored copy with this one (`If-Match`).
    Update(ICalendar),
    /// Delete the stored copy (`If-Match`).
    Delete,
    /// Leave the calendar alone, for this reason.
    Nothing(String),
}

/// Applies the iTIP `message` for `recipient` (an address, any case) to the `stored` copy
/// of the event (none when the recipient has no copy).
pub fn apply(
    stored: Option<&ICalendar>,
    message: &ICalendar,
    recipient: &str,
    options: &Options,
) -> Change {
    let written = message
        .components
        .first()
        .is_some_and(|root| root.property(&ICalendarProperty::Method).is_some());
    let method = match Method::of(message) {
        Some(method) => method,
        // a calendar to import (no METHOD) is published, when published ones are wanted
        None if !written && options.allow_public => Method::Publish,
        None => return Change::Nothing("no iTIP METHOD".into()),
    };
    let Some(msg) = Node::root(message) else {
        return Change::Nothing("not a VCALENDAR".into());
    };
    if !msg.children.iter().any(Node::is_event) {
        return Change::Nothing("no VEVENT or VTODO".into());
    }
    let stored = stored.and_then(Node::root);
    let recipient = recipient.trim().to_ascii_lowercase();
    match method {
        Method::Request => request(stored, msg, &recipient, options),
        Method::Publish if options.allow_public => request(stored, msg, &recipient, options),
        Method::Publish => {
            Change::Nothing("METHOD:PUBLISH is applied only with allowPublic".into())
        }
        Method::Cancel => cancel(stored, &msg, options),
        Method::Reply => reply(stored, &msg),
        Method::Add => add(stored, &msg),
        Method::Refresh | Method::Counter | Method::DeclineCounter => Change::Nothing(format!(
            "METHOD:{} is for the organizer's client; not applied",
            method.as_str()
        )),
    }
}

fn request(stored: Option<Node>, mut msg: Node, recipient: &str, options: &Options) -> Change {
    let Some(mut doc) = stored else {
        let organizer = msg.events().next().and_then(|e| organizer(&e.comp));
        return match options.may_create(organizer.as_deref()) {
            Ok(()) => {
                msg.remove(&ICalendarProperty::Method);
                Change::Create(msg.into_calendar())
            }
            Err(reason) => Change::Nothing(reason),
        };
    };
    let incoming: Vec<Node> = msg.events().cloned().collect();
    let changed = match incoming.iter().find(|e| rid(&e.comp).is_none()) {
        Some(master) => {
            let newer = doc
                .events()
                .find(|e| rid(&e.comp).is_none())
                .is_none_or(|s| version_cmp(&master.comp, &s.comp) == Ordering::Greater);
            if newer {
                let old: Vec<Node> = doc.take_events();
                for mut event in incoming {
                    let key = rid(&event.comp);
                    if let Some(before) = old.iter().find(|o| rid(&o.comp) == key) {
                        keep_user_data(&mut event, before, recipient);
                    } else if let Some(master) = old.iter().find(|o| rid(&o.comp).is_none()) {
                        keep_user_data(&mut event, master, recipient);
                    }
                    doc.children.push(event);
                }
            }
            newer
        }
        None => {
            let mut changed = false;
            for mut event in incoming {
                let key = rid(&event.comp);
                let existing = doc.events().position(|e| rid(&e.comp) == key);
                let master = doc.events().find(|e| rid(&e.comp).is_none());
                let accept = match (existing, master) {
                    (Some(i), _) => {
                        version_cmp(&event.comp, &doc.event(i).comp) == Ordering::Greater
                    }
                    (None, Some(m)) => sequence(&event.comp) >= sequence(&m.comp),
                    (None, None) => true,
                };
                if !accept {
                    continue;
                }
                let before = existing
                    .map(|i| doc.event(i).clone())
                    .or_else(|| master.cloned());
                if let Some(before) = before {
                    keep_user_data(&mut event, &before, recipient);
                }
                if let Some(i) = existing {
                    doc.remove_event(i);
                }
                doc.children.push(event);
                changed = true;
            }
            changed
        }
    };
    if !changed {
        return Change::Nothing("the message is not newer than the stored copy".into());
    }
    doc.merge_timezones(&msg);
    Change::Update(doc.into_calendar())
}

fn cancel(stored: Option<Node>, msg: &Node, options: &Options) -> Change {
    let Some(mut doc) = stored else {
        return Change::Nothing("no copy of the event to cancel".into());
    };
    let mut changed = false;
    for m in msg.events() {
        match rid(&m.comp) {
            None => {
                if let Some(s) = doc.events().find(|e| rid(&e.comp).is_none())
                    && sequence(&m.comp) < sequence(&s.comp)
                {
                    return Change::Nothing("the CANCEL is older than the stored copy".into());
                }
                if options.delete_canceled {
                    return Change::Delete;
                }
                for event in doc.children.iter_mut().filter(|n| n.is_event()) {
                    if event.comp.status() != Some(&ICalendarStatus::Cancelled) {
                        set(
                            &mut event.comp,
                            ICalendarProperty::Status,
                            ICalendarValue::Status(ICalendarStatus::Cancelled),
                        );
                        let seq = sequence(&event.comp).max(sequence(&m.comp));
                        set(
                            &mut event.comp,
                            ICalendarProperty::Sequence,
                            ICalendarValue::Integer(seq),
                        );
                        copy_entry(&m.comp, &mut event.comp, &ICalendarProperty::Dtstamp);
                        changed = true;
                    }
                }
            }
            Some(key) => {
                let found = doc
                    .events()
                    .position(|e| rid(&e.comp).as_ref() == Some(&key));
                if let Some(i) = found {
                    doc.remove_event(i);
                    changed = true;
                }
                let rid_entry = m.comp.property(&ICalendarProperty::RecurrenceId).cloned();
                if let Some(master) = doc
                    .children
                    .iter_mut()
                    .find(|n| n.is_event() && rid(&n.comp).is_none())
                    && !has_exdate(&master.comp, &key)
                    && let Some(mut exdate) = rid_entry
                {
                    exdate.name = ICalendarProperty::Exdate;
                    exdate
                        .params
                        .retain(|p| p.name != ICalendarParameterName::Range);
                    master.comp.entries.push(exdate);
                    changed = true;
                }
            }
        }
    }
    if !doc.children.iter().any(Node::is_event) {
        return Change::Delete;
    }
    if changed {
        Change::Update(doc.into_calendar())
    } else {
        Change::Nothing("already cancelled".into())
    }
}

fn reply(stored: Option<Node>, msg: &Node) -> Change {
    let Some(mut doc) = stored else {
        return Change::Nothing("no copy of the event to record the reply on".into());
    };
    let mut changed = false;
    for m in msg.events() {
        let key = rid(&m.comp);
        let found = doc.events().position(|e| rid(&e.comp) == key);
        let index = match found {
            Some(i) => i,
            None => {
                let (Some(_), Some(master), Some(rid_entry)) = (
                    &key,
                    doc.events().find(|e| rid(&e.comp).is_none()),
                    m.comp.property(&ICalendarProperty::RecurrenceId),
                ) else {
                    continue;
                };
                let instance = instance_of(master, rid_entry);
                doc.children.push(instance);
                doc.events().count() - 1
            }
        };
        let target = doc.event_mut(index);
        if sequence(&m.comp) < sequence(&target.comp) {
            continue;
        }
        for answer in m.comp.properties(&ICalendarProperty::Attendee) {
            let Some(address) = address(answer) else {
                continue;
            };
            let partstat = answer.parameter(&ICalendarParameterName::Partstat).cloned();
            match target
                .comp
                .entries
                .iter_mut()
                .find(|e| e.name == ICalendarProperty::Attendee && address_eq(e, &address))
            {
                Some(entry) => {
                    if let Some(partstat) = partstat
                        && entry.parameter(&ICalendarParameterName::Partstat) != Some(&partstat)
                    {
                        entry
                            .params
                            .retain(|p| p.name != ICalendarParameterName::Partstat);
                        entry.params.push(ICalendarParameter::new(
                            ICalendarParameterName::Partstat,
                            partstat,
                        ));
                        changed = true;
                    }
                }
                None => {
                    // RFC 5546 §3.2.3: a reply from someone not invited (a delegate, a
                    // forwarded invitation) adds that attendee.
                    target.comp.entries.push(answer.clone());
                    changed = true;
                }
            }
        }
    }
    if changed {
        Change::Update(doc.into_calendar())
    } else {
        Change::Nothing("the reply changes nothing (older, or already recorded)".into())
    }
}

fn add(stored: Option<Node>, msg: &Node) -> Change {
    let Some(mut doc) = stored else {
        return Change::Nothing(
            "ADD for an event not in the calendar (RFC 5546 wants a REFRESH; not sent)".into(),
        );
    };
    let mut changed = false;
    for m in msg.events() {
        match rid(&m.comp) {
            Some(key) => {
                if doc.events().all(|e| rid(&e.comp).as_ref() != Some(&key)) {
                    doc.children.push(m.clone());
                    changed = true;
                }
            }
            None => {
                let Some(master) = doc
                    .children
                    .iter_mut()
                    .find(|n| n.is_event() && rid(&n.comp).is_none())
                else {
                    continue;
                };
                if let Some(mut rdate) = m.comp.property(&ICalendarProperty::Dtstart).cloned() {
                    rdate.name = ICalendarProperty::Rdate;
                    master.comp.entries.push(rdate);
                    let seq = sequence(&master.comp).max(sequence(&m.comp));
                    set(
                        &mut master.comp,
                        ICalendarProperty::Sequence,
                        ICalendarValue::Integer(seq),
                    );
                    changed = true;
                }
            }
        }
    }
    if !changed {
        return Change::Nothing("the instances are already there".into());
    }
    doc.merge_timezones(msg);
    Change::Update(doc.into_calendar())
}

/// A component with its sub-components, detached from calcard's flat, id-linked storage so
/// that events can be added and removed without renumbering by hand.
#[derive(Clone, Debug)]
struct Node {
    comp: ICalendarComponent,
    children: Vec<Node>,
}

impl Node {
    /// The VCALENDAR at index 0, if that is what the calendar starts with.
    fn root(calendar: &ICalendar) -> Option<Node> {
        let root = calendar.components.first()?;
        (root.component_type == ICalendarComponentType::VCalendar).then(|| Node::of(calendar, 0, 0))
    }

    fn of(calendar: &ICalendar, id: u32, depth: usize) -> Node {
        let c = &calendar.components[id as usize];
        let children = if depth > 16 {
            Vec::new()
        } else {
            c.component_ids
                .iter()
                .filter(|i| (**i as usize) < calendar.components.len() && **i != id)
                .map(|i| Node::of(calendar, *i, depth + 1))
                .collect()
        };
        let mut comp = c.clone();
        comp.component_ids.clear();
        Node { comp, children }
    }

    fn into_calendar(self) -> ICalendar {
        let mut components = Vec::new();
        self.flatten(&mut components);
        ICalendar { components }
    }

    fn flatten(&self, out: &mut Vec<ICalendarComponent>) -> u32 {
        let id = out.len() as u32;
        out.push(self.comp.clone());
        let ids = self.children.iter().map(|c| c.flatten(out)).collect();
        out[id as usize].component_ids = ids;
        id
    }

    /// A VEVENT or a VTODO: RFC 5546 schedules both alike (REQUEST, REPLY, CANCEL…).
    fn is_event(&self) -> bool {
        crate::ical::is_scheduled(&self.comp.component_type)
    }

    fn events(&self) -> impl Iterator<Item = &Node> {
        self.children.iter().filter(|n| n.is_event())
    }

    fn event(&self, i: usize) -> &Node {
        self.events().nth(i).expect("index from events()")
    }

    fn event_mut(&mut self, i: usize) -> &mut Node {
        self.children
            .iter_mut()
            .filter(|n| n.is_event())
            .nth(i)
            .expect("index from events()")
    }

    fn remove_event(&mut self, i: usize) {
        let at = self
            .children
            .iter()
            .enumerate()
            .filter(|(_, n)| n.is_event())
            .nth(i)
            .map(|(at, _)| at)
            .expect("index from events()");
        self.children.remove(at);
    }

    fn take_events(&mut self) -> Vec<Node> {
        let (events, rest) = std::mem::take(&mut self.children)
            .into_iter()
            .partition(Node::is_event);
        self.children = rest;
        events
    }

    fn remove(&mut self, prop: &ICalendarProperty) {
        self.comp.entries.retain(|e| &e.name != prop);
    }

    /// Adds the message's VTIMEZONEs the stored copy lacks (by TZID), before the events.
    fn merge_timezones(&mut self, msg: &Node) {
        let tzid = |n: &Node| {
            n.comp
                .property(&ICalendarProperty::Tzid)
                .and_then(|e| e.values.first())
                .and_then(|v| v.as_text())
                .map(str::to_string)
        };
        for tz in msg
            .children
            .iter()
            .filter(|n| n.comp.component_type == ICalendarComponentType::VTimezone)
        {
            let id = tzid(tz);
            let present = self.children.iter().any(|n| {
                n.comp.component_type == ICalendarComponentType::VTimezone && tzid(n) == id
            });
            if !present {
                self.children.insert(0, tz.clone());
            }
        }
    }
}

/// Carries the recipient's own data from the stored component into the organizer's new
/// version: the PARTSTAT when SEQUENCE is unchanged (RFC 5546 §2.1.4: only a new SEQUENCE
/// asks attendees to answer again), and the user's alarms when the new one has none.
fn keep_user_data(new: &mut Node, before: &Node, recipient: &str) {
    if sequence(&new.comp) == sequence(&before.comp)
        && let Some(answer) = before
            .comp
            .properties(&ICalendarProperty::Attendee)
            .find(|e| address_eq(e, recipient))
            .and_then(|e| e.parameter(&ICalendarParameterName::Partstat))
            .cloned()
        && let Some(entry) = new
            .comp
            .entries
            .iter_mut()
            .find(|e| e.name == ICalendarProperty::Attendee && address_eq(e, recipient))
    {
        entry
            .params
            .retain(|p| p.name != ICalendarParameterName::Partstat);
        entry.params.push(ICalendarParameter::new(
            ICalendarParameterName::Partstat,
            answer,
        ));
    }
    let is_alarm = |n: &Node| n.comp.component_type == ICalendarComponentType::VAlarm;
    if !new.children.iter().any(is_alarm) {
        new.children
            .extend(before.children.iter().filter(|n| is_alarm(n)).cloned());
    }
}

/// An override of `master` for the instance at `rid_entry`: the master's properties without
/// recurrence rules, starting at the instance with the master's duration.
fn instance_of(master: &Node, rid_entry: &ICalendarEntry) -> Node {
    let mut instance = master.clone();
    let comp = &mut instance.comp;
    let duration = match (
        timestamp(comp.property(&ICalendarProperty::Dtstart)),
        timestamp(comp.property(&ICalendarProperty::Dtend)),
    ) {
        (Some(start), Some(end)) => Some(end - start),
        _ => None,
    };
    comp.entries.retain(|e| {
        !matches!(
            e.name,
            ICalendarProperty::Rrule
                | ICalendarProperty::Rdate
                | ICalendarProperty::Exdate
                | ICalendarProperty::Exrule
                | ICalendarProperty::RecurrenceId
        )
    });
    let mut start = rid_entry.clone();
    start.name = ICalendarProperty::Dtstart;
    start
        .params
        .retain(|p| p.name != ICalendarParameterName::Range);
    let end = match (duration, timestamp(Some(&start))) {
        (Some(d), Some(s)) => start.values.first().and_then(|v| match v {
            ICalendarValue::PartialDateTime(pdt) => {
                let moved = if pdt.tz_hour.is_some() {
                    PartialDateTime::from_utc_timestamp(s + d)
                } else {
                    PartialDateTime::from_naive_timestamp(s + d)
                };
                let mut end = start.clone();
                end.name = ICalendarProperty::Dtend;
                end.values = vec![ICalendarValue::PartialDateTime(Box::new(moved))];
                Some(end)
            }
            _ => None,
        }),
        _ => None,
    };
    let had_end = comp.has_property(&ICalendarProperty::Dtend);
    comp.entries.retain(|e| {
        !matches!(
            e.name,
            ICalendarProperty::Dtstart | ICalendarProperty::Dtend
        )
    });
    comp.entries.push(rid_entry.clone());
    comp.entries.push(start);
    if had_end && let Some(end) = end {
        comp.entries.push(end);
    }
    instance
}

fn timestamp(entry: Option<&ICalendarEntry>) -> Option<i64> {
    match entry?.values.first()? {
        ICalendarValue::PartialDateTime(pdt) => pdt.to_timestamp(),
        _ => None,
    }
}

/// The RECURRENCE-ID as text (`20240115T100000`), or none for a master.
fn rid(comp: &ICalendarComponent) -> Option<String> {
    comp.property(&ICalendarProperty::RecurrenceId)
        .and_then(|e| e.values.first())
        .and_then(date_time_text)
}

fn sequence(comp: &ICalendarComponent) -> i64 {
    comp.property(&ICalendarProperty::Sequence)
        .and_then(|e| e.values.first())
        .and_then(ICalendarValue::as_integer)
        .unwrap_or(0)
}

/// DTSTAMP as UTC text, which sorts in time order.
fn dtstamp(comp: &ICalendarComponent) -> String {
    comp.property(&ICalendarProperty::Dtstamp)
        .and_then(|e| e.values.first())
        .and_then(date_time_text)
        .unwrap_or_default()
}

/// RFC 5546 §2.1.5: SEQUENCE, then DTSTAMP.
fn version_cmp(a: &ICalendarComponent, b: &ICalendarComponent) -> Ordering {
    sequence(a)
        .cmp(&sequence(b))
        .then_with(|| dtstamp(a).cmp(&dtstamp(b)))
}

fn organizer(comp: &ICalendarComponent) -> Option<String> {
    comp.property(&ICalendarProperty::Organizer)
        .and_then(address)
}

fn address(entry: &ICalendarEntry) -> Option<String> {
    crate::ical::address_text(entry)
        .map(|a| a.trim().to_ascii_lowercase())
        .filter(|a| !a.is_empty())
}

fn address_eq(entry: &ICalendarEntry, lowercased: &str) -> bool {
    address(entry).as_deref() == Some(lowercased)
}

fn has_exdate(comp: &ICalendarComponent, key: &str) -> bool {
    comp.properties(&ICalendarProperty::Exdate)
        .flat_map(|e| e.values.iter())
        .any(|v| date_time_text(v).as_deref() == Some(key))
}

fn set(comp: &mut ICalendarComponent, name: ICalendarProperty, value: ICalendarValue) {
    comp.entries.retain(|e| e.name != name);
    comp.entries.push(ICalendarEntry {
        name,
        params: Vec::new(),
        values: vec![value],
    });
}

fn copy_entry(from: &ICalendarComponent, to: &mut ICalendarComponent, name: &ICalendarProperty) {
    if let Some(entry) = from.property(name).cloned() {
        to.entries.retain(|e| &e.name != name);
        to.entries.push(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOB: &str = "bob@example.org";

    /// A calendar with `method` (none when empty) around `events` (VEVENT bodies).
    fn cal(method: &str, events: &[String]) -> ICalendar {
        let mut s = String::from("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n");
        if !method.is_empty() {
            s.push_str(&format!("METHOD:{method}\r\n"));
        }
        s.push_str(
            "BEGIN:VTIMEZONE\r\nTZID:Europe/Paris\r\nBEGIN:STANDARD\r\nDTSTART:19701025T030000\r\n\
             TZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n",
        );
        for e in events {
            s.push_str("BEGIN:VEVENT\r\n");
            s.push_str(e);
            s.push_str("END:VEVENT\r\n");
        }
        s.push_str("END:VCALENDAR\r\n");
        crate::ical::parse(&s).unwrap()
    }

    fn event(seq: i64, stamp: &str, extra: &str) -> String {
        format!(
            "UID:ev1\r\nSEQUENCE:{seq}\r\nDTSTAMP:{stamp}\r\n\
             DTSTART;TZID=Europe/Paris:20260310T100000\r\nDTEND;TZID=Europe/Paris:20260310T110000\r\n\
             SUMMARY:Planning\r\nORGANIZER:mailto:alice@partner.example\r\n\
             ATTENDEE;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:bob@example.org\r\n\
             ATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:carol@example.org\r\n{extra}"
        )
    }

    fn weekly(seq: i64, stamp: &str, extra: &str) -> String {
        event(seq, stamp, &format!("RRULE:FREQ=WEEKLY;COUNT=5\r\n{extra}"))
    }

    fn instance(seq: i64, stamp: &str, day: &str, extra: &str) -> String {
        format!(
            "UID:ev1\r\nSEQUENCE:{seq}\r\nDTSTAMP:{stamp}\r\n\
             RECURRENCE-ID;TZID=Europe/Paris:202603{day}T100000\r\n\
             DTSTART;TZID=Europe/Paris:202603{day}T140000\r\nDTEND;TZID=Europe/Paris:202603{day}T150000\r\n\
             SUMMARY:Planning\r\nORGANIZER:mailto:alice@partner.example\r\n\
             ATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:bob@example.org\r\n{extra}"
        )
    }

    fn reply_from(who: &str, partstat: &str, seq: i64, extra: &str) -> ICalendar {
        cal(
            "REPLY",
            &[format!(
                "UID:ev1\r\nSEQUENCE:{seq}\r\nDTSTAMP:20260301T120000Z\r\n\
                 ORGANIZER:mailto:alice@partner.example\r\n\
                 ATTENDEE;PARTSTAT={partstat}:mailto:{who}\r\n{extra}"
            )],
        )
    }

    fn text(change: &Change) -> String {
        match change {
            Change::Create(c) | Change::Update(c) => c.to_string(),
            other => panic!("expected a calendar, got {other:?}"),
        }
    }

    fn updated(change: Change) -> ICalendar {
        match change {
            Change::Update(c) => c,
            other => panic!("expected an update, got {other:?}"),
        }
    }

    fn events(c: &ICalendar) -> Vec<&ICalendarComponent> {
        c.components
            .iter()
            .filter(|c| c.component_type == ICalendarComponentType::VEvent)
            .collect()
    }

    fn prop(c: &ICalendarComponent, p: ICalendarProperty) -> Option<String> {
        let v = c.property(&p)?.values.first()?;
        date_time_text(v)
            .or_else(|| v.as_text().map(str::to_string))
            .or_else(|| v.as_integer().map(|n| n.to_string()))
    }

    fn partstat(c: &ICalendarComponent, who: &str) -> Option<String> {
        c.properties(&ICalendarProperty::Attendee)
            .find(|e| address_eq(e, who))?
            .parameter(&ICalendarParameterName::Partstat)?
            .as_text()
            .map(str::to_string)
    }

    fn opts() -> Options {
        Options::default()
    }

    #[test]
    fn request_without_copy_creates_it_without_method_keeping_timezones() {
        let msg = cal("REQUEST", &[event(0, "20260301T100000Z", "")]);
        let change = apply(None, &msg, BOB, &opts());
        let text = text(&change);
        assert!(matches!(change, Change::Create(_)));
        assert!(!text.contains("METHOD"), "{text}");
        assert!(text.contains("BEGIN:VTIMEZONE") && text.contains("TZID:Europe/Paris"));
        assert!(text.contains("SUMMARY:Planning"));
        // what we write parses back to the same event
        let back = crate::ical::parse(&text).unwrap();
        assert_eq!(events(&back).len(), 1);
    }

    #[test]
    fn newer_sequence_replaces_and_resets_partstat() {
        let stored = cal(
            "",
            &[event(0, "20260301T100000Z", "LOCATION:Room 1\r\n").replace(
                "PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:bob",
                "PARTSTAT=ACCEPTED:mailto:bob",
            )],
        );
        let msg = cal(
            "REQUEST",
            &[event(1, "20260302T100000Z", "LOCATION:Room 2\r\n")],
        );
        let out = updated(apply(Some(&stored), &msg, BOB, &opts()));
        let e = events(&out)[0];
        assert_eq!(
            prop(e, ICalendarProperty::Location).as_deref(),
            Some("Room 2")
        );
        assert_eq!(partstat(e, BOB).as_deref(), Some("NEEDS-ACTION"));
        assert!(!out.to_string().contains("METHOD"));
    }

    #[test]
    fn same_sequence_newer_dtstamp_updates_but_keeps_the_answer_and_alarms() {
        let stored = cal(
            "",
            &[event(
                1,
                "20260301T100000Z",
                "LOCATION:Room 1\r\nBEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER:-PT15M\r\nDESCRIPTION:x\r\nEND:VALARM\r\n",
            )
            .replace("PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:bob", "PARTSTAT=ACCEPTED:mailto:bob")],
        );
        let msg = cal(
            "REQUEST",
            &[event(1, "20260302T100000Z", "LOCATION:Room 2\r\n")],
        );
        let out = updated(apply(Some(&stored), &msg, BOB, &opts()));
        let e = events(&out)[0];
        assert_eq!(
            prop(e, ICalendarProperty::Location).as_deref(),
            Some("Room 2")
        );
        assert_eq!(partstat(e, BOB).as_deref(), Some("ACCEPTED"));
        assert_eq!(
            partstat(e, "carol@example.org").as_deref(),
            Some("NEEDS-ACTION")
        );
        assert!(out.to_string().contains("TRIGGER:-PT15M"), "{out}");
    }

    #[test]
    fn older_or_identical_request_changes_nothing() {
        let stored = cal("", &[event(2, "20260305T100000Z", "LOCATION:Room 3\r\n")]);
        for msg in [
            cal(
                "REQUEST",
                &[event(1, "20260309T100000Z", "LOCATION:Old\r\n")],
            ),
            cal(
                "REQUEST",
                &[event(2, "20260301T100000Z", "LOCATION:Old\r\n")],
            ),
            cal(
                "REQUEST",
                &[event(2, "20260305T100000Z", "LOCATION:Room 3\r\n")],
            ),
        ] {
            assert!(matches!(
                apply(Some(&stored), &msg, BOB, &opts()),
                Change::Nothing(_)
            ));
        }
    }

    #[test]
    fn instance_request_adds_then_replaces_only_that_instance() {
        let stored = cal("", &[weekly(0, "20260301T100000Z", "")]);
        let moved = cal(
            "REQUEST",
            &[instance(0, "20260302T100000Z", "17", "LOCATION:Moved\r\n")],
        );
        let out = updated(apply(Some(&stored), &moved, BOB, &opts()));
        assert_eq!(events(&out).len(), 2);
        assert!(
            events(&out)[0]
                .property(&ICalendarProperty::Rrule)
                .is_some()
        );
        let again = cal(
            "REQUEST",
            &[instance(
                1,
                "20260303T100000Z",
                "17",
                "LOCATION:Moved again\r\n",
            )],
        );
        let out = updated(apply(Some(&out), &again, BOB, &opts()));
        let evs = events(&out);
        assert_eq!(evs.len(), 2);
        assert_eq!(
            prop(evs[1], ICalendarProperty::Location).as_deref(),
            Some("Moved again")
        );
        // the older version of that instance is ignored
        assert!(matches!(
            apply(Some(&out), &moved, BOB, &opts()),
            Change::Nothing(_)
        ));
    }

    #[test]
    fn full_request_with_master_replaces_every_component() {
        let stored = cal(
            "",
            &[
                weekly(0, "20260301T100000Z", ""),
                instance(0, "20260302T100000Z", "17", ""),
            ],
        );
        let msg = cal(
            "REQUEST",
            &[weekly(1, "20260304T100000Z", "LOCATION:New\r\n")],
        );
        let out = updated(apply(Some(&stored), &msg, BOB, &opts()));
        assert_eq!(events(&out).len(), 1);
        assert_eq!(
            prop(events(&out)[0], ICalendarProperty::Location).as_deref(),
            Some("New")
        );
    }

    #[test]
    fn cancel_whole_marks_cancelled_or_deletes() {
        let stored = cal("", &[event(0, "20260301T100000Z", "")]);
        let msg = cal("CANCEL", &[event(1, "20260302T100000Z", "")]);
        let out = updated(apply(Some(&stored), &msg, BOB, &opts()));
        let e = events(&out)[0];
        assert_eq!(
            prop(e, ICalendarProperty::Status).as_deref(),
            Some("CANCELLED")
        );
        assert_eq!(prop(e, ICalendarProperty::Sequence).as_deref(), Some("1"));
        // a second CANCEL changes nothing more
        assert!(matches!(
            apply(Some(&out), &msg, BOB, &opts()),
            Change::Nothing(_)
        ));
        let delete = Options {
            delete_canceled: true,
            ..opts()
        };
        assert_eq!(apply(Some(&stored), &msg, BOB, &delete), Change::Delete);
        assert!(matches!(
            apply(None, &msg, BOB, &opts()),
            Change::Nothing(_)
        ));
    }

    #[test]
    fn older_cancel_is_ignored() {
        let stored = cal("", &[event(3, "20260301T100000Z", "")]);
        let msg = cal("CANCEL", &[event(2, "20260302T100000Z", "")]);
        assert!(matches!(
            apply(Some(&stored), &msg, BOB, &opts()),
            Change::Nothing(_)
        ));
    }

    #[test]
    fn cancel_instance_adds_exdate_and_removes_the_override() {
        let stored = cal(
            "",
            &[
                weekly(0, "20260301T100000Z", ""),
                instance(1, "20260302T100000Z", "17", ""),
            ],
        );
        let msg = cal("CANCEL", &[instance(2, "20260303T100000Z", "17", "")]);
        let out = updated(apply(Some(&stored), &msg, BOB, &opts()));
        let evs = events(&out);
        assert_eq!(evs.len(), 1, "{out}");
        assert!(
            out.to_string()
                .contains("EXDATE;TZID=Europe/Paris:20260317T100000"),
            "{out}"
        );
        assert_eq!(prop(evs[0], ICalendarProperty::Status), None);
        assert!(matches!(
            apply(Some(&out), &msg, BOB, &opts()),
            Change::Nothing(_)
        ));
    }

    #[test]
    fn reply_sets_partstat_on_the_master() {
        let stored = cal("", &[event(0, "20260301T100000Z", "")]);
        let msg = reply_from("carol@example.org", "ACCEPTED", 0, "");
        let out = updated(apply(Some(&stored), &msg, "alice@partner.example", &opts()));
        let e = events(&out)[0];
        assert_eq!(
            partstat(e, "carol@example.org").as_deref(),
            Some("ACCEPTED")
        );
        assert_eq!(partstat(e, BOB).as_deref(), Some("NEEDS-ACTION"));
        assert!(matches!(
            apply(Some(&out), &msg, "alice@partner.example", &opts()),
            Change::Nothing(_)
        ));
    }

    #[test]
    fn reply_to_an_older_sequence_changes_nothing() {
        let stored = cal("", &[event(2, "20260301T100000Z", "")]);
        let msg = reply_from("carol@example.org", "DECLINED", 1, "");
        assert!(matches!(
            apply(Some(&stored), &msg, "alice@partner.example", &opts()),
            Change::Nothing(_)
        ));
    }

    #[test]
    fn reply_for_an_instance_creates_the_override_from_the_master() {
        let stored = cal("", &[weekly(0, "20260301T100000Z", "")]);
        let msg = reply_from(
            "carol@example.org",
            "DECLINED",
            0,
            "RECURRENCE-ID;TZID=Europe/Paris:20260324T100000\r\n",
        );
        let out = updated(apply(Some(&stored), &msg, "alice@partner.example", &opts()));
        let evs = events(&out);
        assert_eq!(evs.len(), 2);
        assert_eq!(
            partstat(evs[0], "carol@example.org").as_deref(),
            Some("NEEDS-ACTION")
        );
        assert_eq!(
            partstat(evs[1], "carol@example.org").as_deref(),
            Some("DECLINED")
        );
        assert!(evs[1].property(&ICalendarProperty::Rrule).is_none());
        assert_eq!(
            prop(evs[1], ICalendarProperty::Dtstart).as_deref(),
            Some("20260324T100000")
        );
        assert_eq!(
            prop(evs[1], ICalendarProperty::Dtend).as_deref(),
            Some("20260324T110000")
        );
        assert_eq!(
            prop(evs[1], ICalendarProperty::Summary).as_deref(),
            Some("Planning")
        );
    }

    #[test]
    fn reply_from_an_uninvited_attendee_adds_them() {
        let stored = cal("", &[event(0, "20260301T100000Z", "")]);
        let msg = reply_from("dave@elsewhere.example", "TENTATIVE", 0, "");
        let out = updated(apply(Some(&stored), &msg, "alice@partner.example", &opts()));
        assert_eq!(
            partstat(events(&out)[0], "dave@elsewhere.example").as_deref(),
            Some("TENTATIVE")
        );
        assert!(matches!(
            apply(None, &msg, "alice@partner.example", &opts()),
            Change::Nothing(_)
        ));
    }

    #[test]
    fn principal_url_attendees_are_matched_by_their_email_parameter() {
        let stored = cal(
            "",
            &[event(0, "20260301T100000Z", "").replace(
                "ATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:carol@example.org",
                "ATTENDEE;PARTSTAT=NEEDS-ACTION;EMAIL=\"carol@example.org\":/1288/principal/",
            )],
        );
        let msg = reply_from("Carol@example.org", "ACCEPTED", 0, "");
        let out = updated(apply(Some(&stored), &msg, "alice@partner.example", &opts()));
        let e = events(&out)[0];
        assert_eq!(
            e.properties(&ICalendarProperty::Attendee).count(),
            2,
            "{out}"
        );
        assert_eq!(
            partstat(e, "carol@example.org").as_deref(),
            Some("ACCEPTED")
        );
    }

    #[test]
    fn a_calendar_without_method_is_published_only_with_allow_public() {
        let msg = cal("", &[event(0, "20260301T100000Z", "")]);
        let public = Options {
            allow_public: true,
            ..opts()
        };
        assert!(matches!(apply(None, &msg, BOB, &public), Change::Create(_)));
        assert!(matches!(
            apply(None, &msg, BOB, &opts()),
            Change::Nothing(_)
        ));
        // an unknown METHOD stays unknown
        let odd = cal("X-SOMETHING", &[event(0, "20260301T100000Z", "")]);
        assert!(matches!(
            apply(None, &odd, BOB, &public),
            Change::Nothing(_)
        ));
    }

    #[test]
    fn tasks_are_scheduled_like_events() {
        let todo = |method: &str, seq: i64, extra: &str| {
            let text = format!(
                "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:{method}\r\nBEGIN:VTODO\r\nUID:t1\r\n\
                 SEQUENCE:{seq}\r\nDTSTAMP:2026030{seq}T100000Z\r\nSUMMARY:Relire\r\n\
                 ORGANIZER:mailto:alice@partner.example\r\n{extra}END:VTODO\r\nEND:VCALENDAR\r\n"
            );
            crate::ical::parse(&text).unwrap()
        };
        let bob = "ATTENDEE;PARTSTAT=NEEDS-ACTION:mailto:bob@example.org\r\n";
        let Change::Create(created) = apply(None, &todo("REQUEST", 0, bob), BOB, &opts()) else {
            panic!("a task assignment creates the task");
        };
        let out = updated(apply(Some(&created), &todo("CANCEL", 1, bob), BOB, &opts()));
        assert!(out.to_string().contains("STATUS:CANCELLED"), "{out}");
        let done = "ATTENDEE;PARTSTAT=COMPLETED:mailto:bob@example.org\r\n";
        let out = updated(apply(
            Some(&created),
            &todo("REPLY", 0, done),
            "alice@partner.example",
            &opts(),
        ));
        assert!(out.to_string().contains("PARTSTAT=COMPLETED"), "{out}");
    }

    #[test]
    fn add_puts_an_rdate_on_the_master() {
        let stored = cal("", &[weekly(0, "20260301T100000Z", "")]);
        let msg = cal(
            "ADD",
            &[event(1, "20260302T100000Z", "").replace("20260310T1", "20260420T1")],
        );
        let out = updated(apply(Some(&stored), &msg, BOB, &opts()));
        assert!(
            out.to_string()
                .contains("RDATE;TZID=Europe/Paris:20260420T100000"),
            "{out}"
        );
        assert!(matches!(
            apply(None, &msg, BOB, &opts()),
            Change::Nothing(_)
        ));
    }

    #[test]
    fn publish_needs_allow_public_and_counter_family_is_not_applied() {
        let msg = cal("PUBLISH", &[event(0, "20260301T100000Z", "")]);
        assert!(matches!(
            apply(None, &msg, BOB, &opts()),
            Change::Nothing(_)
        ));
        let public = Options {
            allow_public: true,
            ..opts()
        };
        assert!(matches!(apply(None, &msg, BOB, &public), Change::Create(_)));
        let stored = cal("", &[event(0, "20260301T100000Z", "")]);
        for method in ["COUNTER", "DECLINECOUNTER", "REFRESH"] {
            let msg = cal(method, &[event(5, "20260309T100000Z", "LOCATION:x\r\n")]);
            assert!(
                matches!(apply(Some(&stored), &msg, BOB, &opts()), Change::Nothing(r) if r.contains(method))
            );
        }
        let none = cal("", &[event(0, "20260301T100000Z", "")]);
        assert!(matches!(
            apply(None, &none, BOB, &opts()),
            Change::Nothing(_)
        ));
    }

    #[test]
    fn updates_only_and_organizers_restrict_creation_not_updates() {
        let msg = cal(
            "REQUEST",
            &[event(1, "20260302T100000Z", "LOCATION:Room 2\r\n")],
        );
        let stored = cal("", &[event(0, "20260301T100000Z", "")]);
        let updates_only = Options {
            updates_only: true,
            ..opts()
        };
        assert!(
            matches!(apply(None, &msg, BOB, &updates_only), Change::Nothing(r) if r.contains("updatesOnly"))
        );
        assert!(matches!(
            apply(Some(&stored), &msg, BOB, &updates_only),
            Change::Update(_)
        ));
        for (list, allowed) in [
            (vec!["partner.example".to_string()], true),
            (vec!["alice@partner.example".to_string()], true),
            (
                vec![
                    "other.example".to_string(),
                    "eve@partner.example".to_string(),
                ],
                false,
            ),
        ] {
            let o = Options {
                organizers: list,
                ..opts()
            };
            assert_eq!(
                matches!(apply(None, &msg, BOB, &o), Change::Create(_)),
                allowed
            );
            assert!(matches!(
                apply(Some(&stored), &msg, BOB, &o),
                Change::Update(_)
            ));
        }
    }

    #[test]
    fn methods_parse_case_insensitively() {
        assert_eq!(Method::of(&cal("request", &[])), Some(Method::Request));
        assert_eq!(
            Method::of(&cal("DeclineCounter", &[])),
            Some(Method::DeclineCounter)
        );
        assert_eq!(Method::of(&cal("", &[])), None);
    }
}
