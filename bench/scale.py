#!/usr/bin/env python3
"""Scale and fault tolerance of one collector, on loopback (release builds):

  swarm    N agents (vigie-bench swarm: real mutual TLS, a certificate each, one process)
           reporting every --interval; collector RSS per agent and CPU, and the latency of
           the stock check_nrpe (TLS) and of check_vigie meanwhile;
  storm    --storm agents connected, the collector restarted: time until all are back,
           new sessions per second (the agents' jittered backoff at work);
  nrpe     vigie-bench nrpe-load, TLS and plain NRPE v4, concurrency 1, 8, 64;
  hostile  --hostile connections that send nothing, or a byte a second, to the NRPE port
           and to the agent port, while check_nrpe and new agent sessions are timed; and
           when the collector cuts them.

Usage: bench/scale.py [--only swarm,storm,nrpe,hostile] [--agents 1,1000,5000,10000]
                      [--interval 10s] [--storm 1000] [--hostile 1000] [--checks 300]
(as root: needs check_nrpe from nagios-nrpe-plugin)
"""
import argparse, json, os, pathlib, re, signal, subprocess, sys, threading, time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import lab  # noqa: E402

BENCH = lab.BIN / "vigie-bench"


class Swarm:
    """vigie-bench swarm in the background; its per-second lines are kept with their times."""

    def __init__(self, l, port, n, interval, prefix="swarm", rate=1000, every="1s"):
        self.n = n
        self.lines = []
        self.proc = l.start([BENCH, "swarm", "--collector", f"127.0.0.1:{port}", "--ca", l.dir / "ca",
                             "--agents", n, "--interval", interval, "--prefix", prefix, "--rate", rate,
                             "--every", every],
                            stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def last(self):
        return self.lines[-1] if self.lines else {"connected": 0, "opened": 0, "reports": 0, "t_ms": 0}

    def wait_connected(self, l, timeout):
        deadline = time.time() + timeout
        while self.last()["connected"] < self.n:
            if time.time() > deadline or self.proc.poll() is not None:
                l.fail(f"swarm: only {self.last()['connected']} of {self.n} agents connected")
            time.sleep(0.2)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(20)


def timed_calls(args, n):
    """Runs `args` n times in sequence; (p50, p99, failures) in ms."""
    times, failures = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        r = subprocess.run([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        times.append((time.perf_counter() - t0) * 1000)
        if r.returncode != 0:
            failures += 1
            last = r.stdout.decode(errors="replace").strip()
    if failures:
        print(f"    {failures} of {n} calls failed; last: {last}")
    return lab.percentile(times, 0.5), lab.percentile(times, 0.99), failures


def check_nrpe(nrpe_port, agent):
    return [lab.CHECK_NRPE, "-H", "127.0.0.1", "-p", nrpe_port, "-c", "check_load", "-a", agent]


def check_vigie(l, agent):
    return [lab.CHECK_VIGIE, "-S", l.socket, "-a", agent, "load", "-w", "15,10,5", "-c", "30,25,20"]


def start_collector(l, agent_port, nrpe_port, tls=True):
    config = l.collector_config(agent_port, nrpe={
        "listen": f'["127.0.0.1:{nrpe_port}"]', "tls": "true" if tls else "false"})
    if l.socket.exists():
        l.socket.unlink()
    return l.start_collector(config)


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


def swarm_phase(l, sizes, interval, checks):
    print(f"## swarm: collector with N agents reporting every {interval}")
    print(f"{'N':>6} {'RSS MB':>8} {'KiB/agent':>9} {'CPU %':>6} {'reports/s':>9} "
          f"{'check_nrpe p50/p99 ms':>22} {'check_vigie p50/p99 ms':>23} {'native TLS p50/p99 ms':>21}")
    print("(check_nrpe, check_vigie: one process per check, sequential; native: vigie-bench nrpe-load,"
          " one TLS connection per check, sequential, 3 s)")
    secs = lab_seconds(interval)
    for n in sizes:
        agent_port, nrpe_port = lab.free_port(), lab.free_port()
        coll = start_collector(l, agent_port, nrpe_port)
        lab.wait_port(nrpe_port)
        time.sleep(1)
        base_rss, _ = lab.memory(coll.pid)
        s = Swarm(l, agent_port, n, interval)
        s.wait_connected(l, 60 + n / 100)
        # Every agent has sent its first report; let one more interval pass.
        time.sleep(secs + 2)
        # The collector's CPU over three intervals with nothing but the agents.
        cpu0, r0, t0 = lab.cpu_seconds(coll.pid), s.last()["reports"], time.time()
        time.sleep(3 * secs)
        cpu1, r1, t1 = lab.cpu_seconds(coll.pid), s.last()["reports"], time.time()
        nrpe = timed_calls(check_nrpe(nrpe_port, "swarm-00001"), checks)
        vigie = timed_calls(check_vigie(l, "swarm-00001"), checks)
        native = subprocess.run([str(a) for a in [BENCH, "nrpe-load", "--addr", f"127.0.0.1:{nrpe_port}",
                                                  "--concurrency", 1, "--duration", "3s",
                                                  "--query", "check_load!swarm-00001"]],
                                stdout=subprocess.PIPE, text=True)
        native = json.loads(native.stdout.splitlines()[-1])
        rss, _ = lab.memory(coll.pid)
        known = sum(1 for a in l.agents() if a.get("connected_since_ms"))
        s.stop()
        stop(coll)
        if known < n:
            print(f"    only {known} agents connected in the collector's list")
        per_agent = f"{(rss - base_rss) / n / 1024:>9.1f}" if n >= 100 else f"{'-':>9}"
        print(f"{n:>6} {rss / 1e6:>8.1f} {per_agent} "
              f"{100 * (cpu1 - cpu0) / (t1 - t0):>6.1f} {(r1 - r0) / (t1 - t0):>9.0f} "
              f"{nrpe[0]:>11.1f} / {nrpe[1]:<8.1f} {vigie[0]:>11.1f} / {vigie[1]:<8.1f}"
              f"{native['p50_ms']:>8.2f} / {native['p99_ms']:<6.2f}")
        sys.stdout.flush()


def lab_seconds(interval):
    return float(interval.rstrip("s"))


def interval_arg(text):
    """--interval: seconds with an s, as the agent's config writes it."""
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?s", text):
        raise argparse.ArgumentTypeError(f"{text!r}: give seconds, like 10s")
    return text


def storm_phase(l, n, interval):
    print(f"## storm: {n} agents connected, collector restarted")
    agent_port, nrpe_port = lab.free_port(), lab.free_port()
    coll = start_collector(l, agent_port, nrpe_port)
    s = Swarm(l, agent_port, n, interval, every="0.25s")
    s.wait_connected(l, 60)
    time.sleep(2)
    opened0 = s.last()["opened"]
    t_stop = time.time()
    stop(coll)
    t_down = time.time()
    coll = start_collector(l, agent_port, nrpe_port)
    t_up = time.time()
    # Back: every agent has a new session and is connected.
    deadline = time.time() + 120
    while not (s.last()["connected"] >= n and s.last()["opened"] >= opened0 + n and s.last()["t_ms"] / 1000 > t_up):
        if time.time() > deadline:
            break
        time.sleep(0.2)
    back = s.last()
    lines = [x for x in s.lines if x["t_ms"] / 1000 >= t_stop]
    s.stop()
    stop(coll)
    print(f"collector stopped in {t_down - t_stop:.2f} s, listening again {t_up - t_stop:.2f} s after the stop")
    all_back = back["t_ms"] / 1000 - t_stop
    print(f"all {n} back: {back['connected'] >= n} at {all_back:.1f} s after the stop "
          f"(sampled every 0.25 s; {back['connected']} connected)")
    print("new sessions per 0.25 s after the stop (t = end of the quarter, seconds after the stop):")
    prev, opened = opened0, []
    for x in lines:
        new = x["opened"] - prev
        prev = x["opened"]
        t = x["t_ms"] / 1000 - t_stop
        opened.append((t, x["opened"]))
        if t <= all_back + 0.5:
            print(f"  t={t:5.2f}s {new:5d} {'#' * (new // 5)}  connected {x['connected']}")
    # Peak rate over any one-second window.
    peak = max((o2 - o1 for (t1, o1) in opened for (t2, o2) in opened if 0.9 < t2 - t1 < 1.1), default=0)
    print(f"peak: {peak} new sessions in one second")


def nrpe_phase(l, seconds):
    print("## nrpe: vigie-bench nrpe-load, one connection per check (as check_nrpe), NRPE v4")
    print("collector CPU: the collector's own CPU time per check (the load generator shares the 2 cores)")
    for tls in (True, False):
        agent_port, nrpe_port = lab.free_port(), lab.free_port()
        coll = start_collector(l, agent_port, nrpe_port, tls)
        s = Swarm(l, agent_port, 1, "10s", prefix="bench")
        s.wait_connected(l, 30)
        time.sleep(0.5)
        for c in (1, 8, 64):
            args = [BENCH, "nrpe-load", "--addr", f"127.0.0.1:{nrpe_port}", "--duration", f"{seconds}s",
                    "--query", "check_load!bench-00001", "--concurrency", c] + ([] if tls else ["--plain"])
            cpu0 = lab.cpu_seconds(coll.pid)
            out = subprocess.run([str(a) for a in args], stdout=subprocess.PIPE, text=True, stderr=subprocess.STDOUT)
            cpu = lab.cpu_seconds(coll.pid) - cpu0
            r = json.loads(out.stdout.splitlines()[-1]) if out.returncode == 0 else None
            if r is None:
                print(f"    nrpe-load failed: {out.stdout.strip()}")
                continue
            print(f"{'TLS' if tls else 'plain':>5} concurrency {c:>3}: {r['checks_per_s']:>8.0f} checks/s"
                  f"  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  errors {r['errors']}"
                  f"  collector CPU {cpu / r['n'] * 1e6:.0f} us/check"
                  + (f" ({r['last_error']})" if r.get("last_error") else ""))
        s.stop()
        stop(coll)


def hostile_phase(l, n, checks):
    print(f"## hostile: {n} connections that send nothing / a byte a second")
    agent_port, nrpe_port = lab.free_port(), lab.free_port()
    coll = start_collector(l, agent_port, nrpe_port)
    s = Swarm(l, agent_port, 1, "10s", prefix="bench")
    s.wait_connected(l, 30)
    time.sleep(0.5)
    nrpe_check = check_nrpe(nrpe_port, "bench-00001")
    probe = [BENCH, "probe", "--collector", f"127.0.0.1:{agent_port}", "--ca", l.dir / "ca", "--count", str(max(10, checks // 5))]

    def probe_latency():
        out = subprocess.run([str(a) for a in probe], stdout=subprocess.PIPE, text=True)
        if out.returncode != 0:
            return None
        r = json.loads(out.stdout.splitlines()[-1])
        return r["p50_ms"], r["p99_ms"]

    idle_nrpe = timed_calls(nrpe_check, checks)
    idle_probe = probe_latency()
    print(f"idle: check_nrpe p50 {idle_nrpe[0]:.1f} ms p99 {idle_nrpe[1]:.1f} ms; "
          f"new agent session p50 {idle_probe[0]:.1f} ms p99 {idle_probe[1]:.1f} ms")
    for port, what in ((nrpe_port, "NRPE port"), (agent_port, "agent port")):
        for mode in ("idle", "drip"):
            h = subprocess.Popen([str(a) for a in [BENCH, "hostile", "--addr", f"127.0.0.1:{port}", "--connections", n,
                                                   "--mode", mode, "--hold", "40s"]],
                                 stdout=subprocess.PIPE, text=True)
            opened = json.loads(h.stdout.readline())
            t_open = time.time()
            if what == "NRPE port":
                p50, p99, fails = timed_calls(nrpe_check, checks)
                during = f"check_nrpe p50 {p50:.1f} ms p99 {p99:.1f} ms ({fails} failed)"
            else:
                r = probe_latency()
                during = (f"new agent session p50 {r[0]:.1f} ms p99 {r[1]:.1f} ms" if r
                          else "new agent sessions FAILED")
            measured_in = time.time() - t_open
            closed = json.loads(h.stdout.readline())
            h.wait()
            print(f"{what}, {opened['opened']} {mode}: {during} (measured over {measured_in:.1f} s); "
                  f"server closed {closed['closed']} of them after {closed['p50_ms'] / 1000:.1f} s median, "
                  f"{closed['max_ms'] / 1000:.1f} s max; still open {closed['still_open']}")
    s.stop()
    stop(coll)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="swarm,storm,nrpe,hostile")
    ap.add_argument("--agents", default="1,1000,5000,10000")
    ap.add_argument("--interval", default="10s", type=interval_arg)
    ap.add_argument("--storm", type=int, default=1000)
    ap.add_argument("--hostile", type=int, default=1000)
    ap.add_argument("--checks", type=int, default=300)
    ap.add_argument("--nrpe-seconds", type=float, default=5)
    a = ap.parse_args()
    if not os.path.exists(lab.CHECK_NRPE):
        sys.exit(f"{lab.CHECK_NRPE} missing: apt-get install nagios-nrpe-plugin")
    lab.build()
    only = a.only.split(",")
    l = lab.Lab()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    try:
        if "swarm" in only:
            swarm_phase(l, [int(x) for x in a.agents.split(",")], a.interval, a.checks)
        if "storm" in only:
            storm_phase(l, a.storm, a.interval)
        if "nrpe" in only:
            nrpe_phase(l, a.nrpe_seconds)
        if "hostile" in only:
            hostile_phase(l, a.hostile, a.checks)
    finally:
        l.close()


if __name__ == "__main__":
    main()
