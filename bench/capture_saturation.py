#!/usr/bin/env python3
"""Capture throughput at saturation on loopback: vigie (agent -> collector -> CLI -> pcap
file) next to `tcpdump -i lo -w` under the same UDP flood, in the same run.

Each round floods 127.0.0.1:PORT with 64-byte UDP datagrams for --seconds from --senders
Python processes (as fast as they can), once while `vigie-collector capture` records `udp port PORT`,
once while tcpdump does. Prints packets sent, packets in the file, kernel drops and the
rate that reached the file, per round and as medians.

Usage: bench/capture_saturation.py [--seconds 5] [--rounds 3]   (as root; builds release)
"""
import argparse, multiprocessing, os, pathlib, re, signal, socket, statistics, subprocess, sys, time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import lab  # noqa: E402


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def flood(port, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = b"v" * 64
    sent, end = 0, time.time() + seconds
    while time.time() < end:
        for _ in range(1000):
            try:
                s.sendto(payload, ("127.0.0.1", port))
                sent += 1
            except OSError:
                pass
    return sent


def flood_all(port, seconds, senders):
    with multiprocessing.Pool(senders) as pool:
        return sum(pool.starmap(flood, [(port, seconds)] * senders))


def pcap_count(path):
    data = pathlib.Path(path).read_bytes()
    n, off = 0, 24
    while off + 16 <= len(data):
        incl = int.from_bytes(data[off + 8:off + 12], "little")
        off += 16 + incl
        n += 1
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--senders", type=int, default=2)
    a = ap.parse_args()
    lab.build()
    l = lab.Lab()
    try:
        coll, tmp = lab.COLLECTOR, l.dir
        l.issue_agent("bench")
        ap_port = lab.free_port()
        l.start_collector(l.collector_config(ap_port))
        l.start([lab.AGENT, "run", "--config",
                 l.agent_config("bench", ap_port, extra='[capture]\nmax_bytes = "1GB"\n')])
        deadline = time.time() + 15
        while not any(a.get("name") == "bench" for a in l.agents()):
            if time.time() > deadline:
                l.fail("the agent never connected")
            time.sleep(0.2)
        rows = {"vigie": [], "tcpdump": []}
        for r in range(a.rounds):
            port = free_udp_port()
            # vigie
            out = tmp / f"vigie-{r}.pcap"
            cli = subprocess.Popen([coll, "capture", "-S", l.socket, "bench", "-i", "lo", "-f", f"udp port {port}",
                                    "-d", f"{a.seconds + 3}s", "--max-bytes", "1GB", "-w", out], stderr=subprocess.PIPE, text=True)
            line = cli.stderr.readline()
            if "capturing" not in line:
                sys.exit(f"capture did not start: {line}")
            sent = flood_all(port, a.seconds, a.senders)
            summary = cli.communicate()[1].strip().splitlines()[-1]
            drops = int(re.search(r"(\d+) dropped by the kernel", summary).group(1))
            got = pcap_count(out)
            rows["vigie"].append((sent, got, drops))
            # tcpdump
            out = tmp / f"tcpdump-{r}.pcap"
            td = subprocess.Popen(["tcpdump", "-i", "lo", "-w", out, f"udp port {port}"], stderr=subprocess.PIPE, text=True)
            time.sleep(1)
            sent = flood_all(port, a.seconds, a.senders)
            time.sleep(0.5)
            td.send_signal(signal.SIGINT)
            err = td.communicate()[1]
            drops = int(re.search(r"(\d+) packets dropped by kernel", err).group(1))
            got = pcap_count(out)
            rows["tcpdump"].append((sent, got, drops))
        print(f"UDP flood on lo from {a.senders} senders, {a.seconds:.0f}s per round, {a.rounds} rounds, load average {os.getloadavg()[0]:.2f}")
        print(f"{'capture':8} {'round':>5} {'sent':>9} {'in file':>9} {'kernel drops':>13} {'pkts/s to file':>15}")
        med = {}
        for name, rs in rows.items():
            for i, (sent, got, drops) in enumerate(rs):
                print(f"{name:8} {i+1:5} {sent:9} {got:9} {drops:13} {got / a.seconds:15.0f}")
            med[name] = statistics.median(got / a.seconds for _, got, _ in rs)
        print(f"median pkts/s to file: vigie {med['vigie']:.0f}, tcpdump {med['tcpdump']:.0f}, ratio {med['vigie'] / med['tcpdump'] * 100:.0f}%")
    finally:
        l.close()

if __name__ == "__main__":
    main()
