"""Put on PYTHONPATH by ``threadnet run``: start the child interpreter on a threadnet stack.

THREADNET_STACK names a published stack; it becomes the process's default stack before
the program runs. Any other ``sitecustomize`` on the path still runs after this one.
"""


def _threadnet_boot() -> None:
    import os
    import sys

    path = os.environ.get("THREADNET_STACK")
    if path:
        try:
            from threadnet.hook import set_default_stack
        except ImportError as exc:
            sys.stderr.write(f"threadnet run: cannot import threadnet in {sys.executable}: {exc}\n")
            raise SystemExit(1) from None
        set_default_stack(path, scope="process")
    # chain to the sitecustomize this one hides
    import importlib

    here = os.path.dirname(os.path.abspath(__file__))
    mine = sys.modules.pop("sitecustomize", None)
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    try:
        importlib.import_module("sitecustomize")
    except ImportError:
        if mine is not None:
            sys.modules["sitecustomize"] = mine
    finally:
        sys.path[:] = saved


_threadnet_boot()
