"""The ``tracker`` console script: the engine's commands plus ``serve`` for the web UI."""

from __future__ import annotations

import click

from engine.cli import cli


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--debug", is_flag=True, help="Reload on code changes and show the debugger (never in production).")
def serve(host: str, port: int, debug: bool) -> None:
    """Start the web UI (development server; use gunicorn in production)."""
    from webui import create_app

    app = create_app()
    click.echo(f"Tracker is running on http://{host}:{port}/ (Ctrl+C to stop)")
    app.run(host=host, port=port, debug=debug, use_reloader=debug)


def main() -> None:
    cli(prog_name="tracker")


if __name__ == "__main__":
    main()
