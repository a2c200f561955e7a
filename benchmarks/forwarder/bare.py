"""The forwarder benchmark's ceiling, in a process of its own: send pre-encoded request bodies (Splunk HEC,
bare httpx POSTs one after another) or pre-framed syslog chunks (one bare TCP socket) as fast as possible.

    python -m benchmarks.forwarder.bare hec|tcp PORT FILE [TOKEN]

``FILE`` holds length-prefixed chunks (4-byte big-endian length + bytes). The process connects, prints
``ready``, waits for a line on stdin, sends every chunk, then prints the CPU seconds it used to send.
"""

from __future__ import annotations

import asyncio
import struct
import sys
import time

import httpx


def read_chunks(path: str) -> list[bytes]:
    data = open(path, "rb").read()  # noqa: ASYNC230, PTH123, SIM115 - read once before the clock starts
    out, i = [], 0
    while i < len(data):
        (n,) = struct.unpack_from(">I", data, i)
        out.append(data[i + 4 : i + 4 + n])
        i += 4 + n
    return out


def write_chunks(path: str, chunks: list[bytes]) -> None:
    with open(path, "wb") as f:  # noqa: PTH123
        for c in chunks:
            f.write(struct.pack(">I", len(c)) + c)


async def hec(port: int, chunks: list[bytes], token: str) -> float:
    headers = {"Authorization": f"Splunk {token}", "Content-Type": "application/json"}
    url = f"http://127.0.0.1:{port}/services/collector/event"
    async with httpx.AsyncClient() as http:
        await http.post(url, content=b"", headers=headers)  # connect (answers 400 "No data")
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        t0 = time.process_time()
        for body in chunks:
            r = await http.post(url, content=body, headers=headers)
            r.raise_for_status()
        return time.process_time() - t0


async def tcp(port: int, chunks: list[bytes]) -> float:
    _, w = await asyncio.open_connection("127.0.0.1", port)
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    t0 = time.process_time()
    for c in chunks:
        w.write(c)
        await w.drain()
    cpu = time.process_time() - t0
    w.close()
    await w.wait_closed()
    return cpu


def main() -> None:
    kind, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    chunks = read_chunks(path)
    if kind == "hec":
        cpu = asyncio.run(hec(port, chunks, sys.argv[4]))
    else:
        cpu = asyncio.run(tcp(port, chunks))
    print(f"cpu {cpu:.6f}", flush=True)


if __name__ == "__main__":
    main()
