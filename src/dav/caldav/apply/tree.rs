//! The calendar as a tree of components, so that events can be added and removed.

use calcard::icalendar::{
    ICalendar, ICalendarComponent, ICalendarComponentType, ICalendarProperty,
};

/// A component with its sub-components, detached from calcard's flat, id-linked storage so
/// that events can be added and removed without renumbering by hand.
#[derive(Clone, Debug)]
pub(super) struct Node {
    pub(super) comp: ICalendarComponent,
    pub(super) children: Vec<Node>,
}

impl Node {
    /// The VCALENDAR at index 0, if that is what the calendar starts with.
    pub(super) fn root(calendar: &ICalendar) -> Option<Node> {
        let root = calendar.components.first()?;
        (root.component_type == ICalendarComponentType::VCalendar).then(|| Node::of(calendar, 0, 0))
    }

    pub(super) fn of(calendar: &ICalendar, id: u32, depth: usize) -> Node {
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

    pub(super) fn into_calendar(self) -> ICalendar {
        let mut components = Vec::new();
        self.flatten(&mut components);
        ICalendar { components }
    }

    pub(super) fn flatten(&self, out: &mut Vec<ICalendarComponent>) -> u32 {
        let id = out.len() as u32;
        out.push(self.comp.clone());
        let ids = self.children.iter().map(|c| c.flatten(out)).collect();
        out[id as usize].component_ids = ids;
        id
    }

    /// A VEVENT or a VTODO: RFC 5546 schedules both alike (REQUEST, REPLY, CANCEL…).
    pub(super) fn is_event(&self) -> bool {
        crate::ical::is_scheduled(&self.comp.component_type)
    }

    pub(super) fn events(&self) -> impl Iterator<Item = &Node> {
        self.children.iter().filter(|n| n.is_event())
    }

    pub(super) fn event(&self, i: usize) -> &Node {
        self.events().nth(i).expect("index from events()")
    }

    pub(super) fn event_mut(&mut self, i: usize) -> &mut Node {
        self.children
            .iter_mut()
            .filter(|n| n.is_event())
            .nth(i)
            .expect("index from events()")
    }

    pub(super) fn remove_event(&mut self, i: usize) {
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

    pub(super) fn take_events(&mut self) -> Vec<Node> {
        let (events, rest) = std::mem::take(&mut self.children)
            .into_iter()
            .partition(Node::is_event);
        self.children = rest;
        events
    }

    pub(super) fn remove(&mut self, prop: &ICalendarProperty) {
        self.comp.entries.retain(|e| &e.name != prop);
    }

    /// Adds the message's VTIMEZONEs the stored copy lacks (by TZID), before the events.
    pub(super) fn merge_timezones(&mut self, msg: &Node) {
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
