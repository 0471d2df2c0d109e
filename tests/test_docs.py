"""The documentation stays true to the code: the generated parts are up to date, the design
document is in the repository, and nothing cites a file outside it."""
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_generated_docs_are_up_to_date():
    """docs/api.md and the README's optimizer tables come from the code (tools/docs.py)."""
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "docs.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_no_file_cites_a_path_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    outside = ("../" + "shared", "DESIGN" + ".md")    # spelled so: this file is tracked too
    offenders = []
    for name in tracked:
        path = ROOT / name
        if path.suffix in (".png", ".npz") or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if any(cited in text for cited in outside):
            offenders.append(name)
    assert offenders == []


def test_the_design_document_and_license_are_in_the_repository():
    design = (ROOT / "docs" / "design.md").read_text()
    for topic in ("## Layers", "## The arithmetic, exactly", "## Bit for bit",
                  "## All or nothing", "## Adding an optimizer"):
        assert topic in design
    assert "BSD" in (ROOT / "LICENSE").read_text()


def _python_blocks(section_heading):
    import re
    readme = (ROOT / "README.md").read_text()
    section = readme.split(section_heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_low_precision_examples_run():
    blocks = _python_blocks("## bfloat16 and float16")
    assert len(blocks) >= 3
    for code in blocks:
        if "import torch" in code:
            import pytest
            pytest.importorskip("torch")
        exec(compile(code, "README.md", "exec"), {})
