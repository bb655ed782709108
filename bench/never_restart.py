#!/usr/bin/env python3
"""Never restart, measured: under wrk (64 connections, random request ids), change every setting
that once needed a restart 20 times, move the admin listener 3 times and upgrade the binary 3
times (alternating between two builds), then check that wrk saw no non-2xx answer and no socket
error, and that the replicas are the same processes. Run by bench/never_restart.sh, which builds
the two binaries; everything talks to 127.0.0.1 only.

    never_restart.py --lb NEW --other OTHER --run DIR --out RESULTS.json [--seconds S]
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render(s):
    """lb.toml for the settings `s`."""
    dirs = ", ".join(f'"{d}"' for d in s["dirs"])
    replicas = "".join(
        f'[[replicas]]\nhostname = "Server {i}"\nid = {i}\n' for i in (1, 2, 3)
    )
    return f"""listen = "127.0.0.1:{s['port']}"
[health]
drain_timeout_ms = 10000
[proxy]
workers = {s['workers']}
pipelining = {str(s['pipelining']).lower()}
client_header_timeout_ms = {s['header']}
client_idle_timeout_ms = {s['idle']}
client_send_timeout_ms = {s['send']}
max_connections = {s['max_connections']}
retries = {s['retries']}
response_timeout_ms = {s['response']}
connect_timeout_ms = {s['connect']}
[admin]
listen = "127.0.0.1:{s['admin']}"
token = "{s['token']}"
[log]
access = "{s['access']}"
access_format = "{s['format']}"
[plugins]
dirs = [{dirs}]
{replicas}"""


def save(path, text):
    """Save like an editor: a new file renamed over the old."""
    tmp = path + ".swp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def status(admin, token, timeout=5):
    req = urllib.request.Request(
        f"http://127.0.0.1:{admin}/_lb/status",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def poll(what, check, limit=30):
    """Call `check` until it returns something true (errors count as not yet); that value."""
    deadline = time.monotonic() + limit
    last = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (OSError, urllib.error.URLError, ValueError, KeyError) as e:
            last = e
        time.sleep(0.05)
    sys.exit(f"never_restart: timed out waiting for {what} (last error: {last})")


def install(binary, path):
    """Put `binary` at `path` the way a package manager does: copy beside, rename over."""
    tmp = path + ".new"
    shutil.copy2(binary, tmp)
    os.rename(tmp, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lb", required=True, help="the working tree's lb (also runs `lb upgrade`)")
    ap.add_argument("--other", required=True, help="lb built from another commit")
    ap.add_argument("--run", required=True, help="a scratch directory")
    ap.add_argument("--out", required=True, help="where the results go (JSON)")
    ap.add_argument("--seconds", type=int, default=60, help="wrk's run")
    args = ap.parse_args()

    run = args.run
    exe = os.path.join(run, "lb")
    install(args.lb, exe)
    config = os.path.join(run, "lb.toml")
    access_file = os.path.join(run, "access.log")
    plugin_dir = os.path.join(run, "plugins")
    os.makedirs(plugin_dir, exist_ok=True)
    s = {
        "port": free_port(), "admin": free_port(), "workers": 2, "pipelining": True,
        "header": 10000, "idle": 60000, "send": 60000, "max_connections": 10000,
        "retries": 1, "response": 30000, "connect": 2000, "token": "t0",
        "access": "off", "format": "text", "dirs": [],
    }
    save(config, render(s))
    env = dict(os.environ, RUST_LOG="warn")
    with open(os.path.join(run, "lb.out"), "w") as out, open(os.path.join(run, "lb.err"), "w") as err:
        first = subprocess.Popen([exe, "--config", config], stdout=out, stderr=err, env=env)
    serving = [first.pid]
    try:
        poll("lb to serve", lambda: len(status(s["admin"], s["token"])["replicas"]) == 3)
        pids = sorted(r["handle"]["pid"] for r in status(s["admin"], s["token"])["replicas"])

        wrk = subprocess.Popen(
            ["wrk", "-t2", "-c64", f"-d{args.seconds}s", "--latency",
             "-s", os.path.join(HERE, "request.lua"), f"http://127.0.0.1:{s['port']}/"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        time.sleep(2)  # wrk's connections are open before the first change

        # Each change flips one formerly restart-only setting; 20 of them, cycling.
        flips = [
            ("workers", lambda v: 3 if v == 2 else 2),
            ("pipelining", lambda v: not v),
            ("header", lambda v: 9000 if v == 10000 else 10000),
            ("idle", lambda v: 50000 if v == 60000 else 60000),
            ("send", lambda v: 50000 if v == 60000 else 60000),
            ("max_connections", lambda v: 9000 if v == 10000 else 10000),
            ("retries", lambda v: 2 if v == 1 else 1),
            ("response", lambda v: 20000 if v == 30000 else 30000),
            ("connect", lambda v: 1500 if v == 2000 else 2000),
            ("access", lambda v: access_file if v == "off" else "off"),
            ("format", lambda v: "json" if v == "text" else "text"),
            ("token", lambda v: "t1" if v == "t0" else "t0"),
            ("dirs", lambda v: [plugin_dir] if not v else []),
        ]
        log = []
        builds = [args.other, args.lb, args.other]
        upgrades = moves = 0
        started = time.monotonic()
        # Spread over wrk's run (all but its last 10 s), so traffic meets every state.
        pace = max(0.0, (args.seconds - 10) / 20)
        for i in range(20):
            wait = started + i * pace - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            name, flip = flips[i % len(flips)]
            before = status(s["admin"], s["token"])["config"]["last_applied"]
            s[name] = flip(s[name])
            save(config, render(s))

            def applied():
                st = status(s["admin"], s["token"])
                if st["config"]["last_error"]:
                    sys.exit(f"never_restart: change {name} refused: {st['config']['last_error']}")
                return st["config"]["last_applied"] != before

            # A new token is refused (401) until the save applies: asked again until then.
            poll(f"change {i + 1} ({name})", applied)
            log.append(f"change {i + 1}: {name} = {s[name]}")
            if i in (4, 10, 16):
                old = s["admin"]
                s["admin"] = free_port()
                save(config, render(s))
                poll(f"the admin listener on {s['admin']}", lambda: status(s["admin"], s["token"]))
                moves += 1
                log.append(f"move {moves}: admin {old} -> {s['admin']}")
            if i in (2, 8, 14):
                build = builds[upgrades]
                install(build, exe)
                done = subprocess.run(
                    [args.lb, "upgrade", "--url", f"http://127.0.0.1:{s['admin']}",
                     "--token", s["token"], "--timeout", "40"],
                    capture_output=True, text=True,
                )
                if done.returncode != 0:
                    sys.exit(f"never_restart: upgrade failed: {done.stdout}{done.stderr}")
                upgrades += 1
                serving.append(status(s["admin"], s["token"])["process"]["pid"])
                log.append(f"upgrade {upgrades} to {build}: {done.stdout.strip()}")
        acted = time.monotonic() - started
        text, _ = wrk.communicate(timeout=args.seconds + 60)
        final = status(s["admin"], s["token"])
        after = sorted(r["handle"]["pid"] for r in final["replicas"])

        requests = int(re.search(r"(\d+) requests in", text).group(1))
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
        non2xx = int((re.search(r"Non-2xx or 3xx responses: (\d+)", text) or [0, 0])[1])
        errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
        socket_errors = dict(zip(("connect", "read", "write", "timeout"),
                                 map(int, errors.groups()) if errors else (0, 0, 0, 0)))
        result = {
            "requests": requests, "requests_per_second": rps, "non_2xx": non2xx,
            "socket_errors": socket_errors, "changes": 20, "listener_moves": moves,
            "upgrades": upgrades, "generation": final["process"]["generation"],
            "replica_pids_before": pids, "replica_pids_after": after,
            "actions_seconds": round(acted, 1), "wrk_seconds": args.seconds, "log": log,
        }
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
        print("\n".join(log))
        print(text)
        print(json.dumps({k: v for k, v in result.items() if k != "log"}, indent=2))
        problems = []
        if acted > args.seconds:
            problems.append(f"the changes took {acted:.0f} s, longer than wrk ran")
        if non2xx:
            problems.append(f"{non2xx} non-2xx answers")
        if any(socket_errors.values()):
            problems.append(f"socket errors {socket_errors}")
        if after != pids:
            problems.append(f"replicas restarted: {pids} -> {after}")
        if final["process"]["generation"] != 4:
            problems.append(f"generation {final['process']['generation']}, not 4")
        if problems:
            sys.exit("never_restart: FAILED: " + "; ".join(problems))
        print("never_restart: ok — 0 non-2xx, 0 socket errors, the same replica processes")
    finally:
        # The lb serving now (started by the last upgrade), and the first one if it still runs.
        try:
            last = status(s["admin"], s["token"], timeout=2)["process"]["pid"]
            if last in serving:
                os.kill(last, 15)
        except (OSError, urllib.error.URLError, ValueError, KeyError):
            pass
        if first.poll() is None:
            first.terminate()
        first.wait(timeout=30)


if __name__ == "__main__":
    main()
