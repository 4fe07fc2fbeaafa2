#!/usr/bin/env python
"""Run a notebook in a real JupyterLab, in headless Chromium, and save a PNG of its training panel.

    .venv/bin/python scripts/screenshot_notebook.py /tmp/notebook02.png
    .venv/bin/python scripts/screenshot_notebook.py out.png --notebook notebooks/03_qlora_and_sft.ipynb

What it does: copies the notebook into a temporary folder, starts `jupyter lab` there (headless, on a
free port, with a token, and with its own settings, workspaces and WORKBENCH_HOME in that folder), opens
the notebook in Chromium through the Chrome DevTools Protocol (Playwright), runs every cell through
JupyterLab's own `notebook:run-all-cells` command (what Run > Run All Cells does), waits until every cell
has run (the training included), scrolls to the training panel and saves a picture of it. The notebook's
clean-up cell is left out of the copy: closing the panels would remove them from the page.
WORKBENCH_MODELS_PATH is passed on when set, so an already built tiny model is reused.

Not part of the test suite, and it installs nothing. It needs:

* a Chromium: on Debian/Ubuntu `apt-get install -y chromium` (the default path is /usr/bin/chromium;
  `--chromium PATH` for another);
* Playwright's Python driver in the project's environment: `.venv/bin/pip install playwright`.
  Playwright downloads no browser by itself (that is `playwright install`, not needed): the system
  Chromium is passed as `executable_path`;
* JupyterLab and ipywidgets, which the project's plain install brings (`pip install -e .`, as
  `scripts/serve` does).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
# JupyterLab user settings for a clean, complete page: every cell in the DOM (no windowing), no news or
# update-check notifications over the notebook.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True,
    },
}
# Progress of the notebook open in the page, read through the JupyterLab application object.
PROGRESS_JS = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  if (!panel || !panel.content || !panel.content.model) return null;
  const cells = panel.content.model.cells;
  let total = 0, done = 0, errors = [];
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== 'code') continue;
    total++;
    if (cell.executionCount !== null && cell.executionCount !== undefined) done++;
    for (const out of cell.outputs.toJSON()) {
      if (out.output_type === 'error') errors.push(`cell ${i}: ${out.ename}: ${out.evalue}`);
    }
  }
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return {total, done, errors, kernel: kernel ? kernel.status : null};
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_without_cleanup(source: Path, dest: Path) -> None:
    """The notebook without its clean-up cell (the one closing the Workbench), outputs cleared."""
    notebook = json.loads(source.read_text(encoding="utf-8"))
    notebook["cells"] = [c for c in notebook["cells"]
                         if not (c["cell_type"] == "code" and "bench.close()" in "".join(c["source"]))]
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    dest.write_text(json.dumps(notebook, indent=1), encoding="utf-8")


def start_lab(folder: Path, port: int, token: str, log) -> subprocess.Popen:
    settings = folder / "lab-settings"
    for name, values in LAB_SETTINGS.items():
        plugin, _, file = name.rpartition("/")
        (settings / plugin).mkdir(parents=True, exist_ok=True)
        (settings / plugin / file).write_text(json.dumps(values))
    env = os.environ | {
        "WORKBENCH_HOME": str(folder / "home"),
        "JUPYTER_CONFIG_DIR": str(folder / "jupyter-config"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(folder / "lab-workspaces"),
        "JUPYTER_RUNTIME_DIR": str(folder / "jupyter-runtime"),
    }
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
        f"--ServerApp.root_dir={folder}", f"--IdentityProvider.token={token}",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: its commands and the notebook model
        "--ServerApp.open_browser=False",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # containers and CI machines often run as root
    return subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for_lab(url: str, token: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"jupyter lab did not answer within {timeout:.0f} s")


def screenshot(url: str, notebook: str, token: str, output: Path, chromium: str, timeout: float) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/lab/tree/{notebook}?token={token}", timeout=120_000)
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                                   " && window.jupyterapp.shell.currentWidget.content", timeout=120_000)
            page.wait_for_function(f"() => ({PROGRESS_JS})()?.kernel === 'idle'", timeout=120_000)
            print("kernel ready; running all cells", flush=True)
            # Not awaited: the command's promise settles only when the last cell is done.
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")

            deadline, last = time.monotonic() + timeout, None
            while True:
                progress = page.evaluate(PROGRESS_JS)
                if progress != last:
                    print(f"cells run: {progress['done']}/{progress['total']}, kernel {progress['kernel']}",
                          flush=True)
                    last = progress
                if progress["errors"]:
                    raise RuntimeError("the notebook failed: " + "; ".join(progress["errors"]))
                if progress["done"] == progress["total"] and progress["kernel"] == "idle":
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the notebook did not finish within {timeout:.0f} s: {progress}")
                time.sleep(1)

            # The training panel: the output holding the Start button and the loss plot beside the stats.
            panel = page.locator(".jp-OutputArea-output", has=page.locator("button", has_text="Resume")).first
            panel.scroll_into_view_if_needed()
            page.wait_for_timeout(1000)  # let the last widget updates paint
            panel.screenshot(path=str(output))
        finally:
            browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="where to save the PNG")
    parser.add_argument("--notebook", type=Path, default=ROOT / "notebooks" / "02_finetune_lora.ipynb")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the Chromium executable")
    parser.add_argument("--timeout", type=float, default=900, help="seconds for the notebook to run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (for its logs)")
    args = parser.parse_args()
    if not Path(args.chromium).exists():
        parser.error(f"no Chromium at {args.chromium}: apt-get install -y chromium, or pass --chromium")

    folder = Path(tempfile.mkdtemp(prefix="notebook-screenshot-"))
    proc = None
    try:
        copy_without_cleanup(args.notebook, folder / args.notebook.name)
        port, token = free_port(), secrets.token_hex(16)
        with open(folder / "jupyter.log", "wb") as log:
            proc = start_lab(folder, port, token, log)
        url = f"http://127.0.0.1:{port}"
        wait_for_lab(url, token, proc)
        print(f"jupyter lab at {url} (log: {folder / 'jupyter.log'})", flush=True)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        screenshot(url, args.notebook.name, token, args.output.resolve(), args.chromium, args.timeout)
        print(f"saved {args.output}")
        return 0
    finally:
        if proc is not None:
            proc.terminate()  # stops the kernel with it
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
