#!/usr/bin/env python3
"""Sequential checks, one process per check as Nagios runs them:
check_vigie over the admin socket, the stock check_nrpe over TLS against the Vigie collector,
and the stock check_nrpe against the stock NRPE daemon.

Starts, on loopback and in a temporary folder: a collector with an NRPE TLS listener and one
agent reporting to it; the stock nrpe daemon (Debian nagios-nrpe-server) with
command[check_load] running the real check_load plugin. Then times N sequential calls of
each, alternating rounds, and prints checks/s, median and p90.

Usage: bench/checks_sequential.py [--calls 200] [--rounds 3]   (run as root; builds release)
"""
import argparse, os, pathlib, statistics, subprocess, sys, time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import lab  # noqa: E402
from lab import free_port, wait_port  # noqa: E402

CHECK_NRPE = "/usr/lib/nagios/plugins/check_nrpe"
CHECK_LOAD = "/usr/lib/nagios/plugins/check_load"
NRPE = "/usr/sbin/nrpe"


def timed(args, n):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        times.append(time.perf_counter() - t0)
        if r.returncode != 0:
            sys.exit(f"{' '.join(args)} failed ({r.returncode}): {r.stdout.decode()}")
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    for tool in (CHECK_NRPE, CHECK_LOAD, NRPE):
        if not os.path.exists(tool):
            sys.exit(f"{tool} missing: apt-get install nagios-nrpe-plugin nagios-nrpe-server monitoring-plugins-basic")
    lab.build()
    l = lab.Lab()
    try:
        l.issue_agent("bench")
        agent_port, vigie_port, stock_port = free_port(), free_port(), free_port()
        l.start_collector(l.collector_config(agent_port, nrpe={"listen": f'["127.0.0.1:{vigie_port}"]'}))
        l.start([lab.AGENT, "run", "--config", l.agent_config("bench", agent_port)])
        (l.dir / "nrpe.cfg").write_text(f"""
server_address=127.0.0.1
server_port={stock_port}
nrpe_user=nagios
nrpe_group=nagios
allowed_hosts=127.0.0.1
dont_blame_nrpe=0
command_timeout=60
connection_timeout=300
pid_file={l.dir}/nrpe.pid
command[check_load]={CHECK_LOAD} -w 15,10,5 -c 30,25,20
""")
        l.start([NRPE, "-c", l.dir / "nrpe.cfg", "-f"], stdout=l.log)
        wait_port(vigie_port)
        wait_port(stock_port)
        vigie = [CHECK_NRPE, "-H", "127.0.0.1", "-p", str(vigie_port), "-c", "check_load", "-a", "bench"]
        stock = [CHECK_NRPE, "-H", "127.0.0.1", "-p", str(stock_port), "-c", "check_load"]
        deadline = time.time() + 15
        while subprocess.run(vigie, stdout=subprocess.DEVNULL).returncode != 0:
            if time.time() > deadline:
                sys.exit("the agent never reported")
            time.sleep(0.2)
        plugin = [lab.CHECK_VIGIE, "-S", l.socket, "-a", "bench", "load", "-w", "15,10,5", "-c", "30,25,20"]
        cases = (("check_vigie (socket)", plugin), ("check_nrpe -> vigie", vigie), ("check_nrpe -> stock", stock))
        results = {name: [] for name, _ in cases}
        for _ in range(a.rounds):
            for name, args in cases:
                t0 = time.perf_counter()
                times = timed(args, a.calls)
                results[name].append((a.calls / (time.perf_counter() - t0), times))
        print(f"{a.calls} sequential calls x {a.rounds} rounds (check_nrpe: TLS, v4), load average {os.getloadavg()[0]:.2f}")
        print(f"{'client -> server':22} {'checks/s (median round)':>24} {'median':>9} {'p90':>9}")
        rates = {}
        for name, rounds in results.items():
            all_t = sorted(t for _, ts in rounds for t in ts)
            rate = statistics.median(r for r, _ in rounds)
            rates[name] = rate
            p90 = all_t[int(len(all_t) * 0.9)]
            print(f"{name:22} {rate:24.1f} {statistics.median(all_t)*1000:7.1f}ms {p90*1000:7.1f}ms")
        print(f"check_nrpe: vigie / stock = {rates['check_nrpe -> vigie'] / rates['check_nrpe -> stock']:.1f}x")
    finally:
        l.close()

if __name__ == "__main__":
    main()
