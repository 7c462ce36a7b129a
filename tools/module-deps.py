#!/usr/bin/env python3
"""Prints the dependencies between the top-level modules of src/ and fails
if they form a cycle (docs/DESIGN.md section 0).

A dependency is a `crate::` path in code: comments, string literals and
`#[cfg(test)]` modules are left out, and so are the test-only modules
(`crash_tests`, `crashsim`) and the binaries. Paths through the crate
root's re-exports (`crate::Error`) count for the module that defines them.
"""
import os
import re
import sys

SRC = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src")
SKIPPED = {"crash_tests", "crashsim", "bin", "lib", "main"}
# Re-exports of lib.rs, by the module that defines them.
ROOT_EXPORTS = {
    "Error": "error", "Result": "error", "Size": "error",
    "LockGuard": "lock", "LockManager": "lock", "LockMode": "lock",
    "MAX_NAME_LEN": "name", "validate_name": "name",
    "STATE_FORMAT": "state", "SavedVersion": "state", "StateDoc": "state",
    "Backend": "store", "InitOutcome": "store", "STORE_DIR_NAME": "store",
    "Store": "store", "StoreOptions": "store",
}


def code_only(text):
    """The text without comments and with every string literal emptied."""
    out, i, n = [], 0, len(text)
    while i < n:
        if text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i)
            i = n if end < 0 else end + 2
        elif text.startswith('r#"', i):
            end = text.find('"#', i + 3)
            out.append('""')
            i = n if end < 0 else end + 2
        elif text[i] == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""')
            i = j + 1
        elif text[i] == "'" and i + 2 < n and text[i + 2] == "'":
            out.append("' '")  # a char literal such as '"' or '{'
            i += 3
        elif text.startswith("'\\", i):
            end = text.find("'", i + 2)
            out.append("' '")
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def without_test_modules(text):
    pattern = re.compile(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{")
    while (m := pattern.search(text)) :
        depth, i = 0, m.end() - 1
        while True:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                break
            i += 1
        text = text[: m.start()] + text[i + 1 :]
    return text


def group_heads(text, i):
    """The first segment of each path in the `{...}` group opening at i."""
    depth, item, heads = 0, "", []
    while True:
        c = text[i]
        if c == "{":
            depth += 1
            if depth == 1:
                i += 1
                continue
        elif c == "}":
            depth -= 1
            if depth == 0:
                heads.append(item)
                break
        elif c == "," and depth == 1:
            heads.append(item)
            item, i = "", i + 1
            continue
        item += c
        i += 1
    return [re.match(r"\s*(\w+)", h).group(1) for h in heads if h.strip()]


def main():
    edges, lines = {}, {}
    for folder, _, files in os.walk(SRC):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(folder, name)
            top = os.path.relpath(path, SRC).split(os.sep)[0].removesuffix(".rs")
            if top in SKIPPED:
                continue
            text = open(path, encoding="utf-8").read()
            lines[top] = lines.get(top, 0) + text.count("\n")
            code = without_test_modules(code_only(text))
            targets = edges.setdefault(top, {})
            for m in re.finditer(r"crate::(\{|\w+)", code):
                heads = group_heads(code, m.end() - 1) if m.group(1) == "{" else [m.group(1)]
                for head in heads:
                    head = ROOT_EXPORTS.get(head, head)
                    if head != top:
                        targets[head] = targets.get(head, 0) + 1
    for module in sorted(lines):
        uses = ", ".join(f"{t} ({n})" for t, n in sorted(edges.get(module, {}).items()))
        print(f"{module:<12} {lines[module]:>5} lines -> {uses or '-'}")
    cycles = strongly_connected(edges)
    if cycles:
        for cycle in cycles:
            print("CYCLE between: " + ", ".join(sorted(cycle)))
        return 1
    print("no cycle between top-level modules")
    return 0


def strongly_connected(edges):
    """Tarjan's algorithm; returns the components of more than one module."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(set(edges) | {w for t in edges.values() for w in t}):
        if v not in index:
            visit(v)
    return found


if __name__ == "__main__":
    sys.exit(main())
