"""The Linode VM (HiveSync backend): Ubuntu 22.04, firewall 22/80/443 only."""

supported_os = {"ubuntu": ["22.04", "24.04"], "debian": ["12"]}
# TCP ports the firewall allows in; everything else is blocked.
firewall_allow_tcp = [22, 80, 443]
