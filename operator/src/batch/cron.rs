//! Checks a BatchInference's `schedule` as the CronJob controller will read it
//! (five fields, names of months and days, `@daily` and the other macros,
//! `@every <duration>`), so that a bad one is a clear condition on the
//! BatchInference rather than a CronJob the API server refuses. Pure.

/// One field of a five-field schedule: its name and bounds, the names it
/// accepts (index 0 is the value `min`), and whether `?` means any (the day
/// fields).
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    question: bool,
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        question: false,
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        name: "hour",
        question: false,
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        name: "day of month",
        question: true,
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        name: "month",
        question: false,
        min: 1,
        max: 12,
        names: &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
    },
    Field {
        name: "day of week",
        question: true,
        min: 0,
        max: 7,
        names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    },
];

const MACROS: [&str; 7] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

/// Checks `schedule`; the error says what is wrong, in words.
pub fn check(schedule: &str) -> Result<(), String> {
    let schedule = schedule.trim();
    if schedule.starts_with("TZ=") || schedule.starts_with("CRON_TZ=") {
        return Err("a time zone in the schedule is not supported; set spec.timeZone".into());
    }
    if let Some(every) = schedule.strip_prefix("@every ") {
        return duration(every.trim());
    }
    if schedule.starts_with('@') {
        return if MACROS.contains(&schedule.to_ascii_lowercase().as_str()) {
            Ok(())
        } else {
            Err(format!(
                "unknown macro {schedule:?}; use one of {} or @every <duration>",
                MACROS.join(", ")
            ))
        };
    }
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    if fields.len() != FIELDS.len() {
        return Err(format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
            fields.len()
        ));
    }
    for (text, field) in fields.iter().zip(&FIELDS) {
        for item in text.split(',') {
            self::item(item, field).map_err(|e| format!("{} field {text:?}: {e}", field.name))?;
        }
    }
    Ok(())
}

/// One comma-separated item: `*` or `?` (day fields), `N`, `N-M`, each
/// optionally `/STEP`.
fn item(item: &str, field: &Field) -> Result<(), String> {
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (range, Some(step)),
        None => (item, None),
    };
    if let Some(step) = step {
        match step.parse::<u32>() {
            Ok(step) if step >= 1 => {}
            _ => return Err(format!("step {step:?} must be a whole number above 0")),
        }
    }
    if range == "*" || (range == "?" && field.question) {
        return Ok(());
    }
    let (low, high) = match range.split_once('-') {
        Some((low, high)) => (value(low, field)?, value(high, field)?),
        None => {
            let value = value(range, field)?;
            (value, value)
        }
    };
    if low > high {
        return Err(format!("range {range:?} runs backwards"));
    }
    Ok(())
}

/// A number or a name, within the field's bounds.
fn value(text: &str, field: &Field) -> Result<u32, String> {
    if let Some(index) = field
        .names
        .iter()
        .position(|name| name.eq_ignore_ascii_case(text))
    {
        return Ok(field.min + index as u32);
    }
    match text.parse::<u32>() {
        Ok(value) if (field.min..=field.max).contains(&value) => Ok(value),
        Ok(value) => Err(format!("{value} is outside {}-{}", field.min, field.max)),
        Err(_) => Err(format!("{text:?} is not a number{}", names_hint(field))),
    }
}

fn names_hint(field: &Field) -> String {
    if field.names.is_empty() {
        String::new()
    } else {
        format!(" or a name ({})", field.names.join(", "))
    }
}

/// A Go duration as `@every` takes it: `90s`, `1h30m`, `1.5h`.
fn duration(text: &str) -> Result<(), String> {
    let bad = || format!("@every needs a duration such as 90s, 15m or 1h30m, not {text:?}");
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let number = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if number == 0 || rest[..number].parse::<f64>().is_err() {
            return Err(bad());
        }
        rest = &rest[number..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        if !["ns", "us", "µs", "ms", "s", "m", "h"].contains(&&rest[..unit]) {
            return Err(bad());
        }
        rest = &rest[unit..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn schedules_the_cron_job_controller_accepts() {
        for good in [
            "0 2 * * *",
            "*/15 * * * *",
            "0 0 1 1 *",
            "30 6 * * mon-fri",
            "0 0 * JAN,jul SUN",
            "0 12 ? * 7",
            "5-55/10 0-23/2 1-31 1-12 0-6",
            "@daily",
            "@Hourly",
            "@every 1h30m",
            "@every 90s",
        ] {
            assert_eq!(check(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn a_bad_schedule_says_what_is_wrong() {
        let cases = [
            ("* * * *", "expected 5 fields"),
            ("0 2 * * * *", "found 6"),
            ("60 * * * *", "minute field \"60\": 60 is outside 0-59"),
            ("0 24 * * *", "hour field"),
            ("0 0 0 * *", "day of month field \"0\": 0 is outside 1-31"),
            ("0 0 * 13 *", "month field"),
            ("0 0 * * 8", "day of week field"),
            ("0 0 * foo *", "not a number or a name (jan"),
            ("*/0 * * * *", "step \"0\" must be a whole number above 0"),
            ("10-5 * * * *", "runs backwards"),
            ("@sometimes", "unknown macro"),
            ("@every soon", "@every needs a duration"),
            ("TZ=UTC 0 2 * * *", "set spec.timeZone"),
            ("? * * * *", "minute field"),
        ];
        for (bad, expected) in cases {
            let error = check(bad).unwrap_err();
            assert!(error.contains(expected), "{bad}: {error}");
        }
    }
}
