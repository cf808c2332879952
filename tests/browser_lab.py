"""A JupyterLab server on localhost for the browser test (tests/test_browser.py).

The server runs from this Python (so its kernel has ddadlib), on a free port of 127.0.0.1 with a
random token, in a temporary root folder, with its own settings (every cell attached to the page,
no news or update checks), and writes its log where the test keeps its artifacts.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# JupyterLab settings for the test: attach all cells to the page (the default,
# contentVisibility, may skip rendering cells out of view) and ask nothing at start.
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
        "doNotDisturbMode": True,
    },
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterLab:
    """``with JupyterLab(root, home, log) as lab: lab.url("05_x.ipynb")``."""

    def __init__(
        self,
        root: Path,
        home: Path,
        log: Path,
        env: dict[str, str] | None = None,
        start_timeout: float = 180,
    ):
        self.root, self.home, self.log_path = root, home, log
        self.env = {**os.environ, **(env or {})}
        self.start_timeout = start_timeout
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.proc: subprocess.Popen | None = None

    def url(self, notebook: str) -> str:
        return f"http://127.0.0.1:{self.port}/lab/tree/{notebook}?token={self.token}"

    def _write_settings(self) -> dict[str, str]:
        settings = self.home / "lab-settings"
        for name, value in SETTINGS.items():
            path = settings / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value))
        dirs = {
            "JUPYTERLAB_SETTINGS_DIR": settings,
            "JUPYTERLAB_WORKSPACES_DIR": self.home / "lab-workspaces",
            "JUPYTER_CONFIG_DIR": self.home / "config",
            "JUPYTER_RUNTIME_DIR": self.home / "runtime",
        }
        for d in dirs.values():
            Path(d).mkdir(parents=True, exist_ok=True)
        return {k: str(v) for k, v in dirs.items()}

    def __enter__(self) -> JupyterLab:
        env = {**self.env, **self._write_settings()}
        cmd = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI runs as root
            cmd.append("--allow-root")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=self.root, stdout=self._log, stderr=subprocess.STDOUT
        )
        status = f"http://127.0.0.1:{self.port}/api/status?token={self.token}"
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.__exit__(None, None, None)
                raise RuntimeError(
                    f"JupyterLab exited ({self.proc.returncode}): "
                    f"{self.log_path.read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(status, timeout=5) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.__exit__(None, None, None)
        raise RuntimeError(
            f"JupyterLab did not answer in {self.start_timeout:.0f} s: "
            f"{self.log_path.read_text()[-3000:]}"
        )

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # the server shuts its kernels down
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
