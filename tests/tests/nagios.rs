//! A real Nagios Core 4 (Debian nagios4-core) runs check_vigie and check_nrpe against a
//! real collector and two real agents, with the packaged command definitions.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vigie_tests::{Agent, Collector, Pki, bin, wait_until};

const NAGIOS: &str = "/usr/sbin/nagios4";

/// A copy of a packaged Nagios file in `dir`: Nagios reads its objects as user nagios,
/// who may not be able to walk into the checkout (a clone under a private home folder).
fn packaged(name: &str, dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging/nagios")
        .join(name);
    let copy = dir.join(name);
    std::fs::copy(&source, &copy).expect("packaged nagios file");
    copy
}

const BASE: &str = "
define timeperiod {
    timeperiod_name 24x7
    alias 24x7
    sunday 00:00-24:00
    monday 00:00-24:00
    tuesday 00:00-24:00
    wednesday 00:00-24:00
    thursday 00:00-24:00
    friday 00:00-24:00
    saturday 00:00-24:00
}
define command {
    command_name notify-none
    command_line /bin/true
}
define contact {
    contact_name nobody
    host_notifications_enabled 0
    service_notifications_enabled 0
    host_notification_period 24x7
    service_notification_period 24x7
    host_notification_options n
    service_notification_options n
    host_notification_commands notify-none
    service_notification_commands notify-none
}
define contactgroup {
    contactgroup_name admins
    members nobody
}
";

/// A self-contained Nagios configuration in `dir` that loads `objects`.
fn nagios_cfg(dir: &Path, plugins: &Path, objects: &[PathBuf]) -> PathBuf {
    let var = dir.join("var");
    for sub in ["spool/checkresults", "rw"] {
        std::fs::create_dir_all(var.join(sub)).expect("mkdir");
    }
    std::fs::write(dir.join("base.cfg"), BASE).expect("base.cfg");
    std::fs::write(
        dir.join("resource.cfg"),
        format!("$USER1$={}\n", plugins.display()),
    )
    .expect("resource.cfg");
    let v = var.display();
    let mut cfg = format!(
        "log_file={v}/nagios.log
resource_file={d}/resource.cfg
cfg_file={d}/base.cfg
object_cache_file={v}/objects.cache
precached_object_file={v}/objects.precache
status_file={v}/status.dat
status_update_interval=1
command_file={v}/rw/nagios.cmd
lock_file={v}/nagios.lock
temp_file={v}/nagios.tmp
temp_path={v}
check_result_path={v}/spool/checkresults
state_retention_file={v}/retention.dat
retain_state_information=0
nagios_user=nagios
nagios_group=nagios
interval_length=1
check_result_reaper_frequency=1
max_check_result_reaper_time=1
service_inter_check_delay_method=n
host_inter_check_delay_method=n
enable_notifications=0
enable_flap_detection=0
",
        d = dir.display()
    );
    for o in objects {
        cfg.push_str(&format!("cfg_file={}\n", o.display()));
    }
    let path = dir.join("nagios.cfg");
    std::fs::write(&path, cfg).expect("nagios.cfg");
    // Nagios drops to the nagios user: it must read everything and write var/.
    chmod_tree(dir);
    let status = Command::new("chown")
        .args(["-R", "nagios:nagios"])
        .arg(&var)
        .status()
        .expect("chown");
    assert!(status.success());
    path
}

fn chmod_tree(dir: &Path) {
    let status = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(dir)
        .status()
        .expect("chmod");
    assert!(status.success());
}

/// `nagios4 -v`: must report no errors.
fn verify(cfg: &Path) {
    let out = Command::new(NAGIOS)
        .arg("-v")
        .arg(cfg)
        .output()
        .expect("nagios4 is installed (Debian package nagios4-core)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Total Errors:   0"), "nagios4 -v:\n{text}");
}

/// Service states from status.dat: (host, service) -> (current_state, output, perfdata).
fn services(status_dat: &Path) -> HashMap<(String, String), (i32, String, String)> {
    let text = std::fs::read_to_string(status_dat).unwrap_or_default();
    let mut out = HashMap::new();
    for block in text.split("servicestatus {").skip(1) {
        let block = block.split('}').next().unwrap_or("");
        let field = |k: &str| {
            block
                .lines()
                .find_map(|l| l.trim().strip_prefix(&format!("{k}=")))
                .unwrap_or("")
                .to_owned()
        };
        if field("has_been_checked") != "1" {
            continue;
        }
        out.insert(
            (field("host_name"), field("service_description")),
            (
                field("current_state").parse().unwrap_or(-1),
                field("plugin_output"),
                field("performance_data"),
            ),
        );
    }
    out
}

struct Nagios(Child);

impl Drop for Nagios {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by its PID.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = wait_until(Duration::from_secs(10), "nagios to stop", || {
            self.0.try_wait().ok().flatten()
        });
    }
}

#[test]
fn packaged_objects_are_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = nagios_cfg(
        dir.path(),
        Path::new("/usr/lib/nagios/plugins"),
        &[
            packaged("commands.cfg", dir.path()),
            packaged("services.cfg", dir.path()),
        ],
    );
    verify(&cfg);
}

#[test]
fn nagios_runs_check_vigie_and_check_nrpe_and_sees_an_agent_go() {
    let pki = Pki::new();
    let run_dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(run_dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let socket = run_dir.path().join("collector.sock");
    let collector = Collector::spawn_with(&pki, |c| {
        c.listen.admin_socket = socket.clone();
        c.listen.admin_group = Some("nagios".into());
        c.nrpe = Some(vigie_tests::nrpe_section());
    });
    let _auray = Agent::spawn(&pki.agent("auray"), &collector);
    let mut brest = Agent::spawn(&pki.agent("brest"), &collector);
    collector.wait_connected("auray", Duration::from_secs(10));
    collector.wait_connected("brest", Duration::from_secs(10));

    let dir = tempfile::tempdir().expect("tempdir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("mkdir");
    // Copies, not links: Nagios runs checks as user nagios, who may not be able to walk
    // into the checkout (a clone under a private home folder, say).
    std::fs::copy(bin("check_vigie"), plugins.join("check_vigie")).expect("copy check_vigie");
    std::os::unix::fs::symlink(
        "/usr/lib/nagios/plugins/check_nrpe",
        plugins.join("check_nrpe"),
    )
    .expect("link");
    let nrpe_port = collector.nrpe_addr(None).port();
    let mut objects = String::new();
    for host in ["auray", "brest"] {
        objects.push_str(&format!(
            "define host {{
    host_name               {host}
    address                 127.0.0.1
    check_command           check_vigie_alive
    max_check_attempts      1
    check_interval          1
    retry_interval          1
    check_period            24x7
    notification_period     24x7
    contact_groups          admins
    _VIGIE_SOCKET           {socket}
    _VIGIE_COLLECTOR        127.0.0.1
    _VIGIE_NRPE_PORT        {nrpe_port}
}}
",
            socket = socket.display()
        ));
        for (service, command) in [
            ("Agent", "check_vigie!alive"),
            ("Load", "check_vigie!load -w 15,10,5 -c 30,25,20"),
            ("Load via NRPE", "check_vigie_nrpe!check_load"),
        ] {
            objects.push_str(&format!(
                "define service {{
    host_name               {host}
    service_description     {service}
    check_command           {command}
    max_check_attempts      1
    check_interval          1
    retry_interval          1
    check_period            24x7
    notification_period     24x7
    contact_groups          admins
}}
"
            ));
        }
    }
    let hosts = dir.path().join("hosts.cfg");
    std::fs::write(&hosts, objects).expect("hosts.cfg");
    let commands = packaged("commands.cfg", dir.path());
    let cfg = nagios_cfg(dir.path(), &plugins, &[commands, hosts]);
    verify(&cfg);

    let nagios = Nagios(
        Command::new(NAGIOS)
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nagios4"),
    );
    let status_dat = dir.path().join("var/status.dat");
    let all_ok = wait_until(
        Duration::from_secs(60),
        "all six services OK in status.dat",
        || {
            let s = services(&status_dat);
            (s.len() == 6 && s.values().all(|(state, _, _)| *state == 0)).then_some(s)
        },
    );
    for host in ["auray", "brest"] {
        let (_, output, perf) = &all_ok[&(host.to_owned(), "Load".to_owned())];
        assert!(
            output.starts_with("LOAD OK - total load average: "),
            "{output}"
        );
        assert!(
            perf.starts_with("load1=") && perf.contains(";15.000;30.000;0;"),
            "{perf}"
        );
        let (_, output, perf) = &all_ok[&(host.to_owned(), "Load via NRPE".to_owned())];
        assert!(output.starts_with("LOAD OK"), "{output}");
        assert!(perf.contains("load15="), "{perf}");
        let (_, output, perf) = &all_ok[&(host.to_owned(), "Agent".to_owned())];
        assert!(
            output.starts_with(&format!("ALIVE OK - {host} reported ")),
            "{output}"
        );
        assert!(perf.starts_with("age="), "{perf}");
    }

    // brest goes away: its checks turn UNKNOWN, its alive check CRITICAL; auray stays OK.
    brest.terminate();
    let after = wait_until(
        Duration::from_secs(30),
        "brest's services to change",
        || {
            let s = services(&status_dat);
            let state = |svc: &str| s.get(&("brest".to_owned(), svc.to_owned())).map(|v| v.0);
            (state("Agent") == Some(2)
                && state("Load") == Some(3)
                && state("Load via NRPE") == Some(3))
            .then_some(s)
        },
    );
    let (_, output, _) = &after[&("brest".to_owned(), "Load".to_owned())];
    assert!(
        output.starts_with("LOAD UNKNOWN - agent brest is disconnected since "),
        "{output}"
    );
    let (_, output, _) = &after[&("brest".to_owned(), "Agent".to_owned())];
    assert!(
        output.starts_with("ALIVE CRITICAL - agent brest is disconnected since "),
        "{output}"
    );
    assert_eq!(after[&("auray".to_owned(), "Load".to_owned())].0, 0);
    drop(nagios);
}
