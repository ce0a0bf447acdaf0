"""The Linode VM (HiveSync backend): Ubuntu 22.04 (the plan's N.5.1), firewall 22/80/443 only."""

# Test hosts (Debian 12) widen this through test data.
supported_os = {"ubuntu": ["22.04"]}
# TCP ports the firewall (deploys/parts/firewall.py, ufw) allows in; everything else is blocked.
firewall_allow_tcp = [22, 80, 443]
