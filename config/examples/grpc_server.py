"""A gRPC server for config/examples/grpc.toml, on the stock `grpcio` library (no protoc: a
generic handler with raw bytes), and a client to call it through lb.

    python3 config/examples/grpc_server.py serve --name shard-1 --port 50051
    python3 config/examples/grpc_server.py call --target 127.0.0.1:5000 --shard tenant-7

The service `demo.Shard` has `Who` (answers `SERVER holds SHARD`, the shard read from the
`x-shard` metadata lb hashes) and `Count` (streams N messages). `serve` prints its name.

It also serves the stock `grpc.health.v1.Health` servicer (SERVING for "" and for `demo.Shard`)
on the same port: grpc.toml's `[health] kind = "grpc"` asks it.

Needs `pip install grpcio grpcio-health-checking` (scripts/test.sh puts them in target/ws-venv).
"""

import argparse
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


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
    for service in ("", "demo.Shard"):
        checks.set(service, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    if server.add_insecure_port(f"127.0.0.1:{port}") != port:
        raise SystemExit(f"{name}: cannot listen on 127.0.0.1:{port}")
    server.start()
    print(f"{name}: gRPC on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()


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
