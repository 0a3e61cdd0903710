"""``juicer labelstudio start|stop|status``: run the project's Label Studio (used by ``make serve``)."""

from __future__ import annotations

import argparse
import logging

from tqdm import tqdm

from annotation.errors import AnnotationError
from annotation.launcher import launcher_from_settings
from config import Settings

NAME = "labelstudio"
HELP = "start, stop or inspect the Label Studio server juicer runs on 127.0.0.1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``action`` (start|stop|status) and the start timeout."""
    parser.add_argument("action", choices=("start", "stop", "status"))
    parser.add_argument("--timeout", type=float, default=180, help="seconds to wait for /health on start (default 180)")


def _login(settings: Settings, url: str) -> str:
    from app.core.secrets import secrets_dir

    ls = settings.label_studio
    where = secrets_dir(settings.data_dir)
    return (
        f"Label Studio: {url}\n  login: {ls.username}, password in {where / 'label-studio-password'} "
        "(or label_studio.password)\n  API token: in " + str(where / "label-studio-token") + " (or label_studio.token)"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Do ``args.action``; 0 on success, 1 when Label Studio failed or is not running."""
    if settings.label_studio.url:
        print(f"label_studio.url is set ({settings.label_studio.url}): juicer uses that server and does not run one")
        return 0 if args.action != "start" else 1
    from app.core.datadir import prepare_data_dir
    from app.core.secrets import resolve_secrets

    prepare_data_dir(settings)  # umask 077 for Label Studio's files; its document root must hold the images only
    settings = resolve_secrets(settings)
    launcher = launcher_from_settings(settings)
    if args.action == "stop":
        print("stopped Label Studio" if launcher.stop() else "Label Studio was not running")
        return 0
    if args.action == "status":
        if not launcher.running:
            print(f"Label Studio is not running (data {launcher.data_dir})")
            return 1
        state = "healthy" if launcher.healthy() else "not answering /health yet"
        print(f"running, pid {launcher.pid}, {state}\n{_login(settings, launcher.url)}")
        return 0
    first = not (launcher.data_dir / "label_studio.sqlite3").exists()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per /health poll
    bar = tqdm(
        total=round(args.timeout),
        desc="starting Label Studio" + (" (first start: about a minute)" if first else ""),
        bar_format="{desc}: {n_fmt} s waited (timeout {total_fmt} s)",
    )

    def tick(elapsed: float) -> None:
        bar.update(max(0, int(elapsed) - bar.n))

    try:
        url = launcher.start(wait=True, timeout_s=args.timeout, progress=tick)
    except AnnotationError as exc:
        bar.close()
        print(f"juicer: {exc}")
        return 1
    bar.close()
    print(f"{_login(settings, url)}\n  data: {launcher.data_dir}  log: {launcher.log_path}\n  stop it with `juicer labelstudio stop`")
    return 0
