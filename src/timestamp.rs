//! Instants as every interface writes them: RFC 3339 in UTC with milliseconds and `Z`, such as
//! `2026-11-22T09:30:00.000Z` (the GraphQL `DateTime` scalar, the REST contracts, exports).
//!
//! A read of 20 settings writes 40 of them; chrono's formatting machinery took 5 % of the
//! server's instructions for such a read, so the digits are written directly. The output is
//! chrono's `to_rfc3339_opts(SecondsFormat::Millis, true)`, which the few instants outside the
//! direct form (years beyond 0 – 9999, a leap second) still take.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};

/// The length of the direct form.
const LEN: usize = "2026-11-22T09:30:00.000Z".len();

/// `at` in the one form every interface writes.
pub fn rfc3339_millis(at: DateTime<Utc>) -> String {
    match direct(at) {
        // Only ASCII digits and separators.
        Some(text) => text.iter().map(|&byte| char::from(byte)).collect(),
        None => at.to_rfc3339_opts(SecondsFormat::Millis, true),
    }
}

/// Appends [`rfc3339_millis`] of `at` to `out`.
pub fn push_rfc3339_millis(out: &mut Vec<u8>, at: DateTime<Utc>) {
    match direct(at) {
        Some(text) => out.extend_from_slice(&text),
        None => out.extend_from_slice(rfc3339_millis(at).as_bytes()),
    }
}

/// The decimal digits of 0 – 99, two by two.
const PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// `at` written two digits at a time, where it has four year digits and no leap second. The
/// date and time are taken apart once, from the UTC fields (without the offset that each of
/// `DateTime`'s own accessors adds).
fn direct(at: DateTime<Utc>) -> Option<[u8; LEN]> {
    let naive = at.naive_utc();
    let (date, time) = (naive.date(), naive.time());
    let year = u32::try_from(date.year())
        .ok()
        .filter(|&year| year <= 9999)?;
    let nanos = time.nanosecond();
    if nanos >= 1_000_000_000 {
        return None;
    }
    let millis = nanos / 1_000_000;
    let mut text = *b"0000-00-00T00:00:00.000Z";
    for (at, number) in [
        (0, year / 100),
        (2, year % 100),
        (5, date.month()),
        (8, date.day()),
        (11, time.hour()),
        (14, time.minute()),
        (17, time.second()),
        (21, millis % 100),
    ] {
        let pair = 2 * number as usize;
        text[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    text[20] = b'0' + (millis / 100) as u8;
    Some(text)
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeZone};

    use super::*;

    fn at(
        year: i32,
        month: u32,
        day: u32,
        (h, m, s): (u32, u32, u32),
        nanos: u32,
    ) -> DateTime<Utc> {
        let date = NaiveDate::from_ymd_opt(year, month, day).unwrap();
        Utc.from_utc_datetime(&date.and_hms_nano_opt(h, m, s, nanos).unwrap())
    }

    #[test]
    fn every_instant_is_written_as_chrono_writes_it() {
        let mut instants = vec![
            at(2026, 11, 22, (9, 30, 0), 0),
            at(2026, 12, 31, (23, 59, 59), 999_999_999),
            at(1970, 1, 1, (0, 0, 0), 1_000_000),
            at(1, 1, 1, (0, 0, 0), 0),
            at(999, 2, 3, (4, 5, 6), 7_890_123),
            at(9999, 12, 31, (23, 59, 59), 999_000_000),
            // Outside the direct form: five year digits, a year before 0, a leap second.
            at(10000, 1, 1, (0, 0, 0), 0),
            at(-1, 6, 15, (12, 0, 0), 0),
            at(2016, 12, 31, (23, 59, 59), 1_500_000_000),
        ];
        // A spread of instants from 1970 to 2054, every field moving.
        let mut seconds = 0_i64;
        for step in 0..5_000_i64 {
            seconds += 441_799 + step * 37;
            let nanos = ((step as u64 * 7_919_993) % 1_000_000_000) as u32;
            instants.push(Utc.timestamp_opt(seconds, nanos).unwrap());
        }
        for instant in instants {
            let expected = instant.to_rfc3339_opts(SecondsFormat::Millis, true);
            assert_eq!(rfc3339_millis(instant), expected);
            let mut pushed = b"x".to_vec();
            push_rfc3339_millis(&mut pushed, instant);
            assert_eq!(pushed, [b"x", expected.as_bytes()].concat());
        }
    }
}
