//! CANCEL: the whole event or some instances are cancelled or deleted.

use calcard::icalendar::{
    ICalendarParameterName, ICalendarProperty, ICalendarStatus, ICalendarValue,
};

use super::props::{copy_entry, has_exdate, rid, sequence, set};
use super::tree::Node;
use super::{Change, Options};

pub(super) fn cancel(stored: Option<Node>, msg: &Node, options: &Options) -> Change {
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
