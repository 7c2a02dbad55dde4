"""What is generated from the command-line definitions: shell completion (by the binary,
`snapfs --generate-completion-script SHELL`) and the man pages (scripts/extras.sh)."""

import shutil
import subprocess

import pytest

from lib.common import REPO, SNAPFS


def completion(shell):
    r = subprocess.run([SNAPFS, "--generate-completion-script", shell], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def bash_completes(script, words):
    """What bash's completion offers for the command line `words` (the last one being typed)."""
    line = " ".join(words)
    # bash calls the function with the command, the word being completed and the one before.
    program = (f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
               f"COMP_LINE='{line}'; COMP_POINT={len(line)}; _snapfs snapfs {words[-1]} {words[-2]}; "
               f"printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    r = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_bash_completes_commands_and_flags(tmp_path):
    script = tmp_path / "snapfs.bash"
    script.write_text(completion("bash"))
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert bash_completes(script, ["snapfs", "li"]) == ["list"]
    assert "versions" in bash_completes(script, ["snapfs", "ver"])
    assert "--strategy" in bash_completes(script, ["snapfs", "mount", "--str"])
    assert "--json" in bash_completes(script, ["snapfs", "status", "--js"])


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_other_shells_get_a_script(tmp_path, shell):
    text = completion(shell)
    assert "snapfs" in text and "mount" in text and "keep-daily" in text
    if shutil.which(shell):
        script = tmp_path / f"completion.{shell}"
        script.write_text(text)
        assert subprocess.run([shell, "-n", str(script)]).returncode == 0


def test_man_pages_are_generated_from_the_commands(tmp_path):
    r = subprocess.run([str(REPO / "scripts" / "extras.sh"), str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    pages = {p.name for p in (tmp_path / "man").iterdir()}
    assert {"snapfs.1", "snapfs.mount.1", "snapfs.restore.1", "snapfs.status.1"} <= pages
    mount = (tmp_path / "man" / "snapfs.mount.1").read_text()
    assert "strategy" in mount and "backing" in mount.lower()
    assert (tmp_path / "completions" / "snapfs.bash").read_text() == completion("bash")
    if shutil.which("man"):
        rendered = subprocess.run(["man", "-l", str(tmp_path / "man" / "snapfs.1")], capture_output=True, text=True,
                                  timeout=60, env={"MANPAGER": "cat", "PATH": "/usr/bin:/bin"})
        assert rendered.returncode == 0 and "snapfs" in rendered.stdout
