"""``changeover dashboard``: the live war-room page over a plan's journal (``dashboard``)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import click

from changeover.cli_common import err, out, plan_option

if TYPE_CHECKING:
    from changeover.dashboard.app import Dashboard


@click.command()
@plan_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option(
    "--token-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Operator token (acts). Default: $CHANGEOVER_DASHBOARD_TOKEN, else one generated once "
    "into .changeover/dashboard-token next to the plan.",
)
@click.option(
    "--viewer-token-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Read-only viewer token (or $CHANGEOVER_DASHBOARD_VIEWER_TOKEN); needed to listen "
    "beyond loopback.",
)
def dashboard(
    plan: Path, host: str, port: int, token_file: Path | None, viewer_token_file: Path | None
) -> None:
    """Serve the live war-room page: timeline, phase and weights, gates, charts, decisions,
    checklist, contacts, journal tail — and approve, sign off, roll back with the operator token.

    Loopback only unless a viewer token is given. Stop it with Ctrl-C; the cutover goes on.

    Example: changeover dashboard --plan changeover.yaml --port 8765
    """
    from changeover.dashboard.app import Dashboard
    from changeover.dashboard.auth import load_tokens
    from changeover.engine.runbook import Runbook

    with Runbook.open(plan) as runbook:
        tokens = load_tokens(
            token_file=token_file,
            viewer_token_file=viewer_token_file,
            state_dir=runbook.loaded.base_dir / ".changeover",
        )
        asyncio.run(_serve(Dashboard(runbook, tokens, host=host, port=port)))


async def _serve(board: Dashboard) -> None:
    """Serve until SIGINT or SIGTERM, then stop cleanly (exit 0: stopping it is normal)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await board.start()
    try:
        out.print(f"dashboard on {board.url} (journal {board.runbook.journal.location})")
        out.print(f"operator token: {board.tokens.operator_source}; type it to act", markup=False)
        if board.tokens.viewer is not None:
            out.print("reading needs the viewer token", markup=False)
        await stop.wait()
    finally:
        await board.close()
    err.print("dashboard stopped", markup=False)
