#!/usr/bin/env python3
"""Hostile saves of lb.toml under load (issue "hard to break, round 2", its done-when).

Under `wrk -t2 -c32` with random request ids, against an lb of 64 replicas with fast heartbeats
(interval 100 ms, timeout 300 ms, fall 3), each of three hostile files is saved (write a copy,
rename it over) and at the same moment one replica is killed with SIGKILL:

  1. a rejected value of 70 000 bytes (once, a panic that killed the controller);
  2. `algorithm = "rendezvous"` with 4 194 304 slots (valid: a table that takes seconds to build);
  5. 1 MB of unknown keys (~92 000; once, checking was quadratic and ran on the controller).

For each it prints: ms from the kill until the victim's server id serves from a new process
(`/_lb/status`), how many other replicas got a new process (the goal: 0), whether the file was
refused (and why) or applied, and wrk's requests, non-2xx answers and socket errors. Traffic goes
only to 127.0.0.1. Uses lb built from the working tree.

    bench/hostile_saves.py [--replicas 64] [--duration 12]
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def status(url):
    return json.loads(get(url + "/_lb/status"))


def pids(url):
    return {r["id"]: r["handle"]["pid"] for r in status(url)["replicas"] if r["health"] == "up"}


def base(url, head):
    text = head
    for r in status(url)["replicas"]:
        text += '[[replicas]]\nhostname = "%s"\nid = %d\n' % (r["hostname"], r["id"])
    return text


def save(path, text):
    tmp = path + ".swp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def unknown_keys(base):
    """`base` and as many unknown keys as fit in 1 000 000 bytes (about 100 000): just under
    the 1 MiB limit, so the file is checked whole."""
    lines = [base, "\n[log]\n"]
    size = sum(len(l) for l in lines)
    i = 0
    while True:
        line = "k%d = 1\n" % i
        if size + len(line) > 1_000_000:
            return "".join(lines)
        lines.append(line)
        size += len(line)
        i += 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicas", type=int, default=64)
    ap.add_argument("--duration", type=int, default=12)
    ap.add_argument("--no-build", action="store_true", help="use target/release/lb as it is")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        subprocess.run("apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive "
                       "apt-get -o DPkg::Lock::Timeout=600 install -y -qq wrk >/dev/null", shell=True, check=True)
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "lb"], cwd=ROOT, check=True)
    run = tempfile.mkdtemp()
    path = os.path.join(run, "lb.toml")
    head = ("[ring]\nslots = 4096\nvirtual_nodes = 9\n\n[health]\ninterval_ms = 100\ntimeout_ms = 300\n"
            "fall = 3\nstart_timeout_ms = 20000\n\n[limits]\nmax_replicas = %d\n\n" % max(64, args.replicas))
    with open(path, "w") as f:
        f.write(head + "".join('[[replicas]]\nhostname = "Server %d"\nid = %d\n' % (i, i)
                               for i in range(1, args.replicas + 1)))
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    err = open(os.path.join(run, "err"), "w")
    lb = subprocess.Popen([os.path.join(ROOT, "target/release/lb"), "--config", path, "--listen",
                           "127.0.0.1:%d" % port], stdout=subprocess.DEVNULL, stderr=err,
                          env=dict(os.environ, RUST_LOG="warn"))
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if len(pids(url)) == args.replicas:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            sys.exit("lb did not start its replicas")
        cases = [
            ("1: a 70 000-byte value", lambda b: b + '\n[proxy]\nworkers = "%s"\n' % ("x" * 70000)),
            ("2: rendezvous, 4 194 304 slots",
             lambda b: b.replace("slots = 4096\nvirtual_nodes = 9", 'algorithm = "rendezvous"\nslots = 4194304')),
            ("5: 1 MB of unknown keys", unknown_keys),
        ]
        victim_id = 1
        for name, make in cases:
            text = make(base(url, head))
            before = pids(url)
            wrk = subprocess.Popen(["wrk", "-t2", "-c32", "-d%ds" % args.duration, "-s",
                                    os.path.join(ROOT, "bench/request.lua"), url],
                                   stdout=subprocess.PIPE, text=True)
            time.sleep(3)
            save(path, text)
            os.kill(before[victim_id], signal.SIGKILL)
            killed = time.time()
            replaced_ms = None
            while time.time() - killed < 30:
                try:
                    now = pids(url)
                except OSError:
                    now = {}
                if now.get(victim_id) not in (None, before[victim_id]):
                    replaced_ms = (time.time() - killed) * 1000
                    break
                time.sleep(0.01)
            out, _ = wrk.communicate()
            after = pids(url)
            others = sum(1 for i, p in before.items() if i != victim_id and after.get(i) != p)
            st = status(url)
            error = (st["config"].get("last_error") or {}).get("message")
            verdict = ("refused: " + error[:90]) if error else "applied (%s, %d slots)" % (
                st["ring"]["algorithm"], st["ring"]["slots"])
            reqs = re.search(r"(\d+) requests in", out)
            non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            sock = re.search(r"Socket errors: (.*)", out)
            print("== %s" % name)
            print("   replica %d replaced after: %s" % (victim_id, "%.0f ms" % replaced_ms if replaced_ms else "NOT within 30 s"))
            print("   healthy replicas replaced: %d" % others)
            print("   the file: %s" % verdict)
            print("   wrk: %s requests, %s non-2xx, socket errors: %s" % (
                reqs.group(1) if reqs else "?", non2xx.group(1) if non2xx else "0",
                sock.group(1) if sock else "none"))
            # Back to a normal file before the next case.
            save(path, base(url, head))
            deadline = time.time() + 30
            while time.time() < deadline:
                st = status(url)
                if not st["config"].get("last_error") and st["ring"]["slots"] == 4096 and len(pids(url)) == args.replicas:
                    break
                time.sleep(0.1)
            victim_id += 1
    finally:
        lb.send_signal(signal.SIGTERM)
        try:
            lb.wait(20)
        except subprocess.TimeoutExpired:
            lb.kill()
        shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    main()
