"""YAML loading that remembers where every value came from (file:line:col).

PyYAML's safe loader drops positions and silently keeps the last of duplicate keys; we
compose the node graph ourselves so every config error can point at the offending line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from .errors import ConfigError

TYPE_CHECKING = False  # `typing` costs ~5 ms of start-up; only the type checker needs it
if TYPE_CHECKING:
    pass

Path_ = tuple[str | int, ...]


@dataclass
class Loaded:
    data: object
    file: str
    marks: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Path_) -> str:
        """`file:line:col` of the value at `path` (or of its nearest ancestor)."""
        p = tuple(path)
        while p not in self.marks and p:
            p = p[:-1]
        line, col = self.marks.get(p, (1, 1))
        return f"{self.file}:{line}:{col}"

    def line(self, path: Path_) -> int:
        p = tuple(path)
        while p not in self.marks and p:
            p = p[:-1]
        return self.marks.get(p, (1, 1))[0]


# libyaml's parser (when PyYAML was built with it) composes ~8x faster and keeps the marks.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load(text: str, file: str) -> Loaded:
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(
            f"{where}: malformed YAML: {problem}; fix the syntax at that position",
            file=file,
            line=mark.line + 1 if mark else None,
        ) from None
    except yaml.YAMLError as exc:  # pragma: no cover - non-marked errors are rare
        raise ConfigError(f"{file}: malformed YAML: {exc}", file=file) from None
    loaded = Loaded(data=None, file=file)
    if node is None:
        loaded.data = {}
        return loaded
    loaded.data = _convert(node, (), loaded)
    return loaded


_constructor = yaml.SafeLoader(stream="")


def _convert(node: yaml.Node, path: Path_, loaded: Loaded) -> object:
    loaded.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, object] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise ConfigError(
                    f"{loaded.file}:{key_node.start_mark.line + 1}: YAML merge keys (<<) are "
                    "not supported in mlops-ci.yaml; write the keys out",
                    file=loaded.file,
                    line=key_node.start_mark.line + 1,
                )
            key = _constructor.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                key = str(key)
            if key in out:
                raise ConfigError(
                    f"{loaded.file}:{key_node.start_mark.line + 1}: duplicate key '{key}'; remove one of them",
                    file=loaded.file,
                    line=key_node.start_mark.line + 1,
                )
            out[key] = _convert(value_node, (*path, key), loaded)
            # Errors about a key point at the key itself, not at its (possibly multi-line) value.
            loaded.marks[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(v, (*path, i), loaded) for i, v in enumerate(node.value)]
    return _constructor.construct_object(node, deep=True)
