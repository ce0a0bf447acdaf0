# Runs ON the host (python3 -c, stdlib only), sent by deploys/parts/generated_env.py
# (archon, hivesync):
#   check SPEC  -> prints {"ok", "missing", "stale", "carried", "error"} (names only, never values)
#   apply SPEC  -> generates the missing secrets once, then writes the stack's env file
# SPEC (JSON): generated/user/target paths, random secrets (name -> bytes), the JWTs to
# sign with jwt_secret (name -> role), their lifetime, a header, and `carry`: the old
# layout's env file and the names taken over from it. Each secret is settled ONCE and kept
# in `generated` (0600), never regenerated: first the operator's value (user.env), then the
# old layout's (Archon encrypts the provider keys it stores with a key derived from
# SUPABASE_SERVICE_KEY: a new one makes them unreadable), else a new one. A carried key
# needs the JWT secret that signed it (the operator's, the old file's, or one of the known
# defaults it verifies against). `target` = settled secrets + the other user values.
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


def b64url_decode(part):
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def jwt_claims(token, secret):
    """The claims of an HS256 token signed with `secret`, else None."""
    try:
        header, payload, signature = token.split(".")
        expected = hmac.new(secret.encode(), (header + "." + payload).encode(), hashlib.sha256).digest()
        if hmac.compare_digest(b64url_decode(signature), expected):
            return json.loads(b64url_decode(payload))
    except ValueError:
        pass
    return None


names = list(spec["random"]) + list(spec["jwt"])
generated = read_env(spec["generated"])
user = read_env(spec["user"])
carry = spec.get("carry") or {}
old_path = carry.get("path") or ""
# the old layout's own file only (after the migration that path is a link to the new one)
old = read_env(old_path) if old_path and os.path.isfile(old_path) and not os.path.islink(old_path) else {}


def settle():
    """(values, carried names, error): every secret decided, nothing written."""
    values, carried = {}, []
    for n in names:
        supplied = user.get(n, "")
        if generated.get(n):
            if supplied and supplied != generated[n]:
                return None, [], (n + " in .env differs from the value this host settled on (" + spec["generated"]
                                  + "); the deploy does not rotate it: remove it from .env or change it by hand")
            values[n] = generated[n]
        elif supplied:
            values[n] = supplied
        elif n in carry.get("names", []) and old.get(n):
            values[n] = old[n]
            carried.append(n)
    secret_name = spec["jwt_secret"]
    keys = [n for n in spec["jwt"] if values.get(n)]
    if keys and not values.get(secret_name):
        for candidate in carry.get("known_jwt_secrets", []):
            if all(jwt_claims(values[n], candidate) for n in keys):
                values[secret_name] = candidate
                carried.append(secret_name)
                break
        else:
            return None, [], (", ".join(keys) + " (from .env or " + (old_path or "the old layout") + ") is not signed by "
                              "any known JWT secret: put the JWT_SECRET that signed it in .env")
    for n in keys:
        claims = jwt_claims(values[n], values[secret_name])
        if claims is None:
            return None, [], n + " is not signed by " + secret_name + ": supply the matching pair in .env"
        if claims.get("role") != spec["jwt"][n]:
            return None, [], n + " has role " + repr(claims.get("role")) + ", not " + spec["jwt"][n]
    return values, sorted(set(carried)), None


settled, carried, error = settle()
missing = [n for n in names if not (settled or {}).get(n)]


def target_text(values):
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
    if error:
        print(json.dumps({"ok": False, "missing": [], "stale": True, "carried": [], "error": error}))
        sys.exit(0)
    unsaved = any(settled.get(n) != generated.get(n) for n in names if settled.get(n))
    stale = bool(missing) or unsaved or current_target() != target_text(settled)
    if not stale:
        st = os.stat(spec["target"])
        stale = (st.st_mode & 0o777) != 0o600 or st.st_uid != os.getuid()  # root on a server
    print(json.dumps({"ok": not stale, "missing": missing, "stale": stale, "carried": carried}))
    sys.exit(0)

if error:
    print(error, file=sys.stderr)
    sys.exit(1)
os.umask(0o077)
now = int(time.time())
values = dict(settled)
for name, nbytes in spec["random"].items():
    if not values.get(name):
        values[name] = secrets.token_hex(int(nbytes))
for name, role in spec["jwt"].items():
    if not values.get(name):
        claims = {"role": role, "iss": spec.get("jwt_issuer", "supabase"), "iat": now,
                  "exp": now + int(spec["jwt_expiry_s"])}
        values[name] = jwt_hs256(values[spec["jwt_secret"]], claims)
if any(values[n] != generated.get(n) for n in names):
    text = ("# Settled once on this host by pyinfra (deploys/archon.py): from .env, carried over from the old\n"
            "# layout, or generated. Never regenerated.\n")
    write_0600(spec["generated"], text + "".join(n + "=" + values[n] + "\n" for n in names))
generated = values
wanted = target_text(generated)
if current_target() != wanted:
    write_0600(spec["target"], wanted)
os.chmod(spec["target"], 0o600)
os.chown(spec["target"], os.getuid(), os.getgid())  # root on a server; the user on their own machine
print("generated: " + (", ".join(missing) or "none") + ("; carried over: " + ", ".join(carried) if carried else "")
      + "; wrote " + spec["target"])
