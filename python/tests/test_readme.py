"""The README's Python example runs as written."""

import contextlib
import io
import pathlib
import re


def test_the_readme_example_runs(tmp_path, monkeypatch):
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Python\n", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WFSTATE_STORE", raising=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    printed = out.getvalue().splitlines()
    assert printed[0] == "2 {'phase': 'plan', 'steps_done': 1}"
    assert printed[1].startswith("[{'op': 'replace', 'path': '/phase', 'value': 'build'}")
    assert printed[2].startswith("4 conflict on workflow")
    assert printed[-1] == "ok"
