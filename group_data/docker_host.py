"""Hosts that run services with Docker Engine + compose (archon, ingestor, hivesync)."""

# apt packages for the engine on Debian/Ubuntu (Debian 12 ships compose v1 only).
docker_packages = ["docker.io"]
# Free disk needed for images and volumes.
preflight_min_disk_mb = 4096
