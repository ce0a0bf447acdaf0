# Runs ON the host (python3 -c, stdlib only), sent by deploys/parts/generated_env.py
# (archon, hivesync):
#   check SPEC  -> prints {"ok", "missing", "stale"} (names only, never values)
#   apply SPEC  -> generates the missing secrets once, then writes the stack's env file
# SPEC (JSON): generated/user/target paths, random secrets (name -> bytes), the JWTs to
# sign with jwt_secret (name -> role), their lifetime, a header. Generated secrets are
# kept in `generated` (0600) and never regenerated; `target` = generated + user values.
import base64, hashlib, hmac, json, os, secrets, sys, time

mode, spec = sys.argv[1], json.loads(sys.argv[2])


def read_env(path):
    values = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    key, value = line.split("=", 1)
                    values[key.strip()] = value.strip()
    return values


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwt_hs256(secret, claims):
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(secret.encode(), (header + "." + payload).encode(), hashlib.sha256).digest()
    return header + "." + payload + "." + b64url(signature)


def write_0600(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


names = list(spec["random"]) + list(spec["jwt"])
generated = read_env(spec["generated"])
missing = [n for n in names if not generated.get(n)]


def target_text(values):
    user = read_env(spec["user"])
    lines = ["# " + line for line in spec["header"].splitlines()]
    lines += [n + "=" + values[n] for n in names]
    lines += [k + "=" + v for k, v in user.items() if k not in names]
    return "\n".join(lines) + "\n"


def current_target():
    try:
        with open(spec["target"]) as f:
            return f.read()
    except OSError:
        return None


if mode == "check":
    stale = bool(missing) or current_target() != target_text(generated)
    if not stale:
        st = os.stat(spec["target"])
        stale = (st.st_mode & 0o777) != 0o600 or st.st_uid != 0
    print(json.dumps({"ok": not stale, "missing": missing, "stale": stale}))
    sys.exit(0)

os.umask(0o077)
now = int(time.time())
for name, nbytes in spec["random"].items():
    if not generated.get(name):
        generated[name] = secrets.token_hex(int(nbytes))
for name, role in spec["jwt"].items():
    if not generated.get(name):
        claims = {"role": role, "iss": spec.get("jwt_issuer", "supabase"), "iat": now,
                  "exp": now + int(spec["jwt_expiry_s"])}
        generated[name] = jwt_hs256(generated[spec["jwt_secret"]], claims)
if missing:
    text = "# Generated once on this host by pyinfra (deploys/archon.py); never regenerated.\n"
    write_0600(spec["generated"], text + "".join(n + "=" + generated[n] + "\n" for n in names))
wanted = target_text(generated)
if current_target() != wanted:
    write_0600(spec["target"], wanted)
os.chmod(spec["target"], 0o600)
os.chown(spec["target"], 0, 0)
print("generated: " + (", ".join(missing) or "none") + "; wrote " + spec["target"])
