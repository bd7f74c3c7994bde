//! ADD: new instances of a recurring event the recipient has.

use calcard::icalendar::{ICalendarProperty, ICalendarValue};

use super::Change;
use super::props::{rid, sequence, set};
use super::tree::Node;

pub(super) fn add(stored: Option<Node>, msg: &Node) -> Change {
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
