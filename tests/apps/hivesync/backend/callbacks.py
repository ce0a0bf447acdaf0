"""The HMAC rule of worker callbacks (plan N.6.4): signature over "<timestamp>.<body>"."""

import hashlib
import hmac
import os

MAX_SKEW = int(os.environ.get("CALLBACK_MAX_SKEW_S", "300"))


def verify_callback(secret: str, timestamp: str, signature: str, body: bytes, now: float) -> str | None:
    """None when the callback is authentic and fresh, else why not."""
    try:
        ts = int(timestamp)
    except ValueError:
        return "missing or malformed timestamp"
    if abs(now - ts) > MAX_SKEW:
        return "stale timestamp"
    expected = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature or ""):
        return "bad signature"
    return None
