"""A throwaway Vigie lab on loopback for the benchmark scripts: a CA, a collector config,
agent configs, process sampling from /proc.

Every script builds the release binaries first and works in a temporary folder it removes.
"""
import json, os, pathlib, shutil, signal, socket, subprocess, sys, tempfile, time

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release"
COLLECTOR = BIN / "vigie-collector"
AGENT = BIN / "vigie-agent"
CHECK_VIGIE = BIN / "check_vigie"
CHECK_NRPE = "/usr/lib/nagios/plugins/check_nrpe"
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def build(*extra):
    """Release build of every binary (and of `extra` packages' binaries)."""
    args = ["cargo", "build", "--release", "--bins", "-q"]
    for p in extra:
        args += ["-p", p]
    subprocess.run(args, cwd=ROOT, check=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on 127.0.0.1:{port}")


def percentile(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p))]


class Lab:
    """A temporary folder with a CA (server name 127.0.0.1) and helpers to run Vigie in it."""

    def __init__(self):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="vigie-bench-"))
        self.procs = []
        self.log = open(self.dir / "logs.txt", "w")
        subprocess.run([COLLECTOR, "ca", "init", "--dir", self.dir / "ca", "--server-name", "127.0.0.1"],
                       check=True, stdout=subprocess.DEVNULL)
        self.socket = self.dir / "collector.sock"

    def issue_agent(self, name):
        out = self.dir / name
        subprocess.run([COLLECTOR, "ca", "issue", "--dir", self.dir / "ca", "--agent", name, "--out", out],
                       check=True, stdout=subprocess.DEVNULL)
        return out

    def collector_config(self, agent_port, nrpe=None, extra=""):
        """Writes collector.toml; `nrpe` is a dict of [nrpe] keys (TOML values as text)."""
        text = f"""
[listen]
agents = "127.0.0.1:{agent_port}"
admin_socket = "collector.sock"
[tls]
ca = "ca/ca.pem"
cert = "ca/collector.pem"
key = "ca/collector.key"
"""
        if nrpe is not None:
            text += "[nrpe]\n" + "".join(f"{k} = {v}\n" for k, v in nrpe.items())
        path = self.dir / "collector.toml"
        path.write_text(text + extra)
        return path

    def agent_config(self, name, agent_port, interval="10s", extra=""):
        """Writes NAME.toml for the agent issued by `issue_agent(name)`; `extra` is appended."""
        path = self.dir / f"{name}.toml"
        path.write_text(f"""
collectors = ["127.0.0.1:{agent_port}"]
interval = "{interval}"
[tls]
ca = "{name}/ca.pem"
cert = "{name}/{name}.pem"
key = "{name}/{name}.key"
""" + extra)
        return path

    def start(self, args, **kw):
        kw.setdefault("stderr", self.log)
        p = subprocess.Popen([str(a) for a in args], **kw)
        self.procs.append(p)
        return p

    def start_collector(self, config):
        p = self.start([COLLECTOR, "serve", "--config", config])
        deadline = time.time() + 10
        while not self.socket.exists():
            if time.time() > deadline or p.poll() is not None:
                self.fail("the collector did not start")
            time.sleep(0.02)
        return p

    def agents(self):
        r = subprocess.run([COLLECTOR, "agents", "--json", "-S", self.socket], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL)
        return json.loads(r.stdout) if r.returncode == 0 else []

    def last_seq(self, name):
        """The sequence number of the agent's last report the collector holds, or 0."""
        for a in self.agents():
            if a.get("name") == name:
                return int((a.get("report") or {}).get("seq", 0))
        return 0

    def fail(self, message):
        """Exits with `message` and the end of the processes' logs."""
        self.log.flush()
        tail = (self.dir / "logs.txt").read_text().splitlines()[-15:]
        sys.exit(message + "\n" + "\n".join(tail))

    def close(self, keep=False):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.log.close()
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def memory(pid):
    """(VmRSS, VmHWM) of a process, in bytes."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                fields[k] = int(v.split()[0]) * 1024
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


def cpu_seconds(pid):
    """User + system CPU time of a process so far (clock-tick resolution)."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rpartition(")")[2].split()
    return (int(rest[11]) + int(rest[12])) / TICKS
