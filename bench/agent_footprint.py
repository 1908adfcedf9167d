#!/usr/bin/env python3
"""The real vigie-agent's footprint on Linux: memory, CPU per report, instructions per report,
binary size.

Starts a collector and one agent on loopback (agent interval 10 s) and:
  1. size: the binary of --profile, stripped;
  2. start-up: runs the agent until its first report lands, stops it, takes its CPU time;
  3. steady state: runs it for --minutes, sampling VmRSS every second; at the end its CPU
     time (from wait4, microsecond resolution) minus the start-up run's, divided by the
     extra reports, is the CPU per report;
  4. instructions: the same difference under `valgrind --tool=callgrind` (interval 1 s,
     --short then --long reports), which does not depend on the machine's noise.

The agent is built with --profile (default dist: the profile packages ship, opt-level z,
fat LTO, panic=abort, stripped).

Usage: bench/agent_footprint.py [--minutes 10] [--short 3] [--long 23] [--profile dist]
(needs valgrind)
"""
import argparse, os, pathlib, shutil, signal, statistics, subprocess, sys, time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import lab  # noqa: E402


def wait_seq(l, name, at_least, timeout, proc):
    deadline = time.time() + timeout
    while True:
        seq = l.last_seq(name)
        if seq >= at_least:
            return seq
        if time.time() > deadline or proc.poll() is not None:
            l.fail(f"agent {name} did not reach report {at_least}")
        time.sleep(0.1)


NRPE = "/usr/sbin/nrpe"


def anonymous(pid):
    """RssAnon of a process, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def stock_nrpe_rss(l):
    """VmRSS of the stock NRPE daemon (Debian nagios-nrpe-server), idle, in the foreground."""
    port = lab.free_port()
    cfg = l.dir / "nrpe.cfg"
    cfg.write_text(f"server_address=127.0.0.1\nserver_port={port}\nnrpe_user=nagios\nnrpe_group=nagios\n"
                   f"allowed_hosts=127.0.0.1\npid_file={l.dir}/nrpe.pid\ncommand[check_true]=/bin/true\n")
    p = l.start([NRPE, "-c", cfg, "-f"], stdout=subprocess.DEVNULL)
    lab.wait_port(port)
    time.sleep(1)
    rss, _ = lab.memory(p.pid)
    p.send_signal(signal.SIGTERM)
    p.wait(10)
    return rss


def stop(proc):
    """SIGTERM, then the child's CPU time in seconds (wait4's rusage)."""
    proc.send_signal(signal.SIGTERM)
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ru.ru_utime + ru.ru_stime


def callgrind_instructions(l, agent, name, config, reports):
    out = l.dir / f"callgrind.{reports}.out"
    p = l.start(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                 agent, "run", "--config", config], stdout=subprocess.DEVNULL)
    before = l.last_seq(name)
    wait_seq(l, name, before + reports, 120 + reports * 5, p)
    stop(p)
    delivered = l.last_seq(name) - before
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1]), delivered
    sys.exit(f"no totals in {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--short", type=int, default=3, help="reports in the short callgrind run")
    ap.add_argument("--long", type=int, default=23, help="reports in the long callgrind run")
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--profile", default="dist")
    a = ap.parse_args()
    if not a.no_callgrind and shutil.which("valgrind") is None:
        sys.exit("valgrind missing: apt-get install valgrind")
    lab.build()
    subprocess.run(["cargo", "build", "-q", "--profile", a.profile, "-p", "vigie-agent"], cwd=lab.ROOT, check=True)
    agent = lab.ROOT / "target" / a.profile / "vigie-agent"
    stripped = agent.with_name("vigie-agent.stripped")
    subprocess.run(["strip", "-o", stripped, agent], check=True)
    size = stripped.stat().st_size
    stripped.unlink()

    l = lab.Lab()
    try:
        name = "footprint"
        l.issue_agent(name)
        port = lab.free_port()
        l.start_collector(l.collector_config(port))
        config = l.agent_config(name, port, "10s")

        p = l.start([agent, "run", "--config", config])
        wait_seq(l, name, 1, 30, p)
        short_reports = l.last_seq(name)
        short_cpu = stop(p)

        p = l.start([agent, "run", "--config", config])
        t0 = time.time()
        first = wait_seq(l, name, 1, 30, p)
        rss, peak = [], 0
        last_anon = 0
        while time.time() - t0 < a.minutes * 60:
            last_anon = anonymous(p.pid)
            r, hwm = lab.memory(p.pid)
            rss.append(r)
            peak = max(peak, hwm)
            time.sleep(1)
        reports = l.last_seq(name)
        long_cpu = stop(p)
        reports = max(reports, l.last_seq(name))
        steady = statistics.median(rss[len(rss) // 2:])
        per_report = (long_cpu - short_cpu) / (reports - short_reports)
        print(f"agent ({a.profile} profile): binary stripped {size / 1e6:.2f} MB")
        print(f"start-up to first report: {short_cpu * 1000:.1f} ms CPU ({short_reports} report)")
        print(f"{a.minutes:g} min at 10 s: {reports} reports (first seq {first}), CPU {long_cpu * 1000:.1f} ms")
        print(f"CPU per report: {per_report * 1000:.3f} ms")
        kib = lambda b: f"{b / 1024:,.0f} KiB"
        print(f"RSS: steady (median of the second half) {kib(steady)}, min {kib(min(rss))}, "
              f"max sampled {kib(max(rss))}, peak (VmHWM) {kib(peak)}")
        print(f"  of which anonymous (the agent's own memory) {kib(anonymous(p.pid) if p.poll() is None else last_anon)}")
        if os.path.exists(NRPE):
            print(f"stock NRPE daemon for comparison (nrpe -f, TLS, idle): RSS {kib(stock_nrpe_rss(l))}")

        if not a.no_callgrind:
            config = l.agent_config(name, port, "1s")
            ir_short, n_short = callgrind_instructions(l, agent, name, config, a.short)
            ir_long, n_long = callgrind_instructions(l, agent, name, config, a.long)
            print(f"callgrind: {n_short} reports {ir_short:,} Ir; {n_long} reports {ir_long:,} Ir")
            print(f"instructions per report: {(ir_long - ir_short) / (n_long - n_short):,.0f}")
    finally:
        l.close()


if __name__ == "__main__":
    main()
