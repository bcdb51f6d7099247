"""A TorchScript archive is a program: it is never opened unless the user marks it as trusted."""

import textwrap

import pytest
import torch

from sslstudio import load_backbone
from sslstudio.cli import main
from sslstudio.errors import UntrustedCodeError
from sslstudio.models import build_backbone, load_weights_file

_EVIL = textwrap.dedent('''
    import sys
    from typing import Tuple
    import torch

    class Evil(torch.nn.Module):
        def __init__(self, marker: str):
            super().__init__()
            self.marker = marker

        def forward(self, x):
            return x

        @torch.jit.export
        def __getstate__(self) -> Tuple[str, bool]:
            return (self.marker, self.training)

        @torch.jit.export
        def __setstate__(self, state: Tuple[str, bool]) -> None:
            self.marker = state[0]
            self.training = state[1]
            torch.save(torch.zeros(1), self.marker)  # runs when the archive is opened

    torch.jit.script(Evil(sys.argv[2])).save(sys.argv[1])
''')


@pytest.fixture
def hostile(tmp_path):
    """A TorchScript archive named like weights that writes ``marker`` when it is opened."""
    import subprocess
    import sys

    path, marker = tmp_path / "backbone.pt", tmp_path / "written-by-the-archive"
    script = tmp_path / "make_archive.py"  # TorchScript reads the class's source from a file
    script.write_text(_EVIL)
    subprocess.run([sys.executable, "-W", "ignore", str(script), str(path), str(marker)], check=True)
    assert path.is_file() and not marker.exists()
    return path, marker


@pytest.mark.slow
def test_the_hostile_archive_does_run_code_when_opened_with_jit_load(hostile):
    path, marker = hostile  # the test's premise: opening it is enough to write a file
    torch.jit.load(str(path))
    assert marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("loader", [
    lambda p: load_backbone(p),
    lambda p: load_backbone(p.parent),
    lambda p: load_weights_file(p),
    lambda p: build_backbone("resnet18", weights=p),
])
def test_loading_weights_never_runs_the_archive(hostile, loader):
    path, marker = hostile
    with pytest.raises(UntrustedCodeError, match="TorchScript archive: a program, not weights"):
        loader(path)
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["finetune", "compare"])
def test_the_cli_refuses_it_in_one_sentence_naming_the_flag(hostile, demo_root, tmp_path, capsys, command):
    path, marker = hostile
    argv = [command, "--init", str(path), "--labelled", str(demo_root / "labelled"), "--out", str(tmp_path / "o")]
    if command == "compare":
        argv += ["--baselines", "random"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--trust-torchscript" in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_a_trusted_archive_loads_on_purpose(tmp_path):
    from sslstudio.export import export_backbone

    torch.manual_seed(0)
    backbone = build_backbone("resnet18").eval()
    export_backbone(backbone, tmp_path / "export", formats=("safetensors", "torchscript"), image_size=32)
    scripted = next((tmp_path / "export").glob("*torchscript*"))
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(UntrustedCodeError):
        load_backbone(scripted)
    module = load_backbone(scripted, trust_code=True)
    with torch.no_grad():
        assert torch.allclose(module(x), backbone(x), atol=1e-5)
    # the same file as weights for a backbone, e.g. finetune --init FILE --trust-torchscript
    rebuilt = build_backbone("resnet18", weights=scripted, trust_code=True).eval()
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), backbone(x), atol=1e-5)
    # a folder holding only the archive: refused unless trusted
    scripted.rename(tmp_path / scripted.name)
    (tmp_path / "export" / "backbone.safetensors").unlink()
    (tmp_path / scripted.name).rename(scripted)
    with pytest.raises(UntrustedCodeError):
        load_backbone(tmp_path / "export")
