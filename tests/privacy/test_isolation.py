"""privacy/ is a plain library: importing it must not import Flower."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_flower_in_sources():
    for path in (ROOT / "privacy").glob("*.py"):
        text = path.read_text()
        assert "import flwr" not in text and "from flwr" not in text, path


def test_import_does_not_load_flower():
    code = "import sys, privacy; print(any(m.split('.')[0] == 'flwr' for m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
