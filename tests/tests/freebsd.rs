//! The FreeBSD package: `packaging/freebsd/make-pkg.sh` produces what `pkg add` reads.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use vigie_tests::bin;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn pkg_archive_manifests_match_its_files() {
    let out = tempfile::tempdir().expect("tempdir");
    // Any binary will do for the archive's structure; the cross-built one is not needed.
    let made = Command::new(repo("packaging/freebsd/make-pkg.sh"))
        .arg(bin("vigie-agent"))
        .arg(out.path())
        .output()
        .expect("make-pkg.sh");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let pkg = String::from_utf8_lossy(&made.stdout).trim().to_owned();
    assert!(
        pkg.ends_with(&format!("vigie-agent-{}.pkg", env!("CARGO_PKG_VERSION"))),
        "{pkg}"
    );

    // The manifests come first, as pkg requires.
    let list = Command::new("tar")
        .args(["-tJf", &pkg])
        .output()
        .expect("tar");
    let names: Vec<String> = String::from_utf8_lossy(&list.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(&names[..2], ["+COMPACT_MANIFEST", "+MANIFEST"], "{names:?}");

    let x = tempfile::tempdir().expect("tempdir");
    let status = Command::new("tar")
        .args(["-xJf", &pkg, "-C"])
        .arg(x.path())
        .status()
        .expect("tar");
    assert!(status.success());
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(x.path().join("+MANIFEST")).expect("+MANIFEST"))
            .expect("json");
    let compact: Value = serde_json::from_slice(
        &std::fs::read(x.path().join("+COMPACT_MANIFEST")).expect("compact"),
    )
    .expect("json");
    for key in [
        "name",
        "origin",
        "version",
        "comment",
        "desc",
        "maintainer",
        "www",
        "prefix",
        "abi",
    ] {
        assert!(manifest[key].is_string(), "+MANIFEST lacks {key}");
        assert_eq!(manifest[key], compact[key], "{key}");
    }
    assert_eq!(manifest["abi"], "FreeBSD:14:amd64");
    assert!(
        manifest["messages"][0]["message"]
            .as_str()
            .expect("message")
            .contains("vigie_agent_enable=\"YES\"")
    );

    let files = manifest["files"].as_object().expect("files");
    let expected = [
        "/usr/local/sbin/vigie-agent",
        "/usr/local/etc/rc.d/vigie_agent",
        "/usr/local/etc/rc.d/vigie_agent.sh",
        "/usr/local/etc/vigie/agent.toml.sample",
    ];
    assert_eq!(files.len(), expected.len());
    let mut flatsize = 0;
    for path in expected {
        let on_disk = x.path().join(path.trim_start_matches('/'));
        let entry = &files[path];
        assert_eq!(entry["sum"], format!("1${}", sha256(&on_disk)), "{path}");
        flatsize += std::fs::metadata(&on_disk).expect("file").len();
        assert!(names.iter().any(|n| n == path), "{path} is in the archive");
    }
    assert_eq!(manifest["flatsize"], flatsize);
    // The packaged binary is the one given.
    assert_eq!(
        sha256(&x.path().join("usr/local/sbin/vigie-agent")),
        sha256(&bin("vigie-agent"))
    );
}

#[test]
fn rc_scripts_parse() {
    for script in [
        "packaging/freebsd/rc.d/vigie_agent",
        "packaging/freebsd/rc.d/vigie_agent.sh",
    ] {
        let status = Command::new("sh")
            .arg("-n")
            .arg(repo(script))
            .status()
            .expect("sh");
        assert!(status.success(), "{script}");
    }
}
