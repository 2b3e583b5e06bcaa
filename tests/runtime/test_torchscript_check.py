"""TorchScript is code: a file from a plugin folder may call tensor maths, nothing that reads files or runs
on load, and must be a style; all refused before torch.jit.load, at discovery and again at load."""

from __future__ import annotations

import re
import zipfile

import pytest
import torch

from stylestream.export.torchscript import save_torchscript
from stylestream.runtime import open_model
from stylestream.runtime.torchscript_check import check_code, check_torchscript


@pytest.mark.parametrize("source, what", [
    ("class M(Module):\n  def __setstate__(self, state: Tuple[int]) -> None:\n    return None\n", "__setstate__"),
    ("def forward(self, x: Tensor) -> Tensor:\n  return torch.from_file('/etc/passwd', False, 10)\n", "torch.from_file"),
    ("def forward(self, x: Tensor) -> Tensor:\n  return ops.aten.from_file('/etc/passwd')\n", "ops.aten.from_file"),
    ("def forward(self, x: Tensor) -> Tensor:\n  return getattr(torch, 'from_file')('/etc/passwd')\n", "getattr(torch"),
    ("def forward(self, x: Tensor) -> Tensor:\n  return torch.save(x, '/tmp/x')\n", "torch.save"),
    ("import os\n", "import"),
])  # fmt: skip
def test_code_beyond_tensor_maths_is_refused(source, what):
    with pytest.raises(ValueError, match=re.escape(what)):
        check_code(source, "code/m.py")


def test_exported_style_code_passes(style_files):
    check_torchscript(style_files.torchscript)  # raises on anything it refuses


def _with_code(src, dst, edit) -> None:
    """A copy of a TorchScript archive with its model code edited."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if "/code/" in info.filename and info.filename.endswith(".py"):
                data = edit(data.decode()).encode()
            zout.writestr(info, data)


def test_a_hostile_archive_is_refused_at_discovery_and_at_load(style_files, tmp_path):
    from stylestream.plugins import discover_plugins

    folder = tmp_path / "styles"
    folder.mkdir()
    bad = folder / "evil.torchscript"
    _with_code(style_files.torchscript, bad,
               lambda code: code.replace("return ", "_z = torch.from_file(\"/etc/hostname\")\n    return ", 1))
    with pytest.raises(ValueError, match="calls torch.from_file"):
        open_model(bad, device="cpu")
    plugins = discover_plugins([folder], include_user_dir=False, include_entry_points=False)
    assert "evil" not in plugins
    assert any("evil.torchscript" in e and "torch.from_file" in e for e in plugins.errors)


def test_a_torch_save_file_is_not_torchscript(style_files, tmp_path):
    fake = tmp_path / "state.torchscript"
    torch.save({"w": torch.zeros(2)}, fake)
    with pytest.raises(ValueError, match="not a TorchScript archive"):
        check_torchscript(fake)


class _Gray(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1, keepdim=True)


def test_torchscript_that_is_not_a_style_is_refused_at_load(tmp_path):
    path = tmp_path / "gray.torchscript"
    save_torchscript(_Gray(), path)
    with pytest.raises(ValueError, match=r"gray\.torchscript: not a style model \(returns torch.float32 \(1, 1, 32, 32\)"):
        open_model(path, device="cpu")
