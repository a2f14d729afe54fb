"""The vector selectors of a PromQL expression, so that a test can ask a real Prometheus whether each one has
series: a tokenizer, not a parser, enough for the expressions of deploy/monitoring/ and k8s/."""

import re

# Words that are no metric: binary operators, modifiers, the literals PromQL spells as words, and aggregations
# (whose `by (...)` may stand between the name and its parenthesis).
KEYWORDS = frozenset(
    {"and", "or", "unless", "atan2", "bool", "offset", "inf", "nan", "group_left", "group_right"}
    | {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile"}
)
# Followed by a list of label names in parentheses, which holds no selector.
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_NUMBER = re.compile(r"[0-9.][0-9A-Za-z.+-]*")  # numbers, 1e6, durations (5m, 1h30m)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')


def _closing(expr: str, start: int, opening: str, closing: str) -> int:
    """The index just past the bracket closing the one at `start`, strings inside skipped."""
    depth, i = 0, start
    while i < len(expr):
        if expr[i] in "\"'`":
            i = _STRING.match(expr, i).end()  # type: ignore[union-attr]
            continue
        depth += {opening: 1, closing: -1}.get(expr[i], 0)
        i += 1
        if depth == 0:
            return i
    raise ValueError(f"unbalanced {opening} in {expr!r}")


def _skip_space(expr: str, i: int) -> int:
    while i < len(expr) and expr[i].isspace():
        i += 1
    return i


def selectors(expr: str) -> list[str]:
    """Each `name{matchers}` (or `{matchers}`) of `expr`, in order, as an expression of its own."""
    found: list[str] = []
    i = 0
    while i < len(expr):
        char = expr[i]
        if char.isspace():
            i += 1
        elif char in "\"'`":
            i = _STRING.match(expr, i).end()  # type: ignore[union-attr]
        elif char == "[":  # a range or a subquery's resolution
            i = _closing(expr, i, "[", "]")
        elif char == "{":  # matchers with no metric name
            end = _closing(expr, i, "{", "}")
            found.append(expr[i:end])
            i = end
        elif (number := _NUMBER.match(expr, i)) and not _NAME.match(expr, i):
            i = number.end()
        elif name := _NAME.match(expr, i):
            word, i = name.group(), name.end()
            after = _skip_space(expr, i)
            if word in GROUPING and expr.startswith("(", after):
                i = _closing(expr, after, "(", ")")
            elif word in KEYWORDS or expr.startswith("(", after):
                continue  # an operator, or a function or aggregation's name
            elif expr.startswith("{", after):
                i = _closing(expr, after, "{", "}")
                found.append(word + expr[after:i])
            else:
                found.append(word)
        else:
            i += 1  # an operator or a bracket
    return found
