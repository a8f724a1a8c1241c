"""Modules stay under 400 lines and functions under 60: a module or function that grows past that is
asking for a new named concept. A function's size is its own body: its signature (Typer commands
declare an option per line), its docstring and the functions nested in it (counted on their own)
are left out."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "reelserve"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
Function = ast.FunctionDef | ast.AsyncFunctionDef


def body_lines(function: Function) -> int:
    body = function.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
        body = body[1:]  # the docstring
    if not body:
        return 0
    lines = set(range(body[0].lineno, (function.end_lineno or body[-1].lineno) + 1))
    for node in ast.walk(function):
        if node is not function and isinstance(node, Function):
            lines -= set(range(node.lineno - len(node.decorator_list), (node.end_lineno or node.lineno) + 1))
    return len(lines)


def test_body_lines_counts_a_body_without_its_docstring_and_nested_functions() -> None:
    source = 'def f(\n    a,\n):\n    """Doc."""\n    x = 1\n\n    def g():\n        return 2\n\n    return x\n'
    function = ast.parse(source).body[0]
    assert isinstance(function, ast.FunctionDef)
    assert body_lines(function) == 4  # "x = 1", the blank lines around g, "return x": g's 2 lines are its own


def test_no_module_is_over_400_lines() -> None:
    long = {str(path.relative_to(PACKAGE)): n for path in PACKAGE.rglob("*.py")
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, long


def test_no_function_is_over_60_lines() -> None:
    long = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, Function) and (n := body_lines(node)) > MAX_FUNCTION_LINES:
                long[f"{path.relative_to(PACKAGE)}:{node.name}"] = n
    assert not long, long
