//! The DC-09 timestamp `HH:MM:SS,MM-DD-YYYY` (UTC), as it appears after `_` at the end of a
//! frame and inside the `H` extended-data field.

use serde::{Serialize, Serializer};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// A DC-09 timestamp. Always UTC; only whole seconds travel on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(PrimitiveDateTime);

/// Length of the textual form `HH:MM:SS,MM-DD-YYYY`.
pub const TIMESTAMP_LEN: usize = 19;

impl Timestamp {
    /// Parse exactly `HH:MM:SS,MM-DD-YYYY` (19 bytes). Returns `None` for any other shape or
    /// for an impossible date or time (month 13, 31 February, hour 24…).
    pub fn parse(s: &[u8]) -> Option<Timestamp> {
        if s.len() != TIMESTAMP_LEN {
            return None;
        }
        let shape = b"dd:dd:dd,dd-dd-dddd";
        for (c, want) in s.iter().zip(shape) {
            let ok = if *want == b'd' { c.is_ascii_digit() } else { c == want };
            if !ok {
                return None;
            }
        }
        let num = |a: usize, b: usize| -> u32 { s[a..b].iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')) };
        let (hour, minute, second) = (num(0, 2), num(3, 5), num(6, 8));
        let (month, day, year) = (num(9, 11), num(12, 14), num(15, 19));
        let month = Month::try_from(u8::try_from(month).ok()?).ok()?;
        let date = Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?).ok()?;
        let time = Time::from_hms(
            u8::try_from(hour).ok()?,
            u8::try_from(minute).ok()?,
            u8::try_from(second).ok()?,
        )
        .ok()?;
        Some(Timestamp(PrimitiveDateTime::new(date, time)))
    }

    /// The timestamp for a point in time, truncated to whole seconds and converted to UTC.
    pub fn from_datetime(t: OffsetDateTime) -> Timestamp {
        let utc = t.to_offset(UtcOffset::UTC);
        let time = utc.time();
        let whole = Time::from_hms(time.hour(), time.minute(), time.second()).unwrap_or(Time::MIDNIGHT);
        Timestamp(PrimitiveDateTime::new(utc.date(), whole))
    }

    /// The timestamp as a UTC point in time.
    pub fn to_datetime(self) -> OffsetDateTime {
        self.0.assume_utc()
    }

    /// Signed difference `self - other` in whole seconds.
    ///
    /// Both sides are compared at the wire's resolution: `other` is first truncated to its
    /// whole second, as a panel truncates its own clock when it stamps a frame. (Comparing
    /// against the receiver's fraction would make the window's edges depend on where in its
    /// second the receiver happens to be.)
    pub fn seconds_since(self, other: OffsetDateTime) -> i64 {
        (self.to_datetime() - Timestamp::from_datetime(other).to_datetime()).whole_seconds()
    }

    /// Write the 19-byte textual form.
    pub fn write_to(self, out: &mut Vec<u8>) {
        let d = self.0;
        let two = |out: &mut Vec<u8>, v: u8| {
            out.push(b'0' + v / 10);
            out.push(b'0' + v % 10);
        };
        two(out, d.hour());
        out.push(b':');
        two(out, d.minute());
        out.push(b':');
        two(out, d.second());
        out.push(b',');
        two(out, u8::from(d.month()));
        out.push(b'-');
        two(out, d.day());
        out.push(b'-');
        // Years outside 0..=9999 cannot be parsed from the wire; clamp so encoding stays 4 digits.
        let year = d.year().clamp(0, 9999) as u32;
        for div in [1000, 100, 10, 1] {
            out.push(b'0' + ((year / div) % 10) as u8);
        }
    }

    /// The 19-character textual form.
    pub fn to_wire_string(self) -> String {
        let mut v = Vec::with_capacity(TIMESTAMP_LEN);
        self.write_to(&mut v);
        String::from_utf8_lossy(&v).into_owned()
    }

    /// RFC 3339 form, for JSON output and storage.
    pub fn to_rfc3339(self) -> String {
        let d = self.0;
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute(),
            d.second()
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_wire_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn parse_and_write_round_trip() {
        let ts = Timestamp::parse(b"12:00:00,01-15-2026").expect("valid");
        assert_eq!(ts.to_datetime(), datetime!(2026-01-15 12:00:00 UTC));
        assert_eq!(ts.to_wire_string(), "12:00:00,01-15-2026");
        assert_eq!(ts.to_rfc3339(), "2026-01-15T12:00:00Z");
    }

    #[test]
    fn rejects_impossible_dates_and_shapes() {
        for bad in [
            &b"24:00:00,01-15-2026"[..],
            b"12:60:00,01-15-2026",
            b"12:00:00,13-15-2026",
            b"12:00:00,02-30-2026",
            b"12:00:00,00-10-2026",
            b"12:00:0,01-15-2026",
            b"12-00-00,01-15-2026",
            b"12:00:00,01-15-26",
            b"",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn difference_in_seconds() {
        let ts = Timestamp::parse(b"12:00:20,01-15-2026").expect("valid");
        assert_eq!(ts.seconds_since(datetime!(2026-01-15 12:00:00 UTC)), 20);
        let from = Timestamp::from_datetime(datetime!(2026-01-15 13:00:00.9 +01:00));
        assert_eq!(from.to_wire_string(), "12:00:00,01-15-2026");
    }
}
