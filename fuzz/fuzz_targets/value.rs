//! The value encoding: for any JSON value, the building parser, the
//! checking parser entries use and the in-place visitor agree, and an
//! accepted value serialises back to a text that parses to the same bits.
//! (`Value::check_json` alone lets a lone-surrogate string through, which
//! this target found; entries check values with `journal::check_value`.)
#![no_main]

use ferry::value::{Value, ValueCheck};
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(raw) = serde_json::from_str::<&RawValue>(text) else { return };
    let built = Value::from_json(raw.get());
    let checked = ferry::journal::check_value(raw.get());
    assert_eq!(built.is_ok(), checked.is_ok(), "{text:?}: {built:?} / {checked:?}");
    let mut d = serde_json::Deserializer::from_str(raw.get());
    let visited = serde::de::DeserializeSeed::deserialize(ValueCheck, &mut d);
    assert_eq!(built.is_ok(), visited.is_ok(), "{text:?}: ValueCheck disagrees");
    if let Ok(v) = built {
        let s = serde_json::to_string(&v).expect("serialise");
        let back = Value::from_json(&s).expect("a written value reads back");
        assert!(back.same_as(&v) || matches!(v, Value::Real(f) if f.is_nan()), "{text:?} -> {s} -> {back:?}");
    }
});
