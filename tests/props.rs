//! Property tests for the parsers: entries and values round-trip exactly,
//! the fast head parser accepts exactly what the full parser accepts, and no
//! input makes a parser panic.

use ferry::journal::{Entry, Op, Row, Timestamp};
use ferry::value::Value;
use proptest::prelude::*;

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::Integer),
        any::<f64>().prop_filter("NaN is stored as NULL by SQLite", |f| !f.is_nan()).prop_map(Value::Real),
        prop_oneof![Just(0.1 + 0.2), Just(-0.0), Just(1e308), Just(5e-324)].prop_map(Value::Real),
        ".*".prop_map(Value::Text),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Blob),
    ]
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_ ñ漢]{0,20}"
}

fn row(min: usize) -> impl Strategy<Value = Row> {
    proptest::collection::btree_map(name(), value(), min..6).prop_map(|m| Row(m.into_iter().collect()))
}

fn entry() -> impl Strategy<Value = Entry> {
    (1..i64::MAX as u64, -62_135_596_800_000_000i64..253_402_300_799_999_999, 0..3u8, name(), row(1), row(1)).prop_map(
        |(seq, ts, op, table, pk, fields)| {
            let op = [Op::Insert, Op::Update, Op::Delete][op as usize];
            let fields = (op != Op::Delete).then_some(fields);
            Entry { seq, ts: Timestamp(ts), op, table, pk, fields }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn entries_round_trip_exactly(e in entry()) {
        let line = e.to_line();
        let back = Entry::parse(&line).expect("parse what we wrote");
        prop_assert_eq!(back.to_line(), line.clone(), "re-serialising changed the bytes");
        let fields = back.fields.clone().unwrap_or_default();
        for (k, v) in e.fields.clone().unwrap_or_default().0 {
            prop_assert!(fields.get(&k).is_some_and(|b| b.same_as(&v)), "{} changed", k);
        }
        let head = Entry::parse_head(&line).expect("head");
        prop_assert_eq!(head, e.head());
    }

    #[test]
    fn head_and_full_parsers_agree_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        prop_assert_eq!(Entry::parse(&bytes).is_ok(), Entry::parse_head(&bytes).is_ok());
    }

    #[test]
    fn head_and_full_parsers_agree_on_mutated_entries(e in entry(), at in any::<prop::sample::Index>(), b in any::<u8>()) {
        let mut line = e.to_line();
        let i = at.index(line.len());
        line[i] = b;
        let full = Entry::parse(&line);
        let head = Entry::parse_head(&line);
        prop_assert_eq!(full.is_ok(), head.is_ok(), "{:?} vs {:?} on {}", full.err(), head.err(), String::from_utf8_lossy(&line));
    }

    #[test]
    fn bundle_reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
        if let Ok(mut r) = ferry::bundle::BundleReader::new(&bytes[..]) {
            while let Ok(Some(m)) = r.next_segment() {
                if let Ok(mut lines) = m.entries() {
                    while let Ok(Some(_)) = lines.next_line() {}
                }
            }
        }
    }
}
