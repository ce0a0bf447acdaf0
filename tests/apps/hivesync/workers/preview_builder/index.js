// Sample worker (tests): builds a preview into R2 under previews/, then calls the backend back.
import { signedCallback } from "./callback.js";
import { error } from 'itty-router';

export default {
  async fetch(request, env) {
    if (request.method !== "POST") return error(405);
    const job = await request.json();
    await env.R2.put(`previews/${job.id}/index.html`, job.html ?? "");
    return signedCallback(env, { kind: "preview", id: job.id, status: "done" });
  },
};
