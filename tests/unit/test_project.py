"""Project-level promises: the README's commands are the ones CI and newcomers run."""

from __future__ import annotations

import re
import subprocess
import sys


def _readme_commands(repo_root):
    text = (repo_root / "README.md").read_text()
    section = text.split("## Two commands for a fresh machine", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section, flags=re.S)


def test_readme_has_exactly_two_commands(repo_root):
    cmds = _readme_commands(repo_root)
    assert len(cmds) == 2, cmds
    assert all("\n" not in c for c in cmds)
    assert cmds[0].startswith("bash tools/setup.sh")
    assert "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command(repo_root):
    ci = (repo_root / ".ci" / "run").read_text()
    assert _readme_commands(repo_root)[1] in ci


def test_setup_is_idempotent_and_fast_when_up_to_date(repo_root):
    """A second set-up run must not touch pip (it says so) and must leave torch alone."""
    out = subprocess.run(
        ["bash", str(repo_root / "tools" / "setup.sh"), "g2p,dev,export"],
        capture_output=True, text=True, check=True,
    ).stdout
    assert "up to date" in out, out


def test_package_import_is_light():
    """Importing speechfm (and its CLI) must not drag in lhotse, sentencepiece or torch."""
    code = (
        "import sys, speechfm, speechfm.errors; "
        "bad = [m for m in ('lhotse', 'sentencepiece', 'phonemizer') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
