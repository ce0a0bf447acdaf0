"""YouTube assistant production beside development, on the operator's own machine.

deploys/youtube.py, as the operator (never root): build beside the live release
(frontend production build, backend venv-prod with runtime dependencies only, each
rebuilt only when its sources or lockfile changed) -> switch only the component that
changed (database backup, Alembic migrations, health gate; on failure the previous
release and database come back) -> run (PID files, or systemd user units).
`youtube_action` chooses deploy / start / stop / restart / status; `make releases` and
`make rollback [TO=id]` (release_action) list and go back.

Paths may start with `~/` (the login user's home). Commands and env values may use
{home}, {prod_dir}, {backend_dir}, {frontend_dir}, {venv}, {db_path}, {bind},
{backend_port} and {frontend_port}.
"""

# Secrets the deploy needs (from .env or the environment); checked before connecting.
# The app needs none today; names listed in youtube_backend_secrets belong here too.
required_secrets = []

# What the run does: "deploy" (build + deploy + start; the default), "start", "stop",
# "restart" or "status" (`make youtube-start` etc. pass it with --data).
youtube_action = "deploy"

# How production runs: "pidfile" (phase 1: background processes, PID files in pids/) or
# "systemd" (phase 2: systemd user units, restarted when they exit, start at login/boot).
# None: the mode recorded on the machine (<prod>/.mode) by the last deploy/start, else
# "pidfile" - so a plain `make youtube-start` keeps the mode `YT_MODE=systemd` chose.
# Switching stops the other mode's processes first (and removes its units/PID files).
youtube_mode = None

# --- where things are ------------------------------------------------------------------
# The development checkout ON the target machine (backend/ and frontend/ inside). The
# deploy reads it, never writes to it: dev keeps its venv, node_modules, .next and database.
youtube_source_dir = "~/dev/aqa-youtube-assistant"
# The production directory (the plan's ~/aqa-youtube-assistant-prod/); 0700.
youtube_prod_dir = "~/aqa-youtube-assistant-prod"
# Scratch copy of the frontend where the production build runs (so it never touches the
# checkout's .next, which `npm run dev` uses). Reused while the sources are unchanged.
youtube_build_dir = "~/.cache/aqa-youtube-assistant-prod-build"

# --- ports, database ---------------------------------------------------------------------
# Production ports (the plan: 8001/3001). They must differ from the development ports.
youtube_backend_port = 8001
youtube_frontend_port = 3001
# Address both processes bind to (uvicorn --host, next start -H). Upstream's
# .env.production says 0.0.0.0 and `next start` binds every interface by default; on a
# desktop, 127.0.0.1 keeps both off the network (the browser runs on the same machine).
youtube_bind = "127.0.0.1"
# Development's ports and database name: production refuses to use them.
youtube_dev_ports = [8000, 3000]
youtube_dev_db_name = "youtube_assistant.db"
# Production SQLite database, in the production backend directory.
youtube_db_name = "youtube_assistant_prod.db"
# Database backups (taken before every switch of release, and before a rollback) kept
# in <prod>/backups/; a rollback restores the one taken while its release was live.
youtube_keep_backups = 10
# Releases kept under <prod>/releases/ (`make releases` lists them, `make rollback` goes back).
youtube_keep_releases = 3

# --- backend ---------------------------------------------------------------------------
# Files and directories copied from <source>/backend to <prod>/backend (the plan's list).
youtube_backend_paths = ["app", "alembic", "alembic.ini", "requirements.txt"]
# Runtime requirements (the lockfile venv-prod is built from; never requirements-dev.txt).
youtube_backend_requirements = "requirements.txt"
# The interpreter venv-prod is built with: "auto" = the checkout's backend/.python-version
# through pyenv when pyenv is installed (upstream pins 3.13), else python3; or a name/path
# ("python3.13", "~/.pyenv/versions/3.13.1/bin/python"). Preflight refuses older than:
youtube_python = "auto"
youtube_python_min = "3.11"  # upstream's app/main.py imports datetime.UTC (3.11+)
# Extra pip arguments for venv-prod (e.g. ["--no-index", "--find-links", "{home}/wheels"]).
youtube_pip_args = []
# How the backend runs (cwd <prod>/backend, .env loaded into the environment).
youtube_backend_cmd = "{venv}/bin/python -m uvicorn app.main:app --host {bind} --port {backend_port}"
# Migrations, run in <prod>/backend before every start that follows a schema change.
youtube_migrate_cmd = "{venv}/bin/python -m alembic upgrade head"
# Health endpoint of the backend (the app serves /api/health).
youtube_backend_health_path = "/api/health"
# The production backend .env (the plan's backend/.env.production), written 0600.
youtube_backend_env = {
    "DATABASE_URL": "sqlite:///{db_path}",
    "PORT": "{backend_port}",
    "HOST": "{bind}",
    "RELOAD": "false",
    "LOG_LEVEL": "info",
    "CORS_ORIGINS": "http://localhost:{frontend_port}",
}
# Names whose values come from the operator's .env (or environment) into the backend
# .env, e.g. ["YOUTUBE_API_KEY"]; add them to required_secrets and .env.example too.
youtube_backend_secrets = []

# --- frontend --------------------------------------------------------------------------
# Patterns (any depth) not copied from <source>/frontend into the build directory, and not
# part of the "sources changed" digest: dependencies, build output, local env files.
# next-env.d.ts and *.tsbuildinfo are generated by `next dev`/tsc in the checkout.
youtube_frontend_excludes = [
    "node_modules", ".next", "out", "coverage", ".env*", "*.log", ".turbo", "__pycache__",
    "next-env.d.ts", "*.tsbuildinfo",
]
# Dependencies for the build (empty: none). Uses npm's cache; the lockfile decides.
youtube_frontend_install_cmd = "npm ci --no-audit --no-fund"
# The production build (Next.js bakes NEXT_PUBLIC_* values from youtube_frontend_env in).
youtube_frontend_build_cmd = "npm run build"
# What the build must produce (checked), and what is copied to <prod>/frontend.
youtube_frontend_artifact = ".next"
youtube_frontend_paths = [
    ".next", "public", "node_modules", "package.json", "package-lock.json",
    "next.config.ts", "next.config.js", "next.config.mjs",
]
# How the frontend runs (cwd <prod>/frontend, its .env loaded). `next start` binds every
# interface unless told -H.
youtube_frontend_cmd = "npm start -- -H {bind} -p {frontend_port}"
youtube_frontend_health_path = "/"
# The production frontend .env (the plan's frontend/.env.production), written 0600 and
# exported during the build.
youtube_frontend_env = {
    "NEXT_PUBLIC_API_URL": "http://localhost:{backend_port}",
    "PORT": "{frontend_port}",
    "NEXT_TELEMETRY_DISABLED": "1",
}

# --- run control -------------------------------------------------------------------------
# Directories put in front of PATH for builds and both processes (e.g. nvm's node bin:
# "~/.nvm/versions/node/v20.11.0/bin"); the systemd user manager has a minimal PATH.
youtube_path_prepend = []
# Start production at the end of a deploy (False: deploy only; `make youtube-start` later).
youtube_start_after_deploy = True
# PID-file mode: a log bigger than this (MiB) is rotated to <log>.1 when the process
# starts (0: never). systemd mode appends to the same files.
youtube_log_max_mb = 20
# Seconds to wait for a started process to listen on its port.
youtube_start_timeout_s = 60
# Graceful stop: SIGTERM, then SIGKILL after this many seconds.
youtube_stop_timeout_s = 15
# systemd mode: unit names <prefix>-backend.service / <prefix>-frontend.service.
youtube_unit_prefix = "aqa-youtube-prod"
# systemd mode: restart policy of both units. "always": npm exits 0 after SIGTERM, so
# "on-failure" would leave a killed frontend down.
youtube_restart = "always"
youtube_restart_sec = 5
# systemd mode: require lingering (units start at boot and keep running after logout).
# False: units start at login and stop at logout.
youtube_linger = True
# Lingering needs root (or a desktop session's polkit grant). False: the deploy stops
# with the command to run once (`sudo loginctl enable-linger <user>`). True: the deploy
# runs that ONE command with sudo (the only root step; needs sudo rights; add pyinfra's
# --use-sudo-password when sudo asks for a password).
youtube_linger_sudo = False
# The long builds (the backend venv's pip install, the frontend's install + build) run as
# transient units of the user's systemd manager (`systemd-run --user`) when lingering is
# on: an SSH drop or a killed pyinfra does not cut them short, and the next apply waits for
# an unfinished one and reports it. False, or lingering off: they run in the SSH session
# (a drop cuts them short; the next apply builds again).
youtube_build_units = True
# Seconds a build unit may run before systemd stops it (the build then fails).
youtube_build_timeout_s = 3600
# The release switch (backup, stop, link, migrate, start, health gate; rollback on any
# failure) runs on the machine as the transient unit <prefix>-release.service of the
# user's systemd manager (release-switch, see youtube_switch_script) when lingering is on:
# a killed pyinfra or an SSH drop neither leaves production stopped nor skips the
# rollback, and the next apply waits for an unfinished switch. PID-file processes it
# starts get a scope of their own. False, or lingering off: the switch runs from the
# controller, in the SSH session.
youtube_switch_on_host = True
# Where the deploy installs the host-side switch script (the user's own state dir: no root).
youtube_switch_script = "~/.local/state/infra/bin/release-switch"

# Distributions the operator's machine may run (desktop Linux with systemd).
supported_os = {"ubuntu": ["22.04", "24.04"], "pop": ["22.04", "24.04"], "debian": ["12", "13"]}
