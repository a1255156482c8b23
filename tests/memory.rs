//! Memory stays bounded by a documented constant however long the entry
//! lines are (issue 15): a small bundle of long lines once took 1.2 GB to
//! apply, because the checking thread handed entries over 256 at a time
//! whatever their size. Alone in its own test binary, so the process's peak
//! memory is this test's.

#[cfg(target_os = "linux")]
#[test]
fn checking_long_lines_for_apply_holds_a_bounded_amount_of_memory() {
    use ferry::bundle::{write_bundle, writer::copy_file, BundleReader, SegmentBuilder};
    use ferry::chain::ChainHash;
    use ferry::journal::Entry;

    /// The process's peak resident memory so far, in bytes.
    fn peak() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM");
        kb * 1024
    }

    let dir = tempfile::tempdir().expect("tmp");
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let origin = ferry::keys::NodeId::of(&key.verifying_key());
    // 40 entries of 8 MiB each (320 MiB): compressible enough to stay under
    // the 1000x expansion limit, but far more than the bound.
    const LINES: u64 = 40;
    const LEN: usize = 8 << 20;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut text = String::with_capacity(LEN);
    let mut b = SegmentBuilder::new(origin.clone(), ChainHash::GENESIS, dir.path()).expect("builder");
    for seq in 1..=LINES {
        text.clear();
        while text.len() < LEN {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            text.push_str(&format!("{x:016x}"));
            text.push_str(&"a".repeat(1008));
        }
        let line = format!(
            "{{\"seq\":{seq},\"ts\":\"2026-01-01T00:00:00.000000Z\",\"op\":\"insert\",\"table\":\"t\",\"pk\":{{\"id\":{seq}}},\"fields\":{{\"v\":\"{text}\"}}}}"
        );
        let e = Entry::parse_head(line.as_bytes()).expect("entry");
        b.push_head(&e, line.as_bytes()).expect("push");
    }
    drop(text);
    let built = b.finish(None, &key).expect("finish");
    let d = built.descriptor.clone();
    let w =
        write_bundle(dir.path(), vec![built.record], &[d], &key, |_, out| copy_file(&built.file, out)).expect("write");

    let before = peak();
    let mut reader = BundleReader::open(&w.path).expect("open");
    let member = reader.next_segment().expect("segment").expect("one");
    let mut seen = 0u64;
    ferry::verify::check_entries(member, &mut ferry::progress::Silent, |e, line| {
        seen += 1;
        assert_eq!(e.seq, seen);
        assert!(line.len() > LEN);
        Ok(())
    })
    .expect("check");
    assert_eq!(seen, LINES);
    let grew = peak().saturating_sub(before);
    eprintln!("peak grew by {} MiB", grew >> 20);
    // docs/PERFORMANCE.md, "Memory bounds": at most two batches of entry lines
    // (each closed at 1 MiB, plus the line that closed it) with their parsed
    // entries, one partial line and the decoder's buffers.
    assert!(grew < 200 << 20, "checking 320 MiB of long lines grew memory by {} MiB", grew >> 20);
}
