"""Griffe extension for rnadiff's docstrings, so that mkdocstrings renders them as Python's
``help()`` shows them.

1. Docstrings filled at import. ``rnadiff/model/_docs.py`` (``shared_docs``) replaces docstring
   lines that hold only a ``{name}`` placeholder by shared parameter descriptions when the
   module is imported. Griffe reads the source, which still has the placeholders; for every
   function whose docstring has one, the imported object's filled ``__doc__`` is used instead
   (dynamic inspection for these functions only; everything else is read statically).
2. Sphinx roles. The numpydoc docstrings cross-reference with ``:func:`name```,
   ``:class:`~path``` and the like, which Markdown does not know. Each becomes a link to the
   object's page (resolved as Python would from where the docstring is: the object, its
   parents, its module), or plain code where the object is not documented on the site.
3. Comments as field documentation. The configuration dataclasses document each field with a
   comment (on its line, or the comment lines just above it), as the style guide asks; a class
   attribute without a docstring gets that comment as its docstring.
"""

from __future__ import annotations

import html
import importlib
import inspect
import io
import re
import tokenize
from typing import Any

import griffe

PLACEHOLDER_LINE = re.compile(r"^\s*\{\w+\}\s*$", re.M)
ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|obj|exc|const):`(~?)([\w.]+)`")


def _runtime_object(func: griffe.Function) -> Any:
    module = importlib.import_module(func.module.path)
    obj: Any = module
    for part in func.path[len(func.module.path) + 1 :].split("."):
        obj = getattr(obj, part)
    return obj


def _resolve(name: str, where: griffe.Object, collection) -> str | None:
    """The canonical path of ``name`` as seen from ``where``, or None."""
    scopes, scope = [], where
    while scope is not None:
        scopes.append(scope.path + ".")
        scope = scope.parent
    for prefix in [*scopes, ""]:
        try:
            target = collection.get_member(prefix + name)
        except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            continue
        try:
            return target.final_target.path if target.is_alias else target.path
        except (griffe.AliasResolutionError, griffe.CyclicAliasError):
            return None
    return None


def _link_roles(obj: griffe.Object, collection) -> None:
    doc = obj.docstring
    if doc is None or ":" not in doc.value:
        return

    def link(match: re.Match) -> str:
        short, name = match.group(1), match.group(2)
        text = html.escape(name.rsplit(".", 1)[-1] if short else name)
        path = _resolve(name, obj, collection)
        if path is None:
            return f"<code>{text}</code>"
        # optional: plain code, no warning, where the target is not rendered on any page
        return f'<autoref identifier="{path}" optional><code>{text}</code></autoref>'

    doc.value = ROLE.sub(link, doc.value)


def _comment(attr: griffe.Attribute) -> str | None:
    """The comment documenting a class attribute: on its own lines, else just above it."""
    collection = attr.lines_collection
    lines = collection[attr.filepath] if attr.filepath in collection else None
    if not lines or attr.lineno is None:
        return None
    own = "\n".join(lines[attr.lineno - 1 : (attr.endlineno or attr.lineno)])
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(own + "\n").readline))
        found = [t.string[1:].strip() for t in tokens if t.type == tokenize.COMMENT]
    except (tokenize.TokenError, SyntaxError):
        found = []
    if not found:
        above = attr.lineno - 2
        while above >= 0 and lines[above].strip().startswith("#"):
            found.insert(0, lines[above].strip()[1:].strip())
            above -= 1
    text = " ".join(found).strip()
    return text[0].upper() + text[1:] if text else None


def _walk(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)


class FilledDocstrings(griffe.Extension):
    def on_function_instance(self, *, func: griffe.Function, **kwargs: Any) -> None:
        doc = func.docstring
        if doc is None or not PLACEHOLDER_LINE.search(doc.value):
            return
        filled = inspect.getdoc(_runtime_object(func))
        if not filled or PLACEHOLDER_LINE.search(filled):
            raise ValueError(f"{func.path}: docstring placeholders are not filled at import")
        func.docstring = griffe.Docstring(
            filled,
            lineno=doc.lineno,
            endlineno=doc.endlineno,
            parent=func,
            parser=doc.parser,
            parser_options=doc.parser_options,
        )

    def on_attribute_instance(self, *, attr: griffe.Attribute, **kwargs: Any) -> None:
        if attr.docstring is None and attr.parent is not None and attr.parent.is_class:
            text = _comment(attr)
            if text:
                attr.docstring = griffe.Docstring(text, lineno=attr.lineno, parent=attr)

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            _link_roles(obj, loader.modules_collection)
