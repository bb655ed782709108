"""A gRPC server for config/examples/grpc.toml, on the stock `grpcio` library (no protoc: a
generic handler with raw bytes), and a client to call it through lb.

    python3 config/examples/grpc_server.py serve --name shard-1 --port 50051
    python3 config/examples/grpc_server.py call --target 127.0.0.1:5000 --shard tenant-7

The service `demo.Shard` has `Who` (answers `SERVER holds SHARD`, the shard read from the
`x-shard` metadata lb hashes) and `Count` (streams N messages). `serve` prints its name.

lb's health checks are HTTP/1.1 `GET [health] path`: `serve` answers them on the same port (a
connection that does not begin with HTTP/2's preface gets `200 NAME`) and passes every HTTP/2
connection to the gRPC server, which listens on a port of its own on 127.0.0.1. It also serves
the standard `grpc.health.v1.Health` (SERVING).

Needs `pip install grpcio grpcio-health-checking` (scripts/test.sh puts them in target/ws-venv).
"""

import argparse
import asyncio
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

PREFACE = b"PRI * HTTP/2.0"


def shard_of(context):
    return dict(context.invocation_metadata()).get("x-shard", "(none)")


def serve(name, port):
    def who(request, context):
        return f"{name} holds {shard_of(context)}".encode()

    def count(request, context):
        for i in range(min(int(request.decode() or "10"), 1_000_000)):
            yield f"{name}:{i}".encode()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "demo.Shard",
                {
                    "Who": grpc.unary_unary_rpc_method_handler(who),
                    "Count": grpc.unary_stream_rpc_method_handler(count),
                },
            ),
        )
    )
    checks = health.HealthServicer()
    checks.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    inner = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"{name}: gRPC on 127.0.0.1:{port}", flush=True)
    asyncio.run(front(name, port, inner))


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def front(name, port, inner):
    async def connection(reader, writer):
        try:
            first = await asyncio.wait_for(reader.readexactly(len(PREFACE)), 10)
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, OSError):
            writer.close()
            return
        if first == PREFACE:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", inner)
            up_writer.write(first)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
            return
        # An HTTP/1.1 health check.
        body = name.encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nconnection: close\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(connection, "127.0.0.1", port)
    async with listener:
        await listener.serve_forever()


def call(target, shard, n):
    with grpc.insecure_channel(target) as channel:
        who = channel.unary_unary("/demo.Shard/Who")
        print(who(b"", timeout=5, metadata=(("x-shard", shard),)).decode())
        if n:
            stream = channel.unary_stream("/demo.Shard/Count")
            got = sum(1 for _ in stream(str(n).encode(), timeout=30, metadata=(("x-shard", shard),)))
            print(f"{got} messages streamed")


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--name", required=True)
    s.add_argument("--port", type=int, required=True)
    c = sub.add_parser("call")
    c.add_argument("--target", default="127.0.0.1:5000")
    c.add_argument("--shard", default="tenant-1")
    c.add_argument("--count", type=int, default=0)
    args = parser.parse_args()
    if args.mode == "serve":
        serve(args.name, args.port)
    else:
        call(args.target, args.shard, args.count)


if __name__ == "__main__":
    main()
