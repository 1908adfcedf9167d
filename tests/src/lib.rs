//! Builders for the integration tests: a fresh CA per test ([`Pki`]), a real collector
//! serving on loopback ([`Collector`], in process, on ports the OS picks) and real agent
//! processes ([`Agent`], the `vigie-agent` binary with its own config file).
//!
//! Nothing here sleeps to "let things start": callers wait for a condition with
//! [`wait_until`], which polls until a deadline.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use vigie_certs::{CaFiles, Role, Validity};
use vigie_collector::{Config, Listeners, config};
use vigie_proto::{AgentState, AgentStatus, ListAgentsRequest};

/// Polls `f` every 50 ms until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A binary of the workspace, next to the test executable's folder (`target/<profile>`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// Files of one agent or operator: what `ca issue` writes.
#[derive(Clone, Debug)]
pub struct Creds {
    pub name: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A fresh CA in a temporary folder, with a collector certificate for 127.0.0.1.
pub struct Pki {
    pub dir: TempDir,
    pub files: CaFiles,
}

impl Pki {
    pub fn new() -> Pki {
        Self::with_server_names(&["127.0.0.1", "localhost"])
    }

    /// A CA whose collector certificate names only `names`.
    pub fn with_server_names(names: &[&str]) -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = CaFiles::new(dir.path().join("ca"));
        files
            .init(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("ca init");
        Pki { dir, files }
    }

    /// Issues an agent certificate, as `ca issue --agent` does.
    pub fn agent(&self, name: &str) -> Creds {
        self.issue(Role::Agent(name.to_owned()))
    }

    pub fn operator(&self, name: &str) -> Creds {
        self.issue(Role::Operator(name.to_owned()))
    }

    fn issue(&self, role: Role) -> Creds {
        let out = self
            .dir
            .path()
            .join(format!("{}-{}", role.kind(), role.name()));
        let f = self.files.issue_into(&role, &out).expect("issue");
        Creds {
            name: role.name().to_owned(),
            ca: f.ca,
            cert: f.cert,
            key: f.key,
        }
    }

    /// An agent certificate with a chosen validity (for expired certificates).
    pub fn agent_with_validity(&self, name: &str, validity: Validity) -> Creds {
        let ca = self.files.load().expect("load ca");
        let issued = ca
            .issue_with(&Role::Agent(name.to_owned()), validity)
            .expect("issue");
        let out = self.dir.path().join(format!("agent-{name}-custom"));
        std::fs::create_dir_all(&out).expect("mkdir");
        let creds = Creds {
            name: name.to_owned(),
            ca: out.join("ca.pem"),
            cert: out.join(format!("{name}.pem")),
            key: out.join(format!("{name}.key")),
        };
        use vigie_certs::files::{CERT_MODE, KEY_MODE, Overwrite, write_atomic};
        write_atomic(
            &creds.ca,
            ca.cert_pem().as_bytes(),
            CERT_MODE,
            Overwrite::Allow,
        )
        .expect("write");
        write_atomic(
            &creds.cert,
            issued.cert_pem.as_bytes(),
            CERT_MODE,
            Overwrite::Allow,
        )
        .expect("write");
        write_atomic(
            &creds.key,
            issued.key_pem.as_bytes(),
            KEY_MODE,
            Overwrite::Allow,
        )
        .expect("write");
        creds
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// An `[nrpe]` section on a free port of 127.0.0.1, TLS on, the default command table,
/// only 127.0.0.1 allowed, no arguments, no per-agent ports.
pub fn nrpe_section() -> config::Nrpe {
    config::Nrpe {
        listen: vec!["127.0.0.1:0".parse().expect("addr")],
        agents: Default::default(),
        tls: true,
        client_certs: config::ClientCerts::None,
        allowed_hosts: vec!["127.0.0.1".parse().expect("host")],
        allow_arguments: false,
        connection_timeout: Duration::from_secs(10),
        commands: config::DEFAULT_COMMANDS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

/// A real collector, in this process, on 127.0.0.1 and a private admin socket.
pub struct Collector {
    pub config: Config,
    pub addr: SocketAddr,
    runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: TempDir,
}

impl Collector {
    pub fn spawn(pki: &Pki) -> Collector {
        Self::spawn_with(pki, |_| {})
    }

    /// Spawns with a config adjusted by `adjust` (an NRPE section, say). Listener addresses
    /// with port 0 get a free port; [`Collector::nrpe_addr`] tells which.
    pub fn spawn_with(pki: &Pki, adjust: impl FnOnce(&mut Config)) -> Collector {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config {
            listen: config::Listen {
                agents: "127.0.0.1:0".parse().expect("addr"),
                admin_socket: dir.path().join("collector.sock"),
                admin_group: None,
                admin_tcp: None,
            },
            tls: config::Tls {
                ca: pki.files.ca_cert(),
                cert: pki.files.collector_cert(),
                key: pki.files.collector_key(),
                crl: None,
            },
            nrpe: None,
            checks: config::Checks::default(),
        };
        let mut config = config;
        adjust(&mut config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mut c = Collector {
            addr: config.listen.agents,
            config,
            runtime,
            stop: None,
            task: None,
            _dir: dir,
        };
        c.start();
        c
    }

    fn start(&mut self) {
        let tls = vigie_collector::load_tls(&self.config).expect("collector tls");
        let config = self.config.clone();
        // The first start picks a port; a restart takes the same one again (retrying while
        // the previous listener is being dropped).
        let listeners = self.runtime.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match Listeners::bind(&config).await {
                    Ok(l) => break l,
                    Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("cannot bind the collector: {e:#}"),
                }
            }
        });
        self.addr = listeners.agents.local_addr().expect("local addr");
        self.config.listen.agents = self.addr;
        // Remember the ports the OS picked so that a restart binds the same ones.
        if let Some(l) = &listeners.admin_tcp {
            self.config.listen.admin_tcp = Some(l.local_addr().expect("local addr"));
        }
        if let Some(n) = self.config.nrpe.as_mut() {
            let bound: Vec<SocketAddr> = listeners
                .nrpe
                .iter()
                .map(|(l, _)| l.local_addr().expect("local addr"))
                .collect();
            let (main, fixed) = bound.split_at(n.listen.len());
            n.listen = main.to_vec();
            for (addr, (_, a)) in fixed.iter().zip(n.agents.iter_mut()) {
                *a = *addr;
            }
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(stop);
        let config = self.config.clone();
        self.task = Some(self.runtime.spawn(async move {
            vigie_collector::serve(&config, tls, listeners, async {
                let _ = stopped.await;
            })
            .await
        }));
    }

    /// Stops the collector (as SIGTERM would) and waits for it to finish.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            self.runtime
                .block_on(task)
                .expect("collector task")
                .expect("collector result");
        }
    }

    /// Stops and starts again on the same port, with an empty registry.
    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    /// The first `[nrpe] listen` address, or the port of `agent` in `[nrpe.agents]`.
    pub fn nrpe_addr(&self, agent: Option<&str>) -> SocketAddr {
        let n = self.config.nrpe.as_ref().expect("an [nrpe] section");
        match agent {
            None => n.listen[0],
            Some(a) => n.agents[a],
        }
    }

    pub fn socket(&self) -> &Path {
        &self.config.listen.admin_socket
    }

    /// The fleet, through the admin API as the CLI sees it.
    pub fn agents(&self) -> Vec<AgentStatus> {
        self.runtime.block_on(async {
            let mut client = vigie_collector::admin::connect(self.socket())
                .await
                .expect("admin connect");
            client
                .list_agents(ListAgentsRequest {})
                .await
                .expect("list agents")
                .into_inner()
                .agents
        })
    }

    /// Waits until `name` is connected and has reported; returns its status.
    pub fn wait_connected(&self, name: &str, timeout: Duration) -> AgentStatus {
        wait_until(
            timeout,
            &format!("agent {name} to connect and report"),
            || {
                self.agents().into_iter().find(|a| {
                    a.name == name
                        && a.state == AgentState::Connected as i32
                        && a.last_report.is_some()
                })
            },
        )
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A real `vigie-agent run` process with its own config; killed when dropped.
pub struct Agent {
    pub child: Child,
    pub log: PathBuf,
    pub config: PathBuf,
    _dir: TempDir,
}

/// Writes an agent config for `creds` dialling `collectors`.
pub fn agent_config(dir: &Path, creds: &Creds, collectors: &[String], interval: &str) -> PathBuf {
    let list = collectors
        .iter()
        .map(|c| format!("{c:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        "collectors = [{list}]\ninterval = {interval:?}\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
        creds.ca, creds.cert, creds.key
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).expect("write agent.toml");
    path
}

impl Agent {
    /// Starts an agent reporting every second to `collector`.
    pub fn spawn(creds: &Creds, collector: &Collector) -> Agent {
        Self::spawn_to(creds, &[collector.addr.to_string()])
    }

    pub fn spawn_to(creds: &Creds, collectors: &[String]) -> Agent {
        Self::spawn_with(creds, collectors, "")
    }

    /// Starts an agent whose config ends with `extra` (a `[capture]` section, say).
    pub fn spawn_with(creds: &Creds, collectors: &[String], extra: &str) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = agent_config(dir.path(), creds, collectors, "1s");
        let mut text = std::fs::read_to_string(&config).expect("read agent.toml");
        text.push_str(extra);
        std::fs::write(&config, text).expect("write agent.toml");
        let log = dir.path().join("agent.log");
        let child = Command::new(bin("vigie-agent"))
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn vigie-agent");
        Agent {
            child,
            log,
            config,
            _dir: dir,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the agent's log contains `needle`; returns the log.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        wait_until(timeout, &format!("agent log to say {needle:?}"), || {
            let text = self.log_text();
            text.contains(needle).then_some(text)
        })
    }

    /// Sends SIGTERM and waits for the exit; returns the status and how long it took.
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        let start = Instant::now();
        // SAFETY: signalling our own child by its PID.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = wait_until(Duration::from_secs(10), "the agent to exit", || {
            self.child.try_wait().expect("try_wait")
        });
        (status, start.elapsed())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a workspace binary to completion; returns (exit code, stdout, stderr).
pub fn run(name: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin(name))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
