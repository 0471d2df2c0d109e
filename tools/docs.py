"""Write the generated parts of the documentation from the code, so they cannot drift:

- docs/api.md: every public name of the package with its signature and docstring;
- README.md: the optimizer tables between the markers `<!-- optimizers -->` and
  `<!-- /optimizers -->` (from fastoptim.rules: one description per algorithm).

    python tools/docs.py            # rewrite both
    python tools/docs.py --check    # exit 1 if either is out of date (tests/test_docs.py)
"""
import argparse
import importlib
import inspect
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODULES = ["fastoptim", "fastoptim.torch", "fastoptim.clipping", "fastoptim.schedules",
           "fastoptim.data", "fastoptim.testing", "fastoptim.kernels", "fastoptim.reference"]
MARKERS = ("<!-- optimizers -->", "<!-- /optimizers -->")


def _signature(obj):
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"


def _doc(obj):
    return inspect.cleandoc(obj.__doc__ or "").strip()


def api_reference():
    """docs/api.md's text."""
    lines = ["# fastoptim — API reference", "",
             "Generated from the docstrings by `python tools/docs.py`; every public name of "
             "each module, in the order of its `__all__`.", ""]
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:          # fastoptim.torch without torch
            lines += [f"## {name}", "", f"(not importable here: {exc})", ""]
            continue
        lines += [f"## {name}", "", inspect.cleandoc(module.__doc__ or "").split("\n\n")[0], ""]
        for public in getattr(module, "__all__", []):
            obj = getattr(module, public)
            if inspect.ismodule(obj):
                continue
            alias = getattr(obj, "__name__", public) != public
            title = f"### `{name}.{public}`" + (f" (= `{obj.__name__}`)" if alias else "")
            lines += [title, ""]
            if alias:
                continue
            if callable(obj):
                lines += ["```python", f"{public}{_signature(obj)}", "```", ""]
            doc = _doc(obj)
            if doc:
                lines += [doc, ""]
    return "\n".join(lines).rstrip() + "\n"


def _state_column(rule):
    """The state buffers with the defaults, then those a switch turns on: "name (switch)"."""
    defaults = rule.checked(rule.defaults())
    base = [n for n, _ in rule.state(defaults)]
    variants = [(h.name, not defaults[h.name]) for h in rule.hyperparameters
                if isinstance(h.default, bool)]
    if defaults.get("momentum") == 0:
        variants.append(("momentum", 0.9))
    extra = []
    for name, value in variants:
        try:
            names = [n for n, _ in rule.state(rule.checked({**defaults, name: value}))]
        except (TypeError, ValueError):     # a switch that needs another one
            continue
        extra += [f"`{n}` ({name})" for n in names if n not in base]
    return ", ".join([f"`{n}`" for n in base] + extra) or "–"


def optimizer_tables():
    """The README's optimizer tables (between the markers)."""
    from fastoptim import rules
    lines = ["| fastoptim | what it is for | torch.optim | state per param |", "|---|---|---|---|"]
    for rule in rules.RULES.values():
        torch_name = f"`{rule.torch_name}`" if rule.torch_name else "–"
        summary = rule.summary.replace("|", "\\|")
        lines.append(f"| `{rule.name}` | {summary} | {torch_name} | {_state_column(rule)} |")
    lines += ["", "| optimizer | hyperparameters (defaults) | update |", "|---|---|---|"]
    for rule in rules.RULES.values():
        hyper = ", ".join(f"{h.name}={h.default!r}" for h in rule.hyperparameters)
        formula = rule.formula.replace("\n", " ").replace("|", "\\|")
        lines.append(f"| `{rule.name}` | {hyper} | {formula} |")
    return "\n".join(lines)


def readme_with_tables(text):
    begin, end = MARKERS
    if begin not in text or end not in text:
        raise SystemExit(f"README.md lacks the markers {begin} ... {end}")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{optimizer_tables()}\n{end}{tail}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if anything is stale")
    args = parser.parse_args(argv)
    targets = {ROOT / "docs" / "api.md": lambda old: api_reference(),
               ROOT / "README.md": readme_with_tables}
    stale = []
    for path, make in targets.items():
        old = path.read_text() if path.exists() else ""
        new = make(old)
        if new != old:
            stale.append(path.relative_to(ROOT))
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print(f"out of date: {', '.join(map(str, stale))}; run python tools/docs.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
