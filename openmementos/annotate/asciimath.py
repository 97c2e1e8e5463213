"""LaTeX and Unicode math to plain ASCII math (`\\frac{a}{b}` -> `a/b`, `\\sqrt{2}` -> `sqrt(2)`, `≤` -> `<=`).

Mementos are written in plain ASCII math (SPEC 4.5). This converter covers what reasoning traces use
most: fractions, roots, scripts, text commands, relations, Greek letters, sizing commands and math
delimiters. Unknown commands lose their backslash (`\\sin` -> `sin`), so nothing is dropped silently.
"""

from __future__ import annotations

import re

_FRACTIONS = {"frac", "dfrac", "tfrac", "cfrac"}
_KEEP_ARGUMENT = {
    "text", "textbf", "textit", "textrm", "mathrm", "mathbf", "mathit", "mathsf", "mathtt", "mathcal",
    "mathbb", "operatorname", "boxed", "emph", "overline", "bar", "hat", "tilde", "vec", "widehat",
}  # fmt: skip
_SIZING = {"left", "right", "big", "Big", "bigg", "Bigg", "bigl", "bigr", "Bigl", "Bigr", "middle", "displaystyle"}
_SYMBOLS = {
    "cdot": "*", "times": "*", "div": "/", "pm": "+-", "mp": "-+",
    "le": "<=", "leq": "<=", "leqslant": "<=", "ge": ">=", "geq": ">=", "geqslant": ">=",
    "ne": "!=", "neq": "!=", "approx": "~=", "equiv": "==", "sim": "~", "propto": "~",
    "to": "->", "rightarrow": "->", "Rightarrow": "=>", "implies": "=>", "iff": "<=>", "mapsto": "->",
    "infty": "inf", "cdots": "...", "ldots": "...", "dots": "...", "in": "in", "notin": "not in",
    "subset": "subset", "subseteq": "subseteq", "cup": "union", "cap": "intersect", "circ": "deg",
    "degree": "deg", "angle": "angle", "perp": "perp", "parallel": "||", "partial": "d", "nabla": "grad",
    "sum": "sum", "prod": "prod", "int": "integral", "lim": "lim", "quad": " ", "qquad": " ",
    "lfloor": "floor(", "rfloor": ")", "lceil": "ceil(", "rceil": ")", "langle": "<", "rangle": ">",
    "mid": "|", "vert": "|", "lvert": "|", "rvert": "|", "Vert": "||", "setminus": "\\",
}  # fmt: skip
_SPACES = {",": "", ";": " ", ":": " ", "!": "", " ": " ", "\\": "; ", "{": "{", "}": "}", "%": "%", "$": "$", "#": "#"}
_UNICODE = {
    "√": "sqrt", "×": "*", "·": "*", "÷": "/", "≤": "<=", "≥": ">=", "≠": "!=", "≈": "~=", "−": "-",
    "–": "-", "—": "-", "π": "pi", "∞": "inf", "→": "->", "⇒": "=>", "⇔": "<=>", "²": "^2", "³": "^3",
    "±": "+-", "°": " deg", "∈": " in ", "θ": "theta", "α": "alpha", "β": "beta", "γ": "gamma",
    "δ": "delta", "Δ": "Delta", "λ": "lambda", "μ": "mu", "σ": "sigma", "ω": "omega", "φ": "phi",
    "’": "'", "‘": "'", "“": '"', "”": '"', "…": "...", "\u00a0": " ",
}  # fmt: skip
_SIMPLE = re.compile(r"[A-Za-z0-9.']+|\(.*\)")
_MATH_DELIMITERS = re.compile(r"\$\$?|\\[()\[\]]")
_MATH_REGION = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_NAMED = {
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta", "iota",
    "kappa", "lambda", "mu", "nu", "xi", "pi", "rho", "sigma", "tau", "upsilon", "phi", "varphi", "chi",
    "psi", "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi", "Sigma", "Phi", "Psi", "Omega",
    "sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh",
    "log", "ln", "exp", "min", "max", "gcd", "lcm", "det", "deg", "mod", "bmod", "pmod",
}  # fmt: skip
_KNOWN = _FRACTIONS | _KEEP_ARGUMENT | _SIZING | _NAMED | set(_SYMBOLS) | {"sqrt", "begin", "end"}


class _Reader:
    """A recursive-descent pass over LaTeX source that writes ASCII.

    In prose (outside math delimiters) only known math commands are converted; other backslashes,
    braces and `^`/`_` stay as they are, so code and identifiers like `n_items` survive.
    """

    def __init__(self, text: str, math: bool = True) -> None:
        self.text = text
        self.position = 0
        self.math = math

    def convert(self, stop: str | None = None) -> str:
        out: list[str] = []
        text = self.text
        while self.position < len(text):
            char = text[self.position]
            if char == stop:
                self.position += 1
                break
            self.position += 1
            if char == "\\":
                out.append(self._command())
            elif not self.math:
                out.append(_UNICODE.get(char, char))
            elif char in "^_":
                out.append(char + _wrap(self._argument()))
            elif char == "{":
                out.append(self.convert("}"))
            elif char in "}&$":
                continue
            else:
                out.append(_UNICODE.get(char, char))
        return "".join(out)

    def _name(self) -> str:
        match = re.match(r"[A-Za-z]+|.", self.text[self.position :], re.DOTALL)
        if not match:
            return ""
        self.position += match.end()
        return match.group(0)

    def _argument(self) -> str:
        """The next argument: a braced group, a command, or one character."""
        text = self.text
        while self.position < len(text) and text[self.position] == " ":
            self.position += 1
        if self.position >= len(text):
            return ""
        char = text[self.position]
        self.position += 1
        if char == "{":
            return self.convert("}").strip()
        if char == "\\":
            return self._command()
        return _UNICODE.get(char, char)

    def _command(self) -> str:
        name = self._name()
        if not self.math and name not in _KNOWN:
            return "\\" + name
        if name in ("(", ")", "[", "]"):
            return " "
        if name in _SPACES:
            return _SPACES[name]
        if name in _FRACTIONS:
            numerator, denominator = self._argument(), self._argument()
            fraction = f"{_wrap(numerator)}/{_wrap(denominator)}"
            # An implicit product follows (`\\frac{3}{4}t`): keep the fraction together.
            rest = self.text[self.position :]
            following = (rest.lstrip(" ") if self.math else rest)[:1]
            return f"({fraction})" if following and (following.isalnum() or following in "(\\") else fraction
        if name == "sqrt":
            degree = ""
            if self.text.startswith("[", self.position):
                end = self.text.find("]", self.position)
                degree, self.position = self.text[self.position + 1 : end], end + 1
            radicand = self._argument()
            return f"root{degree}({radicand})" if degree else f"sqrt({radicand})"
        if name in _KEEP_ARGUMENT:
            return self._argument()
        if name in ("begin", "end"):
            self._argument()
            return " "
        if name in _SIZING:
            if self.text.startswith((".", "\\{", "\\}", "\\|"), self.position):
                self.position += 2 if self.text[self.position] == "\\" else 1
                return "" if self.text[self.position - 1] == "." else self.text[self.position - 1]
            return ""
        if name in _SYMBOLS:
            symbol = _SYMBOLS[name]
            return f" {symbol} " if symbol[0] in "<>=!~-+|" or symbol.isalpha() else symbol
        return name


def _wrap(expression: str) -> str:
    """Parenthesise an operand unless it is a single symbol or already parenthesised."""
    expression = expression.strip()
    if _SIMPLE.fullmatch(expression) and not (expression.startswith("(") and _unbalanced_inside(expression)):
        return expression
    return f"({expression})"


def _unbalanced_inside(expression: str) -> bool:
    """True when `(a)+(b)` merely starts and ends with parentheses that do not enclose it all."""
    depth = 0
    for index, char in enumerate(expression):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and index < len(expression) - 1:
            return True
    return False


def to_ascii_math(text: str) -> str:
    """`text` with its LaTeX and Unicode math written as plain ASCII math, spaces collapsed."""
    parts: list[str] = []
    cursor = 0
    for match in _MATH_REGION.finditer(text):
        parts.append(_Reader(text[cursor : match.start()], math=False).convert())
        body = next(group for group in match.groups() if group is not None)
        parts.append(_Reader(body).convert())
        cursor = match.end()
    parts.append(_Reader(text[cursor:], math=False).convert())
    text = re.sub(r"[ \t]+", " ", "".join(parts))
    text = re.sub(r" ([,.;:)])", r"\1", text)
    text = re.sub(r"\( ", "(", text)
    text = re.sub(r" +([_^])", r"\1", text)
    text = re.sub(r"sqrt(\d+|[A-Za-z])\b", r"sqrt(\1)", text)
    return text.strip()


def has_math(text: str) -> bool:
    """Whether a text carries math: LaTeX delimiters or commands, or an equation/inequality."""
    return bool(_MATH_DELIMITERS.search(text) or re.search(r"\\[a-zA-Z]+|[=<>^]|[0-9]\s*[-+*/]\s*[0-9a-z(]", text))
