"""Adopting an existing nginx: `nginx -T` parsing, foreign maps and vhosts, reused lineages."""

from deploys.parts.nginx import WEBSOCKET_CONF
from deploys.parts.tls import adopted_lineages, certbot_command, lineage_for, with_lineage
from facts.nginx import foreign_map_of, parse_nginx_dump, served_elsewhere, serves_tls

DUMP = """nginx-dump=ok
# configuration file /etc/nginx/nginx.conf:
user www-data;
events { worker_connections 768; }
http {
    map $http_upgrade $connection_upgrade { default upgrade; '' close; }   # the operator's
    include /etc/nginx/conf.d/*.conf;
    include /etc/nginx/sites-enabled/*;
    upstream app { server 127.0.0.1:3737; }
}
#mail { server { listen 25; server_name mail.archon.test; } }

# configuration file /etc/nginx/sites-enabled/operator:
server {
    listen 443 ssl;
    server_name archon.archon.test www.archon.test;   # both
    ssl_certificate /etc/letsencrypt/live/archon-multi/fullchain.pem;
    location / { proxy_pass http://app; }
}
server { listen 80; server_name "other.test"; return 301 https://$host$request_uri; }

# configuration file /etc/nginx/sites-enabled/archon:
server { listen 443 ssl; server_name studio.archon.test; }
""".splitlines()


def test_nginx_dump_attributes_maps_and_server_blocks_to_their_files():
    dump = parse_nginx_dump(DUMP)
    assert dump["state"] == "ok"
    assert dump["maps"] == [{"file": "/etc/nginx/nginx.conf", "source": "$http_upgrade",
                             "variable": "$connection_upgrade"}]
    assert [(s["file"].rsplit("/", 1)[1], s["names"], s["listen"]) for s in dump["servers"]] == [
        ("operator", ["archon.archon.test", "www.archon.test"], ["443 ssl"]),
        ("operator", ["other.test"], ["80"]),
        ("archon", ["studio.archon.test"], ["443 ssl"]),
    ]  # not the upstream's `server` directive, not the commented mail block


def test_a_foreign_upgrade_map_is_found_and_ours_is_not_foreign():
    dump = parse_nginx_dump(DUMP)
    assert foreign_map_of(dump, "$connection_upgrade", WEBSOCKET_CONF) == "/etc/nginx/nginx.conf"
    ours = parse_nginx_dump(["nginx-dump=ok", f"# configuration file {WEBSOCKET_CONF}:",
                             "map $http_upgrade $connection_upgrade { default upgrade; '' close; }"])
    assert foreign_map_of(ours, "$connection_upgrade", WEBSOCKET_CONF) is None
    assert foreign_map_of(dump, "$other", WEBSOCKET_CONF) is None  # another variable does not clash


def test_names_served_outside_our_site_are_adopted():
    dump = parse_nginx_dump(DUMP)
    own = ("/etc/nginx/sites-available/archon", "/etc/nginx/sites-enabled/archon")
    assert served_elsewhere(dump, ["archon.archon.test", "studio.archon.test"], own) == {
        "archon.archon.test": "/etc/nginx/sites-enabled/operator"}


def test_a_failed_or_missing_nginx_adopts_nothing():
    for head in ("nginx-dump=failed", "nginx-dump=absent"):
        dump = parse_nginx_dump([head])
        assert dump["servers"] == [] and foreign_map_of(dump, "$connection_upgrade", WEBSOCKET_CONF) is None


LINEAGES = {
    "archon-multi": {"names": ["archon.archon.test", "studio.archon.test"], "days_left": 80, "server": "x"},
    "music.example.com": {"names": ["music.example.com"], "days_left": 80, "server": "x"},
    "old": {"names": ["studio.archon.test"], "days_left": -3, "server": "x"},
}


def test_an_existing_multi_name_lineage_is_reused_and_our_own_stays_ours():
    assert lineage_for("music.example.com", LINEAGES) == "music.example.com"
    assert lineage_for("studio.archon.test", LINEAGES) == "archon-multi"  # unexpired first
    assert lineage_for("new.example.com", LINEAGES) is None
    assert adopted_lineages(["archon.archon.test", "studio.archon.test", "music.example.com", "new.example.com"],
                            LINEAGES) == {"archon.archon.test": "archon-multi", "studio.archon.test": "archon-multi"}
    # a lineage named after the name but multi-name is the operator's too: never re-issued as single-name
    multi = {"archon.archon.test": {"names": ["archon.archon.test", "www.archon.test"], "days_left": 5}}
    assert adopted_lineages(["archon.archon.test"], multi) == {"archon.archon.test": "archon.archon.test"}


def test_reused_lineage_paths_and_a_multi_name_reissue():
    vhost = with_lineage({"server_name": "studio.archon.test"}, "archon-multi")
    assert vhost["cert"] == "/etc/letsencrypt/live/archon-multi/fullchain.pem"
    assert vhost["key"] == "/etc/letsencrypt/live/archon-multi/privkey.pem"
    assert with_lineage({"server_name": "a"}, None) == {"server_name": "a"}
    cmd = certbot_command("archon-multi", "/w", "e@x", "https://p/dir", None, True,
                          domains=["archon.archon.test", "studio.archon.test"]).get_raw_value()
    assert "--cert-name archon-multi -d archon.archon.test -d studio.archon.test" in cmd and "--expand" in cmd


def test_only_a_block_serving_https_takes_a_name_from_us():
    dump = parse_nginx_dump(["nginx-dump=ok", "# configuration file /etc/nginx/sites-enabled/redirects:",
                             "server { listen 80; server_name music.example.com; return 301 https://$host; }",
                             "server { listen 127.0.0.1:8081; server_name music.example.com; }",
                             "server { listen [::]:443 ssl; server_name studio.archon.test; }"])
    own = ("/etc/nginx/sites-enabled/music",)
    assert served_elsewhere(dump, ["music.example.com", "studio.archon.test"], own) == {
        "studio.archon.test": "/etc/nginx/sites-enabled/redirects"}
    assert serves_tls({"listen": ["8443 ssl"]}) and not serves_tls({"listen": ["127.0.0.1:8081"]})


def test_an_expired_foreign_lineage_is_not_adopted():
    expired = {"old": {"names": ["studio.archon.test", "x.test"], "days_left": -3}}
    assert lineage_for("studio.archon.test", expired) is None
    ours_expired = {"studio.archon.test": {"names": ["studio.archon.test", "x.test"], "days_left": -3}}
    assert lineage_for("studio.archon.test", ours_expired) == "studio.archon.test"
