//! REQUEST (and PUBLISH): the organizer's new version replaces the stored one, keeping the
//! recipient's own answer and alarms.

use std::cmp::Ordering;

use calcard::icalendar::{
    ICalendarComponentType, ICalendarParameter, ICalendarParameterName, ICalendarProperty,
};

use super::props::{address_eq, organizer, rid, sequence, version_cmp};
use super::tree::Node;
use super::{Change, Options};

pub(super) fn request(
    stored: Option<Node>,
    mut msg: Node,
    recipient: &str,
    options: &Options,
) -> Change {
    let Some(mut doc) = stored else {
        let organizer = msg.events().next().and_then(|e| organizer(&e.comp));
        return match options.may_create(organizer.as_deref()) {
            Ok(()) => {
                msg.remove(&ICalendarProperty::Method);
                Change::Create(msg.into_calendar())
            }
            Err(refused) => Change::Nothing(refused.to_string()),
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
