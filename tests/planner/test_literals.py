"""The value parser: literals of JSON and Python, references, strings with references."""

from __future__ import annotations

import pytest

from fleetcall.planner.literals import SyntaxProblem, parse_call, parse_ref_string, split_refs
from fleetcall.plan import Interp, Ref


def earlier(*ids: int):
    return lambda n: n in ids


def args(text: str, *known: int) -> tuple:
    call = parse_call(f"f({text})", earlier(*known))
    return call.args


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", 1), ("-3", -3), ("+2", 2), ("2.5", 2.5), ("-1e-3", -0.001), ("1E5", 100000.0), (".5", 0.5),
        ("1_000", 1000), ("0x1F", 31), ("0o17", 15), ("0b101", 5),
        ("True", True), ("true", True), ("False", False), ("false", False), ("None", None), ("null", None),
        ('"a"', "a"), ("'a'", "a"), ('"""a"""', "a"), ("'''a'''", "a"), ('r"\\d"', "\\d"),
        ('"a" "b"', "ab"), ("[]", []), ("{}", {}), ("()", ()), ("(1,)", (1,)), ("(1)", 1), ("(1, 2)", (1, 2)),
        ("[1, [2, [3, {}]]]", [1, [2, [3, {}]]]), ('{"a": {"b": [1, 2,]}, 3: null}', {"a": {"b": [1, 2]}, 3: None}),
        ("{(1, 2): 'x'}", {(1, 2): "x"}), ("[1, 2, ]", [1, 2]),
    ],
)
def test_literals(text: str, expected: object) -> None:
    (value,) = args(text)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r'"a\nb"', "a\nb"), (r'"tab\there"', "tab\there"), (r'"q\"uote"', 'q"uote'), (r"'it\'s'", "it's"),
        (r'"back\\slash"', "back\\slash"), (r'"\x41\u00e9\U0001F600"', "Aé😀"), (r'"\ud83d\ude00"', "😀"),
        (r'"\101"', "A"), (r'"\N{BULLET}"', "•"), (r'"\/"', "/"), (r'"\q"', "\\q"),
        ('"has ) and ( and , and \' quote"', "has ) and ( and , and ' quote"),
        ('"""multi\nline "quoted" text"""', 'multi\nline "quoted" text'),
    ],
)
def test_string_escapes(text: str, expected: str) -> None:
    assert args(text) == (expected,)


def test_keyword_and_positional_arguments() -> None:
    call = parse_call('search("x", k = 3, flag=True)  # comment', earlier())
    assert call.tool == "search" and call.args == ("x",) and call.kwargs == (("k", 3), ("flag", True))


def test_tool_names_may_have_dots_and_dashes() -> None:
    assert parse_call("web-search.v2()", earlier()).tool == "web-search.v2"


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("$1", Ref(1)), ("${1}", Ref(1)), ("${ 12 }", Ref(12)), ("$1.price", Ref(1, ("price",))),
        ("$1[0]", Ref(1, (0,))), ("$1[-1]", Ref(1, (-1,))), ('$1["key"]', Ref(1, ("key",))),
        ("$1['k y']", Ref(1, ("k y",))), ("$1.items[2].name", Ref(1, ("items", 2, "name"))),
        ("${3}.a", Ref(3, ("a",))),
    ],
)
def test_bare_references(text: str, ref: Ref) -> None:
    call = parse_call(f"f({text})", earlier())
    assert call.args == (ref,) and call.refs == [ref]


def test_bare_reference_is_a_reference_even_if_unknown() -> None:
    assert parse_call("f($7)", earlier()).refs == [Ref(7)]


def test_references_in_containers() -> None:
    (value,) = args('[$1, {"a": $2.x}]')
    assert value == [Ref(1), {"a": Ref(2, ("x",))}]


def test_multi_reference_string_is_interp() -> None:
    assert args('"$1 + $2"', 1, 2) == (Interp((Ref(1), " + ", Ref(2))),)


def test_string_with_bare_dollar_of_unknown_task_is_text() -> None:
    assert args('"costs $2 million"', 1) == ("costs $2 million",)


def test_braced_reference_in_string_always_refers() -> None:
    call = parse_call('f("see ${5} now")', earlier())
    assert call.args == (Interp(("see ", Ref(5), " now")),) and call.refs == [Ref(5)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$1.", ("", Ref(1), ".")),
        ("price: $1.price.", ("price: ", Ref(1, ("price",)), ".")),
        ("$1[0] and $1['a']", ("", Ref(1, (0,)), " and ", Ref(1, ("a",)))),
        ("total $1.50", None), ("about $1,000", None), ("$1, $2", ("", Ref(1), ", $2")),
        ("${1}x", ("", Ref(1), "x")), ("$$1", ("$", Ref(1))),
    ],
)
def test_references_inside_text(text: str, expected: tuple | None) -> None:
    value = split_refs(text, earlier(1))
    if expected is None:
        assert value == text
    else:
        assert value == Interp(tuple(p for p in expected if p != ""))


def test_parse_ref_string() -> None:
    assert parse_ref_string("$1") == Ref(1)
    assert parse_ref_string("${2}.a[0]") == Ref(2, ("a", 0))
    assert parse_ref_string("$1 and more") is None
    assert parse_ref_string("x$1") is None


@pytest.mark.parametrize(
    "text",
    [
        "f(", "f(1", "f(1 2)", "f(x)", "f(g(1))", "f(1, a=2, 3)", "f(a=1, a=2)", "f($)", "f($x)", "f($1.)",
        'f("abc)', 'f("a\nb")', "f([1, 2)", "f({1, 2})", "f({[1]: 2})", "f({$1: 2})", "f(1) extra", "f(1abc)",
        "f(1__0)", r'f("\x4")', r'f("\N{NO SUCH NAME}")', r'f("\U00110000")', "f(" + "[" * 200 + "]" * 200 + ")",
        "f(" + "9" * 5000 + ")", "f($" + "9" * 40 + ")", "(1)", "f(-)", "f(.)", "f(+)",
    ],
)
def test_syntax_problems(text: str) -> None:
    with pytest.raises(SyntaxProblem):
        parse_call(text, earlier())


def test_integers_are_bounded_by_what_can_be_printed() -> None:
    """An int of more than 4,300 digits could not be shown in any record or prompt: refused, in
    any base, and the bound follows a lower interpreter limit."""
    import sys

    with pytest.raises(SyntaxProblem, match="integer too large"):
        args("0x" + "f" * 3600)
    with pytest.raises(SyntaxProblem, match="number too long"):
        args("1" * 4301)
    assert len(str(args("9" * 4300)[0])) == 4300
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)
    try:
        with pytest.raises(SyntaxProblem, match="more than 640 digits"):
            args("0x" + "f" * 600)
    finally:
        sys.set_int_max_str_digits(old)


def test_lone_surrogates_become_replacement_characters() -> None:
    assert args(r'"\ud800 and \ud83d\ude00"') == ("\ufffd and 😀",)
    assert args('"raw \ud800"') == ("raw \ufffd",)
