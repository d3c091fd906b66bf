"""The quickstart's path through the package: which modules a run enters and how often it comes
back to a module it had left (a measure of how far one concept is spread).

    python benchmarks/module_path.py [FLAGS...]   (default: --flagfile=experiments/quickstart.flags)

Runs ``deepae_jax.main`` in this process with a profile hook on Python calls, keeps the calls
into package modules in order, merges consecutive calls into the same module, and prints:
modules entered, functions entered, returns to a module already left (an entry into a module
that appeared earlier in the merged sequence, but not just before: every epoch adds to it) and
the distinct calls from a function of one module into a function of another (a fixed count).
"""
from __future__ import annotations

import os
import sys


def trace(argv: list[str]) -> tuple[list[str], set[str]]:
    import deepae_jax
    root = os.path.dirname(deepae_jax.__file__)
    sequence, functions, edges = [], set(), set()

    def module_of(code) -> str | None:
        path = code.co_filename
        return (os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                if path.startswith(root) else None)

    def hook(frame, event, arg):
        if event != "call":
            return
        module = module_of(frame.f_code)
        if module is None:
            return
        functions.add(f"{module}.{frame.f_code.co_name}")
        caller = frame.f_back
        while caller is not None and module_of(caller.f_code) is None:
            caller = caller.f_back
        if caller is not None and module_of(caller.f_code) != module:
            edges.add((f"{module_of(caller.f_code)}.{caller.f_code.co_name}",
                       f"{module}.{frame.f_code.co_name}"))
        if not sequence or sequence[-1] != module:
            sequence.append(module)

    from deepae_jax import main
    sys.argv = ["deepae_jax.main", *argv]
    sys.setprofile(hook)
    try:
        main.run()
    except SystemExit:
        pass
    finally:
        sys.setprofile(None)
    return sequence, functions, edges


def summary(sequence: list[str], functions: set[str], edges: set) -> str:
    returns, seen = 0, set()
    for module in sequence:
        returns += module in seen
        seen.add(module)
    return (f"modules entered: {len(seen)}; functions entered: {len(functions)}; "
            f"returns to a module already left: {returns} (over the whole run); distinct calls "
            f"from one module's function into another's: {len(edges)}\n"
            f"modules: {' '.join(sorted(seen))}")


if __name__ == "__main__":
    args = sys.argv[1:] or ["--flagfile=experiments/quickstart.flags"]
    print(summary(*trace(args + ["--noprogress"])), file=sys.stderr)
