"""`python -m web_bridge_backend`: run the reference backend until SIGTERM or SIGINT.

Prints `listening on <url>` once it accepts connections (with `--listen host:0` the port is
chosen by the system; the line says which).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import tempfile
from pathlib import Path

from aiohttp import web

from . import auth
from .server import Backend


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="web_bridge_backend", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:3000", help="host:port (port 0: any)")
    parser.add_argument("--token-file", type=Path, help="require this bearer token (re-read)")
    parser.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate")
    parser.add_argument("--tls-key", type=Path, help="... and this key")
    parser.add_argument("--client-ca", type=Path, help="require client certificates from this CA")
    parser.add_argument("--workdir", type=Path, help="pods' working directories (default: temp)")
    parser.add_argument("--node-file", type=Path, help="JSON: capacity, conditions, addresses")
    parser.add_argument("--pod-ip", help="reported as every pod's IP")
    parser.add_argument("--forward-host", default="127.0.0.1", help="where port-forward connects")
    parser.add_argument("--heartbeat", type=float, default=15.0, help="seconds between heartbeats")
    parser.add_argument("--node-name", default="web-bridge", help="nodeName in /stats/summary")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="web-bridge-"))
    backend = Backend(
        workdir,
        node_file=args.node_file,
        pod_ip=args.pod_ip,
        forward_host=args.forward_host,
        heartbeat_s=args.heartbeat,
        node_name=args.node_name,
    )
    tokens = auth.TokenFile(args.token_file) if args.token_file else None
    tls = auth.server_tls(args.tls_cert, args.tls_key, args.client_ca) if args.tls_cert else None
    runner = web.AppRunner(backend.app(tokens), access_log=logging.getLogger("access"))
    await runner.setup()
    host, _, port = args.listen.rpartition(":")
    site = web.TCPSite(runner, host or "127.0.0.1", int(port), ssl_context=tls)
    await site.start()
    server = site._server  # the bound port, for --listen host:0
    bound = server.sockets[0].getsockname()[1] if server is not None else port
    scheme = "https" if tls else "http"
    print(f"listening on {scheme}://{host or '127.0.0.1'}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
