"""The kubelet's $(NAME) expansion of a container's env values, for the tests that stand in for it."""

from __future__ import annotations

from collections.abc import Mapping


def expand(value: str, defined: Mapping[str, str]) -> str:
    """The kubelet's $(NAME) expansion (k8s.io/kubernetes third_party/forked/golang/expansion): a
    defined NAME gives its value, an undefined one stays `$(NAME)`, `$$` is a literal `$`, and any
    other `$` (an unclosed `$(` too) stays as it is."""
    out, cursor = [], 0
    while cursor < len(value):
        char = value[cursor]
        if char != "$" or cursor + 1 == len(value):
            out.append(char)
            cursor += 1
        elif value[cursor + 1] == "$":
            out.append("$")
            cursor += 2
        elif value[cursor + 1] == "(" and ")" in value[cursor + 2 :]:
            end = value.index(")", cursor + 2)
            name = value[cursor + 2 : end]
            out.append(defined.get(name, f"$({name})"))
            cursor = end + 1
        else:
            out.append(value[cursor : cursor + 2])
            cursor += 2
    return "".join(out)
