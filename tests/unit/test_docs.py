"""The repository's documents stand on their own: every link in a markdown file points at a file of
the repository that exists, and no document carries a path of some developer's machine."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# Home directories and the workspace these docs were written in: nobody else has them.
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|home/\w+|Users/\w+|root)/")


def markdown_files() -> list[Path]:
    """The repository's markdown files (git's view: nothing ignored, such as .venv)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    if listed.returncode != 0:  # not a git checkout: walk it, minus what tools make
        return [p for p in ROOT.rglob("*.md") if not {".venv", ".git", "node_modules"} & set(p.parts)]
    return [ROOT / name for name in listed.stdout.split() if (ROOT / name).is_file()]


def links_leaving_the_repository(doc: Path, root: Path = ROOT) -> list[str]:
    bad = []
    for target in LINK.findall(doc.read_text()):
        path = target.split("#", 1)[0]
        if not path:  # an anchor in the same document
            continue
        if re.match(r"^[a-z][a-z0-9+.-]*:", path, re.I) or path.startswith("/"):
            bad.append(f"{target} (not a file of the repository)")
            continue
        resolved = (doc.parent / path).resolve()
        if not resolved.is_relative_to(root):
            bad.append(f"{target} (outside the repository)")
        elif not resolved.exists():
            bad.append(f"{target} (no such file)")
    return bad


def test_the_docs_this_checks_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in markdown_files()}
    assert {"README.md", "docs/architecture.md", "docs/security.md", "bench/README.md"} <= names


def test_no_markdown_file_links_outside_the_repository_or_to_a_missing_file() -> None:
    found = {doc.relative_to(ROOT).as_posix(): bad for doc in markdown_files()
             if (bad := links_leaving_the_repository(doc))}
    assert found == {}


def test_no_markdown_file_holds_a_path_of_a_developers_machine() -> None:
    found = {f"{doc.relative_to(ROOT)}:{n}": line.strip() for doc in markdown_files()
             for n, line in enumerate(doc.read_text().splitlines(), 1) if MACHINE_PATH.search(line)}
    assert found == {}


def test_the_readme_links_the_architecture() -> None:
    assert "(docs/architecture.md)" in (ROOT / "README.md").read_text()
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    assert architecture.count("```mermaid") >= 2  # the services and the life of one rollout


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "DESIGN.md").write_text("# design")
    (repo / "docs" / "here.md").write_text("# here")
    doc = repo / "README.md"
    bad = [("[design](../shared/DESIGN.md)", "outside"), ("[x](https://example.com/a)", "not a file"),
           ("[y](/etc/passwd)", "not a file"), ("[z](docs/nope.md#top)", "no such file")]
    for text, why in bad:
        doc.write_text(f"See {text}.")
        assert why in " ".join(links_leaving_the_repository(doc, repo))
    doc.write_text("[ok](docs/here.md), [anchor](#top), ![img](docs/here.md \"title\")")
    assert links_leaving_the_repository(doc, repo) == []
    assert MACHINE_PATH.search("cd /work/main && make")
    assert MACHINE_PATH.search("see /home/alice/notes")
    assert not MACHINE_PATH.search("unix:///run/docker.sock, /tmp/x, ./work/y, <data-dir>/keys")
