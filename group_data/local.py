"""The operator's own machine: deploys run as the operator, never as root."""

# No DNS/TLS for local services.
preflight_check_dns = False
preflight_min_disk_mb = 512
