//! The man pages in `man/` are generated from the clap tree; this test fails
//! when they are stale. Regenerate with `FERRY_BLESS=1 cargo test --test man`.

use std::path::Path;

#[test]
fn man_pages_are_up_to_date() {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let fresh = tempfile::tempdir().expect("tmp");
    assert_cmd::Command::cargo_bin("ferry")
        .expect("bin")
        .args(["generate", "man", "--out"])
        .arg(fresh.path())
        .assert()
        .success();
    if std::env::var_os("FERRY_BLESS").is_some() {
        let _ = std::fs::remove_dir_all(&committed);
        std::fs::create_dir_all(&committed).expect("mkdir man");
        for f in std::fs::read_dir(fresh.path()).expect("read").flatten() {
            std::fs::copy(f.path(), committed.join(f.file_name())).expect("copy");
        }
    }
    let mut names: Vec<String> = std::fs::read_dir(fresh.path())
        .expect("read")
        .flatten()
        .map(|f| f.file_name().to_string_lossy().into())
        .collect();
    names.sort();
    assert!(names.iter().any(|n| n == "ferry-bundle-verify.1"), "{names:?}");
    let mut stale = Vec::new();
    for n in &names {
        let want = std::fs::read(fresh.path().join(n)).expect("fresh page");
        if std::fs::read(committed.join(n)).ok().as_deref() != Some(want.as_slice()) {
            stale.push(n.clone());
        }
    }
    let mut extra: Vec<String> = std::fs::read_dir(&committed)
        .map(|d| d.flatten().map(|f| f.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    extra.retain(|n| !names.contains(n));
    assert!(
        stale.is_empty() && extra.is_empty(),
        "man pages are stale: {stale:?}, no longer generated: {extra:?}; run FERRY_BLESS=1 cargo test --test man"
    );
}
