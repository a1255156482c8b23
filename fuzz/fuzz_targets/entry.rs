//! One JSON Lines entry: the full parser and the allocation-free head
//! parser must accept exactly the same lines and agree on the head; an
//! accepted entry's canonical line parses back to the same canonical line.
#![no_main]

use ferry::journal::Entry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let full = Entry::parse(data);
    let head = Entry::parse_head(data);
    assert_eq!(
        full.is_ok(),
        head.is_ok(),
        "parse and parse_head disagree: {:?} / {:?}",
        full.as_ref().err(),
        head.as_ref().err()
    );
    if let (Ok(e), Ok(h)) = (&full, &head) {
        assert_eq!(e.head(), *h);
        let line = e.to_line();
        let again = Entry::parse(&line).expect("a canonical line parses");
        assert_eq!(again.to_line(), line, "canonical lines are stable");
    }
});
