"""Typed settings: declarations from group_data files, and the checks made before connecting."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deploys import settings
from deploys.environments import HostSpec
from deploys.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def group_dir(tmp_path: Path) -> Path:
    (tmp_path / "all.py").write_text(textwrap.dedent('''
        """Defaults."""
        # Oldest python3 accepted.
        preflight_python_min = "3.10"
        # Local CA bundle (tests only).
        acme_ca_bundle = None
        '''))
    (tmp_path / "shop.py").write_text(textwrap.dedent('''
        """A sixth system declares its knobs like this."""
        from deploys.settings import Port, Text

        # Address and port the app binds to.
        shop_bind = "127.0.0.1"
        shop_port = 8080
        # Extra nginx lines (may span lines).
        shop_nginx_extra: Text = ""
        # Admin port, annotated.
        shop_admin: Port = 9000
        shop_names: list[str] = []
        shop_workers = 2
        shop_debug = False
        shop_ratio = 0.5
        '''))
    (tmp_path / "test.py").write_text('acme_ca_bundle = "/etc/ca.pem"\nshop_port = 18080\n')
    return tmp_path


def problems(group_dir, hosts=(), data=()):
    argv = ["pyinfra"] + [a for item in data for a in ("--data", item)]
    try:
        settings.check(list(hosts), argv, group_dir)
    except ConfigError as exc:
        return str(exc).split("\n  - ")[1:]
    return []


def test_declarations_take_types_comments_and_the_most_general_file(group_dir):
    knobs = settings.declarations(group_dir)
    assert knobs["shop_port"].declared_in == "shop" and knobs["shop_port"].type_name == "port (1-65535)"
    assert knobs["shop_port"].comment == "Address and port the app binds to."  # shared comment block
    assert knobs["acme_ca_bundle"].type_name == "str or None"  # None in all.py, a str in test.py
    assert knobs["shop_admin"].type_name == "port (1-65535)"
    assert knobs["shop_nginx_extra"].type_name == "text"
    assert "Port" not in knobs and "Text" not in knobs  # imported names are no knobs


def test_valid_overrides_pass(group_dir):
    assert problems(group_dir, data=["shop_port=9090", "shop_debug=true", "shop_ratio=2",
                                     'shop_names=["a","b"]', "ssh_port=2222", "_sudo=true"]) == []


def test_every_problem_in_one_message(group_dir):
    found = problems(
        group_dir,
        hosts=[HostSpec("web1", ["shop"], {"shop_prot": 1, "ssh_user": "ops"})],
        data=["shop_port=abc", "shop_admin=70000", "shop_bind=a\nb", "shop_debug=3", "shop_names=[1]", "x"],
    )
    assert found == [
        "shop_prot (host web1): unknown knob (did you mean 'shop_port'?)",
        "--data 'x': expected key=value",
        "shop_port (--data): expected port (1-65535), got 'abc' (str)",
        "shop_admin (--data): 70000 is not a TCP port (1-65535)",
        "shop_bind (--data): contains the control character '\\n'",
        "shop_debug (--data): expected bool, got 3 (int)",
        "shop_names (--data): item 0: expected str, got 1 (int)",
    ]


def test_text_knobs_may_span_lines_but_not_hold_other_controls(group_dir):
    assert problems(group_dir, data=["shop_nginx_extra=a\n\tb"]) == []
    assert problems(group_dir, data=["shop_nginx_extra=a\x1bb"]) == [
        "shop_nginx_extra (--data): contains the control character '\\x1b'"]


def test_control_characters_are_found_in_nested_values(group_dir):
    assert problems(group_dir, data=['shop_names=["ok", "bad\\u0000"]'])[0].endswith("'\\x00'")


def test_a_number_for_a_string_knob_says_how_to_quote_it(group_dir):
    (found,) = problems(group_dir, data=["shop_bind=5"])
    assert "quote it as JSON: --data 'shop_bind=\"5\"'" in found
    assert problems(group_dir, data=['shop_bind="5"']) == []


def test_none_only_where_a_file_allows_it(group_dir):
    assert problems(group_dir, data=["acme_ca_bundle=null"]) == []
    assert problems(group_dir, data=["shop_bind=null"]) == ["shop_bind (--data): expected str, got None"]


def test_group_files_themselves_are_checked(group_dir):
    (group_dir / "prod.py").write_text('shop_admin = 0\nshop_bind = "x\\ny"\n')
    assert problems(group_dir) == [
        "shop_admin (group_data/prod.py): 0 is not a TCP port (1-65535)",
        "shop_bind (group_data/prod.py): contains the control character '\\n'",
    ]


def test_the_repository_group_data_is_consistent():
    knobs = settings.declarations()
    assert knobs["hello_port"].type_name == "port (1-65535)"
    assert knobs["required_secrets"].declared_in in {"hello", "music", "archon", "hivesync", "ingestor", "youtube"}
    settings.check([], ["pyinfra"])  # raises on any problem in group_data/


def test_pyinfra_reports_it_before_connecting(tmp_path):
    """The CLI prints the message (no traceback) and never gets to `Connecting`."""
    inventory = tmp_path / "inventory.json"
    inventory.write_text('{"hosts": [{"name": "h1", "groups": ["hello"], "ssh_hostname": "127.0.0.1",'
                         ' "ssh_port": 9, "ssh_key": "/nonexistent", "data": {}}]}')
    run = subprocess.run(
        [sys.executable, "-m", "pyinfra", "inventory.py", "deploys/hello.py", "-y",
         "--data", "hello_prot=9090", "--data", "hello_port=abc"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "DEPLOY_ENV": "test", "INFRA_TEST_INVENTORY": str(inventory),
             "HELLO_SECRET": "x", "PYINFRA_PROGRESS": "off"},
    )
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "hello_prot (--data): unknown knob (did you mean 'hello_port'?)" in out
    assert "hello_port (--data): expected port (1-65535), got 'abc' (str)" in out
    assert "Traceback" not in out and "Connecting" not in out


def test_describe_lists_a_group(group_dir):
    text = settings.describe("shop", group_dir)
    assert "shop_port: port (1-65535) = 8080  [shop]\n    Address and port the app binds to." in text
    assert "acme_ca_bundle" not in text


def _names_read_from_data(tree):
    """`data.x`, `host.data.x` and `data.get("x")` in a module's code (not its strings)."""
    import ast

    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, (ast.Name, ast.Attribute)):
            owner = node.value.id if isinstance(node.value, ast.Name) else node.value.attr
            if owner == "data" and node.attr != "get":
                yield node.attr
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                and isinstance(node.func.value, (ast.Name, ast.Attribute))
                and getattr(node.func.value, "id", getattr(node.func.value, "attr", None)) == "data"
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            yield node.args[0].value


def test_every_knob_the_deploys_read_is_declared():
    """A knob read in deploys/ but set in no group_data file is invisible to operators and to
    the settings check (it would refuse --data for it as unknown)."""
    import ast

    knobs = settings.declarations()
    extra = settings.connector_keys()
    missing = set()
    # where `data` names something else: the lock's host script, the release part's data hooks
    other_data = {"deploys/parts/deploy_lock_host.py", "deploys/parts/releases.py"}
    for path in sorted((REPO / "deploys").rglob("*.py")):
        if str(path.relative_to(REPO)) in other_data:
            continue
        for name in _names_read_from_data(ast.parse(path.read_text())):
            if name not in knobs and name not in extra:
                missing.add(f"{name} ({path.relative_to(REPO)})")
    assert not missing, sorted(missing)


@pytest.mark.parametrize("value", ["99", "3.99", "true", "null", "[1]", "abc", "a=b", 5, 2.5, False, None, [1, "x"], {"a": 1}])
def test_cli_data_value_is_read_back_as_given(value):
    assert settings.parse_cli_arg(settings.cli_data_value(value)) == value
