"""Plain VMs where services run natively under systemd (the music host)."""

# apt packages every native VM needs before application deploys.
base_packages = ["python3", "python3-venv", "ca-certificates", "curl"]
