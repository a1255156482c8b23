//! An auditor with only `tar`, `zstd`, `jq` and `sha256sum` can list what a
//! bundle holds, read its manifest and every entry, and check the hashes.
//! These tools come from `scripts/setup-test-deps`; a missing one fails the
//! test with that hint rather than skipping it.

mod common;

use std::process::Command;

use common::*;

fn tool(cmd: &str, args: &[&str]) -> Vec<u8> {
    let out =
        Command::new("sh").arg("-c").arg(format!("{cmd} {}", args.join(" "))).output().unwrap_or_else(|e| {
            panic!("cannot run {cmd}: {e}; run scripts/setup-test-deps to install the standard tools")
        });
    assert!(
        out.status.success(),
        "`{cmd} {}` failed: {}\n(missing tool? run scripts/setup-test-deps)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn standard_tools_read_a_bundle() {
    for t in ["tar", "zstd", "jq", "sha256sum"] {
        let found = Command::new("sh").arg("-c").arg(format!("command -v {t}")).output().expect("sh");
        assert!(found.status.success(), "the standard tool `{t}` is missing: run scripts/setup-test-deps");
    }
    let dir = tempfile::tempdir().expect("tmp");
    let a = init_node(dir.path(), "a", None);
    let journal = dir.path().join("j.jsonl");
    simple_journal(&journal, 40);
    let bundle = create_bundle(&a, &journal, &dir.path().join("o")).expect("bundle");
    let b = format!("'{}'", bundle.display());

    let members = String::from_utf8(tool("tar", &["-tf", &b])).expect("utf8");
    let members: Vec<&str> = members.lines().collect();
    assert_eq!(members[..2], ["manifest.json", "manifest.sig"]);
    let segment = members[2];
    assert!(segment.ends_with(".1-40.jsonl.zst"), "{segment}");

    let q = |filter: &str| {
        let out = tool("tar", &["-xOf", &b, "manifest.json", "|", "jq", "-r", &format!("'{filter}'")]);
        String::from_utf8(out).expect("utf8").trim().to_owned()
    };
    assert_eq!(q(".format"), "ferry-bundle");
    assert_eq!(q(".segments[0].descriptor.count"), "40");

    let entries_sha = q(".segments[0].descriptor.entries_sha256");
    let zstd_sha = q(".segments[0].descriptor.zstd_sha256");
    let sum = |pipeline: &str| {
        let out = String::from_utf8(tool("tar", &["-xOf", &b, segment, pipeline, "|", "sha256sum"])).expect("utf8");
        out.split_whitespace().next().unwrap_or_default().to_owned()
    };
    assert_eq!(sum(""), zstd_sha, "sha256sum of the compressed member");
    assert_eq!(sum("| zstd -dc"), entries_sha, "sha256sum of the entries");

    let tables =
        tool("tar", &["-xOf", &b, segment, "|", "zstd", "-dc", "|", "jq", "-r", "'.table'", "|", "sort", "-u"]);
    assert_eq!(String::from_utf8(tables).expect("utf8"), "t\n");
    let plain = tool("tar", &["-xOf", &b, segment, "|", "zstd", "-dc"]);
    assert_eq!(plain, std::fs::read(&journal).expect("journal"), "entries are stored byte for byte");
}
