"""The README's examples are tests (sqlite-utils' way): its "Use from Python" lines run as a doctest, in
a temp folder holding a copy of the examples, against the real embedded gallery."""

from __future__ import annotations

import doctest
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_use_from_python(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "examples" / "catalogue", tmp_path / "catalogue")
    shutil.copy(ROOT / "examples" / "query.jpg", tmp_path / "query.jpg")
    for f in (tmp_path / "catalogue").iterdir():  # as a checkout leaves them: written well before the run
        os.utime(f, (1_600_000_000, 1_600_000_000))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMGSYNC_CONFIG", str(tmp_path / "no-config.toml"))
    (tmp_path / "no-config.toml").write_text("")
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Use from Python") :]
    section = section[: section.index("\n## ", 1)]
    parser = doctest.DocTestParser()
    test = parser.get_doctest(section, {}, "README.md: Use from Python", str(ROOT / "README.md"), 0)
    assert test.examples, "the README's Python section has no examples"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} README examples failed (see the output)"
