"""Node packages for the tests that run real Node clients: installed once into a cache folder.

The folder is ``$RTPROXY_NODE_CACHE`` (default ``~/.cache/rtproxy-tests/node``); each test names the npm packages
it needs and a file that proves each is installed, and only a missing one makes npm run (under a lock, so
parallel test runs do not install into the folder at once). Where node, npm or the registry is missing the test
is skipped, saying why.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest


def node_cache() -> Path:
    return Path(os.environ.get("RTPROXY_NODE_CACHE", Path.home() / ".cache" / "rtproxy-tests" / "node"))


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: no lock (one test run at a time there)
        yield
        return
    with open(folder / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def node_modules(packages: Mapping[str, str]) -> Path:
    """The cache folder, with each npm package of `packages` installed: {spec (``name@range``): a file inside
    node_modules that proves it is there}."""
    if not shutil.which("node") or not shutil.which("npm"):
        pytest.skip("node and npm are not installed")
    cache = node_cache()
    cache.mkdir(parents=True, exist_ok=True)

    def missing() -> list[str]:
        return [spec for spec, proof in packages.items() if not (cache / "node_modules" / proof).exists()]

    if missing():
        with _locked(cache):
            todo = missing()
            if todo:
                r = subprocess.run(
                    ["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(cache), *todo],
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                if r.returncode != 0:
                    pytest.skip(f"npm could not install {', '.join(todo)}: {r.stderr.strip()[:200]}")
    return cache
