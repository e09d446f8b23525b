"""A params file written into a test's directory."""

from pathlib import Path


def write(tmp_path: Path, text: str, name: str = "params.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path
