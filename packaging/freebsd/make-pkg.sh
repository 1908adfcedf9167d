#!/usr/bin/env bash
# Builds vigie-agent-VERSION.pkg, the archive FreeBSD's `pkg add` installs:
#   packaging/freebsd/make-pkg.sh [AGENT_BINARY] [OUT_DIR]
# AGENT_BINARY defaults to the dist build of build.sh. The archive is an xz-compressed tar
# whose first entries are +COMPACT_MANIFEST and +MANIFEST (JSON, which UCL reads), then
# the files under their absolute paths:
#   /usr/local/sbin/vigie-agent
#   /usr/local/etc/rc.d/vigie_agent, /usr/local/etc/rc.d/vigie_agent.sh (pfSense boot)
#   /usr/local/etc/vigie/agent.toml.sample
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
binary=${1:-$root/target/freebsd-cross/x86_64-unknown-freebsd/dist/vigie-agent}
out=${2:-$root/target/freebsd-pkg}
[ -f "$binary" ] || { echo "make-pkg.sh: no agent binary at $binary (run packaging/freebsd/build.sh)" >&2; exit 1; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
mkdir -p "$out"
python3 - "$binary" "$out" "$version" "$here" "$root" <<'PY'
import hashlib, io, json, os, sys, tarfile, time
binary, out, version, here, root = sys.argv[1:]
files = [  # (path in the package, source, mode)
    ("/usr/local/sbin/vigie-agent", binary, 0o755),
    ("/usr/local/etc/rc.d/vigie_agent", f"{here}/rc.d/vigie_agent", 0o755),
    ("/usr/local/etc/rc.d/vigie_agent.sh", f"{here}/rc.d/vigie_agent.sh", 0o755),
    ("/usr/local/etc/vigie/agent.toml.sample", f"{root}/packaging/etc/agent.toml.sample", 0o644),
]
data = {p: open(src, "rb").read() for p, src, _ in files}
message = """Vigie agent installed.

1. Copy the agent's certificate files (from `vigie-collector ca issue --agent NAME`) to
   /usr/local/etc/vigie/ and make the key private:  chmod 600 /usr/local/etc/vigie/*.key
2. cp /usr/local/etc/vigie/agent.toml.sample /usr/local/etc/vigie/agent.toml  and edit it.
3. Check it:   vigie-agent check-config
4. Enable it:  echo 'vigie_agent_enable="YES"' >> /etc/rc.conf.local
   Start it:   service vigie_agent start     (pfSense starts it at boot)
"""
compact = {
    "name": "vigie-agent",
    "origin": "sysutils/vigie-agent",
    "version": version,
    "comment": "Vigie monitoring agent: dial-out health reports and captures over mutual TLS",
    "maintainer": "vigie@example.invalid",
    "www": "https://example.invalid/vigie",
    "abi": "FreeBSD:14:amd64",
    "arch": "freebsd:14:x86:64",
    "prefix": "/usr/local",
    "flatsize": sum(len(b) for b in data.values()),
    "licenselogic": "single",
    "licenses": ["APACHE20"],
    "desc": "vigie-agent reports disk, memory, swap, load and logged-in users of a pfSense or\n"
            "FreeBSD router to a Vigie collector, which it dials over mutually authenticated TLS,\n"
            "and captures traffic on demand within the limits of its own policy. It listens on\n"
            "nothing and never runs commands on anyone's behalf.",
    "categories": ["sysutils", "net-mgmt"],
    "deps": {},
}
manifest = dict(compact)
manifest["files"] = {
    p: {"sum": "1$" + hashlib.sha256(data[p]).hexdigest(), "uname": "root", "gname": "wheel", "perm": f"{mode:04o}"}
    for p, _, mode in files
}
manifest["directories"] = {"/usr/local/etc/vigie/": {"uname": "root", "gname": "wheel", "perm": "0755"}}
manifest["messages"] = [{"message": message}]
name = f"vigie-agent-{version}.pkg"
now = int(time.time())
with tarfile.open(os.path.join(out, name), "w:xz", format=tarfile.PAX_FORMAT) as t:
    def add(path, payload, mode):
        info = tarfile.TarInfo(path)
        info.size, info.mode, info.mtime = len(payload), mode, now
        info.uname, info.gname, info.uid, info.gid = "root", "wheel", 0, 0
        t.addfile(info, io.BytesIO(payload))
    add("+COMPACT_MANIFEST", json.dumps(compact, indent=1).encode(), 0o644)
    add("+MANIFEST", json.dumps(manifest, indent=1).encode(), 0o644)
    for p, _, mode in files:
        add(p, data[p], mode)
print(os.path.join(out, name))
PY
