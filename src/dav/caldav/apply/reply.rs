//! REPLY: an attendee's answer is recorded on the organizer's copy.

use calcard::common::PartialDateTime;
use calcard::icalendar::{
    ICalendarEntry, ICalendarParameter, ICalendarParameterName, ICalendarProperty, ICalendarValue,
};

use super::Change;
use super::props::{address, address_eq, rid, sequence, timestamp};
use super::tree::Node;

pub(super) fn reply(stored: Option<Node>, msg: &Node) -> Change {
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
