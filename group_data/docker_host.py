"""Hosts that run services with Docker Engine + compose (archon, ingestor, hivesync)."""

# "distro" (Debian/Ubuntu docker.io + their compose package) or "docker" (Docker's apt repo).
# Only for a host without an engine: an installed docker-ce / docker.io is kept as it is.
docker_package_source = "distro"
# apt packages for the engine with "distro" (Debian 12 ships compose v1 only).
docker_packages = ["docker.io"]
# Compose package per distribution with "distro": Debian 12 has only v1, Ubuntu has v2.
docker_compose_packages = {"debian": ["docker-compose"], "ubuntu": ["docker-compose-v2"]}
# Docker's own apt repository and packages (docker_package_source = "docker").
docker_repo_url = "https://download.docker.com/linux"
docker_repo_packages = ["docker-ce", "docker-ce-cli", "containerd.io", "docker-compose-plugin"]
# json-file log rotation for every container; live-restore keeps containers up while dockerd restarts.
docker_log_max_size = "10m"
docker_log_max_file = 3
docker_live_restore = True
# More daemon.json keys we manage. daemon.json is merged: the operator's other keys stay;
# dockerd is reloaded (SIGHUP) for reloadable keys, restarted only for others.
docker_daemon_extra = {}
# Force "docker compose" or "docker-compose"; None: detected (v2 preferred).
docker_compose_cli = None
# Free disk needed for images and volumes.
preflight_min_disk_mb = 4096
