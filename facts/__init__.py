"""
Custom pyinfra facts for preflight checks and health gates. Every fact runs its command ON the
target host, so 127.0.0.1 backends and the host's own resolver are what get checked.

- ``facts.http.HttpHealth(url, json_field=None, timeout=5, ca_file=None, host_header=None)``
  -> ``{"url", "status", "ok", "field", "json_field", "error", "body"}`` (never raises on
  network/TLS errors); helpers ``is_healthy``, ``describe``.
- ``facts.dns.ResolvedAddresses(hostname)`` -> ``[address, ...]`` from ``getent ahosts``
  (empty when it does not resolve).
- ``facts.dns.HostAddresses()`` -> the host's global IPv4/IPv6 addresses; helpers
  ``points_here``, ``dns_problem``.
- ``facts.tls.TlsCertificate(port, server_name, address="127.0.0.1")`` ->
  ``{"subject", "issuer", "names", "not_after", "days_left"}`` or None; helpers ``covers``,
  ``name_matches``, ``tls_problem``.
- ``facts.sockets.ListeningSockets()`` -> ``[{"proto", "address", "port", "process", "pid",
  "pids", "interface"}, ...]`` from ``ss -H -tulnp``; helpers ``listeners_on``,
  ``is_loopback_only``, ``port_owner``.
- ``facts.system.FreeDiskMb(path)``, ``MemAvailableMb()``, ``ListenerUnits()`` (port -> systemd
  units), ``PythonVersion()``: preflight capacity and ownership checks.
- ``facts.procs.ManagedProcesses(spec)`` -> per process: PID-file state (running /
  missing-pidfile / stale / reused / stopped), its process tree (by an INFRA_PROC environment
  marker) and port holders; ``UserUnits(units)``, ``Identity()``, ``MissingCommands``,
  ``MissingPaths``, ``MissingPythonModules``, ``TextFile(path)``, ``TreeDigest(base, includes,
  excludes)``, ``AlembicState(backend_dir, python, db_path)`` (read-only).
- ``facts.archon.ArchonOldLayout(...)`` -> the supabase-CLI layout's containers / networks /
  volumes / rebind unit and whether it is migrated (helper ``migration_action``);
- ``facts.firewall.UfwStatus()`` -> ``{"active", "defaults", "allowed", "added", "other"}`` from
  ``ufw status verbose`` + ``ufw show added`` (None without ufw); ``SshServerPort()`` -> the
  server port of the SSH session pyinfra runs over (``$SSH_CONNECTION``).
- ``facts.hivesync.ContainerImage(container, image)`` -> running image id/name and the local
  id of ``image``; ``AlembicAtHead(container, current, heads)`` -> ``{"current", "heads",
  "at_head"}`` asked inside the backend container; ``R2Buckets(wrangler)`` -> bucket names from
  ``wrangler r2 bucket list`` (None when wrangler fails).
- ``facts.ingestor.DockerServerVersion()``, ``HomeAssistantApi(url, token)`` (GET <url>/api/ with
  the bearer token, masked), ``ImageSources(images)`` (source-digest labels),
  ``SqliteState(volume, file, tables)`` (tables, counts, journal mode, Alembic revision).
- ``facts.compose.ComposeCli()`` -> ``"docker compose"`` | ``"docker-compose"`` | None.
- ``facts.compose.ComposeServices(project)`` -> ``{service: {"state", "health", "container",
  "exit_code", "replicas"}}`` from container labels (Compose v1 and v2 alike); helper
  ``unhealthy_services``.

Use them from deploy code with ``host.get_fact(HttpHealth, url=...)``, or from the CLI at the
repo root: ``pyinfra @local fact facts.sockets.ListeningSockets`` /
``pyinfra INVENTORY fact facts.tls.TlsCertificate port=443 server_name=music.example.com``.

Things pyinfra does with facts that matter here:

- A fact whose command exits non-zero fails the host ("could not load fact"); with a single
  host that raises ``PyinfraError: No hosts remaining!``. So these commands exit 0 for
  expected negative answers (name does not resolve, nothing listening, URL down) and only
  fail on real breakage (e.g. the Docker daemon cannot be asked).
- Empty output means ``process()`` is NOT called and ``default()`` is returned.
- When ``requires_command`` is missing on the host, ``default()`` is returned (a warning
  during execution) instead of an error.
- Facts called in top-level deploy code run at prepare time, before any operation: health
  checks belong inside ``python.call`` callbacks or later stages.
- Commands run under ``sh -c`` (dash on Debian/Ubuntu), not bash.
"""
