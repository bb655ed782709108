#!/usr/bin/env python3
"""A tiny chat-room server for the README's WebSocket example (stock Python `websockets`, 13 or
later: `python3 -m venv /tmp/ws && /tmp/ws/bin/pip install websockets`).

    chat_server.py --name chat-1 --port 9001

Clients connect to ws://HOST:PORT/chat?room=NAME; every text message is sent to every member of
the room on this server as `[NAME@chat-1] message`. Rooms live in this process's memory only —
which is why lb keeps every socket of a room on one server (`[ring] key = "query:room"`).
`GET /healthz` answers 200 (lb's health check).
"""
import argparse
import asyncio
import http
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import broadcast, serve

parser = argparse.ArgumentParser()
parser.add_argument("--name", required=True)
parser.add_argument("--port", type=int, required=True)
args = parser.parse_args()

rooms = {}  # room name -> set of connections


async def chat(ws):
    room = parse_qs(urlsplit(ws.request.path).query).get("room", ["lobby"])[0]
    members = rooms.setdefault(room, set())
    members.add(ws)
    await ws.send(f"[{args.name}] joined room {room!r} ({len(members)} here)")
    try:
        async for message in ws:
            broadcast(members, f"[{room}@{args.name}] {message}")
    finally:
        members.discard(ws)


def health(connection, request):
    if request.path == "/healthz":
        return connection.respond(http.HTTPStatus.OK, "OK\n")
    return None


async def main():
    async with serve(chat, "127.0.0.1", args.port, process_request=health) as server:
        print(f"{args.name}: chat rooms on ws://127.0.0.1:{args.port}/chat?room=NAME", flush=True)
        await server.serve_forever()


asyncio.run(main())
