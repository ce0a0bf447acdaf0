// HMAC-SHA256 over "<timestamp>.<body>" with WORKER_CALLBACK_SECRET (the backend verifies it).
export async function signedCallback(env, payload) {
  const body = JSON.stringify(payload);
  const ts = Math.floor(Date.now() / 1000).toString();
  const key = await crypto.subtle.importKey("raw", new TextEncoder().encode(env.WORKER_CALLBACK_SECRET),
    { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const mac = await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`${ts}.${body}`));
  const signature = [...new Uint8Array(mac)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return fetch(env.WORKER_CALLBACK_URL, { method: "POST", body,
    headers: { "Content-Type": "application/json", "X-HiveSync-Timestamp": ts, "X-HiveSync-Signature": signature } });
}
