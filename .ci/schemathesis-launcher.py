"""Runs schemathesis' command line with ast.parse serialised across threads.

CPython 3.11 (before 3.12) keeps the AST constructor's recursion depth in
state shared by all threads. With --workers 2, hypothesis describes lambdas
in two threads at once (ast.parse of the strategy's source file) and one of
them may fail with "SystemError: AST constructor recursion depth mismatch",
which schemathesis reports as a runtime error of the operation under test:
a red CI run that says nothing about the gateway (stop 27, seed 160;
python/cpython#106905). One lock around ast.parse removes the race without
giving up the second worker.
"""
import ast
import sys
import threading

from schemathesis.cli import schemathesis

_parse = ast.parse
_parse_lock = threading.RLock()  # re-entrant: a finaliser run by the GC may parse too


def _serialised_parse(*args, **kwargs):
    with _parse_lock:
        return _parse(*args, **kwargs)


ast.parse = _serialised_parse

if __name__ == "__main__":
    sys.argv[0] = "schemathesis"
    sys.exit(schemathesis())
