//! An event's RRULE as Microsoft Graph's `recurrence` (the `patternedRecurrence` resource:
//! a `recurrencePattern` and a `recurrenceRange`, learn.microsoft.com).
//!
//! Graph has six pattern types (`daily`, `weekly`, `absoluteMonthly`, `relativeMonthly`,
//! `absoluteYearly`, `relativeYearly`), each repeating every `interval` days, weeks, months or
//! years, and three range types (`endDate`, `numbered`, `noEnd`). An RRULE maps when it
//! means exactly one of those; anything else (several times a day, BYHOUR, several
//! BYMONTHDAY values, a 5th or 2nd-to-last weekday, BYDAY with several ordinals …) is
//! refused with the reason, and the caller keeps the first occurrence.

use std::str::FromStr;

use calcard::common::timezone::Tz;
use calcard::common::{IanaString, PartialDateTime};
use calcard::icalendar::{
    ICalendar, ICalendarDay, ICalendarFrequency, ICalendarProperty, ICalendarRecurrenceRule,
    ICalendarValue, ICalendarWeekday,
};
use chrono::{Datelike, NaiveDate};
use serde_json::{Value, json};

/// Graph's `recurrence` for the RRULE value `rrule` of an event whose DTSTART has the
/// parameters `dtstart_params` (`TZID=…;VALUE=DATE`, as written) and the value
/// `dtstart_value`; `Err` says why Graph cannot express it.
pub fn recurrence(rrule: &str, dtstart_params: &str, dtstart_value: &str) -> Result<Value, String> {
    let rule = parse_rrule(rrule)?;
    let start = Start::parse(dtstart_params, dtstart_value)
        .ok_or_else(|| format!("DTSTART {dtstart_value:?} is not a date"))?;
    let pattern = pattern(&rule, &start)?;
    Ok(json!({"pattern": pattern, "range": range(&rule, &start)?}))
}

/// The first day of the series and its time zone.
struct Start {
    date: NaiveDate,
    /// TZID, for a local time with one.
    tzid: Option<String>,
}

impl Start {
    fn parse(params: &str, value: &str) -> Option<Start> {
        let digits: String = value.chars().filter(char::is_ascii_digit).collect();
        let date = NaiveDate::parse_from_str(digits.get(..8)?, "%Y%m%d").ok()?;
        let tzid = params
            .split(';')
            .find_map(|p| {
                p.split_once('=')
                    .filter(|(k, _)| k.trim().eq_ignore_ascii_case("TZID"))
            })
            .map(|(_, v)| v.trim_matches('"').to_string())
            .filter(|_| !value.trim_end().ends_with(['Z', 'z']));
        Some(Start { date, tzid })
    }
}

/// calcard's parser of RRULE values is internal to it: a one-property VEVENT reaches it.
fn parse_rrule(rrule: &str) -> Result<ICalendarRecurrenceRule, String> {
    let text = format!(
        "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nRRULE:{}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
        rrule.trim()
    );
    let calendar = ICalendar::parse(&text).map_err(|_| format!("RRULE {rrule:?} is unreadable"))?;
    calendar
        .components
        .iter()
        .flat_map(|c| &c.entries)
        .filter(|e| e.name == ICalendarProperty::Rrule)
        .find_map(|e| match e.values.first() {
            Some(ICalendarValue::RecurrenceRule(rule)) => Some((**rule).clone()),
            _ => None,
        })
        .ok_or_else(|| format!("RRULE {rrule:?} is unreadable"))
}

fn day_name(day: ICalendarWeekday) -> &'static str {
    match day {
        ICalendarWeekday::Sunday => "sunday",
        ICalendarWeekday::Monday => "monday",
        ICalendarWeekday::Tuesday => "tuesday",
        ICalendarWeekday::Wednesday => "wednesday",
        ICalendarWeekday::Thursday => "thursday",
        ICalendarWeekday::Friday => "friday",
        ICalendarWeekday::Saturday => "saturday",
    }
}

/// Graph's `index` (weekIndex) for the n-th weekday of a month (negative from its end).
fn week_index(n: i64) -> Result<&'static str, String> {
    match n {
        1 => Ok("first"),
        2 => Ok("second"),
        3 => Ok("third"),
        4 => Ok("fourth"),
        -1 => Ok("last"),
        _ => Err(format!(
            "the weekday at position {n} of a month (Graph has first to fourth and last)"
        )),
    }
}

/// `daysOfWeek` of a BYDAY list without ordinals.
fn plain_days(byday: &[ICalendarDay]) -> Result<Vec<&'static str>, String> {
    byday
        .iter()
        .map(|d| match d.ordwk {
            None => Ok(day_name(d.weekday)),
            Some(n) => Err(format!(
                "BYDAY={n}{} among other days or outside a month",
                d.weekday.as_str()
            )),
        })
        .collect()
}

/// `(daysOfWeek, index)` of a relative (n-th weekday) rule, from `BYDAY=nXX` or from
/// `BYDAY=XX,YY;BYSETPOS=n`; `None` when the rule has neither shape.
fn relative(
    rule: &ICalendarRecurrenceRule,
) -> Result<Option<(Vec<&'static str>, &'static str)>, String> {
    match (rule.byday.as_slice(), rule.bysetpos.as_slice()) {
        ([], _) => Ok(None),
        (
            [
                ICalendarDay {
                    ordwk: Some(n),
                    weekday,
                },
            ],
            [],
        ) => Ok(Some((vec![day_name(*weekday)], week_index(i64::from(*n))?))),
        (days, [pos]) => Ok(Some((plain_days(days)?, week_index(i64::from(*pos))?))),
        (days, []) => {
            plain_days(days)?;
            Err("BYDAY without a position and no BYSETPOS (every such weekday)".into())
        }
        (_, _) => Err("several BYSETPOS values".into()),
    }
}

/// The `recurrencePattern`.
fn pattern(rule: &ICalendarRecurrenceRule, start: &Start) -> Result<Value, String> {
    let freq = rule.freq.as_str();
    if rule.rscale.is_some() || rule.skip.is_some() {
        return Err("RSCALE/SKIP (a non-Gregorian calendar)".into());
    }
    if matches!(
        rule.freq,
        ICalendarFrequency::Hourly | ICalendarFrequency::Minutely | ICalendarFrequency::Secondly
    ) {
        return Err(format!(
            "FREQ={freq} (Graph repeats by days, weeks, months or years)"
        ));
    }
    for (name, used) in [
        ("BYHOUR", !rule.byhour.is_empty()),
        ("BYMINUTE", !rule.byminute.is_empty()),
        ("BYSECOND", !rule.bysecond.is_empty()),
        ("BYYEARDAY", !rule.byyearday.is_empty()),
        ("BYWEEKNO", !rule.byweekno.is_empty()),
    ] {
        if used {
            return Err(format!("{name} (Graph has no such part)"));
        }
    }
    let interval = rule.interval.unwrap_or(1);
    if interval == 0 {
        return Err("INTERVAL=0".into());
    }
    let only = |allowed: &[&str]| -> Result<(), String> {
        for (name, used) in [
            ("BYMONTH", !rule.bymonth.is_empty()),
            ("BYMONTHDAY", !rule.bymonthday.is_empty()),
            ("BYSETPOS", !rule.bysetpos.is_empty()),
        ] {
            if used && !allowed.contains(&name) {
                return Err(format!("{name} with FREQ={freq}"));
            }
        }
        Ok(())
    };
    let weekly = |days: Vec<&'static str>| {
        let first = day_name(rule.wkst.unwrap_or(ICalendarWeekday::Monday)); // RFC 5545's default
        json!({"type": "weekly", "interval": interval, "daysOfWeek": days, "firstDayOfWeek": first})
    };
    let month_day = |days: &[i8]| match days {
        [] => Ok(start.date.day()),
        [d @ 1..=31] => Ok(*d as u32),
        [d] => Err(format!("BYMONTHDAY={d} (counted from the month's end)")),
        _ => Err("several BYMONTHDAY values".to_string()),
    };
    match rule.freq {
        ICalendarFrequency::Daily => {
            only(&[])?;
            match rule.byday.as_slice() {
                [] => Ok(json!({"type": "daily", "interval": interval})),
                // "every weekday": the same days every week
                days if interval == 1 => Ok(weekly(plain_days(days)?)),
                _ => Err("BYDAY with FREQ=DAILY;INTERVAL above 1".into()),
            }
        }
        ICalendarFrequency::Weekly => {
            only(&[])?;
            let days = if rule.byday.is_empty() {
                vec![day_name(weekday(start.date))]
            } else {
                plain_days(&rule.byday)?
            };
            Ok(weekly(days))
        }
        ICalendarFrequency::Monthly => {
            only(&["BYMONTHDAY", "BYSETPOS"])?;
            match relative(rule)? {
                Some(_) if !rule.bymonthday.is_empty() => Err("BYDAY with BYMONTHDAY".into()),
                Some((days, index)) => Ok(json!({"type": "relativeMonthly", "interval": interval,
                    "daysOfWeek": days, "index": index})),
                None if !rule.bysetpos.is_empty() => Err("BYSETPOS without BYDAY".into()),
                None => Ok(json!({"type": "absoluteMonthly", "interval": interval,
                    "dayOfMonth": month_day(&rule.bymonthday)?})),
            }
        }
        ICalendarFrequency::Yearly => {
            let month = match rule.bymonth.as_slice() {
                [] => None,
                [m] if !m.is_leap() => Some(u32::from(m.month())),
                [_] => Err("a leap month".to_string())?,
                _ => Err("several BYMONTH values".to_string())?,
            };
            match relative(rule)? {
                Some(_) if !rule.bymonthday.is_empty() => Err("BYDAY with BYMONTHDAY".into()),
                Some(_) if month.is_none() => {
                    Err("BYDAY in FREQ=YEARLY without BYMONTH (a weekday of the year)".into())
                }
                Some((days, index)) => Ok(json!({"type": "relativeYearly", "interval": interval,
                    "daysOfWeek": days, "index": index, "month": month})),
                None if !rule.bysetpos.is_empty() => Err("BYSETPOS without BYDAY".into()),
                None => Ok(json!({"type": "absoluteYearly", "interval": interval,
                    "dayOfMonth": month_day(&rule.bymonthday)?,
                    "month": month.unwrap_or(start.date.month())})),
            }
        }
        _ => Err(format!("FREQ={freq}")),
    }
}

fn weekday(date: NaiveDate) -> ICalendarWeekday {
    match date.weekday() {
        chrono::Weekday::Sun => ICalendarWeekday::Sunday,
        chrono::Weekday::Mon => ICalendarWeekday::Monday,
        chrono::Weekday::Tue => ICalendarWeekday::Tuesday,
        chrono::Weekday::Wed => ICalendarWeekday::Wednesday,
        chrono::Weekday::Thu => ICalendarWeekday::Thursday,
        chrono::Weekday::Fri => ICalendarWeekday::Friday,
        chrono::Weekday::Sat => ICalendarWeekday::Saturday,
    }
}

/// The `recurrenceRange`: its dates are in the start's time zone.
fn range(rule: &ICalendarRecurrenceRule, start: &Start) -> Result<Value, String> {
    let mut range = json!({"startDate": start.date.to_string()});
    match (rule.count, &rule.until) {
        (Some(_), Some(_)) => return Err("both COUNT and UNTIL".into()),
        (Some(0), None) => return Err("COUNT=0".into()),
        (Some(count), None) => {
            range["type"] = json!("numbered");
            range["numberOfOccurrences"] = json!(count);
        }
        (None, Some(until)) => {
            range["type"] = json!("endDate");
            range["endDate"] = json!(until_date(until, start)?.to_string());
        }
        (None, None) => range["type"] = json!("noEnd"),
    }
    if let Some(tzid) = &start.tzid {
        range["recurrenceTimeZone"] = json!(tzid);
    }
    Ok(range)
}

/// UNTIL's day where the meeting takes place: a UTC UNTIL is converted to the start's time
/// zone (`UNTIL=20261130T233000Z` is 1 December in Paris), else its date is taken as is.
fn until_date(until: &PartialDateTime, start: &Start) -> Result<NaiveDate, String> {
    let until_dt = until
        .to_date_time()
        .ok_or_else(|| "UNTIL is not a date".to_string())?;
    let zone = start.tzid.as_deref().and_then(|t| Tz::from_str(t).ok());
    match (until_dt.offset, zone) {
        (Some(_), Some(zone)) => until_dt
            .to_date_time_with_tz(zone)
            .map(|at| at.with_timezone(&zone).date_naive())
            .ok_or_else(|| "UNTIL is not a time".to_string()),
        _ => Ok(until_dt.date_time.date()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARIS: &str = "TZID=Europe/Paris";
    /// Monday 9 November 2026, 09:30 in Paris.
    const MONDAY: &str = "20261109T093000";

    fn map(rrule: &str) -> Result<Value, String> {
        recurrence(rrule, PARIS, MONDAY)
    }

    #[test]
    fn every_other_day_five_times() {
        assert_eq!(
            map("FREQ=DAILY;INTERVAL=2;COUNT=5").unwrap(),
            json!({"pattern": {"type": "daily", "interval": 2},
                   "range": {"type": "numbered", "numberOfOccurrences": 5,
                             "startDate": "2026-11-09", "recurrenceTimeZone": "Europe/Paris"}})
        );
    }

    #[test]
    fn weekly_on_monday_and_wednesday_until_a_day() {
        assert_eq!(
            map("FREQ=WEEKLY;BYDAY=MO,WE;UNTIL=20261216T083000Z").unwrap(),
            json!({"pattern": {"type": "weekly", "interval": 1,
                               "daysOfWeek": ["monday", "wednesday"], "firstDayOfWeek": "monday"},
                   "range": {"type": "endDate", "startDate": "2026-11-09", "endDate": "2026-12-16",
                             "recurrenceTimeZone": "Europe/Paris"}})
        );
        // a UTC UNTIL is a day of the meeting's zone; WKST; the start's weekday by default
        let late = map("FREQ=WEEKLY;INTERVAL=2;WKST=SU;UNTIL=20261130T233000Z").unwrap();
        assert_eq!(late["range"]["endDate"], "2026-12-01");
        assert_eq!(late["pattern"]["daysOfWeek"], json!(["monday"]));
        assert_eq!(late["pattern"]["firstDayOfWeek"], "sunday");
        assert_eq!(late["pattern"]["interval"], 2);
        // every weekday, as some clients write it
        let weekdays = map("FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR").unwrap();
        assert_eq!(weekdays["pattern"]["type"], "weekly");
        assert_eq!(
            weekdays["pattern"]["daysOfWeek"].as_array().unwrap().len(),
            5
        );
        assert_eq!(weekdays["range"]["type"], "noEnd");
    }

    #[test]
    fn monthly_on_the_15th() {
        assert_eq!(
            map("FREQ=MONTHLY;BYMONTHDAY=15").unwrap()["pattern"],
            json!({"type": "absoluteMonthly", "interval": 1, "dayOfMonth": 15})
        );
        assert_eq!(
            map("FREQ=MONTHLY;INTERVAL=3").unwrap()["pattern"]["dayOfMonth"],
            9,
            "DTSTART's day"
        );
    }

    #[test]
    fn monthly_on_the_second_tuesday_and_the_last_friday() {
        assert_eq!(
            map("FREQ=MONTHLY;BYDAY=2TU").unwrap()["pattern"],
            json!({"type": "relativeMonthly", "interval": 1, "daysOfWeek": ["tuesday"],
                   "index": "second"})
        );
        assert_eq!(
            map("FREQ=MONTHLY;BYDAY=-1FR").unwrap()["pattern"],
            json!({"type": "relativeMonthly", "interval": 1, "daysOfWeek": ["friday"],
                   "index": "last"})
        );
        let last_weekday = map("FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1").unwrap();
        assert_eq!(last_weekday["pattern"]["index"], "last");
        assert_eq!(
            last_weekday["pattern"]["daysOfWeek"]
                .as_array()
                .unwrap()
                .len(),
            5
        );
    }

    #[test]
    fn yearly_on_the_first_of_march_and_relative() {
        assert_eq!(
            map("FREQ=YEARLY;BYMONTH=3;BYMONTHDAY=1").unwrap()["pattern"],
            json!({"type": "absoluteYearly", "interval": 1, "dayOfMonth": 1, "month": 3})
        );
        assert_eq!(
            map("FREQ=YEARLY").unwrap()["pattern"],
            json!({"type": "absoluteYearly", "interval": 1, "dayOfMonth": 9, "month": 11})
        );
        assert_eq!(
            map("FREQ=YEARLY;BYMONTH=11;BYDAY=4TH").unwrap()["pattern"],
            json!({"type": "relativeYearly", "interval": 1, "daysOfWeek": ["thursday"],
                   "index": "fourth", "month": 11})
        );
    }

    #[test]
    fn utc_and_all_day_starts_carry_no_time_zone() {
        let utc = recurrence("FREQ=DAILY;UNTIL=20261120T090000Z", "", "20261109T083000Z").unwrap();
        assert_eq!(
            utc["range"],
            json!({"type": "endDate", "startDate": "2026-11-09", "endDate": "2026-11-20"})
        );
        let day = recurrence("FREQ=YEARLY;UNTIL=20301224", "VALUE=DATE", "20261224").unwrap();
        assert_eq!(day["range"]["endDate"], "2030-12-24");
        assert_eq!(day["pattern"]["month"], 12);
    }

    #[test]
    fn what_graph_cannot_express_is_refused_with_the_reason() {
        for (rrule, why) in [
            ("FREQ=HOURLY;COUNT=3", "FREQ=HOURLY"),
            ("FREQ=MINUTELY", "FREQ=MINUTELY"),
            ("FREQ=DAILY;BYHOUR=9,14", "BYHOUR"),
            ("FREQ=MONTHLY;BYMONTHDAY=1,15", "several BYMONTHDAY"),
            ("FREQ=MONTHLY;BYMONTHDAY=-1", "BYMONTHDAY=-1"),
            ("FREQ=MONTHLY;BYDAY=1MO,3MO", "BYDAY=1MO"),
            ("FREQ=MONTHLY;BYDAY=5FR", "position 5"),
            ("FREQ=MONTHLY;BYDAY=MO", "no BYSETPOS"),
            ("FREQ=YEARLY;BYDAY=20MO", "position 20"),
            ("FREQ=YEARLY;BYDAY=1MO", "without BYMONTH"),
            ("FREQ=YEARLY;BYMONTH=1,7", "several BYMONTH"),
            ("FREQ=YEARLY;BYWEEKNO=20", "BYWEEKNO"),
            ("FREQ=WEEKLY;BYMONTH=1", "BYMONTH with FREQ=WEEKLY"),
            ("FREQ=DAILY;INTERVAL=2;BYDAY=MO", "INTERVAL above 1"),
            ("FREQ=DAILY;COUNT=2;UNTIL=20261120", "both COUNT and UNTIL"),
            ("nonsense", "unreadable"),
        ] {
            let err = map(rrule).expect_err(rrule);
            assert!(err.contains(why), "{rrule}: {err}");
        }
    }
}
