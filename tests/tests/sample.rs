//! `vigie-agent sample` agrees with the tools an administrator trusts: df, free, who, loadavg.

use std::process::Command;

use serde_json::Value;
use vigie_tests::run;

fn sample() -> Value {
    let (code, out, err) = run("vigie-agent", &["sample", "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<Value>(&out).expect("json")["report"].clone()
}

fn tool(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(out.status.success(), "{cmd} {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

#[test]
fn filesystems_agree_with_df() {
    let report = sample();
    let fss = report["filesystems"].as_array().expect("filesystems");
    assert!(fss.iter().any(|f| f["mount_point"] == "/"), "/ is reported");
    for fs in fss {
        let mount = fs["mount_point"].as_str().expect("mount");
        let df = tool("df", &["-P", "-B1", mount]);
        let row: Vec<&str> = df
            .lines()
            .nth(1)
            .expect("df row")
            .split_whitespace()
            .collect();
        let n = row.len();
        // Filesystem may contain spaces; the last five columns are fixed.
        let (total, used, avail): (u64, u64, u64) = (
            row[n - 5].parse().expect("total"),
            row[n - 4].parse().expect("used"),
            row[n - 3].parse().expect("avail"),
        );
        assert_eq!(row[n - 1], mount, "{df}");
        assert_eq!(u(&fs["total_bytes"]), total, "{mount}: total");
        // Used and available move while tests write; allow 1% of the size.
        let slack = total / 100;
        assert!(
            u(&fs["used_bytes"]).abs_diff(used) <= slack,
            "{mount}: used {fs} vs {df}"
        );
        assert!(
            u(&fs["available_bytes"]).abs_diff(avail) <= slack,
            "{mount}: avail"
        );
    }
    // Every df row with a real filesystem is reported (df -P lists pseudo ones too).
    let df = tool("df", &["-B1", "--output=source,fstype,size,target"]);
    for line in df.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (fstype, size, target) = (
            cols[cols.len() - 3],
            cols[cols.len() - 2],
            cols[cols.len() - 1],
        );
        if ["devtmpfs", "squashfs", "proc", "sysfs"].contains(&fstype) || size == "0" {
            continue;
        }
        assert!(
            fss.iter().any(|f| f["mount_point"] == target),
            "df lists {target} ({fstype}) but the report does not"
        );
    }
}

#[test]
fn memory_and_swap_agree_with_free() {
    let report = sample();
    let free = tool("free", &["-b"]);
    let row = |label: &str| -> Vec<u64> {
        free.lines()
            .find(|l| l.starts_with(label))
            .expect(label)
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().expect("number"))
            .collect()
    };
    let mem = row("Mem:");
    let swap = row("Swap:");
    assert_eq!(u(&report["memory"]["total_bytes"]), mem[0]);
    // free's "used" is total - available (procps 4); both move between the two calls, more
    // so while other tests start processes: allow 1% of memory.
    let slack = mem[0] / 100;
    assert!(
        u(&report["memory"]["used_bytes"]).abs_diff(mem[1]) <= slack,
        "{free}"
    );
    assert!(
        u(&report["memory"]["available_bytes"]).abs_diff(mem[5]) <= slack,
        "{free}"
    );
    assert_eq!(u(&report["swap"]["total_bytes"]), swap[0]);
    assert!(u(&report["swap"]["used_bytes"]).abs_diff(swap[1]) <= slack);
}

#[test]
fn load_agrees_with_proc_loadavg_and_nproc() {
    let report = sample();
    let loadavg = std::fs::read_to_string("/proc/loadavg").expect("loadavg");
    let l15: f64 = loadavg
        .split_whitespace()
        .nth(2)
        .expect("l15")
        .parse()
        .expect("f64");
    // The 15-minute average barely moves between two reads.
    let got = report["load"]["load15"].as_f64().expect("load15");
    assert!((got - l15).abs() < 0.2, "{got} vs {loadavg}");
    let nproc: u64 = tool("getconf", &["_NPROCESSORS_ONLN"])
        .trim()
        .parse()
        .expect("nproc");
    assert_eq!(u(&report["load"]["cpus"]), nproc);
}

#[test]
fn users_agree_with_who() {
    let report = sample();
    let who = tool("who", &[]);
    let mut expected: Vec<&str> = who
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut got: Vec<&str> = report["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| u["name"].as_str().expect("name"))
        .collect();
    expected.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, expected, "who says:\n{who}");
}

#[test]
fn table_output_names_the_host() {
    let (code, out, _) = run("vigie-agent", &["sample"]);
    assert_eq!(code, 0);
    let host = tool("hostname", &[]);
    assert!(
        out.starts_with(&format!("host        {}", host.trim())),
        "{out}"
    );
    assert!(out.contains("MOUNT"));
}
