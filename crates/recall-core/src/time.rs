//! Calendar dates as Unix time, for the columns that date items (release days and years).

/// Seconds in a day.
pub const SECONDS_PER_DAY: i64 = 86_400;

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// A `DD-Mon-YYYY` date (`01-Jan-1995`, ml-100k's `u.item`, which also writes `4-Feb-1971`;
/// English month abbreviations) as Unix seconds at 00:00 UTC; `None` when it is not one.
pub fn dd_mon_yyyy(text: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut parts = text.trim().split('-');
    let (day, month, year) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !(1..=2).contains(&day.len()) || year.len() != 4 {
        return None;
    }
    let day: i64 = day.parse().ok()?;
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let year: i64 = year.parse().ok()?;
    let days_in_month = match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    (1..=days_in_month)
        .contains(&day)
        .then(|| days_from_civil(year, month, day) * SECONDS_PER_DAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_unix_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        // 1997-12-01 00:00 UTC, the ml-100k cold-start file's cut.
        assert_eq!(dd_mon_yyyy("01-Dec-1997"), Some(880_934_400));
        assert_eq!(dd_mon_yyyy("29-Feb-1996"), Some(825_552_000));
        assert_eq!(dd_mon_yyyy("4-Feb-1971"), dd_mon_yyyy("04-Feb-1971"));
        for bad in [
            "",
            "123-Jan-1995",
            "01-jan-1995",
            "29-Feb-1997",
            "32-Jan-1995",
            "01-Jan-95",
            "01-Jan-1995-x",
        ] {
            assert_eq!(dd_mon_yyyy(bad), None, "{bad}");
        }
    }
}
