"""The nginx site template: string checks, data validation, and the real `nginx -t`
(when nginx is installed on the machine running the tests)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from deploys.errors import ConfigError
from deploys.parts.nginx import normalise_vhosts, render_site, render_websocket_conf

MUSIC = {"server_name": "music.example.com", "upstream": "127.0.0.1:8095", "websocket": True}
OAUTH = {
    "server_name": "oauth.example.com",
    "upstream": "127.0.0.1:8096",
    "locations": [{"path": "/internal/", "deny": True}, {"path": "/old", "return": "301 /new"}],
}
BOTH = ["music.example.com", "oauth.example.com"]


def site(tls_names=BOTH, vhosts=(MUSIC, OAUTH), **kwargs):
    return render_site("music", list(vhosts), "/var/www/acme", tls_names=tls_names, **kwargs)


def block(text: str, marker: str) -> str:
    """The server block that follows a `# --- marker` comment."""
    start = text.index(f"# --- {marker}")
    end = text.find("# --- ", start + 1)
    return text[start : end if end > 0 else None]


def test_http_serves_challenges_and_redirects_to_https_once_the_cert_exists():
    text = block(site(), "music.example.com: HTTP")
    assert "location ^~ /.well-known/acme-challenge/ {\n        root /var/www/acme;" in text
    assert "return 301 https://music.example.com$request_uri;" in text
    assert "listen 443" not in text


def test_before_the_certificate_only_the_challenge_is_served():
    text = site(tls_names=["oauth.example.com"])
    music_http = block(text, "music.example.com: HTTP")
    assert "return 503;" in music_http and "proxy_pass" not in music_http
    assert "music.example.com: HTTPS" not in text
    assert "/etc/letsencrypt/live/music.example.com" not in text
    assert "ssl_certificate /etc/letsencrypt/live/oauth.example.com/fullchain.pem;" in text


def test_one_tls_vhost_per_name_with_the_plans_proxy_headers():
    text = site()
    for name, port in (("music.example.com", 8095), ("oauth.example.com", 8096)):
        https = block(text, f"{name}: HTTPS")
        assert f"server_name {name};" in https
        assert f"ssl_certificate_key /etc/letsencrypt/live/{name}/privkey.pem;" in https
        assert f"proxy_pass http://127.0.0.1:{port};" in https
        for header in ("Host $host", "X-Real-IP $remote_addr", "X-Forwarded-For $proxy_add_x_forwarded_for",
                       "X-Forwarded-Proto $scheme"):
            assert f"proxy_set_header {header};" in https
        assert "ssl_protocols TLSv1.2 TLSv1.3;" in https


def test_websocket_upgrade_only_where_asked():
    text = site()
    music = block(text, "music.example.com: HTTPS")
    assert "proxy_set_header Upgrade $http_upgrade;" in music
    assert "proxy_set_header Connection $connection_upgrade;" in music
    assert "proxy_http_version 1.1;" in music
    assert "Upgrade" not in block(text, "oauth.example.com: HTTPS")
    assert "map $http_upgrade $connection_upgrade" in render_websocket_conf()


def test_extra_locations():
    oauth = block(site(), "oauth.example.com: HTTPS")
    assert "location /internal/ {\n        deny all;\n    }" in oauth
    assert "location /old {\n        return 301 /new;\n    }" in oauth


def test_ipv6_listeners_are_a_knob():
    assert "listen [::]:443 ssl http2;" in site()
    assert "[::]" not in site(ipv6=False)


@pytest.mark.parametrize(
    "vhost, message",
    [
        ({**MUSIC, "upstream": "0.0.0.0:8095"}, "must be a loopback"),
        ({**MUSIC, "upstream": "10.0.0.5:8095"}, "must be a loopback"),
        ({**MUSIC, "upstream": "127.0.0.1"}, "must be a loopback"),
        ({**MUSIC, "server_name": "bad name;"}, "is not a DNS name"),
        ({**MUSIC, "colour": "red"}, "unknown keys"),
        ({**MUSIC, "locations": [{"path": "/x; evil"}]}, "not a valid nginx location"),
        ({**MUSIC, "locations": [{"path": "/x", "return": "soon"}]}, "must be 'CODE'"),
    ],
)
def test_bad_vhost_data_is_rejected(vhost, message):
    with pytest.raises(ConfigError, match=message):
        normalise_vhosts([vhost])


def test_duplicate_and_empty_vhosts_are_rejected():
    with pytest.raises(ConfigError, match="defined twice"):
        normalise_vhosts([MUSIC, MUSIC])
    with pytest.raises(ConfigError, match="at least one vhost"):
        normalise_vhosts([])


# ---------------------------------------------------------------- real nginx -t

NGINX = shutil.which("nginx") or (shutil.which("nginx", path="/usr/sbin:/sbin"))


def nginx_test(tmp_path, site_text: str) -> subprocess.CompletedProcess:
    (tmp_path / "sites").mkdir(exist_ok=True)
    (tmp_path / "sites" / "music").write_text(site_text)
    (tmp_path / "websocket.conf").write_text(render_websocket_conf())
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  include {tmp_path}/websocket.conf;\n  include {tmp_path}/sites/*;\n}}\n"
    )
    return subprocess.run([NGINX, "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True)


@pytest.fixture
def certs(tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("needs openssl")
    live = tmp_path / "live"
    for name in BOTH:
        (live / name).mkdir(parents=True)
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-days", "2", "-subj", f"/CN={name}", "-keyout", str(live / name / "privkey.pem"),
             "-out", str(live / name / "fullchain.pem")],
            check=True, capture_output=True,
        )
    return live


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed here (apt-get install nginx-light)")
def test_rendered_site_passes_nginx_t(tmp_path, certs):
    vhosts = [{**v, "cert": str(certs / v["server_name"] / "fullchain.pem"),
               "key": str(certs / v["server_name"] / "privkey.pem")} for v in (MUSIC, OAUTH)]
    result = nginx_test(tmp_path, site(vhosts=vhosts, ipv6=False))
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed here (apt-get install nginx-light)")
def test_bootstrap_site_without_certificates_passes_nginx_t(tmp_path):
    result = nginx_test(tmp_path, site(tls_names=[], ipv6=False))
    assert result.returncode == 0, result.stderr
