"""Recipe YAML is bounded before it is built: duplicates, bombs, depth, huge ints, size."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparsify.errors import SparsifyError
from sparsify.pipeline.recipe import MAX_RECIPE_BYTES, load_recipe, parse_yaml

LEVEL = "[{p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}]"


def _bomb(levels: int) -> str:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} " + LEVEL.format(p=f"*l{i - 1}"))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("seed: 1\nseed: 2\n", "duplicate key 'seed' at line 2"),
        ("model: {name: a, name: b}\n", "duplicate key 'name'"),
        (_bomb(7), "anchors/aliases are expanded"),
        ("a: " + "[" * 10_000 + "]" * 10_000, "nesting deeper than"),
        ("seed: " + "9" * 5000, "an integer of 5000 digits"),
        ("a: &a [*a]\n", "an anchor that contains itself"),
    ],
    ids=["duplicate", "duplicate-nested", "alias-bomb", "deep", "huge-int", "cycle"],
)
def test_hostile_yaml_is_refused_in_one_line(text: str, needle: str) -> None:
    with pytest.raises(SparsifyError) as err:
        parse_yaml(text, "r.yaml")
    msg = str(err.value)
    assert needle in msg and "\n" not in msg and msg.startswith("r.yaml: ")


def test_small_aliases_still_work() -> None:
    data = parse_yaml("opt: &o {lr: 0.1}\nother: *o\nlam: 1e-4\n")
    assert data == {"opt": {"lr": 0.1}, "other": {"lr": 0.1}, "lam": 1e-4}


def test_oversized_and_non_utf8_files_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_RECIPE_BYTES + "\n")
    with pytest.raises(SparsifyError, match="is not a recipe"):
        load_recipe(big)
    utf16 = tmp_path / "utf16.yaml"
    utf16.write_text("seed: 1\n", encoding="utf-16")
    with pytest.raises(SparsifyError, match=r"utf16\.yaml: not UTF-8"):
        load_recipe(utf16)


def test_keys_with_control_characters_are_printed_escaped_on_one_line() -> None:
    from sparsify.pipeline.recipe import validate_dict

    for line in validate_dict({"mod\nel\x1b[31m": 1, "seed": "a\x1b[2Jb"}, "r.yaml"):
        assert "\n" not in line and "\x1b" not in line, line
