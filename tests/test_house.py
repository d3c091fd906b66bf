"""The package's shape (benchmarks/house.py): no import cycle, no import up a layer, core/
imports only core/, one door to the CPU kernels, no printing / flag parsing / exiting outside
cli/, short modules and functions. Each rule is also shown to catch a planted violation."""
from __future__ import annotations

import pathlib
import textwrap

from benchmarks import house


def test_the_package_keeps_the_house_rules():
    assert house.broken_rules() == []


def _tree(tmp_path: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
    src = tmp_path / "src"
    for name, text in files.items():
        path = src / "deepae_jax" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for folder in [p for p in (src / "deepae_jax").rglob("*") if p.is_dir()] + [
            src / "deepae_jax"]:
        (folder / "__init__.py").touch()
    return src


def test_a_lazy_import_cycle_is_found(tmp_path):
    src = _tree(tmp_path, {
        "data/a.py": "def f():\n    from deepae_jax.data import b\n",
        "data/b.py": "from deepae_jax.data import a\n",
    })
    assert any("import cycle" in p for p in house.broken_rules(src))


def test_an_import_up_a_layer_and_out_of_core_are_found(tmp_path):
    src = _tree(tmp_path, {
        "core/model.py": "from deepae_jax.training import trainer\n",
        "training/trainer.py": "",
    })
    problems = house.broken_rules(src)
    assert any("a higher layer" in p for p in problems)
    assert any("core/ imports only core/" in p for p in problems)


def test_a_second_door_to_the_kernels_is_found(tmp_path):
    src = _tree(tmp_path, {
        "kernels/ops.py": "",
        "training/backend.py": "from deepae_jax.kernels import ops\n",
        "evaluation/protocol.py": "from deepae_jax.kernels import ops\n",
    })
    assert any("import kernels/" in p for p in house.broken_rules(src))


def test_printing_argparse_flags_and_long_functions_outside_cli_are_found(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(70))
    src = _tree(tmp_path, {
        "data/tool.py": "import argparse\nimport sys\nfrom absl import flags\n"
                        "flags.DEFINE_string('x', '', 'x')\n"
                        f"def long():\n{body}\n    print(x1)\n    sys.exit(1)\n",
        "cli/app.py": "print('fine here')\n",
    })
    problems = " | ".join(house.broken_rules(src))
    for what in ("argparse", "module-global flag", "prints", "sys.exit", "lines (at most 60)"):
        assert what in problems, what
    assert "cli.app" not in problems
