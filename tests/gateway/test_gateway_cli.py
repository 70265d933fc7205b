"""``medianest gateway check`` and ``medianest gateway export nginx`` as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.nginx import check_config, main_config, nginx_binary

MEDIANEST = [sys.executable, "-m", "medianest"]


def run(tmp_path: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIANEST_")}
    env.update(
        MEDIANEST_DATA_DIR=str(tmp_path / "data"), MEDIANEST_LOG__FORMAT="json", COLUMNS="240"
    )
    env.update(extra)
    return subprocess.run(
        [*MEDIANEST, *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def routes_file(path: Path, *routes: tuple[str, str, str]) -> Path:
    """Write ``[[routes]]`` of (name, path prefix, instance URL), no auth, prefix stripped."""
    path.write_text(
        "\n".join(
            f'[[routes]]\nname = "{name}"\nmatch = {{ path_prefix = "{prefix}" }}\n'
            f'target = {{ instances = [{{ url = "{url}" }}] }}\n'
            "strip_prefix = true\nauth = { required = false }\n"
            for name, prefix, url in routes
        ),
        encoding="utf-8",
    )
    return path


BAD_TABLE = """
[[routes]]
name = "Not A Name"
match = { path_prefix = "/ok/" }
target = { instances = [{ url = "http://127.0.0.1:9001" }] }

[[routes]]
name = "broken-regex"
match = { path_regex = "^/a/(" }
target = { instances = [{ url = "http://127.0.0.1:9001" }] }

[[routes]]
name = "nowhere"
match = { path_prefix = "/nowhere/" }
target = { instances = [] }

[[routes]]
name = "shadow"
match = { path_prefix = "/api/" }
target = { instances = [{ url = "http://127.0.0.1:9001" }] }

[[routes]]
name = "limited"
match = { path_prefix = "/limited/" }
target = { instances = [{ url = "http://127.0.0.1:9001" }] }
rate_limits = [{ limit = "many per day" }]
"""


def test_check_a_valid_file_lists_changes_against_the_configured_table(tmp_path: Path) -> None:
    new = routes_file(
        tmp_path / "new.toml",
        ("svc", "/svc/", "http://127.0.0.1:9001"),
        ("fresh", "/fresh/", "http://127.0.0.1:9003"),
        ("same", "/same/", "http://127.0.0.1:9004"),
    )
    result = run(tmp_path, "gateway", "check", str(new))
    assert result.returncode == 0, result.stderr
    assert f"{new}: valid, 3 route(s)" in result.stdout
    assert [line.strip() for line in result.stdout.splitlines()[1:]] == [
        "+ svc",
        "+ fresh",
        "+ same",
    ]

    current = routes_file(
        tmp_path / "current.toml",
        ("svc", "/svc/", "http://127.0.0.1:9002"),
        ("old", "/old/", "http://127.0.0.1:9002"),
        ("same", "/same/", "http://127.0.0.1:9004"),
    )
    configured = {"MEDIANEST_GATEWAY__ROUTES_FILE": str(current)}
    result = run(tmp_path, "gateway", "check", str(new), **configured)
    assert result.returncode == 0, result.stderr
    changes = sorted(line.strip() for line in result.stdout.splitlines()[1:])
    assert changes == ["+ fresh", "- old", "~ svc"]

    result = run(tmp_path, "gateway", "check", str(current), **configured)
    assert result.returncode == 0, result.stderr
    assert "(no change against the configured table)" in result.stdout


def test_check_a_bad_file_exits_2_listing_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD_TABLE, encoding="utf-8")
    result = run(tmp_path, "gateway", "check", str(bad))
    assert result.returncode == 2
    assert result.stdout == ""
    err = result.stderr
    assert f"invalid route table in {bad}" in err
    for where, why in (
        ("routes.0.name", "should match pattern"),
        ("routes.1.match.path_regex", "invalid regex"),
        ("routes.2.target", "target needs instances"),
        ("routes.3", "overlaps the hub's own paths"),
        ("routes.4.rate_limits.0.limit", "invalid rate limit 'many per day'"),
    ):
        assert any(where in line and why in line for line in err.splitlines()), (where, err)
    assert "Traceback" not in err
    # printed as text, not Rich markup (which would swallow the brackets)
    assert "^[a-z0-9][a-z0-9_.-]{0,62}$" in err

    result = run(tmp_path, "gateway", "check", str(tmp_path / "missing.toml"))
    assert result.returncode == 2
    assert "cannot read routes file" in result.stderr
    (tmp_path / "garbled.toml").write_text("[[routes]\nname=", encoding="utf-8")
    result = run(tmp_path, "gateway", "check", str(tmp_path / "garbled.toml"))
    assert result.returncode == 2
    assert "is not valid TOML" in result.stderr


def test_export_nginx_writes_a_configuration_nginx_accepts(tmp_path: Path) -> None:
    table = tmp_path / "routes.toml"
    table.write_text(
        '[[routes]]\nname = "plex"\nmatch = { path_prefix = "/plex/", methods = ["GET"] }\n'
        'target = { instances = [{ url = "http://127.0.0.1:32400" }, '
        '{ url = "http://127.0.0.1:32401", weight = 2 }], balance = "weighted_round_robin" }\n'
        "strip_prefix = true\nauth = { required = false }\n"
        'rate_limits = [{ limit = "20/second" }]\n'
        '[[routes]]\nname = "requests"\nmatch = { path_prefix = "/requests/" }\n'
        'target = { instances = [{ url = "http://127.0.0.1:5055" }] }\n'
        'auth = { required = true, scopes = ["media:request"] }\n',
        encoding="utf-8",
    )
    out = tmp_path / "gateway.conf"
    result = run(
        tmp_path,
        *("gateway", "export", "nginx", "--routes", str(table)),
        *("--hub", "127.0.0.1:8085", "--listen", "127.0.0.1:8086", "-o", str(out)),
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    text = out.read_text()
    assert "upstream mn_hub {\n    server 127.0.0.1:8085;" in text
    assert "    listen 127.0.0.1:8086;" in text
    assert "upstream mn_plex {" in text
    assert "server 127.0.0.1:32401 weight=2" in text
    assert "limit_req_zone $binary_remote_addr zone=mn_plex_0:10m rate=20r/s;" in text
    assert (
        "# route requests: served by the hub; "
        "nginx cannot express: API-key authentication and scopes"
    ) in text

    stdout = run(tmp_path, "gateway", "export", "nginx", "--routes", str(table))
    assert stdout.returncode == 0, stdout.stderr
    assert stdout.stdout == text.replace("127.0.0.1:8085", "127.0.0.1:8080").replace(
        "listen 127.0.0.1:8086", "listen 80"
    )

    main_config(tmp_path, out)
    checked = check_config(nginx_binary(), tmp_path)
    assert checked.returncode == 0, checked.stderr


def test_export_refuses_a_bad_table_or_target(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD_TABLE, encoding="utf-8")
    out = tmp_path / "never.conf"
    result = run(tmp_path, "gateway", "export", "nginx", "--routes", str(bad), "-o", str(out))
    assert result.returncode == 2
    assert "routes.1.match.path_regex" in result.stderr
    assert "routes.4.rate_limits.0.limit" in result.stderr
    assert not out.exists()
    result = run(tmp_path, "gateway", "export", "haproxy")
    assert result.returncode == 2
    assert "unknown export target 'haproxy'" in result.stderr
